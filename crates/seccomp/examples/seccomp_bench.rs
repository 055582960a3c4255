//! Build and load time of Docker's default seccomp profile.
//!
//! ```sh
//! cargo run --release -p rcrun-seccomp --example seccomp_bench -- [ITERATIONS]
//! ```
//!
//! Measures, for the profile as Docker renders it on amd64 (x86_64 + x86 +
//! x32, `tests/data/docker-default.json`):
//!
//! - rcrun's compile (`compile_with`, what the runtime does per container),
//!   warm (repeated in one process) and cold (the first compile of a fresh
//!   process, which also builds the name -> number maps: what one `rcrun
//!   create` pays);
//! - rcrun's load: `seccomp(SECCOMP_SET_MODE_FILTER)` of that program, in a
//!   forked child after `PR_SET_NO_NEW_PRIVS` (a filter cannot be removed,
//!   so every load gets a fresh process; only the syscall is timed);
//! - the same with libseccomp 2.5 (what runc and crun link), side by side:
//!   runc's rule building (`seccomp_init`, `seccomp_rule_add*`) plus BPF
//!   generation (`seccomp_export_bpf` to a memfd), and `seccomp_load`
//!   (which generates the BPF again and loads it) in a forked child.
//!
//! Prints one line per measurement (median, p10, p90, mean in µs) and a
//! JSON object on the last line for `bench/seccomp.sh`.

#[path = "../tests/libseccomp_ref/mod.rs"]
#[allow(dead_code)]
mod libseccomp_ref;

use std::error::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use oci_spec::runtime::LinuxSeccomp;
use rcrun_seccomp::{compile_with, load, set_no_new_privs, Arch, CompileOptions, UnknownSyscalls};

type Res<T> = Result<T, Box<dyn Error>>;

struct Summary {
    name: &'static str,
    median: f64,
    p10: f64,
    p90: f64,
    mean: f64,
    n: usize,
}

fn summarize(name: &'static str, mut us: Vec<f64>) -> Summary {
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let at = |q: f64| us[((n - 1) as f64 * q).round() as usize];
    Summary {
        name,
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
        mean: us.iter().sum::<f64>() / n as f64,
        n,
    }
}

/// Run `body` in a forked child and return the microseconds it reports
/// (it must time itself and return them, or `None` on failure).
fn in_child(body: &dyn Fn() -> Option<u64>) -> Res<f64> {
    let mut fds = [0; 2];
    // SAFETY: plain pipe(2) into a 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both fds are fresh and owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `body` (prctl, seccomp, clock reads) and
    // write/_exit; everything it needs was allocated before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let ns = body().unwrap_or(u64::MAX);
        let b = ns.to_ne_bytes();
        // SAFETY: write of 8 bytes from a stack buffer, then _exit.
        unsafe {
            libc::write(wr.as_raw_fd(), b.as_ptr().cast(), b.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut b = [0u8; 8];
    // SAFETY: read into an 8-byte stack buffer.
    let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    let mut status = 0;
    // SAFETY: reap our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let ns = u64::from_ne_bytes(b);
    if n != 8 || ns == u64::MAX {
        return Err("child failed to load the filter".into());
    }
    Ok(ns as f64 / 1000.0)
}

fn ns_since(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

fn docker() -> Res<LinuxSeccomp> {
    Ok(serde_json::from_str(include_str!(
        "../tests/data/docker-default.json"
    ))?)
}

fn compile_options() -> CompileOptions {
    CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    }
}

/// `--cold`: one compile in this fresh process; prints microseconds.
fn cold() -> Res<()> {
    let spec = docker()?;
    let native = Arch::native().ok_or("unsupported build architecture")?;
    let t = Instant::now();
    let p = compile_with(&spec, native, &compile_options())?;
    let us = t.elapsed().as_secs_f64() * 1e6;
    std::hint::black_box(p);
    println!("{us}");
    Ok(())
}

fn main() -> Res<()> {
    if std::env::args().nth(1).as_deref() == Some("--cold") {
        return cold();
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let spec = docker()?;
    let native = Arch::native().ok_or("unsupported build architecture")?;
    let opts = compile_options();
    let arches: Vec<Arch> = spec
        .architectures()
        .iter()
        .flatten()
        .filter_map(|&a| Arch::from_oci(a))
        .collect();

    // Warm-up (page faults, table maps built once per process).
    let prog = compile_with(&spec, native, &opts)?;
    let lib_len = libseccomp_ref::build(&spec, &arches, 1)?.insns.len();

    let mut compile = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let p = compile_with(&spec, native, &opts)?;
        compile.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(p);
    }
    let exe = std::env::current_exe()?;
    let mut cold_compile = Vec::with_capacity(iterations);
    for _ in 0..iterations.min(100) {
        let out = std::process::Command::new(&exe).arg("--cold").output()?;
        if !out.status.success() {
            return Err(format!("--cold: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        cold_compile.push(String::from_utf8(out.stdout)?.trim().parse::<f64>()?);
    }
    let mut rc_load = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        rc_load.push(in_child(&|| {
            set_no_new_privs().ok()?;
            let t = Instant::now();
            load(&prog, 0).ok()?;
            Some(ns_since(t))
        })?);
    }
    let mut lib_build = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let b = libseccomp_ref::build(&spec, &arches, 1)?;
        lib_build.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(b);
    }
    // seccomp_load: the context is built before the fork, the child times
    // seccomp_load (BPF generation + the syscall), as runc's init does.
    let mut lib_load = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let ctx = libseccomp_ref::context(&spec, &arches, 1)?;
        lib_load.push(in_child(&|| {
            set_no_new_privs().ok()?;
            let t = Instant::now();
            ctx.load().ok()?;
            Some(ns_since(t))
        })?);
    }

    let rows = [
        summarize("rcrun compile (warm)", compile),
        summarize("rcrun compile (cold)", cold_compile),
        summarize("rcrun load", rc_load),
        summarize("libseccomp rules+export", lib_build),
        summarize("libseccomp seccomp_load", lib_load),
    ];
    println!(
        "Docker default profile (x86_64+x86+x32): rcrun {} instructions, libseccomp {} instructions",
        prog.len(),
        lib_len
    );
    for r in &rows {
        println!(
            "{:<26} median {:>8.1} us  p10 {:>8.1}  p90 {:>8.1}  mean {:>8.1}  (n={})",
            r.name, r.median, r.p10, r.p90, r.mean, r.n
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "\"{}\": {{\"median_us\": {:.2}, \"p10_us\": {:.2}, \"p90_us\": {:.2}, \"mean_us\": {:.2}, \"n\": {}}}",
                r.name, r.median, r.p10, r.p90, r.mean, r.n
            )
        })
        .collect();
    println!(
        "{{\"rcrun_insns\": {}, \"libseccomp_insns\": {}, {}}}",
        prog.len(),
        lib_len,
        json.join(", ")
    );
    Ok(())
}
