//! Who the container's process runs as: groups, gid, uid, umask, HOME, and stdio ownership.

use std::os::fd::RawFd;
use std::path::Path;

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::User;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("process.user: setgroups {gids:?}: {source}")]
    Groups { gids: Vec<u32>, source: nix::Error },
    #[error("process.user: setgid {gid}: {source}")]
    Gid { gid: u32, source: nix::Error },
    #[error("process.user: setuid {uid}: {source}")]
    Uid { uid: u32, source: nix::Error },
}

/// Switch to the spec's user. `setgroups_allowed` is false in a user namespace whose
/// /proc/PID/setgroups says deny (rootless).
pub fn switch(user: &User, setgroups_allowed: bool) -> Result<(), IdentityError> {
    if setgroups_allowed {
        let gids: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
        let groups: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(|source| IdentityError::Groups { gids, source })?;
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|source| IdentityError::Gid {
        gid: user.gid(),
        source,
    })?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|source| IdentityError::Uid {
        uid: user.uid(),
        source,
    })?;
    Ok(())
}

/// HOME for a uid from the container's /etc/passwd (read after pivot_root), "/" if none.
pub fn home_dir(uid: u32) -> String {
    let Ok(passwd) = std::fs::read_to_string(Path::new("/etc/passwd")) else {
        return "/".into();
    };
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) {
            return f[5].to_string();
        }
    }
    "/".into()
}

/// The host's name for a uid from /etc/passwd ("#uid" if none). Read directly rather than
/// through NSS, which a statically linked rcrun cannot load.
pub fn host_user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2].parse::<u32>().ok() == Some(uid))
        .map(|f| f[0].to_string())
        .unwrap_or_else(|| format!("#{uid}"))
}

/// Give the container's user its stdio, as runc does: pipes owned by root are otherwise
/// unwritable for a non-root process. /dev/null and ttys are left alone.
pub fn fix_stdio_owner(uid: u32, gid: u32) {
    for fd in 0..3 as RawFd {
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFCHR || (st.st_uid == uid && st.st_gid == gid) {
            continue;
        }
        // SAFETY: fchown on a descriptor we hold; failure is harmless (read-only fs, etc.).
        unsafe {
            libc::fchown(fd, uid, gid);
        }
    }
}
