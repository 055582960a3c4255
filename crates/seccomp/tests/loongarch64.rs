//! LoongArch64, which libseccomp 2.5 lacks (so `libseccomp_diff.rs` cannot
//! cover it): our numbers against the kernel's table and a compiled filter
//! run in the interpreter.
//!
//! LoongArch uses the generic table, `include/uapi/asm-generic/unistd.h`
//! (`arch/loongarch/include/uapi/asm/unistd.h` only adds
//! `__ARCH_WANT_SYS_CLONE`, `__ARCH_WANT_SYS_CLONE3` and, since 6.11,
//! `__ARCH_WANT_NEW_STAT`), with no legacy syscalls (`open`, `mkdir`,
//! `fork`, ...). Its audit value is `AUDIT_ARCH_LOONGARCH64` =
//! `EM_LOONGARCH (258) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oci_spec::runtime::{Arch as OciArch, LinuxSeccomp};
use rcrun_seccomp::{compile_with, run, Arch, CompileOptions, SeccompData, UnknownSyscalls};

const LA: Arch = Arch::Loongarch64;

/// (name, number) from asm-generic/unistd.h.
const GENERIC: &[(&str, u32)] = &[
    ("io_setup", 0),
    ("fcntl", 25),
    ("mkdirat", 34),
    ("unlinkat", 35),
    ("mount", 40),
    ("openat", 56),
    ("close", 57),
    ("read", 63),
    ("write", 64),
    ("newfstatat", 79),
    ("exit_group", 94),
    ("kill", 129),
    ("personality", 92),
    ("getpid", 172),
    ("socket", 198),
    ("clone", 220),
    ("execve", 221),
    ("setns", 268),
    ("pidfd_open", 434),
    ("clone3", 435),
];

#[test]
fn numbers_are_the_generic_table() {
    for &(name, nr) in GENERIC {
        assert_eq!(LA.syscall_nr(name), Some(nr), "{name}");
    }
    // Same table as riscv64 for these (both asm-generic).
    for &(name, nr) in GENERIC {
        assert_eq!(Arch::Riscv64.syscall_nr(name), Some(nr), "riscv64 {name}");
    }
    // setns: 268 on the generic table, 5303 on MIPS n64, 308 on x86_64.
    assert_eq!(LA.syscall_nr("setns"), Some(268));
    assert_eq!(Arch::Mips64.syscall_nr("setns"), Some(5303));
    assert_eq!(Arch::X86_64.syscall_nr("setns"), Some(308));
    // No legacy syscalls on LoongArch.
    for name in [
        "open",
        "mkdir",
        "fork",
        "stat",
        "dup2",
        "pipe",
        "epoll_wait",
    ] {
        assert_eq!(LA.syscall_nr(name), None, "{name}");
    }
}

#[test]
fn audit_arch_and_byte_order() {
    assert_eq!(LA.audit_arch(), 0xC000_0102);
    assert_eq!(OciArch::ScmpArchLoongarch64 as u32, 0xC000_0102);
    assert_eq!(Arch::from_oci(OciArch::ScmpArchLoongarch64), Some(LA));
    assert!(!LA.is_big_endian());
    assert!(!LA.is_32bit());
}

fn docker_for_loongarch() -> LinuxSeccomp {
    let mut spec: LinuxSeccomp =
        serde_json::from_str(include_str!("data/docker-default.json")).unwrap();
    spec.set_architectures(Some(vec![OciArch::ScmpArchLoongarch64]));
    spec
}

#[test]
fn docker_profile_on_loongarch64() {
    let opts = CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    };
    let p = compile_with(&docker_for_loongarch(), LA, &opts).unwrap();
    assert_eq!(p.arches, vec![LA]);
    // ld [4] (arch); jeq AUDIT_ARCH_LOONGARCH64.
    assert_eq!((p.insns[0].code, p.insns[0].k), (0x20, 4));
    assert_eq!((p.insns[1].code, p.insns[1].k), (0x15, 0xC000_0102));

    let allow = libc::SECCOMP_RET_ALLOW;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let at = |nr: u32, args: [u64; 6]| run(&p.insns, &SeccompData::new(LA, nr, args)).unwrap();
    let name = |n: &str| LA.syscall_nr(n).unwrap();
    for n in [
        "read",
        "write",
        "openat",
        "close",
        "mkdirat",
        "newfstatat",
        "execve",
        "exit_group",
        "getpid",
    ] {
        assert_eq!(at(name(n), [0; 6]), allow, "{n}");
    }
    for n in ["mount", "setns", "unshare", "kexec_load", "bpf", "reboot"] {
        assert_eq!(at(name(n), [0; 6]), eperm, "{n}");
    }
    assert_eq!(at(name("clone3"), [0; 6]), enosys);
    // clone: no namespace flags (MASKED_EQ 0x7E020000 == 0), on the low word.
    let sigchld = libc::SIGCHLD as u64;
    assert_eq!(at(name("clone"), [sigchld, 0, 0, 0, 0, 0]), allow);
    let newns = libc::CLONE_NEWNS as u64 | sigchld;
    assert_eq!(at(name("clone"), [newns, 0, 0, 0, 0, 0]), eperm);
    // personality: 64-bit comparison, 0xffffffff but not 0x1_ffffffff.
    assert_eq!(at(name("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]), allow);
    assert_eq!(
        at(name("personality"), [0x1_ffff_ffff, 0, 0, 0, 0, 0]),
        eperm
    );
    // socket: anything but AF_VSOCK (40).
    assert_eq!(
        at(name("socket"), [libc::AF_INET as u64, 0, 0, 0, 0, 0]),
        allow
    );
    assert_eq!(
        at(name("socket"), [libc::AF_VSOCK as u64, 0, 0, 0, 0, 0]),
        eperm
    );
    // A number with no syscall: the default action.
    assert_eq!(at(1000, [0; 6]), eperm);
    // Another ABI's arch value: the bad-arch verdict (KILL_THREAD).
    for other in [Arch::X86_64, Arch::Riscv64, Arch::Aarch64] {
        let d = SeccompData::new(other, name("read"), [0; 6]);
        assert_eq!(run(&p.insns, &d).unwrap(), libc::SECCOMP_RET_KILL_THREAD);
    }
}
