//! The container's filesystem view, built inside its new mount namespace: root propagation, the
//! rootfs bind, every `mounts` entry, /dev, pivot_root, then masked and read-only paths.
//!
//! Split in two around the createContainer hooks, which the spec runs after the mounts exist and
//! before pivot_root: [`prepare`] and [`finish`].

use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use crate::devices::{self, DeviceError};
use crate::mounts::{self, MountError};
use crate::secure_path::{Root, SecurePathError, Target};

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

impl RootfsError {
    /// Name the container path behind a `/proc/self/fd/N` mount target in the message.
    fn shown_as(self, shown: &Path) -> RootfsError {
        match self {
            RootfsError::Mount(e) => RootfsError::Mount(e.shown_as(shown)),
            other => other,
        }
    }
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
    // Opened after the bind, so lookups from it see the mounts made on the bind (the tree
    // pivot_root will use).
    let root = Root::open(ctx.rootfs)?;

    let mut dev_bound = false;
    for m in ctx.spec.mounts().as_deref().unwrap_or(&[]) {
        mount_entry(ctx, &root, m)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("tmpfs") {
            dev_bound = true;
        }
    }
    if !dev_bound {
        let spec_devs = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        for d in devices::all(spec_devs) {
            devices::create(&root, &d, ctx.in_userns)?;
        }
        dev_symlinks(&root)?;
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
    // Resolved inside the new root, magic links refused: after pivot_root a symlink cannot
    // leave the container's tree, but /proc's magic links (of other processes, when the pid
    // namespace is shared) could.
    let root = Root::open(Path::new("/"))?;
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(&root, Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(&root, Path::new(p))?;
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

/// Realise one `mounts` entry inside the rootfs. The destination is resolved and opened inside
/// the root (see [`crate::secure_path`]) and mounted on through its descriptor; the flags,
/// propagation and attributes that need a second call go to the new mount, re-opened.
fn mount_entry(ctx: &Context, root: &Root, m: &Mount) -> Result<(), RootfsError> {
    mount_entry_at(ctx, root, m).map_err(|e| e.shown_as(m.destination()))
}

fn mount_entry_at(ctx: &Context, root: &Root, m: &Mount) -> Result<(), RootfsError> {
    let opts = mounts::parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().as_deref().unwrap_or("");
    let is_bind = opts.bind || typ == "bind";

    let top = if is_bind {
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_absolute() {
            src
        } else {
            ctx.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).map_err(io("mount source", &src))?;
        let dest = make_target(root, m.destination(), meta.is_dir())?;
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive_bind {
            flags |= MsFlags::MS_REC;
        }
        mounts::do_mount(Some(&src), &dest.proc_path(), Some("bind"), flags, None)?;
        let top = root.reopen(&dest)?;
        // A bind ignores every flag but MS_REC: apply the rest by remounting.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            mounts::bind_remount(&top.proc_path(), extra)?;
        }
        top
    } else if typ == "cgroup" || typ == "cgroup2" {
        let dest = make_target(root, m.destination(), true)?;
        mount_cgroup(ctx, root, &dest, &opts)?
    } else {
        let dest = make_target(root, m.destination(), true)?;
        let data = opts.data.join(",");
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let res = mounts::do_mount(
            Some(&src),
            &dest.proc_path(),
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
                    &dest.proc_path(),
                    Some("bind"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                let top = root.reopen(&dest)?;
                if opts.flags.contains(MsFlags::MS_RDONLY) {
                    mounts::bind_remount(&top.proc_path(), MsFlags::MS_RDONLY)?;
                }
                top
            }
            other => {
                other?;
                root.reopen(&dest)?
            }
        }
    };
    for p in &opts.propagation {
        mounts::do_mount(None, &top.proc_path(), None, *p, None)?;
    }
    if opts.rec_attr_set != 0 || opts.rec_attr_clr != 0 {
        mounts::set_recursive_attrs(
            top.fd.as_raw_fd(),
            m.destination(),
            opts.rec_attr_set,
            opts.rec_attr_clr,
        )?;
    }
    Ok(())
}

/// Make the mount point inside the root: a directory, or an empty file for a file bind.
fn make_target(root: &Root, dest: &Path, dir: bool) -> Result<Target, RootfsError> {
    Ok(if dir {
        root.mkdir_all(dest)?
    } else {
        root.create_file(dest)?
    })
}

/// A cgroup mount: on cgroup v2 a cgroup2 filesystem (with a cgroup namespace) or a bind of the
/// container's cgroup; on v1/hybrid a tmpfs holding one bind per hierarchy, as runc builds it.
/// Returns the new mount, open.
fn mount_cgroup(
    ctx: &Context,
    root: &Root,
    dest: &Target,
    opts: &mounts::Options,
) -> Result<Target, RootfsError> {
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
                &dest.proc_path(),
                Some("cgroup2"),
                flags,
                None,
            )?;
            return Ok(root.reopen(dest)?);
        }
        // Without a cgroup of its own (rootless, not delegated) the container sees the one it
        // runs in, as with runc.
        let mut src = Path::new("/sys/fs/cgroup").join(rel);
        if !src.exists() {
            src = Path::new("/sys/fs/cgroup")
                .join(own_cgroup_v2().strip_prefix("/").unwrap_or(Path::new("")));
        }
        mounts::do_mount(
            Some(&src),
            &dest.proc_path(),
            Some("bind"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let top = root.reopen(dest)?;
        mounts::bind_remount(&top.proc_path(), flags)?;
        return Ok(top);
    }
    mounts::do_mount(
        Some(Path::new("tmpfs")),
        &dest.proc_path(),
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    // Below here everything is inside the tmpfs just made, which nothing else can see yet:
    // plain paths under its descriptor are safe.
    let top = root.reopen(dest)?;
    let dest = top.proc_path();
    let dest = dest.as_path();
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
    Ok(top)
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

/// /dev/fd, stdin, stdout, stderr, core and ptmx symlinks (runc's set), made in the rootfs'
/// /dev opened inside the root (symlinkat/unlinkat never follow a final symlink).
fn dev_symlinks(root: &Root) -> Result<(), RootfsError> {
    let dev = root.mkdir_all(Path::new("/dev"))?;
    let dev_path = root.path().join(dev.rel());
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
        match devices::symlink_at(&dev, target, name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("symlink", &dev_path.join(name))(e)),
        }
    }
    if devices::is_dir_at(&dev, "pts") {
        devices::unlink_at(&dev, "ptmx");
        devices::symlink_at(&dev, "pts/ptmx", "ptmx")
            .map_err(io("symlink", &dev_path.join("ptmx")))?;
    }
    Ok(())
}

/// Make a path read-only by binding it onto itself and remounting (inside the new root).
fn readonly_path(root: &Root, p: &Path) -> Result<(), RootfsError> {
    readonly_path_at(root, p).map_err(|e| e.shown_as(p))
}

fn readonly_path_at(root: &Root, p: &Path) -> Result<(), RootfsError> {
    let t = match root.open_in(p) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let at = t.proc_path();
    mounts::do_mount(
        Some(&at),
        &at,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let top = root.reopen(&t)?;
    mounts::bind_remount(&top.proc_path(), MsFlags::MS_RDONLY | MsFlags::MS_REC)?;
    Ok(())
}

/// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(root: &Root, p: &Path) -> Result<(), RootfsError> {
    mask_path_at(root, p).map_err(|e| e.shown_as(p))
}

fn mask_path_at(root: &Root, p: &Path) -> Result<(), RootfsError> {
    let t = match root.open_in(p) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = nix::sys::stat::fstat(t.fd.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(sys(format!("maskedPaths {}: stat", p.display())))?;
    let (src, fstype, flags) = if is_dir {
        ("tmpfs", "tmpfs", MsFlags::MS_RDONLY)
    } else {
        ("/dev/null", "bind", MsFlags::MS_BIND)
    };
    mounts::do_mount(
        Some(Path::new(src)),
        &t.proc_path(),
        Some(fstype),
        flags,
        None,
    )?;
    Ok(())
}
