//! Docker's (moby's) default profile, as docker renders it into an amd64
//! config.json with the default capability set (see the crate README),
//! compiled and checked with the interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use oci_spec::runtime::LinuxSeccomp;
use rcrun_seccomp::{
    compile, compile_with, run, Arch, CompileOptions, Program, SeccompData, SeccompError,
    UnknownSyscalls,
};

fn docker_spec() -> LinuxSeccomp {
    serde_json::from_str(include_str!("data/docker-default.json")).unwrap()
}

fn ignore() -> CompileOptions {
    CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    }
}

fn docker() -> Program {
    compile_with(&docker_spec(), Arch::X86_64, &ignore()).unwrap()
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

fn v(p: &Program, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch
        .syscall_nr(name)
        .unwrap_or_else(|| panic!("{name} on {arch:?}"));
    run(&p.insns, &SeccompData::new(arch, nr, args)).unwrap()
}

#[test]
fn profile_shape() {
    let spec = docker_spec();
    let allow = &spec.syscalls().as_ref().unwrap()[0];
    assert!(allow.names().len() >= 300, "{}", allow.names().len());
}

#[test]
fn unknown_names_error_by_default_and_are_reported_when_ignored() {
    // recv/send only exist as socketcall multiplexes on these ABIs: no
    // table entry on x86_64, x86 or x32.
    match compile(&docker_spec(), Arch::X86_64) {
        Err(SeccompError::UnknownSyscall(n)) => assert!(n == "recv" || n == "send", "{n}"),
        other => panic!("unexpected {other:?}"),
    }
    let p = docker();
    assert_eq!(
        p.unknown_syscalls,
        vec!["recv".to_string(), "send".to_string()]
    );
}

#[test]
fn compiles_within_kernel_limit_with_long_jumps() {
    let p = docker();
    assert_eq!(p.arches, vec![Arch::X86_64, Arch::X86, Arch::X32]);
    assert!(p.len() > 255 && p.len() <= 4096, "{}", p.len());
    eprintln!("docker default profile: {} instructions", p.len());
}

#[test]
fn verdicts_x86_64() {
    let p = docker();
    let a = Arch::X86_64;
    for n in [
        "read", "write", "openat", "mkdir", "execve", "futex", "rseq", "clone3",
    ] {
        let want = if n == "clone3" {
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        } else {
            ALLOW
        };
        assert_eq!(v(&p, a, n, [0; 6]), want, "{n}");
    }
    for n in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "kexec_load",
        "bpf",
        "acct",
        "reboot",
    ] {
        assert_eq!(v(&p, a, n, [0; 6]), EPERM, "{n}");
    }
    // personality: only the listed personas.
    for (x, want) in [
        (0u64, ALLOW),
        (8, ALLOW),
        (0x20000, ALLOW),
        (0x20008, ALLOW),
        (0xffff_ffff, ALLOW),
        (1, EPERM),
        (0x1_0000_0000, EPERM),
    ] {
        assert_eq!(v(&p, a, "personality", [x, 0, 0, 0, 0, 0]), want, "{x:#x}");
    }
    // clone: allowed without namespace flags.
    let sigchld = libc::SIGCHLD as u64;
    assert_eq!(v(&p, a, "clone", [sigchld, 0, 0, 0, 0, 0]), ALLOW);
    let newns = libc::CLONE_NEWNS as u64 | sigchld;
    assert_eq!(v(&p, a, "clone", [newns, 0, 0, 0, 0, 0]), EPERM);
    let newuser = libc::CLONE_NEWUSER as u64;
    assert_eq!(v(&p, a, "clone", [newuser, 0, 0, 0, 0, 0]), EPERM);
    // socket: anything but AF_VSOCK.
    assert_eq!(
        v(&p, a, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        v(&p, a, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]),
        EPERM
    );
    // x86_64-only entries.
    assert_eq!(v(&p, a, "arch_prctl", [0; 6]), ALLOW);
}

#[test]
fn verdicts_x86_and_x32_and_foreign() {
    let p = docker();
    let x86 = Arch::X86;
    assert_eq!(v(&p, x86, "read", [0; 6]), ALLOW);
    assert_eq!(v(&p, x86, "socketcall", [0; 6]), ALLOW);
    assert_eq!(v(&p, x86, "mmap2", [0; 6]), ALLOW);
    assert_eq!(v(&p, x86, "mount", [0; 6]), EPERM);
    // 32-bit ABI: personality(0xffffffff) compares the low word.
    assert_eq!(
        v(&p, x86, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
    let x32 = Arch::X32;
    assert_eq!(v(&p, x32, "read", [0; 6]), ALLOW);
    assert_eq!(v(&p, x32, "mount", [0; 6]), EPERM);
    // aarch64 is not in the filter: bad-arch verdict (KILL_THREAD).
    assert_eq!(
        v(&p, Arch::Aarch64, "read", [0; 6]),
        libc::SECCOMP_RET_KILL_THREAD
    );
}

/// Benchmark: mean time to compile Docker's profile (x86_64 + x86 + x32).
/// `cargo test -p rcrun-seccomp --release --test docker -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_compile_docker_profile() {
    let spec = docker_spec();
    let opts = ignore();
    let n = 100u32;
    // warm-up
    let len = compile_with(&spec, Arch::X86_64, &opts).unwrap().len();
    let start = Instant::now();
    for _ in 0..n {
        let p = compile_with(&spec, Arch::X86_64, &opts).unwrap();
        assert_eq!(p.len(), len);
    }
    let mean = start.elapsed() / n;
    println!("compile docker default profile: {len} insns, mean {mean:?} over {n} runs");
}
