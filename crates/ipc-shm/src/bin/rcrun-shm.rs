//! rcrun-shm: demo, test and benchmark tool for rcrun shared-memory channels. Static builds
//! run inside a busybox container (see docs/shm.md).
//!
//! ```text
//! rcrun-shm create PATH --ring SIZE [--node N] [--mode 0660]      make a region (host side)
//! rcrun-shm ROLE NAME MODE [options]
//!   ROLE: listen | connect (shm; NAME under /dev/rcrun-shm or a path)
//!         unix-listen | unix-connect (NAME: socket path), tcp-listen | tcp-connect (host:port)
//!   MODE: echo                  echo each message back until the peer closes
//!         sink                  count messages until an empty one, then answer with a summary
//!         send  --count N --size S     numbered, checksummed messages, then an empty one
//!         recv  --count N              check order and checksums of N messages from `send`
//!         stream --size S --bytes B    throughput against `sink`
//!         pingpong --size S --iters N  round trips against `echo`
//!         stall                 reserve a 1 MiB frame, fill half of it, then hang (to be killed)
//!   options: --spin-us N | --spin (never sleep); --timeout-ms N; --cpu N (pin this process)
//! ```
//! Results are one JSON line on stdout; errors one line on stderr and exit status 1.
#![allow(clippy::print_stdout)]

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use rcrun_ipc_shm::{self as shm, Options, WaitPolicy};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
        }
        Err(e) => {
            eprintln!("rcrun-shm: {e}");
            std::process::exit(1);
        }
    }
}

struct Flags {
    count: u64,
    size: usize,
    bytes: u64,
    iters: u64,
    wait: WaitPolicy,
    timeout: Option<Duration>,
    ring: u64,
    node: Option<u32>,
    mode: u32,
}

fn flags(args: &[String]) -> Res<Flags> {
    let mut f = Flags {
        count: 1000,
        size: 64,
        bytes: 64 << 20,
        iters: 10000,
        wait: WaitPolicy::default(),
        timeout: None,
        ring: 4 << 20,
        node: None,
        mode: 0o660,
    };
    let mut i = 0;
    let val = |i: usize| {
        args.get(i + 1)
            .cloned()
            .ok_or_else(|| format!("{} needs a value", args[i]))
    };
    let num = |i: usize| -> Res<u64> {
        let v = val(i)?;
        shm::size::parse(&v).map_err(|e| format!("{}: {e}", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--count" => f.count = num(i)?,
            "--size" => f.size = num(i)? as usize,
            "--bytes" => f.bytes = num(i)?,
            "--iters" => f.iters = num(i)?,
            "--ring" => f.ring = num(i)?,
            "--node" => f.node = Some(num(i)? as u32),
            "--mode" => {
                f.mode = u32::from_str_radix(&val(i)?, 8).map_err(|e| format!("--mode: {e}"))?
            }
            "--spin-us" => f.wait.spin = Duration::from_micros(num(i)?),
            "--timeout-ms" => f.timeout = Some(Duration::from_millis(num(i)?)),
            "--cpu" => pin(num(i)? as usize)?,
            "--spin" => {
                f.wait.spin = Duration::MAX;
                i += 1;
                continue;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
        i += 2;
    }
    Ok(f)
}

fn pin(cpu: usize) -> Res<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pin to cpu {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A message transport: shm channel, or a stream socket with u32 length prefixes.
trait Transport {
    fn send(&mut self, m: &[u8]) -> Res<()>;
    fn recv(&mut self, buf: &mut Vec<u8>) -> Res<usize>;
}

impl Transport for shm::Channel {
    fn send(&mut self, m: &[u8]) -> Res<()> {
        shm::Channel::send(self, m).map_err(|e| e.to_string())
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> Res<usize> {
        shm::Channel::recv(self, buf).map_err(|e| e.to_string())
    }
}

struct Stream<S: Read + Write> {
    w: S,
    r: BufReader<S>,
    out: Vec<u8>,
}

impl<S: Read + Write> Transport for Stream<S> {
    fn send(&mut self, m: &[u8]) -> Res<()> {
        // One write per message, as a message library would do.
        self.out.clear();
        self.out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        self.out.extend_from_slice(m);
        self.w.write_all(&self.out).map_err(|e| e.to_string())
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> Res<usize> {
        let mut l = [0u8; 4];
        self.r
            .read_exact(&mut l)
            .map_err(|e| format!("peer closed or failed: {e}"))?;
        let n = u32::from_le_bytes(l) as usize;
        buf.resize(n, 0);
        self.r.read_exact(buf).map_err(|e| e.to_string())?;
        Ok(n)
    }
}

fn stream<S: Read + Write>(s: S, clone: impl FnOnce(&S) -> std::io::Result<S>) -> Res<Stream<S>> {
    let r = clone(&s).map_err(|e| e.to_string())?;
    Ok(Stream {
        w: s,
        r: BufReader::with_capacity(1 << 20, r),
        out: Vec::new(),
    })
}

fn open(role: &str, name: &str, f: &Flags) -> Res<Box<dyn Transport>> {
    let o = Options {
        wait: f.wait,
        timeout: f.timeout,
    };
    Ok(match role {
        "listen" => Box::new(shm::listen_with(name, &o).map_err(|e| e.to_string())?),
        "connect" => Box::new(shm::connect_with(name, &o).map_err(|e| e.to_string())?),
        "unix-listen" => {
            let _ = std::fs::remove_file(name);
            let l = std::os::unix::net::UnixListener::bind(name).map_err(|e| e.to_string())?;
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            Box::new(stream(s, |s| s.try_clone())?)
        }
        "unix-connect" => {
            let s = retry(|| std::os::unix::net::UnixStream::connect(name))?;
            Box::new(stream(s, |s| s.try_clone())?)
        }
        "tcp-listen" => {
            let l = std::net::TcpListener::bind(name).map_err(|e| e.to_string())?;
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            Box::new(stream(s, |s| s.try_clone())?)
        }
        "tcp-connect" => {
            let s = retry(|| std::net::TcpStream::connect(name))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            Box::new(stream(s, |s| s.try_clone())?)
        }
        other => return Err(format!("unknown role {other:?}")),
    })
}

/// Sockets: the listener may start a moment later.
fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> Res<T> {
    let mut last = None;
    for _ in 0..200 {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!(
        "connect: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// FNV-1a, 64 bit: enough to catch torn or misplaced bytes.
fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Message `seq` of `size` bytes (at least 16): seq, pattern, checksum of all before it.
fn make_msg(seq: u64, size: usize, buf: &mut Vec<u8>) {
    let size = size.max(16);
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while buf.len() < size - 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.push(x as u8);
    }
    let c = fnv(buf);
    buf.extend_from_slice(&c.to_le_bytes());
}

fn check_msg(expect: u64, m: &[u8]) -> Res<()> {
    if m.len() < 16 {
        return Err(format!("message {expect}: {} bytes is too short", m.len()));
    }
    let (body, sum) = m.split_at(m.len() - 8);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[..8]);
    let seq = u64::from_le_bytes(seq);
    if seq != expect {
        return Err(format!(
            "message out of order: got {seq}, expected {expect}"
        ));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if u64::from_le_bytes(s) != fnv(body) {
        return Err(format!("message {seq}: checksum mismatch"));
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(args: &[String]) -> Res<String> {
    let (role, rest) = args
        .split_first()
        .ok_or("usage: rcrun-shm create|ROLE ... (see --help in docs/shm.md)")?;
    if role == "create" {
        let (path, rest) = rest.split_first().ok_or("create: PATH missing")?;
        let f = flags(rest)?;
        shm::create_region(
            std::path::Path::new(path),
            &shm::RegionSpec {
                ring_cap: f.ring,
                numa_node: f.node,
                owner: None,
                mode: f.mode,
            },
        )
        .map_err(|e| e.to_string())?;
        return Ok(String::new());
    }
    let name = rest.first().ok_or("channel name missing")?;
    let mode = rest.get(1).ok_or("mode missing")?;
    let f = flags(rest.get(2..).unwrap_or(&[]))?;
    if mode == "stall" {
        return stall(role, name, &f);
    }
    let mut t = open(role, name, &f)?;
    let mut buf = Vec::new();
    match mode.as_str() {
        "echo" => {
            let mut n = 0u64;
            loop {
                match t.recv(&mut buf) {
                    Ok(_) => {
                        t.send(&buf)?;
                        n += 1;
                    }
                    Err(e) if e.contains("closed") => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(format!("{{\"echoed\":{n}}}"))
        }
        "sink" => {
            let (mut n, mut bytes) = (0u64, 0u64);
            loop {
                let len = t.recv(&mut buf)?;
                if len == 0 {
                    break;
                }
                n += 1;
                bytes += len as u64;
            }
            t.send(format!("{n} {bytes}").as_bytes())?;
            Ok(format!("{{\"messages\":{n},\"bytes\":{bytes}}}"))
        }
        "send" => {
            let start = Instant::now();
            for seq in 0..f.count {
                make_msg(seq, f.size, &mut buf);
                t.send(&buf)?;
            }
            t.send(&[])?;
            Ok(format!(
                "{{\"sent\":{},\"size\":{},\"secs\":{:.6}}}",
                f.count,
                f.size.max(16),
                start.elapsed().as_secs_f64()
            ))
        }
        "recv" => {
            let mut n = 0u64;
            let mut total = 0u64;
            loop {
                let len = t.recv(&mut buf)?;
                if len == 0 {
                    break;
                }
                check_msg(n, &buf)?;
                n += 1;
                total += len as u64;
            }
            if n != f.count {
                return Err(format!("received {n} messages, expected {}", f.count));
            }
            Ok(format!(
                "{{\"received\":{n},\"bytes\":{total},\"ok\":true}}"
            ))
        }
        "stream" => {
            let msg = vec![0x5au8; f.size.max(1)];
            let count = (f.bytes / msg.len() as u64).max(1);
            let start = Instant::now();
            for _ in 0..count {
                t.send(&msg)?;
            }
            t.send(&[])?;
            t.recv(&mut buf)?;
            let secs = start.elapsed().as_secs_f64();
            let bytes = count * msg.len() as u64;
            Ok(format!(
                "{{\"size\":{},\"messages\":{count},\"bytes\":{bytes},\"secs\":{secs:.6},\"gbit_per_s\":{:.3},\"msgs_per_s\":{:.0}}}",
                msg.len(),
                bytes as f64 * 8.0 / secs / 1e9,
                count as f64 / secs
            ))
        }
        "pingpong" => {
            let msg = vec![0xa5u8; f.size.max(1)];
            let warm = (f.iters / 10).max(10);
            let mut lat = Vec::with_capacity(f.iters as usize);
            for i in 0..warm + f.iters {
                let t0 = Instant::now();
                t.send(&msg)?;
                t.recv(&mut buf)?;
                if i >= warm {
                    lat.push(t0.elapsed().as_nanos() as u64);
                }
            }
            lat.sort_unstable();
            Ok(format!(
                "{{\"size\":{},\"iters\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"min_us\":{:.2}}}",
                msg.len(),
                f.iters,
                percentile(&lat, 0.5) as f64 / 1000.0,
                percentile(&lat, 0.99) as f64 / 1000.0,
                percentile(&lat, 0.0) as f64 / 1000.0
            ))
        }
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// Reserve a large frame, fill half of it, report, then hang: the test kills us here.
fn stall(role: &str, name: &str, f: &Flags) -> Res<String> {
    let o = Options {
        wait: f.wait,
        timeout: f.timeout,
    };
    let mut ch = match role {
        "listen" => shm::listen_with(name, &o),
        _ => shm::connect_with(name, &o),
    }
    .map_err(|e| e.to_string())?;
    let len = ch.max_frame().min(1 << 20);
    let mut b = ch.reserve(len).map_err(|e| e.to_string())?;
    let half = len / 2;
    b[..half].fill(0x77);
    println!("{{\"stalled\":{len}}}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
