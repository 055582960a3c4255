//! `start`: release the container process waiting on exec.fifo, wait until it has exec'd (the
//! fifo's last reader closes on exec, which poll reports as POLLERR), then run poststart hooks.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{sys, Error};
use crate::hooks;
use crate::state::{ContainerState, StateDir, Status};

pub fn start(root: &Path, id: &str) -> Result<(), Error> {
    let _span = tracing::info_span!("start", id).entered();
    let dir = StateDir::open(root, id)?;
    start_locked(&dir).map(|_| ())
}

/// Start a container whose directory we hold locked (shared with `run`).
pub fn start_locked(dir: &StateDir) -> Result<ContainerState, Error> {
    let state = dir.load()?;
    match state.status(&dir.dir) {
        Status::Created => {}
        Status::Stopped => return Err(Error::StartStopped),
        Status::Running => return Err(Error::StartRunning),
        other => return Err(Error::StartNotCreated(other)),
    }
    let fifo = dir.fifo_path();
    let fd = match nix::fcntl::open(
        &fifo,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // No reader: the container process is gone.
        Err(nix::Error::ENXIO) => return Err(Error::StartStopped),
        Err(e) => return Err(sys(format!("open {}", fifo.display()))(e)),
    };
    // SAFETY: we own the descriptor just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::unistd::write(&fd, b"0").map_err(sys("write exec.fifo"))?;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd; POLLERR/POLLHUP are always reported.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc > 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let _ = std::fs::remove_file(&fifo);
    if !state.poststart.is_empty() {
        hooks::run_all_warn(
            "poststart",
            &state.poststart,
            &state.hook_state(Status::Running),
        );
    }
    Ok(state)
}
