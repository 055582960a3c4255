//! The reference side of `libseccomp_diff.rs`: an OCI profile compiled by
//! libseccomp, the way runc does it (libseccomp-golang's calls mapped to the
//! C API through the `libseccomp` crate), exported with
//! `seccomp_export_bpf`.
//!
//! runc's algorithm (`libcontainer/seccomp/seccomp_linux.go`):
//! - `seccomp_init(defaultAction)`, default errno `defaultErrnoRet` or EPERM;
//!   the filter's architectures are exactly the requested ones (the native
//!   one is removed when not requested);
//! - a rule whose action equals the default action is skipped (libseccomp
//!   rejects it with EINVAL);
//! - a name is resolved with `seccomp_syscall_resolve_name` (native ABI,
//!   pseudo numbers for names the native ABI lacks); names libseccomp does
//!   not know are skipped;
//! - no args: `seccomp_rule_add`; args: `seccomp_rule_add_array` with all
//!   conditions (ANDed), except when an argument index repeats: then one
//!   rule per condition (ORed);
//! - `SCMP_CMP_MASKED_EQ`: `value` is the mask, `valueTwo` the datum.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompOperator as Op};
use rcrun_seccomp::{Arch, Insn};

/// libseccomp's token for one of our ABIs (every one but loongarch64, which
/// libseccomp 2.5 does not have).
pub fn scmp_arch(a: Arch) -> Option<ScmpArch> {
    Some(match a {
        Arch::X86_64 => ScmpArch::X8664,
        Arch::X86 => ScmpArch::X86,
        Arch::X32 => ScmpArch::X32,
        Arch::Aarch64 => ScmpArch::Aarch64,
        Arch::Arm => ScmpArch::Arm,
        Arch::Mips64 => ScmpArch::Mips64,
        Arch::Mips64N32 => ScmpArch::Mips64N32,
        Arch::Mips => ScmpArch::Mips,
        Arch::Mipsel64 => ScmpArch::Mipsel64,
        Arch::Mipsel64N32 => ScmpArch::Mipsel64N32,
        Arch::Mipsel => ScmpArch::Mipsel,
        Arch::Ppc64le => ScmpArch::Ppc64Le,
        Arch::S390x => ScmpArch::S390X,
        Arch::Riscv64 => ScmpArch::Riscv64,
        Arch::Loongarch64 => return None,
    })
}

/// runc's action mapping.
pub fn action(act: Act, errno: Option<u32>) -> ScmpAction {
    let e = errno.unwrap_or(libc::EPERM as u32);
    match act {
        Act::ScmpActKill | Act::ScmpActKillThread => ScmpAction::KillThread,
        Act::ScmpActKillProcess => ScmpAction::KillProcess,
        Act::ScmpActTrap => ScmpAction::Trap,
        Act::ScmpActErrno => ScmpAction::Errno(e as i32),
        Act::ScmpActTrace => ScmpAction::Trace(e as u16),
        Act::ScmpActAllow => ScmpAction::Allow,
        Act::ScmpActLog => ScmpAction::Log,
        Act::ScmpActNotify => ScmpAction::Notify,
    }
}

fn op(o: Op, mask: u64) -> ScmpCompareOp {
    match o {
        Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
        Op::ScmpCmpLt => ScmpCompareOp::Less,
        Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        Op::ScmpCmpEq => ScmpCompareOp::Equal,
        Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        Op::ScmpCmpGt => ScmpCompareOp::Greater,
        Op::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask),
    }
}

/// What libseccomp made of a profile.
pub struct Built {
    pub insns: Vec<Insn>,
    /// Names `seccomp_syscall_resolve_name` does not know (skipped, as runc does).
    pub unknown: Vec<String>,
}

/// Compile `spec` with libseccomp for exactly `arches`; `optimize` is
/// `SCMP_FLTATR_CTL_OPTIMIZE` (1: priority order, libseccomp's default; 2:
/// binary tree).
pub fn build(spec: &LinuxSeccomp, arches: &[Arch], optimize: u32) -> Result<Built, String> {
    let (ctx, unknown) = context_and_unknown(spec, arches, optimize)?;
    // One byte order per libseccomp filter (seccomp_arch_add refuses to mix).
    let big_endian = arches.first().is_some_and(|a| a.is_big_endian());
    Ok(Built {
        insns: export(&ctx, big_endian)?,
        unknown,
    })
}

/// The libseccomp filter context for `spec` (rules added, nothing
/// generated yet), e.g. for `seccomp_load`.
#[allow(dead_code)] // used by examples/seccomp_bench.rs, which shares this module
pub fn context(
    spec: &LinuxSeccomp,
    arches: &[Arch],
    optimize: u32,
) -> Result<ScmpFilterContext, String> {
    context_and_unknown(spec, arches, optimize).map(|(ctx, _)| ctx)
}

fn context_and_unknown(
    spec: &LinuxSeccomp,
    arches: &[Arch],
    optimize: u32,
) -> Result<(ScmpFilterContext, Vec<String>), String> {
    let err = |what: &str, e: libseccomp::error::SeccompError| format!("{what}: {e}");
    let default = action(spec.default_action(), spec.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("seccomp_init", e))?;
    // The native ABI goes first: a libseccomp filter has one byte order, so
    // a big-endian ABI can only be added once x86_64 is gone.
    if !arches.contains(&Arch::X86_64) {
        ctx.remove_arch(ScmpArch::native())
            .map_err(|e| err("seccomp_arch_remove", e))?;
    }
    for &a in arches {
        let sa = scmp_arch(a).ok_or(format!("libseccomp has no {a:?}"))?;
        ctx.add_arch(sa).map_err(|e| err("seccomp_arch_add", e))?;
    }
    ctx.set_ctl_optimize(optimize)
        .map_err(|e| err("SCMP_FLTATR_CTL_OPTIMIZE", e))?;
    // runc leaves NO_NEW_PRIVS to its own code, not to seccomp_load.
    ctx.set_ctl_nnp(false)
        .map_err(|e| err("SCMP_FLTATR_CTL_NNP", e))?;
    let mut unknown = Vec::new();
    for sc in spec.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(sc.action(), sc.errno_ret());
        if act == default {
            continue;
        }
        let args = sc.args().as_deref().unwrap_or(&[]);
        let conds: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                let (mask, datum) = match a.op() {
                    Op::ScmpCmpMaskedEq => (a.value(), a.value_two().unwrap_or(0)),
                    _ => (0, a.value()),
                };
                ScmpArgCompare::new(a.index() as u32, op(a.op(), mask), datum)
            })
            .collect();
        let mut seen = [0; 6];
        for a in args {
            if let Some(s) = seen.get_mut(a.index()) {
                *s += 1;
            }
        }
        let split = seen.iter().any(|&n| n > 1);
        for name in sc.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                continue;
            };
            let what = format!("seccomp_rule_add({name})");
            if conds.is_empty() {
                ctx.add_rule(act, nr).map_err(|e| err(&what, e))?;
            } else if split {
                for c in &conds {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(|e| err(&what, e))?;
                }
            } else {
                ctx.add_rule_conditional(act, nr, &conds)
                    .map_err(|e| err(&what, e))?;
            }
        }
    }
    Ok((ctx, unknown))
}

/// `seccomp_export_bpf` into a memfd, read back as instructions.
/// libseccomp writes `struct sock_filter` in the byte order of the
/// filter's ABIs (the kernel that loads it), not the host's.
pub fn export(ctx: &ScmpFilterContext, big_endian: bool) -> Result<Vec<Insn>, String> {
    // SAFETY: plain memfd_create; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"libseccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    ctx.export_bpf(&f)
        .map_err(|e| format!("seccomp_export_bpf: {e}"))?;
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() % 8 != 0 {
        return Err(format!("{} bytes is not a whole program", bytes.len()));
    }
    let u16_of = |b: [u8; 2]| {
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_of = |b: [u8; 4]| {
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16_of([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32_of([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// `seccomp_syscall_resolve_name_arch`: the number of `name` on `arch`;
/// negative for libseccomp's pseudo numbers (name known, not on this ABI,
/// or only through a multiplexer); `None` if libseccomp does not know the
/// name at all.
pub fn resolve(arch: Arch, name: &str) -> Option<i32> {
    let sa = scmp_arch(arch)?;
    ScmpSyscall::from_name_by_arch(name, sa)
        .ok()
        .map(|s| s.as_raw_syscall())
}

/// `seccomp_syscall_resolve_name_rewrite`: the number a rule for `name`
/// is actually placed on (the multiplexer, e.g. `socketcall`, for names
/// libseccomp multiplexes on `arch`).
pub fn resolve_rewrite(arch: Arch, name: &str) -> Option<i32> {
    let sa = scmp_arch(arch)?;
    ScmpSyscall::from_name_by_arch_rewrite(name, sa)
        .ok()
        .map(|s| s.as_raw_syscall())
}

/// The libseccomp version the test runs against.
pub fn version() -> Option<(u32, u32, u32)> {
    libseccomp::ScmpVersion::current()
        .ok()
        .map(|v| (v.major, v.minor, v.micro))
}
