//! Directory fds for the walk: every path is opened one component at a time from the layer's
//! root fd with `O_NOFOLLOW|O_DIRECTORY`, so a symlink (or a file) anywhere in an entry's
//! parent chain stops the walk instead of redirecting it.
//!
//! Tar members come grouped by directory, so we keep the chain of fds for the last parent
//! directory (a stack: `stack[i]` is the fd of `comps[..=i]`). The next entry reuses the common
//! prefix and opens only what differs: usually nothing, or one `openat`.
//!
//! The stack never holds a directory that an entry may replace: resolving a parent truncates
//! the stack to exactly that parent, and entries only create or remove names *inside* it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{
    fchmod, fsetxattr, fstat, mkdirat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags,
    Stat, XattrFlags,
};
use rustix::io::Errno;

use super::OPAQUE_XATTR;

/// Deeper parents are walked each time from the deepest cached one instead of keeping one fd
/// per level, so a hostile 2000-level path cannot exhaust the fd limit.
const MAX_CACHED_DEPTH: usize = 64;

/// Mode of directories a layer implies without listing (Docker uses 0755 too).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why a parent chain could not be walked; `depth` is the index of the failing component.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component is a symlink or not a directory.
    NotDir {
        depth: usize,
    },
    /// A component does not exist (and we were not asked to create it).
    Missing {
        depth: usize,
    },
    Io {
        depth: usize,
        source: Errno,
    },
}

/// A directory fd (held by the cache, or opened for this call only) and the directory's gid:
/// a new file gets either our egid or (setgid dir, or a `grpid` mount) the directory's gid, so
/// when both equal the wanted gid a chown would change nothing and is skipped.
pub(crate) struct DirRef<'a> {
    fd: Fd<'a>,
    pub(crate) gid: u32,
}

enum Fd<'a> {
    Cached(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for DirRef<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Fd::Cached(fd) => *fd,
            Fd::Owned(fd) => fd.as_fd(),
        }
    }
}

struct Level {
    name: Vec<u8>,
    fd: OwnedFd,
    gid: u32,
}

fn gid_of(fd: BorrowedFd<'_>, depth: usize) -> Result<u32, WalkError> {
    fstat(fd)
        .map(|st| st.st_gid)
        .map_err(|source| WalkError::Io { depth, source })
}

pub(crate) fn open_dir(parent: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) struct DirCache {
    root: OwnedFd,
    root_gid: u32,
    stack: Vec<Level>,
    /// The umask strips bits of 0755, so implicit directories need an explicit chmod.
    fix_implicit_mode: bool,
}

impl DirCache {
    pub(crate) fn new(root: OwnedFd, umask: u32) -> Result<Self, Errno> {
        let root_gid = fstat(&root)?.st_gid;
        Ok(DirCache {
            root,
            root_gid,
            stack: Vec::new(),
            fix_implicit_mode: umask & IMPLICIT_DIR_MODE != 0,
        })
    }

    /// Opens `name` in `parent` as a directory without following symlinks, creating it (as an
    /// implicit 0755 directory) when missing and `create` is set.
    fn step(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        depth: usize,
        create: bool,
    ) -> Result<OwnedFd, WalkError> {
        match open_dir(parent, name) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if create => {
                match mkdirat(parent, name, Mode::from(IMPLICIT_DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(source) => return Err(WalkError::Io { depth, source }),
                }
                self.open_implicit(parent, name, depth)
            }
            Err(Errno::NOTDIR) if create => {
                // A whiteout made earlier in this layer, now needed as a directory: the layer
                // hides the lower `name` and also has content under it, which overlayfs
                // expresses as an opaque directory.
                let io = |source| WalkError::Io { depth, source };
                let st = statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
                if !is_whiteout(&st) {
                    return Err(WalkError::NotDir { depth });
                }
                unlinkat(parent, name, AtFlags::empty()).map_err(io)?;
                mkdirat(parent, name, Mode::from(IMPLICIT_DIR_MODE)).map_err(io)?;
                let fd = self.open_implicit(parent, name, depth)?;
                fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(io)?;
                Ok(fd)
            }
            Err(e) => Err(classify(e, depth)),
        }
    }

    fn open_implicit(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        depth: usize,
    ) -> Result<OwnedFd, WalkError> {
        let fd = open_dir(parent, name).map_err(|e| classify(e, depth))?;
        if self.fix_implicit_mode {
            fchmod(&fd, Mode::from(IMPLICIT_DIR_MODE))
                .map_err(|source| WalkError::Io { depth, source })?;
        }
        Ok(fd)
    }

    /// The directory `comps` (relative to the root), walked without following symlinks.
    pub(crate) fn resolve(
        &mut self,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<DirRef<'_>, WalkError> {
        let cached = comps.len().min(MAX_CACHED_DEPTH);
        let mut k = 0;
        while k < self.stack.len() && k < cached && self.stack[k].name == comps[k] {
            k += 1;
        }
        self.stack.truncate(k);
        while self.stack.len() < cached {
            let i = self.stack.len();
            let parent = match self.stack.last() {
                Some(l) => l.fd.as_fd(),
                None => self.root.as_fd(),
            };
            let fd = self.step(parent, comps[i], i, create)?;
            let gid = gid_of(fd.as_fd(), i)?;
            self.stack.push(Level {
                name: comps[i].to_vec(),
                fd,
                gid,
            });
        }
        let (top, top_gid) = match self.stack.last() {
            Some(l) => (l.fd.as_fd(), l.gid),
            None => (self.root.as_fd(), self.root_gid),
        };
        if comps.len() <= MAX_CACHED_DEPTH {
            return Ok(DirRef {
                fd: Fd::Cached(top),
                gid: top_gid,
            });
        }
        let mut cur = self.step(top, comps[cached], cached, create)?;
        for (i, c) in comps.iter().enumerate().skip(cached + 1) {
            cur = self.step(cur.as_fd(), c, i, create)?;
        }
        let gid = gid_of(cur.as_fd(), comps.len() - 1)?;
        Ok(DirRef {
            fd: Fd::Owned(cur),
            gid,
        })
    }

    /// Walks `comps` from the root without touching the cache or creating anything (hardlink
    /// targets: their directory may be far from the entry's).
    pub(crate) fn walk(&self, comps: &[&[u8]]) -> Result<OwnedFd, WalkError> {
        let mut cur = self.root.try_clone().map_err(|e| WalkError::Io {
            depth: 0,
            source: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
        for (i, c) in comps.iter().enumerate() {
            cur = self.step(cur.as_fd(), c, i, false)?;
        }
        Ok(cur)
    }

    /// Records a directory just created at `parents + name` (with group `gid`), whose
    /// children likely come next.
    pub(crate) fn push_child(&mut self, depth: usize, name: &[u8], fd: OwnedFd, gid: u32) {
        if self.stack.len() == depth && depth < MAX_CACHED_DEPTH {
            self.stack.push(Level {
                name: name.to_vec(),
                fd,
                gid,
            });
        }
    }
}

fn classify(e: Errno, depth: usize) -> WalkError {
    match e {
        // O_NOFOLLOW on a symlink gives ELOOP; O_DIRECTORY on a file gives ENOTDIR.
        Errno::LOOP | Errno::NOTDIR => WalkError::NotDir { depth },
        Errno::NOENT => WalkError::Missing { depth },
        source => WalkError::Io { depth, source },
    }
}

/// An overlayfs whiteout: a character device 0/0.
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}
