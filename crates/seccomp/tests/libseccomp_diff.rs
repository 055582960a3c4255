//! Differential test: our compiler against libseccomp (2.5.4, Debian 12).
//!
//! For every ABI libseccomp 2.5 has (all of ours but loongarch64) and for
//! Docker's per-arch ABI groups, the same OCI profiles are compiled by
//! `rcrun_seccomp::compile_with` and by libseccomp the way runc does it
//! (`libseccomp_ref`). Both BPF programs run in our interpreter over many
//! generated `seccomp_data` inputs, and the verdicts (action and data) must
//! be identical.
//!
//! Inputs: every architecture value of the filter plus foreign ones (all
//! `SCMP_ARCH_*` values, their byte-order twins, 0, !0); syscall numbers
//! from both sides' tables for every name of the profile, their neighbours,
//! each with and without `__X32_SYSCALL_BIT`, and edge numbers (0, -1, -2,
//! 2^30 - 1, 2^31, ...); for syscalls with argument conditions, argument
//! vectors built from every condition: each rule satisfied, then one
//! argument at a time moved over boundary values of every condition value
//! (v-1, v, v+1, v with its high or low 32-bit word changed, ...), plus
//! seeded random vectors from the same pool.
//!
//! Where libseccomp and we differ by design, the difference is allowed for
//! exactly the syscall numbers concerned, each with its reason (see
//! `Reason`), and the test checks what it can there too:
//!
//! - `LibseccompTooOld`: libseccomp's table does not know the name on any
//!   ABI (a syscall newer than the library). It skips the name (runc does
//!   the same), we have a number: libseccomp's verdict must be the default.
//!   Debian's 2.5.4 knows every name of these profiles, so this is for other
//!   libseccomp builds.
//! - `OnlyOurs(name)` / `OnlyLibseccomp(name)`: the name is in one table on
//!   this ABI and not in the other; each is listed in `EXPECTED_NAME_DIFFS`
//!   with its reason, so a table change shows up here. The side without the
//!   name must give the default verdict.
//! - `Multiplexed`: on x86, s390x, ppc64le and mips o32, libseccomp also
//!   adds socket and SysV IPC rules to the `socketcall`/`ipc` multiplexer
//!   (`socketcall(call, args)` with a condition on `call`). We don't (the
//!   arguments of the real call are behind a pointer, and the kernel has
//!   direct syscalls for them, on x86 since 4.3/5.1), so only those
//!   multiplexer numbers may differ, and only for profiles with such names.
//! - Overlapping conditional rules (`overlap_explains`): when two or more
//!   conditional rules of one syscall with different actions match, we take
//!   the first in spec order and libseccomp the first in its decision tree.
//!   Allowed only if both verdicts come from matching rules and ours is the
//!   first.
//!
//! Everything else, including the arch dispatch, bad-arch verdicts, x32
//! numbers on an x86_64 filter, every operator on 64-bit values and on
//! 32-bit ABIs, AND/OR of conditions and several rules per syscall, must be
//! identical. Both of libseccomp's optimizer levels (priority order and
//! binary tree) are compared. Big-endian programs exported by libseccomp on
//! this little-endian host need a narrow repair first (`repair_cross_endian`,
//! a libseccomp defect).
//!
//! Why the `libseccomp` crate (linked, dev-dependency only) rather than
//! dlopen: its bindings come from libseccomp's headers, so the constants
//! and structures are not written by hand here, and a missing libseccomp
//! fails the build of this test loudly instead of skipping it. The build
//! needs Debian's `libseccomp-dev` (libseccomp.so); the library itself
//! never links libseccomp.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod libseccomp_ref;

use std::collections::{BTreeMap, BTreeSet};

use libseccomp_ref as lref;
use oci_spec::runtime::{Arch as OciArch, LinuxSeccomp, LinuxSeccompOperator as Op, LinuxSyscall};
use rcrun_seccomp::arch::{AUDIT_ARCH_LE, X32_SYSCALL_BIT};
use rcrun_seccomp::bpf::{BPF_K, BPF_RET};
use rcrun_seccomp::{compile_with, run, Arch, CompileOptions, Insn, SeccompData, UnknownSyscalls};

/// Every ABI libseccomp 2.5 supports and we have a table for.
const LIBSECCOMP_ARCHES: [Arch; 14] = [
    Arch::X86_64,
    Arch::X86,
    Arch::X32,
    Arch::Aarch64,
    Arch::Arm,
    Arch::Mips64,
    Arch::Mips64N32,
    Arch::Mips,
    Arch::Mipsel64,
    Arch::Mipsel64N32,
    Arch::Mipsel,
    Arch::Ppc64le,
    Arch::S390x,
    Arch::Riscv64,
];

/// The filters Docker builds (moby's `archMap`: native plus its
/// sub-architectures), restricted to ABIs both sides have (s390 31-bit and
/// ppc64 big-endian are not ours: they get the bad-arch verdict).
const GROUPS: [&[Arch]; 7] = [
    &[Arch::X86_64, Arch::X86, Arch::X32],
    &[Arch::Aarch64, Arch::Arm],
    &[Arch::Mips64, Arch::Mips, Arch::Mips64N32],
    &[Arch::Mips64N32, Arch::Mips, Arch::Mips64],
    &[Arch::Mipsel64, Arch::Mipsel, Arch::Mipsel64N32],
    &[Arch::Mipsel64N32, Arch::Mipsel, Arch::Mipsel64],
    &[Arch::X86, Arch::X86_64],
];

/// Every `SCMP_ARCH_*` value (the arch values a filter can be asked about).
const ALL_OCI_ARCHES: [OciArch; 23] = [
    OciArch::ScmpArchX86,
    OciArch::ScmpArchX86_64,
    OciArch::ScmpArchX32,
    OciArch::ScmpArchArm,
    OciArch::ScmpArchAarch64,
    OciArch::ScmpArchMips,
    OciArch::ScmpArchMips64,
    OciArch::ScmpArchMips64n32,
    OciArch::ScmpArchMipsel,
    OciArch::ScmpArchMipsel64,
    OciArch::ScmpArchMipsel64n32,
    OciArch::ScmpArchPpc,
    OciArch::ScmpArchPpc64,
    OciArch::ScmpArchPpc64le,
    OciArch::ScmpArchS390,
    OciArch::ScmpArchS390x,
    OciArch::ScmpArchParisc,
    OciArch::ScmpArchParisc64,
    OciArch::ScmpArchRiscv64,
    OciArch::ScmpArchLoongarch64,
    OciArch::ScmpArchM68k,
    OciArch::ScmpArchSh,
    OciArch::ScmpArchSheb,
];

/// Names that resolve on an ABI in one table and not in the other, with
/// the reason. `(arch, name, ours_has_it)`. The test fails if the set of
/// such differences for the profiles below is not exactly this list.
const EXPECTED_NAME_DIFFS: &[(Arch, &str, bool, &str)] = &[
    // ARM private syscalls (__ARM_NR_BASE + n, 0x0f0000..): in libseccomp's
    // table, in no table crate (they are not in the kernel's syscall.tbl).
    (
        Arch::Arm,
        "breakpoint",
        false,
        "ARM private syscall, no table crate has it",
    ),
    (
        Arch::Arm,
        "cacheflush",
        false,
        "ARM private syscall, no table crate has it",
    ),
    (
        Arch::Arm,
        "set_tls",
        false,
        "ARM private syscall, no table crate has it",
    ),
    // arm's uapi defines __NR_sync_file_range2 as __NR_arm_sync_file_range
    // (341); libseccomp only knows the arm_ name on arm.
    (
        Arch::Arm,
        "sync_file_range2",
        true,
        "uapi alias of arm_sync_file_range (341)",
    ),
    // syscall-numbers names arm's 270 `fadvise64_64`; the kernel and
    // libseccomp call it arm_fadvise64_64 (same syscall, arguments reordered).
    (
        Arch::Arm,
        "fadvise64_64",
        true,
        "syscall-numbers' name for arm_fadvise64_64 (270)",
    ),
    // syscall-numbers lists it for x32; syscall_64.tbl marks 453 `64`, so
    // the x32 number is not wired (ENOSYS with or without the rule).
    (
        Arch::X32,
        "map_shadow_stack",
        true,
        "64-bit-only in syscall_64.tbl, not an x32 syscall",
    ),
];

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

// ---------------------------------------------------------------- profiles

fn docker() -> LinuxSeccomp {
    serde_json::from_str(include_str!("data/docker-default.json")).unwrap()
}

/// Docker's profile as moby renders it for the group's native ABI: the
/// amd64 rendering in tests/data plus moby's per-arch blocks
/// (`includes.arches`) for that ABI, and s390's clone rule on arg 1.
fn docker_for(native: Arch) -> LinuxSeccomp {
    let mut spec = docker();
    let mut rules: Vec<LinuxSyscall> = spec.syscalls().clone().unwrap();
    let extra: &[&str] = match native {
        Arch::Ppc64le => &["sync_file_range2", "swapcontext"],
        Arch::Arm | Arch::Aarch64 => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        Arch::S390x => &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        Arch::Riscv64 => &["riscv_flush_icache"],
        _ => &[],
    };
    if !extra.is_empty() {
        rules.push(
            serde_json::from_value(serde_json::json!({
                "names": extra, "action": "SCMP_ACT_ALLOW"
            }))
            .unwrap(),
        );
    }
    if native == Arch::S390x {
        // "s390 parameter ordering for clone is different"
        for r in &mut rules {
            if r.names() == &["clone".to_string()] {
                *r = serde_json::from_value(serde_json::json!({
                    "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 1, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]
                }))
                .unwrap();
            }
        }
    }
    spec.set_syscalls(Some(rules));
    spec
}

/// All seven operators on 64-bit values (most above 2^32), AND and OR of
/// conditions, several rules for one syscall, an unconditional rule after a
/// conditional one, a socket rule (multiplexed by libseccomp on some ABIs).
fn operators() -> LinuxSeccomp {
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11,
             "args": [{"index": 0, "value": 0x1_0000_0002u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12,
             "args": [{"index": 2, "value": 0xffff_ffff_0000_0000u64, "op": "SCMP_CMP_NE"}]},
            {"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 0, "value": 0x2_0000_0000u64, "op": "SCMP_CMP_LT"}]},
            {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 14,
             "args": [{"index": 1, "value": 0x1_ffff_ffffu64, "op": "SCMP_CMP_LE"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15,
             "args": [{"index": 2, "value": 0x8000_0000_0000_0001u64, "op": "SCMP_CMP_GE"}]},
            {"names": ["fchownat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 16,
             "args": [{"index": 3, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GT"}]},
            {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 17,
             "args": [{"index": 1, "value": 0xffff_0000_ffff_00ffu64,
                       "valueTwo": 0x5400_0000_0000_0013u64, "op": "SCMP_CMP_MASKED_EQ"}]},
            // Datum outside the mask: can never match (both sides agree on that).
            {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
             "args": [{"index": 2, "value": 0xff, "valueTwo": 0x1ff, "op": "SCMP_CMP_MASKED_EQ"}]},
            // AND of conditions on two arguments, values on both sides of 2^32.
            {"names": ["mprotect"], "action": "SCMP_ACT_ERRNO", "errnoRet": 19,
             "args": [{"index": 0, "value": 0x7_0000_1000u64, "op": "SCMP_CMP_GE"},
                      {"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]},
            // AND of three conditions.
            {"names": ["fcntl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 20,
             "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_LE"},
                      {"index": 1, "value": 4, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 0x8000_0000u64, "op": "SCMP_CMP_NE"}]},
            // The same argument twice: one rule per condition (ORed), as runc does.
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 21,
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 0x1_0000_0013u64, "op": "SCMP_CMP_EQ"}]},
            // Several rules for one syscall, disjoint conditions, mixed actions.
            {"names": ["futex"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["futex"], "action": "SCMP_ACT_ERRNO", "errnoRet": 23,
             "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["futex"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GT"}]},
            {"names": ["futex"], "action": "SCMP_ACT_TRAP",
             "args": [{"index": 1, "value": 0x80, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 0x80}]},
            // A conditional rule, then an unconditional one for the same syscall.
            {"names": ["prctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 24,
             "args": [{"index": 0, "value": 22, "op": "SCMP_CMP_EQ"}]},
            {"names": ["prctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 25},
            // socket: multiplexed through socketcall by libseccomp on some ABIs.
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 26,
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 27,
             "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28,
             "args": [{"index": 5, "value": 0xffff_ffff_ffff_fffeu64, "op": "SCMP_CMP_GT"},
                      {"index": 4, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_LT"}]}
        ]
    }))
    .unwrap()
}

/// Every action, with and without errnoRet, defaultErrnoRet, a rule equal
/// to the default (dropped by both), conditional ALLOW under an ERRNO
/// default.
fn actions() -> LinuxSeccomp {
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "syscalls": [
            {"names": ["read", "write", "close", "exit_group", "rt_sigreturn", "brk"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 17},
            {"names": ["unlinkat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["fchdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kexec_load"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL"},
            {"names": ["uname"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 42},
            {"names": ["getppid"], "action": "SCMP_ACT_TRACE"},
            {"names": ["gettid"], "action": "SCMP_ACT_LOG"},
            {"names": ["mknodat"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2,
             "args": [{"index": 2, "value": 0o100, "valueTwo": 0o100, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["openat"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 0o100, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["setns"], "action": "SCMP_ACT_LOG",
             "args": [{"index": 1, "value": 0x4000_0000u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["setns"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 1, "value": 0x2000_0000u64, "op": "SCMP_CMP_EQ"}]}
        ]
    }))
    .unwrap()
}

fn profiles(native: Arch) -> Vec<(&'static str, LinuxSeccomp)> {
    vec![
        ("docker", docker_for(native)),
        ("operators", operators()),
        ("actions", actions()),
    ]
}

// ------------------------------------------------------------- compilation

fn with_arches(spec: &LinuxSeccomp, arches: &[Arch]) -> LinuxSeccomp {
    let mut s = spec.clone();
    s.set_architectures(Some(arches.iter().map(|a| a.to_oci()).collect()));
    s
}

fn ours(spec: &LinuxSeccomp, arches: &[Arch]) -> Vec<Insn> {
    let opts = CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    };
    let p = compile_with(&with_arches(spec, arches), arches[0], &opts).unwrap();
    assert_eq!(
        p.arches, arches,
        "our filter has exactly the requested ABIs"
    );
    p.insns
}

const BPF_RET_K: u16 = BPF_RET | BPF_K;

/// libseccomp's program for `spec`; big-endian programs are repaired for
/// libseccomp's cross-endian export defect (see `repair_cross_endian`).
fn theirs(
    spec: &LinuxSeccomp,
    arches: &[Arch],
    optimize: u32,
    mine: &[Insn],
) -> (Vec<Insn>, usize) {
    let mut insns = lref::build(&with_arches(spec, arches), arches, optimize)
        .unwrap_or_else(|e| panic!("libseccomp on {arches:?}: {e}"))
        .insns;
    let repaired = if arches[0].is_big_endian() {
        repair_cross_endian(&mut insns, mine)
    } else {
        0
    };
    // Every `ret` of libseccomp's program must be a verdict of the profile
    // (i.e. one of ours): this also keeps the repair above from hiding
    // anything else.
    let verdicts = ret_values(mine);
    for i in insns.iter().filter(|i| i.code == BPF_RET_K) {
        assert!(
            verdicts.contains(&i.k),
            "libseccomp on {arches:?}: ret {:#010x} is no verdict of the profile ({verdicts:x?})",
            i.k
        );
    }
    (insns, repaired)
}

/// libseccomp 2.5.4 defect, big-endian filters exported on a little-endian
/// host only: when a jump to a `ret` is longer than 255, gen_bpf.c's
/// `_gen_bpf_build_jmp_ret` puts a copy of the `ret` closer, built with
/// `_gen_bpf_action(state, NULL, blk_ret->blks[0].k.tgt.imm_k)`. That `k`
/// is already in target byte order and is converted again, so the copy
/// returns the byte-swapped action (ALLOW 0x7fff0000 becomes 0x0000ff7f,
/// i.e. KILL_THREAD). On a big-endian host the conversion is the identity
/// and the program is right, which is why this does not show on real
/// s390x/mips machines.
///
/// The repair is narrow: a `ret` whose value is no verdict of the profile
/// (the `ret` values of our program) but whose byte swap is, gets the
/// swapped value. Any other unknown `ret` value fails the test.
fn repair_cross_endian(lib: &mut [Insn], mine: &[Insn]) -> usize {
    let verdicts = ret_values(mine);
    let mut n = 0;
    for i in lib.iter_mut().filter(|i| i.code == BPF_RET_K) {
        if !verdicts.contains(&i.k) && verdicts.contains(&i.k.swap_bytes()) {
            i.k = i.k.swap_bytes();
            n += 1;
        }
    }
    n
}

fn ret_values(prog: &[Insn]) -> BTreeSet<u32> {
    prog.iter()
        .filter(|i| i.code == BPF_RET_K)
        .map(|i| i.k)
        .collect()
}

/// The verdict of `spec`'s default action (as our compiler encodes it).
fn default_verdict(spec: &LinuxSeccomp) -> u32 {
    let empty = {
        let mut s = spec.clone();
        s.set_syscalls(Some(vec![]));
        s
    };
    let p = ours(&empty, &[Arch::X86_64]);
    run(&p, &SeccompData::new(Arch::X86_64, 0, [0; 6])).unwrap()
}

// ----------------------------------------------------------- differences

/// Why the verdicts may differ at a syscall number of an ABI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    /// libseccomp does not know the name on any ABI.
    LibseccompTooOld(String),
    /// Our table has the name on this ABI, libseccomp's does not.
    OnlyOurs(String),
    /// libseccomp's table has the name on this ABI, ours does not.
    OnlyLibseccomp(String),
    /// libseccomp puts a rule for the name on this multiplexer.
    Multiplexed(String),
}

fn names(spec: &LinuxSeccomp) -> BTreeSet<String> {
    spec.syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names().iter().cloned())
        .collect()
}

fn conditional_names(spec: &LinuxSeccomp) -> BTreeSet<String> {
    spec.syscalls()
        .iter()
        .flatten()
        .filter(|s| s.args().as_ref().is_some_and(|a| !a.is_empty()))
        .flat_map(|s| s.names().iter().cloned())
        .collect()
}

/// Both tables' numbers for `name` on `arch`: (ours, libseccomp's
/// `seccomp_syscall_resolve_name_arch`, libseccomp's rewritten number).
/// libseccomp's negative pseudo numbers (not on this ABI) are `None`;
/// `known` says whether libseccomp knows the name at all.
struct Resolved {
    ours: Option<u32>,
    lib: Option<u32>,
    lib_rewrite: Option<u32>,
    known: bool,
}

fn resolve(arch: Arch, name: &str) -> Resolved {
    let t = lref::resolve(arch, name);
    let pos = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
    Resolved {
        ours: arch.syscall_nr(name),
        lib: pos(t),
        lib_rewrite: pos(lref::resolve_rewrite(arch, name)),
        known: t.is_some(),
    }
}

/// Per ABI: the syscall numbers where the verdicts may differ, with why.
/// Records the name-table differences in `seen` (checked against
/// EXPECTED_NAME_DIFFS) and fails on real conflicts (both tables know a
/// name on an ABI, with different numbers).
fn allowed_diffs(
    spec: &LinuxSeccomp,
    arches: &[Arch],
    seen: &mut BTreeSet<(Arch, String, bool)>,
) -> BTreeMap<(Arch, u32), Vec<Reason>> {
    let mut out: BTreeMap<(Arch, u32), Vec<Reason>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for &a in arches {
        for name in names(spec) {
            let r = resolve(a, &name);
            // libseccomp puts the rule on the multiplexer (and also on the
            // direct number where it knows one, which must then agree).
            if let Some(m) = r.lib_rewrite.filter(|&m| Some(m) != r.lib) {
                out.entry((a, m))
                    .or_default()
                    .push(Reason::Multiplexed(name.clone()));
                continue;
            }
            let reason = match (r.ours, r.lib) {
                (o, t) if o == t => continue,
                (Some(o), Some(t)) => {
                    conflicts.push(format!("{a:?} {name}: ours {o}, libseccomp {t}"));
                    continue;
                }
                (Some(o), None) if !r.known => (o, Reason::LibseccompTooOld(name.clone())),
                (Some(o), None) => {
                    seen.insert((a, name.clone(), true));
                    (o, Reason::OnlyOurs(name.clone()))
                }
                (None, Some(t)) => {
                    seen.insert((a, name.clone(), false));
                    (t, Reason::OnlyLibseccomp(name.clone()))
                }
                (None, None) => continue,
            };
            out.entry((a, reason.0)).or_default().push(reason.1);
        }
    }
    assert!(
        conflicts.is_empty(),
        "syscall tables disagree with libseccomp:\n{}",
        conflicts.join("\n")
    );
    out
}

/// The verdict of an OCI action (runc's mapping, as SECCOMP_RET_* values).
fn verdict_of(act: oci_spec::runtime::LinuxSeccompAction, errno: Option<u32>) -> u32 {
    use oci_spec::runtime::LinuxSeccompAction as A;
    let e = errno.unwrap_or(libc::EPERM as u32);
    match act {
        A::ScmpActKill | A::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        A::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        A::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | e,
        A::ScmpActTrace => libc::SECCOMP_RET_TRACE | e,
        A::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        A::ScmpActLog => libc::SECCOMP_RET_LOG,
        A::ScmpActNotify => libc::SECCOMP_RET_USER_NOTIF,
    }
}

/// Whether one condition holds on `arch` (32-bit ABIs compare the low
/// words only; MASKED_EQ masks the datum too).
fn holds(arch: Arch, c: &oci_spec::runtime::LinuxSeccompArg, args: &[u64; 6]) -> bool {
    let w = if arch.is_32bit() {
        0xffff_ffff
    } else {
        u64::MAX
    };
    let (x, v) = (args[c.index()] & w, c.value() & w);
    match c.op() {
        Op::ScmpCmpEq => x == v,
        Op::ScmpCmpNe => x != v,
        Op::ScmpCmpLt => x < v,
        Op::ScmpCmpLe => x <= v,
        Op::ScmpCmpGe => x >= v,
        Op::ScmpCmpGt => x > v,
        Op::ScmpCmpMaskedEq => x & v == c.value_two().unwrap_or(0) & v,
    }
}

/// Overlapping conditional rules: several conditional rules of the
/// syscall (`nr` on `arch`) match `args`, with different verdicts, and the
/// syscall has no unconditional rule. We take the first in spec order;
/// libseccomp takes the first in its decision-tree order (it sorts the
/// conditions of one syscall by argument, operator class and value). Both
/// verdicts must come from matching rules, and ours must be the first.
fn overlap_explains(
    spec: &LinuxSeccomp,
    arch: Arch,
    nr: u32,
    args: &[u64; 6],
    ours: u32,
    lib: u32,
) -> bool {
    let default = verdict_of(spec.default_action(), spec.default_errno_ret());
    let mut matching = Vec::new();
    for sc in spec.syscalls().iter().flatten() {
        let v = verdict_of(sc.action(), sc.errno_ret());
        if v == default || !sc.names().iter().any(|n| arch.syscall_nr(n) == Some(nr)) {
            continue;
        }
        let conds = sc.args().as_deref().unwrap_or(&[]);
        if conds.is_empty() {
            return false;
        }
        let mut idx: Vec<usize> = conds.iter().map(|c| c.index()).collect();
        idx.sort_unstable();
        let ored = idx.windows(2).any(|w| w[0] == w[1]);
        let m = if ored {
            conds.iter().any(|c| holds(arch, c, args))
        } else {
            conds.iter().all(|c| holds(arch, c, args))
        };
        if m {
            matching.push(v);
        }
    }
    let distinct: BTreeSet<u32> = matching.iter().copied().collect();
    distinct.len() > 1 && matching.first() == Some(&ours) && distinct.contains(&lib)
}

// ------------------------------------------------------------------ inputs

/// xorshift64*: deterministic inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// Values around `v`: itself, neighbours, each 32-bit half changed alone.
fn around(v: u64) -> Vec<u64> {
    let (hi, lo) = (v >> 32, v & 0xffff_ffff);
    vec![
        v,
        v.wrapping_sub(1),
        v.wrapping_add(1),
        lo,
        hi << 32,
        v ^ (1 << 32),
        v ^ (1 << 63),
        v ^ 1,
        (hi.wrapping_add(1) << 32) | lo,
        (hi.wrapping_sub(1) << 32) | lo,
        (hi << 32) | 0xffff_ffff,
        (hi << 32) | lo.wrapping_add(1),
        !v,
    ]
}

/// Argument vectors for the conditional syscalls of `spec`.
fn arg_vectors(spec: &LinuxSeccomp, rng: &mut Rng) -> Vec<[u64; 6]> {
    let mut pool: BTreeSet<u64> = [0, 1, u64::MAX, 1 << 32, (1 << 32) - 1, 1 << 63, 0x8000_0000]
        .into_iter()
        .collect();
    let mut out: Vec<[u64; 6]> = Vec::new();
    for sc in spec.syscalls().iter().flatten() {
        let args = sc.args().as_deref().unwrap_or(&[]);
        if args.is_empty() {
            continue;
        }
        // A vector that satisfies every condition of the rule.
        let mut sat = [0u64; 6];
        for a in args {
            let v = a.value();
            sat[a.index()] = match a.op() {
                Op::ScmpCmpEq | Op::ScmpCmpLe | Op::ScmpCmpGe => v,
                Op::ScmpCmpNe | Op::ScmpCmpGt => v.wrapping_add(1),
                Op::ScmpCmpLt => v.wrapping_sub(1),
                Op::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            };
        }
        out.push(sat);
        for a in args {
            let mut vals = around(a.value());
            if let Some(two) = a.value_two() {
                vals.extend(around(two));
                vals.push(two | !a.value());
                vals.push(two & a.value());
            }
            for &v in &vals {
                pool.insert(v);
                for i in 0..6 {
                    let mut x = sat;
                    x[i] = v;
                    out.push(x);
                    let mut z = [0u64; 6];
                    z[i] = v;
                    out.push(z);
                }
            }
        }
    }
    let pool: Vec<u64> = pool.into_iter().collect();
    for _ in 0..300 {
        let mut x = [0u64; 6];
        for v in &mut x {
            *v = rng.pick(&pool);
        }
        out.push(x);
    }
    out.sort();
    out.dedup();
    out
}

/// Arguments for syscalls without conditions.
const PLAIN_ARGS: [[u64; 6]; 3] = [[0; 6], [u64::MAX; 6], [1, 2, 3, 0x1_0000_0004, 5, 6]];

/// Edge syscall numbers: 0, 1, -1 (a tracer's "skip"), -2, around
/// `__X32_SYSCALL_BIT` and 2^31.
fn edge_nrs() -> Vec<u32> {
    vec![
        0,
        1,
        u32::MAX,
        u32::MAX - 1,
        X32_SYSCALL_BIT - 1,
        X32_SYSCALL_BIT,
        X32_SYSCALL_BIT + 1,
        0x7fff_ffff,
        0x8000_0000,
        0xc000_0000,
    ]
}

/// The syscall numbers of a filter to try: every number either table has
/// for a name of the profile on an ABI of the filter, its neighbours, each
/// with `__X32_SYSCALL_BIT` flipped, and the edge numbers. `cond`: per
/// ABI, the numbers that get the full argument vectors (conditional
/// syscalls and multiplexers).
struct Plan {
    nrs: Vec<u32>,
    cond: BTreeMap<Arch, BTreeSet<u32>>,
}

fn plan(
    spec: &LinuxSeccomp,
    arches: &[Arch],
    allowed: &BTreeMap<(Arch, u32), Vec<Reason>>,
) -> Plan {
    let conditional = conditional_names(spec);
    let mut nrs: BTreeSet<u32> = edge_nrs().into_iter().collect();
    let mut cond: BTreeMap<Arch, BTreeSet<u32>> = BTreeMap::new();
    for &a in arches {
        let c = cond.entry(a).or_default();
        for name in names(spec) {
            let r = resolve(a, &name);
            for n in [r.ours, r.lib, r.lib_rewrite].into_iter().flatten() {
                if conditional.contains(&name) {
                    c.insert(n);
                }
                for m in [n, n.wrapping_sub(1), n.wrapping_add(1)] {
                    nrs.insert(m);
                    nrs.insert(m ^ X32_SYSCALL_BIT);
                }
            }
        }
    }
    for &(a, nr) in allowed.keys() {
        cond.entry(a).or_default().insert(nr);
        nrs.insert(nr);
    }
    Plan {
        nrs: nrs.into_iter().collect(),
        cond,
    }
}

/// Architecture values: the filter's, every SCMP_ARCH_* value, each with
/// the byte-order bit flipped, 0 and !0.
fn arch_values() -> Vec<u32> {
    let mut v: BTreeSet<u32> = BTreeSet::new();
    for a in ALL_OCI_ARCHES {
        v.insert(a as u32);
        v.insert(a as u32 ^ AUDIT_ARCH_LE);
    }
    for a in Arch::ALL {
        v.insert(a.audit_arch());
    }
    v.insert(0);
    v.insert(u32::MAX);
    v.into_iter().collect()
}

/// The ABI of the filter whose rules apply to (arch value, nr).
fn section(arches: &[Arch], arch: u32, nr: u32) -> Option<Arch> {
    if arch == Arch::X86_64.audit_arch() {
        let x32 = nr & X32_SYSCALL_BIT != 0 && nr != u32::MAX;
        let want = if x32 { Arch::X32 } else { Arch::X86_64 };
        return arches.contains(&want).then_some(want);
    }
    arches.iter().copied().find(|a| a.audit_arch() == arch)
}

// -------------------------------------------------------------- the check

#[derive(Default)]
struct Stats {
    inputs: u64,
    /// Big-endian `ret`s repaired (see `repair_cross_endian`).
    repaired: usize,
    /// Inputs at numbers where a difference was allowed but none showed.
    equal_where_allowed: u64,
    /// Differences that were allowed, by reason.
    allowed: BTreeMap<String, u64>,
    /// Names libseccomp skipped as unknown (runc does the same).
    lib_unknown: BTreeSet<String>,
}

impl Stats {
    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} inputs, {} libseccomp `ret`s repaired, {} inputs equal where a difference was allowed",
            self.inputs, self.repaired, self.equal_where_allowed
        );
        for (k, n) in &self.allowed {
            eprintln!("  allowed difference x{n}: {k}");
        }
        eprintln!("  names libseccomp does not know: {:?}", self.lib_unknown);
    }
}

/// Compile `spec` for exactly `arches` with both compilers and compare the
/// verdicts over the generated inputs; panics with examples on any
/// difference that no `Reason` (or overlap) explains.
fn compare(
    label: &str,
    spec: &LinuxSeccomp,
    arches: &[Arch],
    seen: &mut BTreeSet<(Arch, String, bool)>,
    stats: &mut Stats,
) {
    let mine = ours(spec, arches);
    let allowed = allowed_diffs(spec, arches, seen);
    let default = default_verdict(spec);
    let plan = plan(spec, arches, &allowed);
    let vectors = arg_vectors(spec, &mut Rng(0x9e37_79b9_7f4a_7c15));
    let filter_values: BTreeSet<u32> = arches.iter().map(|a| a.audit_arch()).collect();
    let built = lref::build(&with_arches(spec, arches), arches, 1)
        .unwrap_or_else(|e| panic!("libseccomp on {arches:?}: {e}"));
    stats.lib_unknown.extend(built.unknown);

    for optimize in [1, 2] {
        let (lib, repaired) = theirs(spec, arches, optimize, &mine);
        stats.repaired += repaired;
        let mut bad: Vec<String> = Vec::new();
        let mut nbad = 0u64;
        for arch in arch_values() {
            let foreign = !filter_values.contains(&arch);
            for (k, &nr) in plan.nrs.iter().enumerate() {
                // Foreign arch values: a sample of numbers is enough.
                if foreign && k % 17 != 0 {
                    continue;
                }
                let sec = section(arches, arch, nr);
                let conditional = sec.is_some_and(|a| plan.cond[&a].contains(&nr));
                let args: &[[u64; 6]] = if conditional { &vectors } else { &PLAIN_ARGS };
                let why = sec.and_then(|a| allowed.get(&(a, nr)));
                for a in args {
                    let d = SeccompData {
                        nr,
                        arch,
                        instruction_pointer: 0x7fff_0000_1234,
                        args: *a,
                    };
                    let v1 = run(&mine, &d).unwrap_or_else(|e| panic!("ours {label}: {e}"));
                    let v2 = run(&lib, &d).unwrap_or_else(|e| panic!("libseccomp {label}: {e}"));
                    stats.inputs += 1;
                    if v1 == v2 {
                        stats.equal_where_allowed += u64::from(why.is_some());
                        continue;
                    }
                    let explained = why.is_some_and(|reasons| {
                        reasons.iter().all(|r| match r {
                            // libseccomp skipped the name: it must treat
                            // the number as unlisted.
                            Reason::LibseccompTooOld(_) | Reason::OnlyOurs(_) => v2 == default,
                            // We don't know the name: we must treat it as unlisted.
                            Reason::OnlyLibseccomp(_) => v1 == default,
                            // Our verdict at a multiplexer is checked like any
                            // other number by the profiles' own rules.
                            Reason::Multiplexed(_) => true,
                        })
                    });
                    let key = match (explained, sec) {
                        (true, Some(sa)) => {
                            Some(format!("{sa:?} nr {nr} {:?}", why.unwrap_or(&vec![])))
                        }
                        (false, Some(sa)) if overlap_explains(spec, sa, nr, a, v1, v2) => {
                            Some(format!("{sa:?} nr {nr}: overlapping conditional rules"))
                        }
                        _ => None,
                    };
                    if let Some(key) = key {
                        *stats.allowed.entry(key).or_default() += 1;
                        continue;
                    }
                    nbad += 1;
                    if bad.len() < 25 {
                        bad.push(format!(
                            "arch {arch:#010x} ({sec:?}) nr {nr} ({nr:#x}) args {a:x?}: ours {v1:#010x}, libseccomp {v2:#010x}{}",
                            why.map(|w| format!(" [allowed only if {w:?}]")).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        assert!(
            nbad == 0,
            "{label} on {arches:?} (libseccomp optimize {optimize}): {nbad} verdicts differ:\n{}",
            bad.join("\n")
        );
    }
}

fn check_expected_name_diffs(seen: &BTreeSet<(Arch, String, bool)>) {
    let expected: BTreeSet<(Arch, String, bool)> = EXPECTED_NAME_DIFFS
        .iter()
        .map(|&(a, n, o, _)| (a, n.to_string(), o))
        .collect();
    assert_eq!(
        seen, &expected,
        "name-table differences changed: update EXPECTED_NAME_DIFFS and the README"
    );
}

#[test]
fn libseccomp_is_2_5() {
    let v = lref::version().expect("libseccomp version");
    assert_eq!(
        (v.0, v.1),
        (2, 5),
        "the documented differences are for libseccomp 2.5: {v:?}"
    );
}

/// Each ABI alone, every profile.
#[test]
fn same_verdicts_as_libseccomp_per_arch() {
    let mut seen = BTreeSet::new();
    let mut stats = Stats::default();
    for arch in LIBSECCOMP_ARCHES {
        for (label, spec) in profiles(arch) {
            compare(label, &spec, &[arch], &mut seen, &mut stats);
        }
    }
    stats.report("per ABI");
    check_expected_name_diffs(&seen);
    // The big-endian repair must have been needed (Docker's profile has far
    // jumps), or the premise of `repair_cross_endian` is wrong.
    assert!(stats.repaired > 0);
    assert!(stats.inputs > 1_000_000, "{}", stats.inputs);
}

/// Docker's multi-ABI filters (native plus sub-architectures).
#[test]
fn same_verdicts_as_libseccomp_arch_groups() {
    let mut seen = BTreeSet::new();
    let mut stats = Stats::default();
    for group in GROUPS {
        for (label, spec) in profiles(group[0]) {
            compare(label, &spec, group, &mut seen, &mut stats);
        }
    }
    stats.report("ABI groups");
    check_expected_name_diffs(&seen);
}

fn v(prog: &[Insn], arch: Arch, nr: u32, args: [u64; 6]) -> u32 {
    run(prog, &SeccompData::new(arch, nr, args)).unwrap()
}

/// The one semantic difference in rule order, shown on its own: two
/// conditional rules of one syscall that both match. We take the first
/// in spec order (what the runtime-spec's list order suggests);
/// libseccomp takes the first in its decision tree, here the MASKED_EQ
/// rule although it comes second.
#[test]
fn overlapping_rules_first_match_vs_libseccomp_tree_order() {
    let spec: LinuxSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["futex"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GT"}]},
            {"names": ["futex"], "action": "SCMP_ACT_TRAP",
             "args": [{"index": 1, "value": 0x80, "valueTwo": 0x80, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }))
    .unwrap();
    let a = Arch::X86_64;
    let nr = a.syscall_nr("futex").unwrap();
    let mine = ours(&spec, &[a]);
    let (lib, _) = theirs(&spec, &[a], 1, &mine);
    let both = [0, 0x1_0000_0080, 0, 0, 0, 0];
    assert_eq!(v(&mine, a, nr, both), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(v(&lib, a, nr, both), libc::SECCOMP_RET_TRAP);
    // Where only one rule matches, both agree.
    for (x, want) in [
        (0x1_0000_0001u64, libc::SECCOMP_RET_KILL_PROCESS),
        (0x80, libc::SECCOMP_RET_TRAP),
        (0x7f, ALLOW),
    ] {
        let args = [0, x, 0, 0, 0, 0];
        assert_eq!(v(&mine, a, nr, args), want, "{x:#x}");
        assert_eq!(v(&lib, a, nr, args), want, "{x:#x}");
    }
}

/// libseccomp's socketcall multiplexing on x86, shown on its own: a rule
/// for `socket` also becomes `socketcall(call == SYS_SOCKET)`, with the
/// rule's arg-0 condition replaced by the call number. We only filter the
/// direct `socket` syscall (x86 has had it since Linux 4.3), so at
/// `socketcall` our verdict is the default.
#[test]
fn x86_socketcall_multiplexing() {
    let spec: LinuxSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}
        ]
    }))
    .unwrap();
    let a = Arch::X86;
    let mine = ours(&spec, &[a]);
    let (lib, _) = theirs(&spec, &[a], 1, &mine);
    let socket = a.syscall_nr("socket").unwrap();
    let socketcall = a.syscall_nr("socketcall").unwrap();
    let errno = libc::SECCOMP_RET_ERRNO | 97;
    for prog in [&mine, &lib] {
        assert_eq!(v(prog, a, socket, [40, 1, 0, 0, 0, 0]), errno);
        assert_eq!(v(prog, a, socket, [2, 1, 0, 0, 0, 0]), ALLOW);
    }
    // socketcall(call, args): exactly one call number differs, and only
    // for libseccomp.
    let differing: Vec<u64> = (0..=20u64)
        .filter(|&call| {
            let args = [call, 0x1000, 0, 0, 0, 0];
            assert_eq!(v(&mine, a, socketcall, args), ALLOW);
            v(&lib, a, socketcall, args) != ALLOW
        })
        .collect();
    assert_eq!(differing.len(), 1, "{differing:?}");
    let call = differing[0];
    assert_eq!(v(&lib, a, socketcall, [call, 0, 0, 0, 0, 0]), errno);
}
