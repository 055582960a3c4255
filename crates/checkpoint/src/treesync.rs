//! Copying what changed in a directory tree: the rootfs of a migrating container, synced while
//! it runs and once more after it is frozen, so the final pass moves only the last changes.
//!
//! A file is copied when its size, mtime or type differs; directories, symlinks and device nodes
//! are recreated; ownership and mode are kept; what vanished from the source is removed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub files: u64,
    pub bytes: u64,
    pub removed: u64,
}

/// Make `dst` a copy of `src`.
pub fn sync(src: &Path, dst: &Path) -> Result<SyncStats, SyncError> {
    let mut st = SyncStats::default();
    let md = std::fs::symlink_metadata(src).map_err(io(src))?;
    if !dst.exists() {
        std::fs::create_dir_all(dst).map_err(io(dst))?;
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(io(dst))?;
    sync_dir(src, dst, &mut st)?;
    Ok(st)
}

fn same(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.file_type() == b.file_type()
        && a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.mode() == b.mode()
}

fn sync_dir(src: &Path, dst: &Path, st: &mut SyncStats) -> Result<(), SyncError> {
    let mut seen = std::collections::HashSet::new();
    for e in std::fs::read_dir(src).map_err(io(src))? {
        let e = e.map_err(io(src))?;
        let name = e.file_name();
        seen.insert(name.clone());
        let s = e.path();
        let d = dst.join(&name);
        let smd = std::fs::symlink_metadata(&s).map_err(io(&s))?;
        let dmd = std::fs::symlink_metadata(&d).ok();
        if smd.is_dir() {
            match &dmd {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove(&d)?;
                    std::fs::create_dir(&d).map_err(io(&d))?;
                }
                None => std::fs::create_dir(&d).map_err(io(&d))?,
            }
            sync_dir(&s, &d, st)?;
            set_attrs(&d, &smd)?;
            continue;
        }
        if dmd.as_ref().is_some_and(|m| same(&smd, m)) {
            continue;
        }
        if dmd.is_some() {
            remove(&d)?;
        }
        if smd.file_type().is_symlink() {
            let t = std::fs::read_link(&s).map_err(io(&s))?;
            std::os::unix::fs::symlink(&t, &d).map_err(io(&d))?;
            lchown(&d, &smd)?;
            continue;
        }
        if smd.is_file() {
            st.bytes += std::fs::copy(&s, &d).map_err(io(&d))?;
        } else {
            mknod(&d, &smd)?;
        }
        st.files += 1;
        set_attrs(&d, &smd)?;
    }
    for e in std::fs::read_dir(dst).map_err(io(dst))? {
        let e = e.map_err(io(dst))?;
        if !seen.contains(&e.file_name()) {
            remove(&e.path())?;
            st.removed += 1;
        }
    }
    Ok(())
}

fn remove(p: &Path) -> Result<(), SyncError> {
    let md = std::fs::symlink_metadata(p).map_err(io(p))?;
    if md.is_dir() {
        std::fs::remove_dir_all(p).map_err(io(p))
    } else {
        std::fs::remove_file(p).map_err(io(p))
    }
}

fn cpath(p: &Path) -> Result<std::ffi::CString, SyncError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| SyncError::Io {
        path: p.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn mknod(p: &Path, md: &std::fs::Metadata) -> Result<(), SyncError> {
    let c = cpath(p)?;
    // SAFETY: a valid C string; mode and rdev come from the source's stat.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            md.mode() as libc::mode_t,
            md.rdev() as libc::dev_t,
        )
    };
    if rc != 0 {
        return Err(io(p)(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn lchown(p: &Path, md: &std::fs::Metadata) -> Result<(), SyncError> {
    std::os::unix::fs::lchown(p, Some(md.uid()), Some(md.gid())).map_err(io(p))
}

/// Owner, mode (after chown, which clears set-id bits) and times.
fn set_attrs(p: &Path, md: &std::fs::Metadata) -> Result<(), SyncError> {
    lchown(p, md)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(io(p))?;
    let c = cpath(p)?;
    let times = [
        libc::timespec {
            tv_sec: md.atime() as libc::time_t,
            tv_nsec: md.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: md.mtime() as libc::time_t,
            tv_nsec: md.mtime_nsec() as _,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    if rc != 0 {
        return Err(io(p)(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_pass_copies_only_changes() -> Result<(), Box<dyn std::error::Error>> {
        let base = std::env::temp_dir().join(format!("rcrun-treesync-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(src.join("d"))?;
        std::fs::write(src.join("a"), b"hello")?;
        std::fs::write(src.join("d/b"), vec![7u8; 4096])?;
        std::os::unix::fs::symlink("a", src.join("l"))?;
        let first = sync(&src, &dst)?;
        assert_eq!((first.files, first.bytes), (2, 4101));
        assert_eq!(std::fs::read(dst.join("d/b"))?.len(), 4096);
        assert_eq!(std::fs::read_link(dst.join("l"))?, PathBuf::from("a"));
        let again = sync(&src, &dst)?;
        assert_eq!(again, SyncStats::default());
        std::fs::write(src.join("a"), b"hello, world")?;
        std::fs::remove_file(src.join("d/b"))?;
        let third = sync(&src, &dst)?;
        assert_eq!((third.files, third.bytes, third.removed), (1, 12, 1));
        assert!(!dst.join("d/b").exists());
        std::fs::remove_dir_all(&base)?;
        Ok(())
    }
}
