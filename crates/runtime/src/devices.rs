//! Device nodes in the container's /dev: runc's default set plus `linux.devices`, made with
//! mknod(2), or bind-mounted from the host inside a user namespace (where mknod is not allowed).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use crate::mounts;
use crate::secure_path::{self, Root, Target};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("linux.devices: create {path}: {source}")]
    Create { path: PathBuf, source: nix::Error },
    #[error("linux.devices: {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("linux.devices: bind {path} from the host: {source}")]
    Bind {
        path: PathBuf,
        source: mounts::MountError,
    },
    #[error(transparent)]
    Resolve(#[from] secure_path::SecurePathError),
    #[error("linux.devices: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The devices every container gets (runc's list): null, zero, full, random, urandom, tty.
pub fn defaults() -> Vec<LinuxDevice> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .filter_map(|&(p, maj, min)| {
        LinuxDeviceBuilder::default()
            .path(p)
            .typ(LinuxDeviceType::C)
            .major(maj)
            .minor(min)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()
            .ok()
    })
    .collect()
}

/// Defaults overridden by the spec's entries of the same path.
pub fn all(spec_devices: &[LinuxDevice]) -> Vec<LinuxDevice> {
    let mut out: Vec<LinuxDevice> = defaults()
        .into_iter()
        .filter(|d| !spec_devices.iter().any(|s| s.path() == d.path()))
        .collect();
    out.extend(spec_devices.iter().cloned());
    out
}

/// Create one device node in the rootfs. Its directory is made and opened inside the root and
/// the node is made, chmod'ed and chown'ed relative to that descriptor, so a symlink swapped in
/// by something sharing the directory cannot point any of it at the host.
pub fn create(root: &Root, dev: &LinuxDevice, in_userns: bool) -> Result<(), DeviceError> {
    if in_userns {
        let target = root.create_file(dev.path())?;
        return mounts::do_mount(
            Some(dev.path()),
            &target.proc_path(),
            Some("bind"),
            nix::mount::MsFlags::MS_BIND,
            None,
        )
        .map_err(|source| DeviceError::Bind {
            path: dev.path().clone(),
            source: source.shown_as(dev.path()),
        });
    }
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(DeviceError::Invalid {
                path: dev.path().clone(),
                msg: "type \"a\" is not a device node".into(),
            })
        }
    };
    let perm = dev.file_mode().unwrap_or(0o666) & 0o7777;
    let (maj, min) = (dev.major(), dev.minor());
    if maj < 0 || min < 0 {
        return Err(DeviceError::Invalid {
            path: dev.path().clone(),
            msg: format!("major {maj} / minor {min} must not be negative"),
        });
    }
    let io = |source: std::io::Error| DeviceError::Io {
        path: dev.path().clone(),
        source,
    };
    let parent = dev.path().parent().unwrap_or(Path::new("/"));
    let name = dev.path().file_name().ok_or_else(|| DeviceError::Invalid {
        path: dev.path().clone(),
        msg: "not a file path".into(),
    })?;
    let dir = root.mkdir_all(parent)?;
    unlink_at(&dir, name);
    let cname = cname(name).map_err(io)?;
    // SAFETY: mknodat relative to a directory descriptor we own, NUL-terminated name.
    let rc = unsafe {
        libc::mknodat(
            dir.fd.as_raw_fd(),
            cname.as_ptr(),
            kind.bits() | perm,
            makedev(maj as u64, min as u64),
        )
    };
    if rc != 0 {
        return Err(DeviceError::Create {
            path: dev.path().clone(),
            source: nix::Error::last(),
        });
    }
    // Reach the node itself (never through a symlink) for its mode (absolute, not umask'ed)
    // and owner.
    // SAFETY: openat relative to a directory descriptor we own, NUL-terminated name.
    let raw = unsafe {
        libc::openat(
            dir.fd.as_raw_fd(),
            cname.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor.
    let node = unsafe { OwnedFd::from_raw_fd(raw) };
    let at = crate::secure_path::fd_path(&node);
    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(perm)).map_err(io)?;
    // SAFETY: fchownat(fd, "", AT_EMPTY_PATH) changes exactly the node we hold.
    let rc = unsafe {
        libc::fchownat(
            node.as_raw_fd(),
            c"".as_ptr(),
            dev.uid().unwrap_or(0),
            dev.gid().unwrap_or(0),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn cname(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// symlink(target, dir/name), relative to an open directory.
pub fn symlink_at(dir: &Target, target: &str, name: &str) -> std::io::Result<()> {
    let (t, n) = (cname(OsStr::new(target))?, cname(OsStr::new(name))?);
    // SAFETY: symlinkat with NUL-terminated strings and a directory descriptor we own.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.fd.as_raw_fd(), n.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Remove dir/name if it is there (not a directory); a symlink is removed, not followed.
pub fn unlink_at(dir: &Target, name: impl AsRef<OsStr>) {
    if let Ok(n) = cname(name.as_ref()) {
        // SAFETY: unlinkat with a NUL-terminated name and a directory descriptor we own.
        unsafe { libc::unlinkat(dir.fd.as_raw_fd(), n.as_ptr(), 0) };
    }
}

/// Whether dir/name is a directory (not following a final symlink).
pub fn is_dir_at(dir: &Target, name: &str) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.fd.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}
