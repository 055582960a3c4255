//! Network namespaces as owned file descriptors.
//!
//! Work inside a namespace runs on a short-lived thread that enters it first, so the
//! caller's thread never changes namespace (a thread left in the wrong netns would
//! silently configure the wrong interfaces later).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use tracing::debug_span;

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("open network namespace {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("enter network namespace {what}: {source}")]
    Enter { what: String, source: io::Error },
    #[error("start a thread for network namespace {what}: {source}")]
    Spawn { what: String, source: io::Error },
    #[error("the thread working in network namespace {what} panicked")]
    Panicked { what: String },
    #[error("create a network namespace: {0}")]
    Unshare(io::Error),
    #[error("pin network namespace {src:?} at {at:?}: {step}: {source}")]
    Pin {
        src: PathBuf,
        at: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("unpin network namespace at {at:?}: {step}: {source}")]
    Unpin {
        at: PathBuf,
        step: &'static str,
        source: io::Error,
    },
}

/// An open network namespace (a file descriptor on an nsfs inode).
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    /// Where it came from, for error messages.
    what: String,
}

impl NetNs {
    /// Opens the namespace file at `path` (a pin, or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetNsError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            fd: file.into(),
            what: format!("{path:?}"),
        })
    }

    /// The network namespace of process `pid`.
    pub fn of_pid(pid: i32) -> Result<Self, NetNsError> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// The network namespace of the calling thread (not the process: threads may differ).
    pub fn current() -> Result<Self, NetNsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Runs `f` on a new thread that has entered this namespace; the caller's thread
    /// stays where it is.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetNsError> {
        let what = &self.what;
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("rcrun-netns".into())
                .spawn_scoped(s, move || {
                    let _span = debug_span!("netns", ns = %what).entered();
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| NetNsError::Enter {
                        what: what.clone(),
                        source: e.into(),
                    })?;
                    Ok(f())
                })
                .map_err(|source| NetNsError::Spawn {
                    what: what.clone(),
                    source,
                })?;
            handle
                .join()
                .map_err(|_| NetNsError::Panicked { what: what.clone() })?
        })
    }

    /// Bind-mounts `/proc/PID/ns/net` onto `at` (created if missing), so the namespace
    /// lives on after its last process exits.
    pub fn pin(pid: i32, at: &Path) -> Result<(), NetNsError> {
        pin_file(Path::new(&format!("/proc/{pid}/ns/net")), at)
    }

    /// Undoes [`NetNs::pin`]: lazy unmount and unlink. Missing pins are fine.
    pub fn unpin(at: &Path) -> Result<(), NetNsError> {
        let _span = debug_span!("netns_unpin", at = ?at).entered();
        // Pinned twice means two stacked mounts: unmount until none is left.
        for _ in 0..16 {
            match umount2(at, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                // EINVAL: not a mount point (any more); ENOENT: no file.
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => {
                    return Err(NetNsError::Unpin {
                        at: at.to_owned(),
                        step: "unmount",
                        source: e.into(),
                    })
                }
            }
        }
        match fs::remove_file(at) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetNsError::Unpin {
                at: at.to_owned(),
                step: "remove file",
                source,
            }),
        }
    }

    /// Creates a fresh network namespace (in a throw-away thread), pins it at `at` and
    /// returns it open. Its loopback is brought up by [`crate::iface`], not here.
    pub fn new_pinned(at: &Path) -> Result<Self, NetNsError> {
        let _span = debug_span!("netns_new", at = ?at).entered();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("rcrun-netns-new".into())
                .spawn_scoped(s, || {
                    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetNsError::Unshare(e.into()))?;
                    pin_file(Path::new("/proc/thread-self/ns/net"), at)
                })
                .map_err(|source| NetNsError::Spawn {
                    what: format!("new at {at:?}"),
                    source,
                })?;
            handle.join().map_err(|_| NetNsError::Panicked {
                what: format!("new at {at:?}"),
            })?
        })?;
        Self::open(at)
    }

    /// Whether both refer to the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        match (fd_ino(self.fd.as_fd()), fd_ino(other.fd.as_fd())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// A duplicate that can be moved to another thread or kept independently.
    pub fn try_clone(&self) -> Result<Self, NetNsError> {
        let fd = self.fd.try_clone().map_err(|source| NetNsError::Open {
            path: PathBuf::from(&self.what),
            source,
        })?;
        Ok(Self {
            fd,
            what: self.what.clone(),
        })
    }

    /// A description for messages (the path it was opened from).
    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn fd_ino(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let file = File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

fn pin_file(src: &Path, at: &Path) -> Result<(), NetNsError> {
    let err = |step: &'static str| {
        move |source: io::Error| NetNsError::Pin {
            src: src.to_owned(),
            at: at.to_owned(),
            step,
            source,
        }
    };
    if let Some(dir) = at.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err("create directory"))?;
    }
    // An existing file may already be a pin (nsfs refuses opening it for writing).
    if fs::symlink_metadata(at).is_err() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(at)
            .map_err(err("create mount point file"))?;
    }
    if let Err(e) = mount(Some(src), at, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        // Leave no stray file behind when the mount itself fails (an empty regular
        // file is ours; anything else is left alone).
        if fs::metadata(at).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = fs::remove_file(at);
        }
        return Err(err("bind mount")(e.into()));
    }
    Ok(())
}
