//! Channels between threads and real processes on a tmpfs region: ordering and integrity,
//! zero copy, fragments, backpressure, peer death and close, idle CPU, a hostile peer, and
//! the C ABI through gcc.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcrun_ipc_shm::{self as shm, Error, Options, RegionSpec, WaitPolicy};

/// A region in a fresh directory on /dev/shm (tmpfs), removed on drop.
struct Region {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn region(ring: u64) -> Region {
    let dir = tempfile::Builder::new()
        .prefix("rcrun-shm-test")
        .tempdir_in("/dev/shm")
        .unwrap();
    let path = dir.path().join("r");
    shm::create_region(
        &path,
        &RegionSpec {
            ring_cap: ring,
            numa_node: None,
            owner: None,
            mode: 0o600,
        },
    )
    .unwrap();
    Region { _dir: dir, path }
}

fn name(r: &Region) -> String {
    r.path.display().to_string()
}

fn opts(spin: Duration) -> Options {
    Options {
        wait: WaitPolicy { spin },
        timeout: Some(Duration::from_secs(10)),
    }
}

/// Kills a helper process on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helper(args: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_rcrun-shm"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn msg(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (seq as usize * 31 + i * 7) as u8));
    v
}

#[test]
fn ordered_and_intact_under_load_with_fragments() {
    let r = region(64 * 1024);
    let n = name(&r);
    // Sizes from 0 to well past a frame (32 KiB - 8): fragments and wrap-around.
    let sizes = [
        0usize, 1, 7, 8, 63, 1000, 4096, 20000, 32760, 50000, 200_000,
    ];
    let count = 6_000u64;
    let n2 = n.clone();
    let rx = std::thread::spawn(move || {
        let mut ch = shm::listen_with(&n2, &opts(Duration::from_micros(5))).unwrap();
        let mut buf = Vec::new();
        for seq in 0..count {
            let len = ch.recv(&mut buf).unwrap();
            assert_eq!(len, buf.len());
            let want = msg(seq, sizes[seq as usize % sizes.len()]);
            assert!(buf == want, "message {seq} differs");
        }
        ch.send(b"done").unwrap();
    });
    let mut ch = shm::connect_with(&n, &opts(Duration::from_micros(5))).unwrap();
    assert_eq!(ch.max_frame(), 32 * 1024 - 8);
    for seq in 0..count {
        ch.send(&msg(seq, sizes[seq as usize % sizes.len()]))
            .unwrap();
    }
    let mut buf = Vec::new();
    ch.recv(&mut buf).unwrap();
    assert_eq!(buf, b"done");
    rx.join().unwrap();
}

#[test]
fn zero_copy_reserve_commit_and_recv_ref() {
    let r = region(1 << 20);
    let n = name(&r);
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        let mut ch = shm::listen(&n2).unwrap();
        for i in 0..100u8 {
            let mut b = ch.reserve(256 * 1024).unwrap();
            b[..1000].fill(i);
            b.commit(1000);
        }
        // An uncommitted reservation publishes nothing.
        {
            let _unpublished = ch.reserve(10).unwrap();
        }
        ch.send(b"end").unwrap();
        let mut buf = Vec::new();
        ch.recv(&mut buf).unwrap();
    });
    let mut ch = shm::connect(&n).unwrap();
    for i in 0..100u8 {
        let m = ch.recv_ref().unwrap();
        assert_eq!(m.len(), 1000);
        assert!(!m.more());
        assert!(m.iter().all(|b| *b == i));
    }
    assert_eq!(&*ch.recv_ref().unwrap(), b"end");
    assert!(matches!(
        ch.reserve(1 << 20),
        Err(Error::TooLarge { len: 1048576, .. })
    ));
    ch.send(b"bye").unwrap();
    t.join().unwrap();
}

#[test]
fn backpressure_blocks_the_sender_until_the_reader_drains() {
    let r = region(4096);
    let n = name(&r);
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        let mut ch = shm::listen_with(&n2, &opts(Duration::ZERO)).unwrap();
        let start = Instant::now();
        for _ in 0..64 {
            ch.send(&[1u8; 1000]).unwrap();
        }
        start.elapsed()
    });
    let mut ch = shm::connect_with(&n, &opts(Duration::ZERO)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = Vec::new();
    for _ in 0..64 {
        ch.recv(&mut buf).unwrap();
    }
    // The ring holds 4 messages: the sender must have waited for us.
    assert!(t.join().unwrap() >= Duration::from_millis(250));
}

#[test]
fn a_killed_peer_mid_message_is_peer_died_not_a_hang() {
    for spin in [Duration::ZERO, Duration::from_millis(5)] {
        let r = region(4 << 20);
        let n = name(&r);
        let mut p = helper(&["connect", &n, "stall", "--timeout-ms", "10000"]);
        let mut ch = shm::listen_with(&n, &opts(spin)).unwrap();
        let mut line = String::new();
        BufReader::new(p.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("stalled"), "{line}");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(p);
        });
        let t0 = Instant::now();
        let mut buf = Vec::new();
        match ch.recv(&mut buf) {
            Err(Error::PeerDied(_)) => {}
            other => panic!("expected PeerDied, got {other:?}"),
        }
        let waited = t0.elapsed();
        assert!(waited < Duration::from_secs(2), "took {waited:?}");
        killer.join().unwrap();
        // Sending to a dead peer fails too.
        assert!(matches!(ch.send(b"x"), Err(Error::PeerDied(_))));
        // The region can be listened on again.
        drop(ch);
        let n3 = n.clone();
        let t = std::thread::spawn(move || shm::connect_with(&n3, &opts(spin)).map(|_| ()));
        let again = shm::listen_with(&n, &opts(spin));
        assert!(again.is_ok(), "{:?}", again.err());
        t.join().unwrap().unwrap();
    }
}

#[test]
fn a_closed_peer_is_seen_after_its_data() {
    let r = region(8192);
    let n = name(&r);
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        let mut ch = shm::listen(&n2).unwrap();
        ch.send(b"one").unwrap();
        ch.send(b"two").unwrap();
    });
    let mut ch = shm::connect(&n).unwrap();
    t.join().unwrap();
    let mut buf = Vec::new();
    ch.recv(&mut buf).unwrap();
    ch.recv(&mut buf).unwrap();
    assert_eq!(buf, b"two");
    assert!(matches!(ch.recv(&mut buf), Err(Error::PeerClosed(_))));
}

#[test]
fn one_listener_and_one_connector_at_a_time() {
    let r = region(8192);
    let n = name(&r);
    let n2 = n.clone();
    let t = std::thread::spawn(move || shm::listen(&n2));
    let c = shm::connect(&n).unwrap();
    let l = t.join().unwrap().unwrap();
    assert!(matches!(shm::listen(&n), Err(Error::Busy(..))));
    let quick = Options {
        wait: WaitPolicy::default(),
        timeout: Some(Duration::from_millis(100)),
    };
    assert!(matches!(
        shm::connect_with(&n, &quick),
        Err(Error::Busy(..) | Error::Timeout(_))
    ));
    drop((c, l));
    assert!(matches!(
        shm::connect_with(&n, &quick),
        Err(Error::Timeout(_))
    ));
}

/// CPU time (utime + stime, clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_channel_costs_no_cpu() {
    let r = region(8192);
    let n = name(&r);
    // Default policy: the receiver spins 20 us, then sleeps.
    let p = helper(&["listen", &n, "recv", "--count", "1"]);
    let _ch = shm::connect_with(&n, &opts(Duration::ZERO)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(p.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(p.0.id()) - before;
    assert!(used <= 1, "an idle receiver used {used} ticks in 2 s");
}

#[test]
fn a_hostile_peer_cannot_make_us_read_out_of_bounds() {
    let r = region(8192);
    let n = name(&r);
    let n2 = n.clone();
    let t = std::thread::spawn(move || shm::listen(&n2).unwrap());
    let mut c = shm::connect(&n).unwrap();
    let _l = t.join().unwrap();
    // Scribble the listener->connector ring's head (offset 128) with a huge position.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&r.path)
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&u64::MAX.to_le_bytes(), 128).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(c.recv(&mut buf), Err(Error::Ring(..))));
    // A sane head but a frame length past the ring.
    f.write_all_at(&16u64.to_le_bytes(), 128).unwrap();
    let data = 4096u64;
    f.write_all_at(&100_000u32.to_le_bytes(), data).unwrap();
    f.write_all_at(&0u32.to_le_bytes(), data + 4).unwrap();
    assert!(matches!(c.recv(&mut buf), Err(Error::Ring(..))));
}

#[test]
fn bad_regions_are_refused() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let p = dir.path().join("junk");
    std::fs::write(&p, vec![0u8; 65536]).unwrap();
    let e = shm::listen(&p.display().to_string()).err().unwrap();
    assert!(e.to_string().contains("bad magic"), "{e}");
    let e = shm::create_region(
        &dir.path().join("x"),
        &RegionSpec {
            ring_cap: 3000,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("ring size 3000"), "{e}");
    assert!(shm::listen("../etc").is_err());
    assert!(matches!(shm::resolve("a b"), Err(Error::BadName(_))));
}

#[test]
fn c_abi_through_gcc() {
    let bin = Path::new(env!("CARGO_BIN_EXE_rcrun-shm"));
    let libdir = bin.parent().unwrap();
    let so = libdir.join("librcrun_ipc_shm.so");
    // `cargo test` does not build the cdylib: `cargo build -p rcrun-ipc-shm` must have, after
    // the last change to the library's sources.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_src = std::fs::read_dir(crate_dir.join("src"))
        .unwrap()
        .flatten()
        .filter_map(|e| mtime(&e.path()))
        .max();
    assert!(
        so.exists() && mtime(&so) >= newest_src,
        "{} is missing or older than the library's sources: run `cargo build -p rcrun-ipc-shm` before `cargo test`",
        so.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("smoke");
    let out = Command::new("gcc")
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-std=c11",
            "-D_GNU_SOURCE",
            "-o",
        ])
        .arg(&exe)
        .arg(crate_dir.join("tests/c/smoke.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-L")
        .arg(libdir)
        .arg("-lrcrun_ipc_shm")
        .output()
        .expect("gcc is required for the C ABI test (apt-get install gcc)");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let region = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = Command::new(&exe)
        .arg(region.path().join("c"))
        .env("LD_LIBRARY_PATH", libdir)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("c-abi ok"),
        "{out:?}"
    );
}

/// Both sides sleep at once (no spinning) on a tiny ring: every message goes through the
/// flag/sequence handshake. A lost wake-up shows as a 10 s timeout, not a hang.
#[test]
fn sleeping_both_sides_never_lose_a_wakeup() {
    let r = region(4096);
    let n = name(&r);
    let count = 100_000u64;
    let t = Duration::from_secs(10);
    let n2 = n.clone();
    let rx = std::thread::spawn(move || -> Result<(), Error> {
        let mut ch = shm::listen_with(&n2, &opts(Duration::ZERO))?;
        let mut buf = Vec::new();
        for seq in 0..count {
            ch.rx.recv_timeout(&mut buf, t)?;
            assert!(
                buf == msg(seq, (seq % 1500) as usize),
                "message {seq} differs"
            );
        }
        ch.tx.send_timeout(b"done", t)
    });
    let mut ch = shm::connect_with(&n, &opts(Duration::ZERO)).unwrap();
    for seq in 0..count {
        ch.tx
            .send_timeout(&msg(seq, (seq % 1500) as usize), t)
            .unwrap();
    }
    let mut buf = Vec::new();
    ch.rx.recv_timeout(&mut buf, t).unwrap();
    assert_eq!(buf, b"done");
    rx.join().unwrap().unwrap();
}
