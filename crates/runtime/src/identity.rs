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

/// Switch to the spec's user. Supplementary groups are set unless this user namespace denies
/// setgroups(2) (`/proc/self/setgroups` is `deny`: the namespace a non-root rcrun made), as runc
/// does; in a namespace that allows it (rootless podman's) they are set.
pub fn switch(user: &User) -> Result<(), IdentityError> {
    if !setgroups_denied() {
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

fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|v| v.trim() == "deny")
}

/// True when this process runs in a user namespace other than the initial one (its uid_map is
/// not the identity map of all 2^32-1 ids): rootless podman and rootless Docker run the runtime
/// as "root" inside such a namespace.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => !is_initial_uid_map(&map),
        Err(_) => false,
    }
}

fn is_initial_uid_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// runc's rule for running "rootless" when not told: a non-root euid, or euid 0 in a user
/// namespace (the cgroups of the invoking user are then not known to be writable).
pub fn rootless_auto() -> bool {
    !nix::unistd::geteuid().is_root() || in_user_namespace()
}

/// runc's rule for using `$XDG_RUNTIME_DIR/<runtime>` as the default state root: when set, for
/// a non-root euid, or for euid 0 in a user namespace unless `$USER` is `root` (the real root,
/// e.g. under `sudo`, keeps `/run/<runtime>`).
pub fn honor_xdg_runtime_dir() -> bool {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| d.is_empty()) {
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        return true;
    }
    if !in_user_namespace() {
        return false;
    }
    std::env::var("USER").map_or(true, |u| u != "root")
}

#[cfg(test)]
mod userns_tests {
    use super::is_initial_uid_map;

    #[test]
    fn initial_map_is_recognised() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
        assert!(!is_initial_uid_map("0 1000 1\n1 100000 65536\n"));
    }
}
