//! Resolve a path inside the container's rootfs the way the container would see it: symlinks are
//! followed but scoped to the rootfs, and `..` stops at its top, so a hostile image cannot point a
//! mount destination at the host (the filepath-securejoin rule runc uses).
//!
//! [`join`] does that on path strings, which is only right at the instant it looks: a process
//! sharing a volume with the container can swap a directory for a symlink between the check
//! and the mount (CVE-2021-30465). [`Root`] therefore holds the root open and opens every
//! target with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) relative to it, creating
//! missing directories one component at a time the same way; mounts then go onto the open
//! descriptor (`/proc/self/fd/N`), so what was checked is what gets mounted on, and a symlink
//! swapped in at any point is still resolved inside the root.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecurePathError {
    #[error("resolve {path} in {root}: too many levels of symbolic links")]
    Loop { root: PathBuf, path: PathBuf },
    #[error("resolve {path} in {root}: {source}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} resolves outside {root} ({real}): refusing to use it")]
    Escaped {
        root: PathBuf,
        path: PathBuf,
        real: PathBuf,
    },
    #[error("{path} in {root} changed while it was being mounted on (a symlink swapped in?)")]
    Changed { root: PathBuf, path: PathBuf },
}

impl SecurePathError {
    /// Whether the path (or a directory on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SecurePathError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A directory that path resolution must not leave: the rootfs before pivot_root, `/` after.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Something inside a [`Root`], held open (O_PATH). `rel` is the symlink-free path it was
/// reached by, relative to the root, for re-opening it once something is mounted on it.
pub struct Target {
    pub fd: OwnedFd,
    rel: PathBuf,
}

impl Target {
    /// The path mount(2) and friends reach exactly this file or directory by.
    pub fn proc_path(&self) -> PathBuf {
        fd_path(&self.fd)
    }
    /// Where it is, relative to the root.
    pub fn rel(&self) -> &Path {
        &self.rel
    }
}

/// `/proc/self/fd/N`: a magic link to exactly what `fd` is open on.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

// uapi/linux/openat2.h
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

impl Root {
    /// Open `path` (resolved normally: it is the runtime's own choice) as the root.
    pub fn open(path: &Path) -> Result<Root, SecurePathError> {
        let fd = open_plain(path, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
            SecurePathError::Io {
                root: path.to_path_buf(),
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, path: &Path) -> impl FnOnce(std::io::Error) -> SecurePathError + '_ {
        let path = path.to_path_buf();
        move |source| SecurePathError::Io {
            root: self.path.clone(),
            path,
            source,
        }
    }

    /// `unsafe_path` as [`join`] resolves it now, relative to the root (no symlinks in it).
    fn lexical(&self, unsafe_path: &Path) -> Result<PathBuf, SecurePathError> {
        let full = join(&self.path, unsafe_path)?;
        Ok(full
            .strip_prefix(&self.path)
            .map(Path::to_path_buf)
            .unwrap_or_default())
    }

    /// Open `unsafe_path` inside the root (O_PATH, final symlink followed inside the root).
    pub fn open_in(&self, unsafe_path: &Path) -> Result<Target, SecurePathError> {
        let rel = self.lexical(unsafe_path)?;
        let fd = self
            .openat2(&rel, libc::O_PATH)
            .map_err(self.err(unsafe_path))?;
        Ok(Target { fd, rel })
    }

    /// `mkdir -p` inside the root; returns the directory, open.
    pub fn mkdir_all(&self, unsafe_path: &Path) -> Result<Target, SecurePathError> {
        let rel = self.lexical(unsafe_path)?;
        let fd = self.mkdir_rel(&rel).map_err(self.err(unsafe_path))?;
        Ok(Target { fd, rel })
    }

    /// An empty file at `unsafe_path` unless something is there already (a mount point for a
    /// file bind), with its parent directories; returns it, open.
    pub fn create_file(&self, unsafe_path: &Path) -> Result<Target, SecurePathError> {
        let rel = self.lexical(unsafe_path)?;
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p, n),
            // The root itself: nothing to create.
            _ => return self.open_in(unsafe_path),
        };
        let dir = self.mkdir_rel(parent).map_err(self.err(unsafe_path))?;
        let c = cstring(Path::new(name)).map_err(self.err(unsafe_path))?;
        // O_NOFOLLOW|O_EXCL: create in the directory we hold, never through a symlink.
        // SAFETY: openat with a directory descriptor we own and a NUL-terminated name.
        let raw = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if raw >= 0 {
            // SAFETY: the kernel just returned this descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(self.err(unsafe_path)(e));
            }
        }
        let fd = self
            .openat2(&rel, libc::O_PATH)
            .map_err(self.err(unsafe_path))?;
        Ok(Target { fd, rel })
    }

    /// Open `t` again after something was mounted on it: the descriptor then refers to the new
    /// mount (the old one still points under it). Fails if it is not a different mount, i.e. the
    /// path was changed to lead somewhere else in between.
    pub fn reopen(&self, t: &Target) -> Result<Target, SecurePathError> {
        let fd = self
            .openat2(&t.rel, libc::O_PATH)
            .map_err(self.err(&t.rel))?;
        if let (Some(old), Some(new)) = (mount_id(&t.fd), mount_id(&fd)) {
            if old == new {
                return Err(SecurePathError::Changed {
                    root: self.path.clone(),
                    path: t.rel.clone(),
                });
            }
        }
        Ok(Target {
            fd,
            rel: t.rel.clone(),
        })
    }

    fn mkdir_rel(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        let dir = libc::O_PATH | libc::O_DIRECTORY;
        match self.openat2(rel, dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        // One component at a time: each mkdirat happens in a directory resolved inside the
        // root, and each step is resolved from the root again.
        let mut cur = self.openat2(Path::new(""), dir)?;
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            prefix.push(comp);
            match self.openat2(&prefix, dir) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let c = cstring(Path::new(comp.as_os_str()))?;
            // SAFETY: mkdirat with a directory descriptor we own and a NUL-terminated name.
            if unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            cur = self.openat2(&prefix, dir)?;
        }
        Ok(cur)
    }

    /// openat2(root, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); before Linux 5.6, an open
    /// by path checked afterwards to be inside the root.
    fn openat2(&self, rel: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = cstring(rel)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        // EAGAIN: a rename or mount raced with the lookup; the kernel asks us to retry.
        for _ in 0..64 {
            // SAFETY: openat2 with a descriptor we own, a NUL-terminated path and a correctly
            // sized open_how.
            let raw = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if raw >= 0 {
                // SAFETY: the kernel just returned this descriptor.
                return Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) });
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => continue,
                Some(libc::ENOSYS) => return self.open_checked(rel, flags),
                _ => return Err(e),
            }
        }
        Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// The pre-openat2 way (runc's): open by path, then make sure the kernel's idea of where it
    /// landed is inside the root.
    fn open_checked(&self, rel: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
        let fd = open_plain(&self.path.join(rel), flags)?;
        let real = std::fs::read_link(fd_path(&fd))?;
        if self.path != Path::new("/") && !real.starts_with(&self.path) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                SecurePathError::Escaped {
                    root: self.path.clone(),
                    path: rel.to_path_buf(),
                    real,
                },
            ));
        }
        Ok(fd)
    }
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_plain(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open with a NUL-terminated path.
    let raw = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The id of the mount `fd` is on (statx, Linux 5.8+; None where unknown).
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    // SAFETY: statx fills a zeroed buffer of the right type; zero is a valid statx.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(fd, "", AT_EMPTY_PATH) on a descriptor we own, into our buffer.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    (rc == 0 && st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id)
}

const MAX_LINKS: usize = 255;

/// `root` joined with `unsafe_path`, every symlink resolved as if `root` were `/`.
pub fn join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, SecurePathError> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(SecurePathError::Loop {
                        root: root.into(),
                        path: unsafe_path.into(),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|source| SecurePathError::Io {
                        root: root.into(),
                        path: unsafe_path.into(),
                        source,
                    })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() -> Result<(), Box<dyn std::error::Error>> {
        let root = std::env::temp_dir().join(format!("rcrun-sp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b"))?;
        symlink("/etc", root.join("abs"))?;
        symlink("../../..", root.join("a/b/up"))?;
        symlink("b", root.join("a/rel"))?;
        assert_eq!(
            join(&root, Path::new("/abs/passwd"))?,
            root.join("etc/passwd")
        );
        assert_eq!(join(&root, Path::new("a/b/up/x"))?, root.join("x"));
        assert_eq!(join(&root, Path::new("/a/rel/c"))?, root.join("a/b/c"));
        assert_eq!(join(&root, Path::new("/../../etc"))?, root.join("etc"));
        symlink("loop", root.join("loop"))?;
        assert!(join(&root, Path::new("/loop")).is_err());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }

    #[test]
    fn root_creates_and_opens_inside_only() -> Result<(), Box<dyn std::error::Error>> {
        let base = std::env::temp_dir().join(format!("rcrun-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&outside)?;
        symlink(&outside, root.join("abs"))?;
        symlink("../../outside", root.join("rel"))?;
        let r = Root::open(&root)?;

        let t = r.mkdir_all(Path::new("/abs/made"))?;
        assert_eq!(t.rel(), Path::new(&outside.strip_prefix("/")?).join("made"));
        assert!(root.join(t.rel()).is_dir());
        assert!(!outside.join("made").exists());
        r.create_file(Path::new("/rel/file"))?;
        assert!(root.join("outside/file").is_file());
        assert!(!outside.join("file").exists());

        // Swapped for a symlink after the lexical resolution: still resolved inside.
        std::fs::create_dir_all(root.join("swap"))?;
        let rel = r.lexical(Path::new("/swap/x"))?;
        std::fs::remove_dir(root.join("swap"))?;
        symlink(&outside, root.join("swap"))?;
        let fd = r.mkdir_rel(&rel)?;
        let real = std::fs::read_link(fd_path(&fd))?;
        assert!(real.starts_with(&root), "{real:?}");
        assert!(!outside.join("x").exists());

        // Nothing mounted on it: re-opening finds the same mount, which means "changed".
        let t = r.open_in(Path::new("/abs"))?;
        assert!(matches!(r.reopen(&t), Err(SecurePathError::Changed { .. })));
        std::fs::remove_dir_all(&base)?;
        Ok(())
    }
}
