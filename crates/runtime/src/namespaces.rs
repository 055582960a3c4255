//! Namespaces: which to create (clone flags), which to join (setns by path, user namespace first),
//! the id maps the parent writes for a new user namespace, and time-namespace offsets.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("open {typ} namespace {path}: {source}")]
    Open {
        typ: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("join {typ} namespace {path}: {source}")]
    Join {
        typ: String,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("write {file}: {source}")]
    Write {
        file: String,
        source: std::io::Error,
    },
    #[error("unshare {typ} namespace: {source}")]
    Unshare { typ: String, source: nix::Error },
}

/// The clone(2) flag for a namespace type, from nix (so per-target values are the kernel's).
pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // nix has no constant for it on every target; libc does.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// What the spec asks for, split the way the process model needs it.
#[derive(Debug)]
pub struct Plan {
    /// New namespaces created by the clone of the container process (time and cgroup excluded).
    pub clone_flags: CloneFlags,
    /// A new time namespace: unshared by the child so it can write offsets before exec.
    pub new_time: bool,
    /// Namespaces to join, user first; the pid namespace is joined before the clone.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    pub new_user: bool,
    pub new_pid: bool,
    pub new_mount: bool,
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Plan {
        let mut plan = Plan {
            clone_flags: CloneFlags::empty(),
            new_time: false,
            join: Vec::new(),
            new_user: false,
            new_pid: false,
            new_mount: false,
        };
        let nss = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        for ns in nss.into_iter().flatten() {
            match ns.path() {
                Some(p) => plan.join.push((ns.typ(), p.clone())),
                None if ns.typ() == LinuxNamespaceType::Time => plan.new_time = true,
                // Unshared by the child once it is in the container's cgroup, which then becomes
                // the namespace's root (a clone flag would root it at rcrun's own cgroup).
                None if ns.typ() == LinuxNamespaceType::Cgroup => {}
                None => plan.clone_flags |= flag(ns.typ()),
            }
        }
        // Joining a user namespace must come first: it decides our privileges for the rest.
        plan.join
            .sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        plan.new_user = plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER);
        plan.new_pid = plan.clone_flags.contains(CloneFlags::CLONE_NEWPID);
        plan.new_mount = plan.clone_flags.contains(CloneFlags::CLONE_NEWNS);
        plan
    }

    /// Whether the container process can be cloned straight from the runtime (no joins).
    pub fn direct_clone(&self) -> bool {
        self.join.is_empty()
    }
}

/// Open a namespace file; done before any join so a bad path fails before anything changed.
pub fn open(typ: LinuxNamespaceType, path: &PathBuf) -> Result<File, NamespaceError> {
    File::open(path).map_err(|source| NamespaceError::Open {
        typ: typ.to_string(),
        path: path.clone(),
        source,
    })
}

pub fn join(
    typ: LinuxNamespaceType,
    path: &std::path::Path,
    file: &File,
) -> Result<(), NamespaceError> {
    nix::sched::setns(file.as_fd(), flag(typ)).map_err(|source| NamespaceError::Join {
        typ: typ.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    let mut s = String::new();
    for m in maps {
        s.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    s
}

fn write_file(file: String, data: &str) -> Result<(), NamespaceError> {
    std::fs::write(&file, data).map_err(|source| NamespaceError::Write { file, source })
}

/// Write the uid/gid maps of a new user namespace from the parent, as the kernel requires.
pub fn write_id_maps(pid: i32, spec: &Spec) -> Result<(), NamespaceError> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    // An unprivileged writer may map its gid only after denying setgroups. Root in a user
    // namespace (rootless podman) has CAP_SETGID there and keeps setgroups allowed, as in runc.
    if !nix::unistd::geteuid().is_root() {
        write_file(format!("/proc/{pid}/setgroups"), "deny")?;
    }
    if let Some(m) = linux.uid_mappings() {
        write_file(format!("/proc/{pid}/uid_map"), &map_text(m))?;
    }
    if let Some(m) = linux.gid_mappings() {
        write_file(format!("/proc/{pid}/gid_map"), &map_text(m))?;
    }
    Ok(())
}

/// Create the time namespace for our children and exec, and set its clock offsets.
pub fn unshare_time(spec: &Spec) -> Result<(), NamespaceError> {
    nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)).map_err(|source| {
        NamespaceError::Unshare {
            typ: "time".into(),
            source,
        }
    })?;
    let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        let secs = off.secs().unwrap_or(0);
        let nanos = off.nanosecs().unwrap_or(0);
        text.push_str(&format!("{clock} {secs} {nanos}\n"));
    }
    if !text.is_empty() {
        write_file("/proc/self/timens_offsets".into(), &text)?;
    }
    Ok(())
}

/// Bring up `lo` in a network namespace we created, as runc does (ioctl, no netlink needed).
pub fn loopback_up() -> Result<(), NamespaceError> {
    let err = |source: std::io::Error| NamespaceError::Write {
        file: "lo: set IFF_UP".into(),
        source,
    };
    // SAFETY: a plain datagram socket used only for interface ioctls, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: zeroed ifreq is a valid value; the name fits.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of our ifreq.
    let res = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    res.map_err(err)
}

/// runc's rules for which sysctls a container may set, given the namespaces it has.
pub fn check_sysctl(key: &str, nss: &HashSet<LinuxNamespaceType>) -> Result<(), String> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some((LinuxNamespaceType::Ipc, "ipc"))
    } else if key.starts_with("net.") {
        Some((LinuxNamespaceType::Network, "network"))
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some((LinuxNamespaceType::Uts, "uts"))
    } else {
        None
    };
    match needs {
        Some((typ, _)) if nss.contains(&typ) => Ok(()),
        Some((_, name)) => Err(format!(
            "linux.sysctl: {key:?} is not allowed in the host's {name} namespace"
        )),
        None => Err(format!(
            "linux.sysctl: {key:?} is not in a separate kernel namespace"
        )),
    }
}
