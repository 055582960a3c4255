//! Seccomp for rcrun: compiles an OCI `linux.seccomp` profile into a
//! classic BPF program and loads it with `seccomp(2)`.
//!
//! See `README.md` in this crate for the design, the semantics chosen where
//! libseccomp/runc have specific behaviour, and the call order the runtime
//! must follow.
//!
//! ```no_run
//! # fn f(spec: &oci_spec::runtime::LinuxSeccomp) -> Result<(), rcrun_seccomp::SeccompError> {
//! use rcrun_seccomp::{compile, filter_flags, load, set_no_new_privs, Arch};
//! let native = Arch::native().ok_or(rcrun_seccomp::SeccompError::UnsupportedNative)?;
//! let prog = compile(spec, native)?;
//! // ... in the container init, after setuid/setgid and just before execve:
//! set_no_new_privs()?;
//! let _listener = load(&prog, filter_flags(spec, &prog))?;
//! # Ok(()) }
//! ```

pub mod arch;
pub mod bpf;
pub mod compile;
pub mod interp;

use std::os::fd::{FromRawFd, OwnedFd};

pub use arch::Arch;
pub use bpf::Insn;
pub use compile::{compile, compile_with, CompileOptions, Program, UnknownSyscalls};
pub use interp::{run, SeccompData};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};

/// Errors from compiling or loading a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: syscall {0:?} is unknown on every architecture of the filter")]
    UnknownSyscall(String),
    #[error("seccomp: argument index {0} out of range (0..6)")]
    InvalidArgIndex(usize),
    #[error("seccomp: errno value {0} does not fit in SECCOMP_RET_DATA")]
    InvalidErrno(u32),
    #[error("seccomp: errnoRet is only allowed with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {0}")]
    ErrnoNotSupported(String),
    #[error("seccomp: SCMP_ACT_NOTIFY cannot be the default action")]
    NotifyAsDefault,
    #[error("seccomp: no syscall table for native architecture {0:?}")]
    NoSyscallTable(Arch),
    #[error("seccomp: the build architecture is not supported")]
    UnsupportedNative,
    #[error("seccomp: program has {len} instructions, the kernel limit (BPF_MAXINSNS) is {max}")]
    TooLong { len: usize, max: usize },
    #[error("seccomp: internal compiler error: {0}")]
    Internal(String),
    #[error("seccomp: {op}: {source}")]
    Sys {
        op: &'static str,
        source: std::io::Error,
    },
}

/// `seccomp(2)` filter flags for the spec's `flags`, plus
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` when the program uses
/// `SCMP_ACT_NOTIFY`.
pub fn filter_flags(spec: &LinuxSeccomp, prog: &Program) -> libc::c_ulong {
    let mut flags = 0;
    for f in spec.flags().as_deref().unwrap_or(&[]) {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful with a listener, and the kernel refuses it (EINVAL) without one:
            // a profile without NOTIFY rules asks for nothing by setting it.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if prog.uses_notify => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    if prog.uses_notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    }
    flags
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> Result<(), SeccompError> {
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(SeccompError::Sys {
            op: "prctl(PR_SET_NO_NEW_PRIVS)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Install `prog` on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER,
/// flags)`. Does not allocate (safe to call between `fork` and `execve`).
///
/// The caller must have set no_new_privs ([`set_no_new_privs`]) or hold
/// `CAP_SYS_ADMIN`. With `SECCOMP_FILTER_FLAG_NEW_LISTENER` the returned fd
/// is the user-notification listener; otherwise `None`.
pub fn load(prog: &Program, flags: libc::c_ulong) -> Result<Option<OwnedFd>, SeccompError> {
    load_insns(&prog.insns, flags)
}

/// [`load`] on a bare instruction slice.
pub fn load_insns(insns: &[Insn], flags: libc::c_ulong) -> Result<Option<OwnedFd>, SeccompError> {
    if insns.is_empty() {
        return Err(SeccompError::Internal("empty program".into()));
    }
    if insns.len() > bpf::BPF_MAXINSNS {
        return Err(SeccompError::TooLong {
            len: insns.len(),
            max: bpf::BPF_MAXINSNS,
        });
    }
    let fprog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        // Insn is #[repr(C)] with sock_filter's layout (asserted in bpf.rs);
        // the kernel only reads through this pointer.
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points to `insns`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(SeccompError::Sys {
            op: "seccomp(SECCOMP_SET_MODE_FILTER)",
            source: std::io::Error::last_os_error(),
        });
    }
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the kernel returns a fresh fd we own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) }));
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
