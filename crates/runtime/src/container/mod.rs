//! The lifecycle, one file per command: [`create`] (parent side; the child runs
//! [`crate::init`]), [`start`], [`run`] (create + start + wait), [`kill`], [`delete`], and the
//! read-only [`query`] (`state`, `list`).

pub mod checkpoint;
pub mod clone;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod kill;
pub mod pause;
pub mod ps;
pub mod query;
pub mod restore;
pub mod run;
pub mod spawn;
pub mod start;
pub mod update;

use crate::state::Status;

/// Errors of lifecycle commands, worded as runc words them where clients parse the text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Lsm(#[from] crate::lsm::LsmError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error(transparent)]
    Signal(#[from] crate::signal::SignalError),
    #[error(transparent)]
    SeccompListener(#[from] crate::seccomp_listener::ListenerError),
    #[error(transparent)]
    NetDevices(#[from] crate::net_devices::NetDeviceError),
    #[error(transparent)]
    NetHooks(#[from] crate::net_hooks::NetHookError),
    /// `checkpoint`/`restore` (CRIU).
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The container's first process reported a set-up failure (its own words).
    #[error("{0}")]
    Child(String),
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot allocate tty if rcrun will detach without setting console socket")]
    TtyNeedsSocket,
    #[error("cannot use console socket if rcrun will not detach or allocate tty")]
    SocketWithoutTty,
    #[error("cannot start a container that has stopped")]
    StartStopped,
    #[error("cannot start an already running container")]
    StartRunning,
    #[error("cannot start a container in the {0} state")]
    StartNotCreated(Status),
    #[error("container not running")]
    NotRunning,
    #[error("cannot delete container {id} that is not stopped: {status}")]
    DeleteRunning { id: String, status: Status },
    #[error("cannot exec in a stopped container")]
    ExecStopped,
    #[error("cannot exec in a paused container (use --ignore-paused to override)")]
    ExecPaused,
    #[error("linux.namespaces: a mount namespace is required")]
    NoMountNamespace,
    /// `pause` of a container that is neither running nor created (runc's ErrNotRunning).
    #[error("container not running")]
    NotRunningOrCreated,
    #[error("container not paused")]
    NotPaused,
    /// `events` of a stopped container (runc's wording).
    #[error("container with id {0} is not running")]
    EventsNotRunning(String),
    /// A bad `update` argument (`invalid value for memory: invalid size: 'abc'`).
    #[error("invalid value for {flag}: {reason}")]
    InvalidValue { flag: String, reason: String },
    /// `ps`: running ps(1) failed, or its output has no PID column.
    #[error("{0}")]
    Ps(String),
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}

/// Wait for a process that is not our child to be gone (or a zombie), up to `timeout`.
pub(crate) fn wait_gone(pid: i32, start: u64, timeout: std::time::Duration) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let gone =
        || crate::state::proc_stat(pid).is_none_or(|(st, s)| st == 'Z' || st == 'X' || s != start);
    if gone() {
        return true;
    }
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let deadline = std::time::Instant::now() + timeout;
    if fd >= 0 {
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        return gone();
    }
    while std::time::Instant::now() < deadline {
        if gone() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    gone()
}
