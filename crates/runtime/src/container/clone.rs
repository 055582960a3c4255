//! Forking with namespace flags: clone3(2) where the kernel has it, clone(2) otherwise, both in
//! the fork-like form (no new stack), so the child continues in our code with a copy of memory.
//! On cgroup v2, clone3's CLONE_INTO_CGROUP starts the child in the container's cgroup, which
//! saves the write to cgroup.procs and means no instant of the container runs outside it.

use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// uapi/linux/sched.h; the same value on every architecture (libc lacks it on some targets).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// struct clone_args (uapi/linux/sched.h) up to `cgroup` (CLONE_ARGS_SIZE_VER2): all u64,
/// identical on every architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The result of a clone, seen from each side.
pub enum Forked {
    Child,
    /// The parent, with the child's pid and whether it was born in the requested cgroup.
    Parent {
        pid: Pid,
        in_cgroup: bool,
    },
}

/// Returns `Some(child)` in the parent and `None` in the child.
///
/// The caller must be single-threaded: the child gets only the calling thread.
pub fn clone(flags: CloneFlags) -> nix::Result<Option<Pid>> {
    match clone_into(flags, None)? {
        Forked::Child => Ok(None),
        Forked::Parent { pid, .. } => Ok(Some(pid)),
    }
}

/// Like [`clone`], optionally starting the child in the cgroup v2 directory `cgroup_fd`.
/// Kernels without clone3 or CLONE_INTO_CGROUP fall back to a plain clone
/// (`in_cgroup: false`: the caller then moves the child itself).
pub fn clone_into(flags: CloneFlags, cgroup_fd: Option<RawFd>) -> nix::Result<Forked> {
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        // With CLONE_PARENT the child inherits our exit signal; clone3 rejects one given.
        exit_signal: if flags.contains(CloneFlags::CLONE_PARENT) {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: fork-like clone3 with a valid args struct; no stack means the child runs on a
    // copy of ours, as after fork(2).
    let mut rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let mut in_cgroup = cgroup_fd.is_some();
    if rc < 0
        && cgroup_fd.is_some()
        && matches!(nix::Error::last(), nix::Error::E2BIG | nix::Error::EINVAL)
    {
        // A kernel with clone3 but before CLONE_INTO_CGROUP (5.3–5.6).
        args.flags &= !CLONE_INTO_CGROUP;
        args.cgroup = 0;
        in_cgroup = false;
        // SAFETY: as above.
        rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
    }
    if rc < 0 && nix::Error::last() == nix::Error::ENOSYS {
        in_cgroup = false;
        let flags = (flags.bits() | libc::SIGCHLD) as libc::c_ulong;
        // clone(2)'s argument order is the kernel's per-arch choice: flags first everywhere
        // except s390 (CLONE_BACKWARDS2: the stack comes first). The other arguments are zero,
        // so their order does not matter. libc has no wrapper for a fork-like raw clone.
        let (a0, a1): (libc::c_ulong, libc::c_ulong) = if cfg!(target_arch = "s390x") {
            (0, flags)
        } else {
            (flags, 0)
        };
        // SAFETY: as above.
        rc = unsafe { libc::syscall(libc::SYS_clone, a0, a1, 0, 0, 0) };
    }
    match rc {
        -1 => Err(nix::Error::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: Pid::from_raw(pid as i32),
            in_cgroup,
        }),
    }
}
