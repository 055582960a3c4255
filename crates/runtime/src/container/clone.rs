//! Forking with namespace flags: clone3(2) where the kernel has it, clone(2) otherwise, both in
//! the fork-like form (no new stack), so the child continues in our code with a copy of memory.

use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// struct clone_args (uapi/linux/sched.h), version 0 fields: identical on every architecture.
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
}

/// Returns `Some(child)` in the parent and `None` in the child.
///
/// The caller must be single-threaded: the child gets only the calling thread.
pub fn clone(flags: CloneFlags) -> nix::Result<Option<Pid>> {
    let args = CloneArgs {
        flags: flags.bits() as u64,
        // With CLONE_PARENT the child inherits our exit signal; clone3 rejects one given.
        exit_signal: if flags.contains(CloneFlags::CLONE_PARENT) {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    };
    // SAFETY: fork-like clone3 with a valid args struct; no stack means the child runs on a
    // copy of ours, as after fork(2).
    let mut rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 && nix::Error::last() == nix::Error::ENOSYS {
        // The flags argument comes first on every architecture; the other (zero) arguments'
        // order differs between architectures, which does not matter when all are zero.
        // SAFETY: as above.
        rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags.bits() | libc::SIGCHLD) as libc::c_ulong,
                0,
                0,
                0,
                0,
            )
        };
    }
    match rc {
        -1 => Err(nix::Error::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}
