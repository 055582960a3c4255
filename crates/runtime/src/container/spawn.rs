//! Start a process that will run in a container's namespaces: one clone with the new-namespace
//! flags, or, when namespaces are joined by path (a spec's `path`, or every namespace for
//! `exec`), an intermediate process that `setns`es into them first and then clones the real
//! process with CLONE_PARENT, so that it is still the runtime's child (for `run`/`exec` to reap)
//! and is inside a joined pid namespace (setns(pid) applies to children only).

use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::clone::{self, Forked};
use super::{sys, Error};
use crate::namespaces;
use crate::sync::{Channel, Msg};

/// Returns the pid of the new process and whether it was born in the cgroup of `cgroup_fd`.
/// `child` runs in the new process and never returns.
pub fn spawn(
    flags: CloneFlags,
    joins: &[(LinuxNamespaceType, PathBuf, std::fs::File)],
    parent_chan: &Channel,
    child_chan: Channel,
    cgroup_fd: Option<RawFd>,
    child: impl FnOnce(&Channel) -> Infallible,
) -> Result<(Pid, bool), Error> {
    if joins.is_empty() {
        return match clone::clone_into(flags, cgroup_fd).map_err(sys("clone container process"))? {
            Forked::Child => {
                // Our copy of the parent's end must not keep the channel open.
                let _ = nix::unistd::close(parent_chan.0.as_raw_fd());
                enter(child, &child_chan)
            }
            Forked::Parent { pid, in_cgroup } => Ok((pid, in_cgroup)),
        };
    }
    match clone::clone(CloneFlags::empty()).map_err(sys("clone intermediate process"))? {
        None => {
            let _ = nix::unistd::close(parent_chan.0.as_raw_fd());
            for (typ, path, file) in joins {
                if let Err(e) = namespaces::join(*typ, path, file) {
                    let _ = child_chan.send(&Msg::Error(e.to_string()));
                    // SAFETY: leave the forked copy without running the parent's destructors.
                    unsafe { libc::_exit(1) }
                }
            }
            match clone::clone(flags | CloneFlags::CLONE_PARENT) {
                Ok(None) => enter(child, &child_chan),
                Ok(Some(pid)) => {
                    let _ = child_chan.send(&Msg::Pid(pid.as_raw()));
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    let _ = child_chan.send(&Msg::Error(format!("clone container process: {e}")));
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        Some(mid) => {
            drop(child_chan);
            // The intermediate exits right after it reports, so its message is queued by the
            // time it is reaped. Reap first: if it died before reporting (SIGKILL), a blocking
            // recv would wait forever, since the process it may have cloned holds the other end
            // of the channel open while it waits for "go".
            let status = loop {
                match waitpid(mid, None) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other,
                }
            };
            let mut pfd = libc::pollfd {
                fd: parent_chan.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            let queued = unsafe { libc::poll(&mut pfd, 1, 0) } == 1;
            if !queued {
                return Err(Error::Child(format!(
                    "the intermediate process died before reporting the new process: {}",
                    match status {
                        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
                        Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
                        other => format!("{other:?}"),
                    }
                )));
            }
            let got = parent_chan.recv();
            match got {
                Ok(Msg::Pid(p)) => Ok((Pid::from_raw(p), false)),
                Ok(Msg::Error(e)) => Err(Error::Child(e)),
                Ok(other) => Err(Error::Child(format!(
                    "unexpected message from intermediate process: {other:?}"
                ))),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Run the child's entry point; it never returns (it execs or exits), which its `Infallible`
/// return type states in stable Rust.
#[allow(unreachable_code)] // the compiler knows `Infallible` has no value: that is the point
fn enter(child: impl FnOnce(&Channel) -> Infallible, chan: &Channel) -> ! {
    match child(chan) {}
}
