//! Device nodes in the container's /dev: runc's default set plus `linux.devices`, made with
//! mknod(2), or bind-mounted from the host inside a user namespace (where mknod is not allowed).

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use crate::mounts;
use crate::secure_path;

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

/// Create one device node under `rootfs`.
pub fn create(rootfs: &Path, dev: &LinuxDevice, in_userns: bool) -> Result<(), DeviceError> {
    let dest = secure_path::join(rootfs, dev.path())?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DeviceError::Io {
            path: dest.clone(),
            source,
        })?;
    }
    if in_userns {
        return bind_from_host(dev.path(), &dest);
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
    let _ = std::fs::remove_file(&dest);
    mknod(
        &dest,
        kind,
        Mode::from_bits_truncate(perm),
        makedev(maj as u64, min as u64),
    )
    .map_err(|source| DeviceError::Create {
        path: dev.path().clone(),
        source,
    })?;
    // mknod honours the umask; the spec's mode is absolute.
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(perm)).map_err(|source| {
        DeviceError::Io {
            path: dest.clone(),
            source,
        }
    })?;
    chown(
        &dest,
        Some(dev.uid().unwrap_or(0)),
        Some(dev.gid().unwrap_or(0)),
    )
    .map_err(|source| DeviceError::Io {
        path: dest.clone(),
        source,
    })?;
    Ok(())
}

fn bind_from_host(host: &Path, dest: &Path) -> Result<(), DeviceError> {
    if !dest.exists() {
        std::fs::File::create(dest).map_err(|source| DeviceError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    mounts::do_mount(
        Some(host),
        dest,
        Some("bind"),
        nix::mount::MsFlags::MS_BIND,
        None,
    )
    .map_err(|source| DeviceError::Bind {
        path: host.to_path_buf(),
        source,
    })
}
