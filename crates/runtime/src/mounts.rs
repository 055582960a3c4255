//! One OCI mount entry: option parsing (runc's table) and the mount(2) calls that realise it,
//! including bind remounts for flags the first bind ignores, propagation, and recursive
//! attributes through mount_setattr(2).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {source_path} to {dest} (type {fstype}, options {data:?}): {errno}")]
    Mount {
        source_path: String,
        dest: PathBuf,
        fstype: String,
        data: String,
        errno: nix::Error,
    },
    #[error("mount destination {dest}: {msg}")]
    Destination { dest: PathBuf, msg: String },
    #[error("mount option {0:?} is not supported")]
    Unsupported(String),
}

impl MountError {
    /// Name the container path a `/proc/self/fd/N` target stands for, as runc does
    /// (`mount none to /x (via /proc/self/fd/7)`).
    pub fn shown_as(self, shown: &Path) -> MountError {
        match self {
            MountError::Mount {
                source_path,
                dest,
                fstype,
                data,
                errno,
            } if dest.starts_with("/proc/self/fd") => MountError::Mount {
                source_path,
                dest: PathBuf::from(format!("{} (via {})", shown.display(), dest.display())),
                fstype,
                data,
                errno,
            },
            other => other,
        }
    }
}

/// Parsed `options` of a mount entry.
#[derive(Debug, Clone)]
pub struct Options {
    pub flags: MsFlags,
    /// Flags explicitly cleared (`rw`, `suid`, ...): needed when remounting a bind.
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    /// `rro`, `rnosuid`, ...: mount_setattr(2) attributes applied recursively.
    pub rec_attr_set: u64,
    pub rec_attr_clr: u64,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive_bind: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            rec_attr_set: 0,
            rec_attr_clr: 0,
            data: Vec::new(),
            bind: false,
            recursive_bind: false,
        }
    }
}

pub fn parse_options(opts: &[String]) -> Result<Options, MountError> {
    let mut o = Options::default();
    for opt in opts {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                o.recursive_bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation
                    .push(propagation_flag(opt).unwrap_or(MsFlags::MS_PRIVATE));
                continue;
            }
            "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec"
            | "rnoatime" | "ratime" | "rrelatime" | "rstrictatime" | "rnodiratime"
            | "rdiratime" => {
                let (set, clr) = rec_attr(opt);
                o.rec_attr_set |= set;
                o.rec_attr_clr |= clr;
                continue;
            }
            // Handled by the runtime itself, not the kernel (runc accepts these too).
            "tmpcopyup" | "rbind-ro" => continue,
            "idmap" | "ridmap" => return Err(MountError::Unsupported(opt.clone())),
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.cleared |= clear;
    }
    Ok(o)
}

/// Propagation keyword to the mount(2) flags that set it.
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

// mount_setattr(2) attribute bits (uapi/linux/mount.h); libc does not export all of them everywhere.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR__ATIME: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

fn rec_attr(opt: &str) -> (u64, u64) {
    match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "ratime" | "rrelatime" => (0, MOUNT_ATTR__ATIME),
        _ => (0, 0),
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr(dirfd: i32, path: &std::ffi::CStr, flags: i32, set: u64, clr: u64) -> i64 {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid C string and a correctly sized attr struct.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// Set/clear attributes of the mount `fd` refers to (e.g. a detached clone from open_tree).
pub(crate) fn set_attrs_empty_path(fd: i32, set: u64, clr: u64) -> std::io::Result<()> {
    if mount_setattr(fd, c"", libc::AT_EMPTY_PATH, set, clr) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Apply attributes to the whole mount tree `fd` is open on (the `r*` options), kernel 5.12+.
/// `dest` names it in errors.
pub fn set_recursive_attrs(fd: RawFd, dest: &Path, set: u64, clr: u64) -> Result<(), MountError> {
    let rc = mount_setattr(fd, c"", libc::AT_EMPTY_PATH | libc::AT_RECURSIVE, set, clr);
    if rc != 0 {
        return Err(MountError::Mount {
            source_path: "(mount_setattr)".into(),
            dest: dest.to_path_buf(),
            fstype: String::new(),
            data: format!("set={set:#x} clr={clr:#x}"),
            errno: nix::Error::last(),
        });
    }
    Ok(())
}

/// mount(2) with an error that names everything involved.
pub fn do_mount(
    source: Option<&Path>,
    dest: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mount(source, dest, fstype, flags, data).map_err(|errno| MountError::Mount {
        source_path: source
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| "none".into()),
        dest: dest.to_path_buf(),
        fstype: fstype.unwrap_or("").to_string(),
        data: data.unwrap_or("").to_string(),
        errno,
    })
}

/// Flags that a bind remount must repeat or the kernel refuses it in a user namespace
/// (locked flags), read from the mounted filesystem.
pub fn locked_flags(dest: &Path) -> MsFlags {
    match nix::sys::statvfs::statvfs(dest) {
        Ok(st) => {
            use nix::sys::statvfs::FsFlags;
            let f = st.flags();
            let mut out = MsFlags::empty();
            for (fs, ms) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(fs) {
                    out |= ms;
                }
            }
            out
        }
        Err(_) => MsFlags::empty(),
    }
}

/// Remount a bind mount with `flags` (which may include MS_RDONLY); retry with the locked flags
/// of the underlying mount when the kernel says EPERM (user namespaces lock nosuid/nodev/noexec).
pub fn bind_remount(dest: &Path, flags: MsFlags) -> Result<(), MountError> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let keep = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    match do_mount(None, dest, None, base | keep, None) {
        Err(MountError::Mount {
            errno: nix::Error::EPERM,
            ..
        }) => {
            let locked = locked_flags(dest) & !MsFlags::MS_RDONLY;
            do_mount(None, dest, None, base | keep | locked, None)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
            "rro".into(),
        ])
        .unwrap();
        assert!(o
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME));
        assert_eq!(
            o.data,
            vec!["mode=755".to_string(), "size=65536k".to_string()]
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.rec_attr_set, MOUNT_ATTR_RDONLY);
        let rw = parse_options(&["ro".into(), "rw".into()]).unwrap();
        assert!(!rw.flags.contains(MsFlags::MS_RDONLY));
        assert!(parse_options(&["idmap".into()]).is_err());
    }
}
