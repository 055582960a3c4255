//! Compiler unit tests, run through the interpreter.

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator as Op, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::arch::X32_SYSCALL_BIT;
use crate::*;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_THREAD;
fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

fn sc(names: &[&str], action: Act) -> LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
        .build()
        .unwrap()
}

fn sc_args(names: &[&str], action: Act, args: &[(usize, Op, u64, Option<u64>)]) -> LinuxSyscall {
    let args = args
        .iter()
        .map(|&(index, op, value, two)| {
            let b = LinuxSeccompArgBuilder::default()
                .index(index)
                .op(op)
                .value(value);
            match two {
                Some(t) => b.value_two(t),
                None => b,
            }
            .build()
            .unwrap()
        })
        .collect::<Vec<_>>();
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
        .args(args)
        .build()
        .unwrap()
}

fn spec(default: Act, arches: &[OciArch], syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(default)
        .architectures(arches.to_vec())
        .syscalls(syscalls)
        .build()
        .unwrap()
}

fn verdict(p: &Program, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch.syscall_nr(name).unwrap();
    run(&p.insns, &SeccompData::new(arch, nr, args)).unwrap()
}

fn v0(p: &Program, arch: Arch, name: &str) -> u32 {
    verdict(p, arch, name, [0; 6])
}

#[test]
fn mkdir_errno_default_allow() {
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86_64],
        vec![sc(&["mkdir"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(v0(&p, Arch::X86_64, "mkdir"), errno(libc::EPERM));
    assert_eq!(v0(&p, Arch::X86_64, "mkdirat"), ALLOW);
    assert_eq!(v0(&p, Arch::X86_64, "read"), ALLOW);
    // Not a filter architecture: bad-arch verdict (KILL_THREAD by default).
    assert_eq!(v0(&p, Arch::X86, "mkdir"), KILL);
    assert_eq!(v0(&p, Arch::Aarch64, "mkdirat"), KILL);
    // x32 not listed: x32 syscalls on AUDIT_ARCH_X86_64 are a bad arch.
    assert_eq!(v0(&p, Arch::X32, "read"), KILL);
    // nr == -1 (tracer skip) is not treated as x32.
    let d = SeccompData::new(Arch::X86_64, u32::MAX, [0; 6]);
    assert_eq!(run(&p.insns, &d).unwrap(), ALLOW);
}

#[test]
fn bad_arch_action_is_configurable() {
    let s = spec(
        Act::ScmpActAllow,
        &[],
        vec![sc(&["mkdir"], Act::ScmpActErrno)],
    );
    let opts = CompileOptions {
        bad_arch_action: libc::SECCOMP_RET_KILL_PROCESS,
        ..Default::default()
    };
    let p = compile_with(&s, Arch::X86_64, &opts).unwrap();
    assert_eq!(p.arches, vec![Arch::X86_64]);
    assert_eq!(v0(&p, Arch::Arm, "read"), libc::SECCOMP_RET_KILL_PROCESS);
}

#[test]
fn errno_values_and_actions() {
    let mut s = spec(
        Act::ScmpActErrno,
        &[OciArch::ScmpArchX86_64],
        vec![
            sc(&["read"], Act::ScmpActAllow),
            sc(&["write"], Act::ScmpActLog),
            sc(&["getpid"], Act::ScmpActTrap),
            sc(&["gettid"], Act::ScmpActKill),
            sc(&["getppid"], Act::ScmpActKillProcess),
            sc(&["getuid"], Act::ScmpActKillThread),
            sc(&["getgid"], Act::ScmpActNotify),
            sc(&["geteuid"], Act::ScmpActTrace),
        ],
    );
    let mut with_errno = sc(&["mkdir"], Act::ScmpActErrno);
    with_errno.set_errno_ret(Some(38));
    let mut trace = sc(&["getegid"], Act::ScmpActTrace);
    trace.set_errno_ret(Some(1234));
    let mut list = s.syscalls().clone().unwrap();
    list.push(with_errno);
    list.push(trace);
    s.set_syscalls(Some(list));
    s.set_default_errno_ret(Some(libc::EACCES as u32));
    let p = compile(&s, Arch::X86_64).unwrap();
    let a = Arch::X86_64;
    assert_eq!(v0(&p, a, "read"), ALLOW);
    assert_eq!(v0(&p, a, "write"), libc::SECCOMP_RET_LOG);
    assert_eq!(v0(&p, a, "getpid"), libc::SECCOMP_RET_TRAP);
    assert_eq!(v0(&p, a, "gettid"), libc::SECCOMP_RET_KILL_THREAD);
    assert_eq!(v0(&p, a, "getppid"), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(v0(&p, a, "getuid"), libc::SECCOMP_RET_KILL_THREAD);
    assert_eq!(v0(&p, a, "getgid"), libc::SECCOMP_RET_USER_NOTIF);
    assert_eq!(
        v0(&p, a, "geteuid"),
        libc::SECCOMP_RET_TRACE | libc::EPERM as u32
    );
    assert_eq!(v0(&p, a, "getegid"), libc::SECCOMP_RET_TRACE | 1234);
    assert_eq!(v0(&p, a, "mkdir"), errno(38));
    // default uses defaultErrnoRet
    assert_eq!(v0(&p, a, "mount"), errno(libc::EACCES));
    assert!(p.uses_notify);
    assert_ne!(
        filter_flags(&s, &p) & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        0
    );
}

#[test]
fn invalid_specs_are_rejected() {
    let mut bad = sc(&["read"], Act::ScmpActAllow);
    bad.set_errno_ret(Some(1));
    let s = spec(Act::ScmpActErrno, &[], vec![bad]);
    assert!(matches!(
        compile(&s, Arch::X86_64),
        Err(SeccompError::ErrnoNotSupported(_))
    ));

    let s = spec(Act::ScmpActNotify, &[], vec![]);
    assert!(matches!(
        compile(&s, Arch::X86_64),
        Err(SeccompError::NotifyAsDefault)
    ));

    let s = spec(
        Act::ScmpActAllow,
        &[],
        vec![sc_args(
            &["read"],
            Act::ScmpActErrno,
            &[(6, Op::ScmpCmpEq, 0, None)],
        )],
    );
    assert!(matches!(
        compile(&s, Arch::X86_64),
        Err(SeccompError::InvalidArgIndex(6))
    ));

    let mut big = sc(&["read"], Act::ScmpActErrno);
    big.set_errno_ret(Some(0x1_0000));
    let s = spec(Act::ScmpActAllow, &[], vec![big]);
    assert!(matches!(
        compile(&s, Arch::X86_64),
        Err(SeccompError::InvalidErrno(0x1_0000))
    ));
}

#[test]
fn unknown_everywhere_is_an_error() {
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86_64, OciArch::ScmpArchAarch64],
        vec![sc(
            &["mkdir", "definitely_not_a_syscall"],
            Act::ScmpActErrno,
        )],
    );
    match compile(&s, Arch::X86_64) {
        Err(SeccompError::UnknownSyscall(n)) => assert_eq!(n, "definitely_not_a_syscall"),
        other => panic!("unexpected {other:?}"),
    }
    let opts = CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    };
    let p = compile_with(&s, Arch::X86_64, &opts).unwrap();
    assert_eq!(v0(&p, Arch::X86_64, "mkdir"), errno(libc::EPERM));
}

#[test]
fn unknown_on_some_arches_is_skipped_there() {
    // mkdir has no number on aarch64 (generic table): skipped there only.
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86_64, OciArch::ScmpArchAarch64],
        vec![sc(&["mkdir", "mkdirat"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(v0(&p, Arch::X86_64, "mkdir"), errno(libc::EPERM));
    assert_eq!(v0(&p, Arch::Aarch64, "mkdirat"), errno(libc::EPERM));
    assert_eq!(v0(&p, Arch::Aarch64, "read"), ALLOW);
}

#[test]
fn several_architectures_use_their_own_numbers() {
    let s = spec(
        Act::ScmpActAllow,
        &[
            OciArch::ScmpArchX86_64,
            OciArch::ScmpArchX86,
            OciArch::ScmpArchAarch64,
            OciArch::ScmpArchLoongarch64,
            OciArch::ScmpArchMips64,
            OciArch::ScmpArchS390x,
            OciArch::ScmpArchPpc64le,
            OciArch::ScmpArchRiscv64,
            OciArch::ScmpArchArm,
            OciArch::ScmpArchMipsel,
        ],
        vec![sc(&["setns"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(p.arches.len(), 10);
    let cases = [
        (Arch::X86_64, 308),
        (Arch::X86, 346),
        (Arch::Aarch64, 268),
        (Arch::Loongarch64, 268),
        (Arch::Mips64, 5303),
    ];
    for (arch, nr) in cases {
        assert_eq!(arch.syscall_nr("setns"), Some(nr), "{arch:?}");
        let d = SeccompData::new(arch, nr, [0; 6]);
        assert_eq!(run(&p.insns, &d).unwrap(), errno(libc::EPERM), "{arch:?}");
    }
    for arch in p.arches.clone() {
        assert_eq!(v0(&p, arch, "setns"), errno(libc::EPERM), "{arch:?}");
        assert_eq!(v0(&p, arch, "read"), ALLOW, "{arch:?}");
    }
    // x86's setns number (346) on x86_64 is not setns.
    let d = SeccompData::new(Arch::X86_64, 346, [0; 6]);
    assert_eq!(run(&p.insns, &d).unwrap(), ALLOW);
    // 308 on x86 is not setns either.
    let d = SeccompData::new(Arch::X86, 308, [0; 6]);
    assert_eq!(run(&p.insns, &d).unwrap(), ALLOW);
    // Unlisted arch.
    assert_eq!(v0(&p, Arch::Mipsel64, "setns"), KILL);
}

#[test]
fn x32_section_when_listed() {
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86_64, OciArch::ScmpArchX32],
        vec![sc(&["setns"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(v0(&p, Arch::X32, "setns"), errno(libc::EPERM));
    assert_eq!(v0(&p, Arch::X32, "read"), ALLOW);
    assert_eq!(v0(&p, Arch::X86_64, "setns"), errno(libc::EPERM));
    let d = SeccompData::new(Arch::X86_64, 308 | X32_SYSCALL_BIT, [0; 6]);
    assert_eq!(run(&p.insns, &d).unwrap(), errno(libc::EPERM));
}

#[test]
fn mips_n32_gets_a_section_unsupported_arch_is_skipped() {
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchMips64n32, OciArch::ScmpArchPpc64],
        vec![sc(&["setns"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::Mips64).unwrap();
    assert_eq!(p.arches, vec![Arch::Mips64, Arch::Mips64N32]);
    // ppc64 big-endian has no `Arch`: no section, bad-arch verdict.
    assert_eq!(p.skipped_arches, vec![OciArch::ScmpArchPpc64]);
    // n32 setns is 6308 (syscall_n32.tbl 308 + 6000), n64 setns 5303.
    let n32 = |nr| SeccompData {
        nr,
        arch: Arch::Mips64N32.audit_arch(),
        ..Default::default()
    };
    assert_eq!(run(&p.insns, &n32(6308)).unwrap(), errno(libc::EPERM));
    assert_eq!(run(&p.insns, &n32(5303)).unwrap(), ALLOW);
    assert_eq!(v0(&p, Arch::Mips64, "setns"), errno(libc::EPERM));
    let ppc64 = SeccompData {
        nr: 350,
        arch: OciArch::ScmpArchPpc64 as u32,
        ..Default::default()
    };
    assert_eq!(run(&p.insns, &ppc64).unwrap(), KILL);
}

const BIG: u64 = 0x0000_0005_0000_0010; // above 2^32

/// Every operator against a 64-bit value, on little- and big-endian ABIs.
#[test]
fn operators_on_64bit_values() {
    let ops = [
        (Op::ScmpCmpEq, "eq"),
        (Op::ScmpCmpNe, "ne"),
        (Op::ScmpCmpLt, "lt"),
        (Op::ScmpCmpLe, "le"),
        (Op::ScmpCmpGe, "ge"),
        (Op::ScmpCmpGt, "gt"),
    ];
    let probes = [
        0u64,
        0x10,
        BIG - 1,
        BIG,
        BIG + 1,
        BIG - (1 << 32), // same low word, smaller high word
        BIG + (1 << 32), // same low word, bigger high word
        0x0000_0005_ffff_ffff,
        0x0000_0004_ffff_ffff,
        u64::MAX,
    ];
    for arch in [Arch::X86_64, Arch::S390x, Arch::Mips64, Arch::Aarch64] {
        let oarch = arch.to_oci();
        for (op, opname) in ops {
            let s = spec(
                Act::ScmpActAllow,
                &[oarch],
                vec![sc_args(
                    &["setns"],
                    Act::ScmpActErrno,
                    &[(2, op, BIG, None)],
                )],
            );
            let p = compile(&s, arch).unwrap();
            for x in probes {
                let want = match op {
                    Op::ScmpCmpEq => x == BIG,
                    Op::ScmpCmpNe => x != BIG,
                    Op::ScmpCmpLt => x < BIG,
                    Op::ScmpCmpLe => x <= BIG,
                    Op::ScmpCmpGe => x >= BIG,
                    Op::ScmpCmpGt => x > BIG,
                    Op::ScmpCmpMaskedEq => unreachable!(),
                };
                let got = verdict(&p, arch, "setns", [0, 0, x, 0, 0, 0]);
                let want = if want { errno(libc::EPERM) } else { ALLOW };
                assert_eq!(got, want, "{arch:?} {opname} {x:#x}");
                // Other arguments do not matter.
                let got = verdict(&p, arch, "setns", [x, x, x, !x, !x, !x]);
                assert_eq!(got, want, "{arch:?} {opname} {x:#x} (noise)");
            }
        }
    }
}

#[test]
fn masked_eq_on_64bit_values() {
    let mask = 0xff00_0000_0000_00f0u64;
    let datum = 0x1200_0000_0000_0030u64;
    for arch in [Arch::X86_64, Arch::S390x] {
        let s = spec(
            Act::ScmpActAllow,
            &[arch.to_oci()],
            vec![sc_args(
                &["setns"],
                Act::ScmpActErrno,
                &[(0, Op::ScmpCmpMaskedEq, mask, Some(datum))],
            )],
        );
        let p = compile(&s, arch).unwrap();
        for x in [
            datum,
            datum | 0x00ff_ffff_ffff_ff0f,
            0x1300_0000_0000_0030,
            0x1200_0000_0000_0020,
            0,
            u64::MAX,
        ] {
            let want = if x & mask == datum {
                errno(libc::EPERM)
            } else {
                ALLOW
            };
            assert_eq!(
                verdict(&p, arch, "setns", [x, 0, 0, 0, 0, 0]),
                want,
                "{x:#x}"
            );
        }
    }
}

#[test]
fn thirty_two_bit_arches_compare_low_word() {
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86],
        vec![sc_args(
            &["setns"],
            Act::ScmpActErrno,
            &[(1, Op::ScmpCmpGt, 10, None)],
        )],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(
        verdict(&p, Arch::X86, "setns", [0, 11, 0, 0, 0, 0]),
        errno(1)
    );
    assert_eq!(verdict(&p, Arch::X86, "setns", [0, 10, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        verdict(&p, Arch::X86_64, "setns", [0, 1 << 40, 0, 0, 0, 0]),
        errno(1)
    );
}

#[test]
fn conditions_on_one_rule_are_anded() {
    let s = spec(
        Act::ScmpActAllow,
        &[],
        vec![sc_args(
            &["setns"],
            Act::ScmpActErrno,
            &[(0, Op::ScmpCmpEq, 1, None), (1, Op::ScmpCmpEq, 2, None)],
        )],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    let a = Arch::X86_64;
    assert_eq!(verdict(&p, a, "setns", [1, 2, 0, 0, 0, 0]), errno(1));
    assert_eq!(verdict(&p, a, "setns", [1, 3, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&p, a, "setns", [0, 2, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn same_argument_twice_is_ored_like_runc() {
    let s = spec(
        Act::ScmpActErrno,
        &[],
        vec![sc_args(
            &["personality"],
            Act::ScmpActAllow,
            &[(0, Op::ScmpCmpEq, 0, None), (0, Op::ScmpCmpEq, 8, None)],
        )],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    let a = Arch::X86_64;
    assert_eq!(verdict(&p, a, "personality", [0; 6]), ALLOW);
    assert_eq!(verdict(&p, a, "personality", [8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(verdict(&p, a, "personality", [9, 0, 0, 0, 0, 0]), errno(1));
}

#[test]
fn multiple_rules_per_syscall_first_match_wins() {
    let mut r2 = sc_args(
        &["setns"],
        Act::ScmpActErrno,
        &[(0, Op::ScmpCmpGe, 5, None)],
    );
    r2.set_errno_ret(Some(22));
    let s = spec(
        Act::ScmpActAllow,
        &[],
        vec![
            sc_args(
                &["setns"],
                Act::ScmpActErrno,
                &[(0, Op::ScmpCmpGe, 10, None)],
            ),
            r2,
            sc_args(
                &["setns"],
                Act::ScmpActKillProcess,
                &[(1, Op::ScmpCmpEq, 7, None)],
            ),
        ],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    let a = Arch::X86_64;
    assert_eq!(verdict(&p, a, "setns", [10, 7, 0, 0, 0, 0]), errno(1));
    assert_eq!(verdict(&p, a, "setns", [6, 7, 0, 0, 0, 0]), errno(22));
    assert_eq!(
        verdict(&p, a, "setns", [1, 7, 0, 0, 0, 0]),
        libc::SECCOMP_RET_KILL_PROCESS
    );
    assert_eq!(verdict(&p, a, "setns", [1, 8, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn unconditional_rule_overrides_conditional_like_libseccomp() {
    let s = spec(
        Act::ScmpActAllow,
        &[],
        vec![
            sc_args(
                &["setns"],
                Act::ScmpActErrno,
                &[(0, Op::ScmpCmpEq, 1, None)],
            ),
            sc(&["setns"], Act::ScmpActTrap),
            sc(&["setns"], Act::ScmpActKillProcess),
            // redundant with the default: dropped like runc does
            sc(&["read"], Act::ScmpActAllow),
        ],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    let a = Arch::X86_64;
    assert_eq!(
        verdict(&p, a, "setns", [1, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_TRAP
    );
    assert_eq!(
        verdict(&p, a, "setns", [2, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_TRAP
    );
    assert_eq!(v0(&p, a, "read"), ALLOW);
}

#[test]
fn native_arch_in_list_and_duplicates() {
    let s = spec(
        Act::ScmpActAllow,
        &[
            OciArch::ScmpArchNative,
            OciArch::ScmpArchX86_64,
            OciArch::ScmpArchAarch64,
            OciArch::ScmpArchAarch64,
        ],
        vec![sc(&["setns"], Act::ScmpActErrno)],
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert_eq!(p.arches, vec![Arch::X86_64, Arch::Aarch64]);
}

/// Many conditional rules: program is long, jumps need trampolines, and the
/// interpreter still agrees with the intended semantics.
#[test]
fn long_program_with_far_jumps() {
    let names: Vec<&str> = [
        "setns",
        "unshare",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
    ]
    .to_vec();
    let mut rules = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for v in 0..60u64 {
            rules.push(sc_args(
                &[n],
                Act::ScmpActErrno,
                &[(0, Op::ScmpCmpEq, v * 1000 + i as u64 + (1 << 33), None)],
            ));
        }
    }
    rules.push(sc(&Arch::ALL_X86_64_NAMES_SAMPLE, Act::ScmpActErrno));
    let s = spec(
        Act::ScmpActAllow,
        &[OciArch::ScmpArchX86_64, OciArch::ScmpArchAarch64],
        rules,
    );
    let p = compile(&s, Arch::X86_64).unwrap();
    assert!(p.len() > 1000, "{}", p.len());
    let has_ja = p.insns.iter().any(|i| i.code == bpf::BPF_JMP | bpf::BPF_JA);
    assert!(has_ja);
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for (i, n) in names.iter().enumerate() {
            if arch.syscall_nr(n).is_none() {
                continue;
            }
            for v in [0u64, 30, 59] {
                let x = v * 1000 + i as u64 + (1 << 33);
                assert_eq!(
                    verdict(&p, arch, n, [x, 0, 0, 0, 0, 0]),
                    errno(1),
                    "{n} {x}"
                );
                assert_eq!(
                    verdict(&p, arch, n, [x + 1, 0, 0, 0, 0, 0]),
                    ALLOW,
                    "{n} {x}"
                );
            }
        }
        for n in Arch::ALL_X86_64_NAMES_SAMPLE {
            if arch.syscall_nr(n).is_some() {
                assert_eq!(v0(&p, arch, n), errno(1), "{n}");
            }
        }
        assert_eq!(v0(&p, arch, "read"), ALLOW);
    }
}

#[test]
fn too_long_program_is_a_clear_error() {
    let mut rules = Vec::new();
    for v in 0..1200u64 {
        rules.push(sc_args(
            &["setns"],
            Act::ScmpActErrno,
            &[(0, Op::ScmpCmpEq, v, None)],
        ));
    }
    let s = spec(Act::ScmpActAllow, &[], rules);
    match compile(&s, Arch::X86_64) {
        Err(SeccompError::TooLong { len, max }) => {
            assert_eq!(max, 4096);
            assert!(len > 4096);
        }
        other => panic!("unexpected {other:?}"),
    }
}

impl Arch {
    const ALL_X86_64_NAMES_SAMPLE: [&'static str; 8] = [
        "kexec_load",
        "init_module",
        "delete_module",
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "bpf",
    ];
}

/// Independent evaluation of the documented semantics straight from the
/// spec, for the randomized cross-check below.
fn reference(s: &LinuxSeccomp, arch: Arch, nr: u32, args: [u64; 6]) -> u32 {
    let act = |a: Act, e: Option<u32>| -> u32 {
        match a {
            Act::ScmpActAllow => ALLOW,
            Act::ScmpActErrno => libc::SECCOMP_RET_ERRNO | e.unwrap_or(1),
            Act::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Act::ScmpActLog => libc::SECCOMP_RET_LOG,
            Act::ScmpActTrap => libc::SECCOMP_RET_TRAP,
            other => panic!("not generated: {other:?}"),
        }
    };
    let default = act(s.default_action(), s.default_errno_ret());
    let narrow = arch.is_32bit();
    let holds = |a: &oci_spec::runtime::LinuxSeccompArg| -> bool {
        let (mut x, mut v) = (args[a.index()], a.value());
        let mut two = a.value_two().unwrap_or(0);
        if narrow {
            x &= 0xffff_ffff;
            v &= 0xffff_ffff;
            two &= 0xffff_ffff;
        }
        match a.op() {
            Op::ScmpCmpEq => x == v,
            Op::ScmpCmpNe => x != v,
            Op::ScmpCmpLt => x < v,
            Op::ScmpCmpLe => x <= v,
            Op::ScmpCmpGe => x >= v,
            Op::ScmpCmpGt => x > v,
            Op::ScmpCmpMaskedEq => x & v == two & v,
        }
    };
    // (conditions-as-closure-result, verdict), in spec order.
    let mut uncond: Option<u32> = None;
    let mut first_cond: Option<u32> = None;
    for sc in s.syscalls().as_deref().unwrap_or(&[]) {
        let v = act(sc.action(), sc.errno_ret());
        if v == default || !sc.names().iter().any(|n| arch.syscall_nr(n) == Some(nr)) {
            continue;
        }
        let a = sc.args().as_deref().unwrap_or(&[]);
        if a.is_empty() {
            if uncond.is_none() {
                uncond = Some(v);
            }
            continue;
        }
        let mut idx: Vec<usize> = a.iter().map(|c| c.index()).collect();
        idx.sort_unstable();
        let repeated = idx.windows(2).any(|w| w[0] == w[1]);
        let m = if repeated {
            a.iter().any(holds)
        } else {
            a.iter().all(holds)
        };
        if m && first_cond.is_none() {
            first_cond = Some(v);
        }
    }
    uncond.or(first_cond).unwrap_or(default)
}

#[test]
fn randomized_cross_check_against_reference() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| -> u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = [
        "setns",
        "unshare",
        "read",
        "write",
        "mount",
        "personality",
        "clone",
        "socket",
        "ioctl",
        "prctl",
        "mkdirat",
        "openat",
    ];
    let interesting = [
        0u64,
        1,
        7,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0007,
        0x7fff_ffff_ffff_ffff,
        u64::MAX,
        0xff00,
    ];
    let ops = [
        Op::ScmpCmpEq,
        Op::ScmpCmpNe,
        Op::ScmpCmpLt,
        Op::ScmpCmpLe,
        Op::ScmpCmpGe,
        Op::ScmpCmpGt,
        Op::ScmpCmpMaskedEq,
    ];
    let acts = [
        Act::ScmpActAllow,
        Act::ScmpActErrno,
        Act::ScmpActKillProcess,
        Act::ScmpActLog,
        Act::ScmpActTrap,
    ];
    let all_arches = [
        Arch::X86_64,
        Arch::X86,
        Arch::X32,
        Arch::Aarch64,
        Arch::S390x,
        Arch::Mips64,
        Arch::Arm,
    ];
    for round in 0..150 {
        let mut arches = vec![OciArch::ScmpArchX86_64];
        for a in all_arches.iter().skip(1) {
            if rnd(2) == 0 {
                arches.push(a.to_oci());
            }
        }
        let mut rules = Vec::new();
        for _ in 0..(1 + rnd(if round % 10 == 0 { 120 } else { 25 })) {
            let n = names[rnd(names.len() as u64) as usize];
            let action = acts[rnd(acts.len() as u64) as usize];
            let nargs = rnd(4) as usize;
            let args: Vec<_> = (0..nargs)
                .map(|_| {
                    let op = ops[rnd(ops.len() as u64) as usize];
                    let v = interesting[rnd(interesting.len() as u64) as usize];
                    // Not pre-masked: the datum's bits outside the mask must be ignored.
                    let two = interesting[rnd(interesting.len() as u64) as usize];
                    (
                        rnd(6) as usize,
                        op,
                        v,
                        (op == Op::ScmpCmpMaskedEq).then_some(two),
                    )
                })
                .collect();
            let mut r = sc_args(&[n], action, &args);
            if action == Act::ScmpActErrno && rnd(2) == 0 {
                r.set_errno_ret(Some(rnd(200) as u32));
            }
            rules.push(r);
        }
        let default = [Act::ScmpActAllow, Act::ScmpActErrno][rnd(2) as usize];
        let s = spec(default, &arches, rules);
        let p = compile(&s, Arch::X86_64).unwrap();
        for arch in p.arches.clone() {
            for n in names {
                let Some(nr) = arch.syscall_nr(n) else {
                    continue;
                };
                for _ in 0..12 {
                    let mut args = [0u64; 6];
                    for a in &mut args {
                        let base = interesting[rnd(interesting.len() as u64) as usize];
                        *a = match rnd(4) {
                            0 => base.wrapping_add(1),
                            1 => base.wrapping_sub(1),
                            _ => base,
                        };
                    }
                    let got = run(&p.insns, &SeccompData::new(arch, nr, args)).unwrap();
                    let want = reference(&s, arch, nr, args);
                    assert_eq!(got, want, "round {round} {arch:?} {n} {args:x?}");
                }
            }
        }
    }
}
