//! The container's filesystem view, built inside its new mount namespace: root propagation, the
//! rootfs bind, every `mounts` entry, /dev, pivot_root, then masked and read-only paths.
//!
//! Split in two around the createContainer hooks, which the spec runs after the mounts exist and
//! before pivot_root: [`prepare`] and [`finish`].

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use crate::devices::{self, DeviceError};
use crate::mounts::{self, MountError};
use crate::secure_path::{self, SecurePathError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Resolve(#[from] SecurePathError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("linux.rootfsPropagation: unknown value {0:?}")]
    Propagation(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError::Sys { what, source }
}

/// What the rootfs set-up needs to know beyond the spec.
pub struct Context<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_userns: bool,
    pub new_netns: bool,
    pub new_cgroupns: bool,
    /// The container's cgroup path (as in /proc/self/cgroup), for cgroup mounts.
    pub cgroup_path: Option<&'a Path>,
}

/// Everything before the createContainer hooks.
pub fn prepare(ctx: &Context) -> Result<(), RootfsError> {
    let linux = ctx.spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("");
    let root_flags = if prop.is_empty() {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        mounts::propagation_flag(prop).ok_or_else(|| RootfsError::Propagation(prop.to_string()))?
    };
    mounts::do_mount(None, Path::new("/"), None, root_flags, None)?;
    if root_flags.contains(MsFlags::MS_SHARED) {
        // pivot_root refuses a new root whose parent mount is shared.
        make_parent_private(ctx.rootfs)?;
    }
    mounts::do_mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;

    let mut dev_bound = false;
    for m in ctx.spec.mounts().as_deref().unwrap_or(&[]) {
        mount_entry(ctx, m)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("tmpfs") {
            dev_bound = true;
        }
    }
    if !dev_bound {
        let spec_devs = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        for d in devices::all(spec_devs) {
            devices::create(ctx.rootfs, &d, ctx.in_userns)?;
        }
        dev_symlinks(ctx.rootfs)?;
    }
    Ok(())
}

/// pivot_root (or MS_MOVE + chroot) and everything that must happen inside the new root.
pub fn finish(ctx: &Context, no_pivot: bool) -> Result<(), RootfsError> {
    if no_pivot {
        chdir(ctx.rootfs).map_err(sys("chdir to rootfs"))?;
        mounts::do_mount(
            Some(Path::new(".")),
            Path::new("/"),
            None,
            MsFlags::MS_MOVE,
            None,
        )?;
        chroot(".").map_err(sys("chroot"))?;
    } else {
        do_pivot(ctx.rootfs)?;
    }
    chdir("/").map_err(sys("chdir /"))?;

    let linux = ctx.spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&path, v.as_bytes()).map_err(io("linux.sysctl: write", &path))?;
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(Path::new(p))?;
    }
    if ctx
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mounts::bind_remount(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    if let Some(p) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .filter(|p| !p.is_empty())
    {
        let f =
            mounts::propagation_flag(p).ok_or_else(|| RootfsError::Propagation(p.to_string()))?;
        mounts::do_mount(None, Path::new("/"), None, f, None)?;
    }
    Ok(())
}

fn do_pivot(rootfs: &Path) -> Result<(), RootfsError> {
    use std::os::fd::AsRawFd;
    let old = std::fs::File::open("/").map_err(io("open", Path::new("/")))?;
    chdir(rootfs).map_err(sys(format!("chdir to rootfs {}", rootfs.display())))?;
    pivot_root(".", ".").map_err(sys(format!("pivot_root {}", rootfs.display())))?;
    // The old root is now stacked under the new one at "."; detach it without letting the
    // unmount propagate back to the host.
    fchdir(old.as_raw_fd()).map_err(sys("fchdir to old root"))?;
    mounts::do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("unmount old root"))?;
    Ok(())
}

fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let mut best: Option<PathBuf> = None;
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape(mp));
        if rootfs.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
        {
            best = Some(mp);
        }
    }
    if let Some(mp) = best {
        mounts::do_mount(None, &mp, None, MsFlags::MS_PRIVATE, None)?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Realise one `mounts` entry inside the rootfs.
fn mount_entry(ctx: &Context, m: &Mount) -> Result<(), RootfsError> {
    let opts = mounts::parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = secure_path::join(ctx.rootfs, m.destination())?;
    let is_bind = opts.bind || typ == "bind";

    if is_bind {
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_absolute() {
            src
        } else {
            ctx.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).map_err(io("mount source", &src))?;
        make_target(&dest, meta.is_dir())?;
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive_bind {
            flags |= MsFlags::MS_REC;
        }
        mounts::do_mount(Some(&src), &dest, Some("bind"), flags, None)?;
        // A bind ignores every flag but MS_REC: apply the rest by remounting.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            mounts::bind_remount(&dest, extra)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        make_target(&dest, true)?;
        mount_cgroup(ctx, &dest, &opts)?;
    } else {
        make_target(&dest, true)?;
        let data = opts.data.join(",");
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let res = mounts::do_mount(
            Some(&src),
            &dest,
            Some(typ),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match res {
            // sysfs cannot be mounted in a user namespace without its own network namespace:
            // runc falls back to a recursive bind of the host's /sys.
            Err(MountError::Mount {
                errno: nix::Error::EPERM,
                ..
            }) if typ == "sysfs" && ctx.in_userns => {
                mounts::do_mount(
                    Some(Path::new("/sys")),
                    &dest,
                    Some("bind"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                if opts.flags.contains(MsFlags::MS_RDONLY) {
                    mounts::bind_remount(&dest, MsFlags::MS_RDONLY)?;
                }
            }
            other => other?,
        }
    }
    for p in &opts.propagation {
        mounts::do_mount(None, &dest, None, *p, None)?;
    }
    if opts.rec_attr_set != 0 || opts.rec_attr_clr != 0 {
        mounts::set_recursive_attrs(&dest, opts.rec_attr_set, opts.rec_attr_clr)?;
    }
    Ok(())
}

/// Make the mount point: a directory, or an empty file for a file bind.
fn make_target(dest: &Path, dir: bool) -> Result<(), RootfsError> {
    if dir {
        std::fs::create_dir_all(dest).map_err(io("create mount point", dest))
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("create mount point", parent))?;
        }
        if !dest.exists() {
            std::fs::File::create(dest).map_err(io("create mount point", dest))?;
        }
        Ok(())
    }
}

/// A cgroup mount: on cgroup v2 a cgroup2 filesystem (with a cgroup namespace) or a bind of the
/// container's cgroup; on v1/hybrid a tmpfs holding one bind per hierarchy, as runc builds it.
fn mount_cgroup(ctx: &Context, dest: &Path, opts: &mounts::Options) -> Result<(), RootfsError> {
    let mut flags = opts.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let tmpfs_flags = flags;
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        flags |= MsFlags::MS_RDONLY;
    }
    let cg = ctx.cgroup_path.unwrap_or(Path::new("/"));
    let rel = cg.strip_prefix("/").unwrap_or(cg);
    let hierarchies = cgroup_mounts()?;
    let unified_only = hierarchies.iter().all(|h| h.fstype == "cgroup2")
        && hierarchies
            .iter()
            .any(|h| h.mount_point == Path::new("/sys/fs/cgroup"));
    if unified_only {
        if ctx.new_cgroupns {
            mounts::do_mount(
                Some(Path::new("cgroup2")),
                dest,
                Some("cgroup2"),
                flags,
                None,
            )?;
        } else {
            // Without a cgroup of its own (rootless, not delegated) the container sees the one
            // it runs in, as with runc.
            let mut src = Path::new("/sys/fs/cgroup").join(rel);
            if !src.exists() {
                src = Path::new("/sys/fs/cgroup")
                    .join(own_cgroup_v2().strip_prefix("/").unwrap_or(Path::new("")));
            }
            bind_with_flags(&src, dest, flags)?;
        }
        return Ok(());
    }
    mounts::do_mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    // runc leaves the hybrid layout's cgroup2 mount out of v1 containers, and the tmpfs itself
    // writable (each hierarchy bind is read-only): the same view under both runtimes.
    for h in hierarchies.iter().filter(|h| h.fstype == "cgroup") {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let target = dest.join(name);
        std::fs::create_dir_all(&target).map_err(io("create cgroup mount point", &target))?;
        let src = h.mount_point.join(rel);
        let src = if src.exists() {
            src
        } else {
            h.mount_point.clone()
        };
        bind_with_flags(&src, &target, flags)?;
        // Co-mounted controllers (cpu,cpuacct) get the per-controller symlinks runc makes.
        if let Some(n) = name.to_str().filter(|n| n.contains(',')) {
            for part in n.split(',') {
                let link = dest.join(part);
                if !link.exists() {
                    symlink(n, &link).map_err(io("symlink", &link))?;
                }
            }
        }
    }
    Ok(())
}

/// This process' cgroup v2 path ("0::/path" in /proc/self/cgroup).
fn own_cgroup_v2() -> PathBuf {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// A recursive bind, then a remount with `flags` (a bind ignores them on the first call).
fn bind_with_flags(src: &Path, dest: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    mounts::do_mount(
        Some(src),
        dest,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    mounts::bind_remount(dest, flags)?;
    Ok(())
}

struct CgroupMount {
    mount_point: PathBuf,
    fstype: String,
}

/// The host's cgroup hierarchies under /sys/fs/cgroup, from mountinfo.
fn cgroup_mounts() -> Result<Vec<CgroupMount>, RootfsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape(mp));
        if !mp.starts_with("/sys/fs/cgroup") {
            continue;
        }
        out.push(CgroupMount {
            mount_point: mp,
            fstype: fstype.to_string(),
        });
    }
    Ok(out)
}

/// /dev/fd, stdin, stdout, stderr, core and ptmx symlinks (runc's set).
fn dev_symlinks(rootfs: &Path) -> Result<(), RootfsError> {
    let dev = secure_path::join(rootfs, Path::new("/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let link = dev.join(name);
        match symlink(target, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("symlink", &link)(e)),
        }
    }
    let ptmx = dev.join("ptmx");
    if dev.join("pts").is_dir() {
        let _ = std::fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).map_err(io("symlink", &ptmx))?;
    }
    Ok(())
}

/// Make a path read-only by binding it onto itself and remounting (inside the new root).
fn readonly_path(p: &Path) -> Result<(), RootfsError> {
    match mounts::do_mount(
        Some(p),
        p,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    ) {
        Err(MountError::Mount {
            errno: nix::Error::ENOENT,
            ..
        }) => return Ok(()),
        other => other?,
    }
    mounts::bind_remount(p, MsFlags::MS_RDONLY | MsFlags::MS_REC)?;
    Ok(())
}

/// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(p: &Path) -> Result<(), RootfsError> {
    let res = mounts::do_mount(
        Some(Path::new("/dev/null")),
        p,
        Some("bind"),
        MsFlags::MS_BIND,
        None,
    );
    match res {
        Ok(()) => Ok(()),
        Err(MountError::Mount {
            errno: nix::Error::ENOENT,
            ..
        }) => Ok(()),
        Err(MountError::Mount {
            errno: nix::Error::ENOTDIR,
            ..
        }) => {
            mounts::do_mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
