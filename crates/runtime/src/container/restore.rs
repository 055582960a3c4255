//! `restore`: a container from a CRIU checkpoint, as a real rcrun container (state directory,
//! state.json, cleanup record, cgroup) so `state`, `kill`, `ps` and `delete` work on it, possibly
//! under another id and from another bundle (a new host).
//!
//! The cgroup is made from the (new) spec as `create` makes it; CRIU runs inside it, in a private
//! mount namespace where the bundle's rootfs is bind-mounted on a directory of the state dir (its
//! `--root`), so nothing of the restore is left mounted on the host. The mounts the checkpoint
//! left external are mapped to their new sources, and the stdio pipes of the checkpointed process
//! to ours. The restored init comes to rcrun (a child subreaper) when CRIU exits: a foreground
//! restore forwards signals to it, reaps it, deletes the container and exits with its status.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signalfd::{SfdFlags, SignalFd};
use oci_spec::runtime::LinuxNamespaceType;
use rcrun_checkpoint::criu::Invocation;
use rcrun_checkpoint::images::{self, MountKind};
use rcrun_checkpoint::opts::{self, Common, ExtMount, PageServerAddr};
use rcrun_checkpoint::stats::{self, RestoreStats};
use rcrun_checkpoint::Criu;

use super::checkpoint::{io, CheckpointError};
use super::{delete, sys, Error};
use crate::cgroups::{Cgroup, CgroupOptions};
use crate::spec::LoadedSpec;
use crate::state::{CleanupRecord, ContainerState, StateDir};

pub struct RestoreOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub criu: Option<&'a Path>,
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub detach: bool,
    pub no_subreaper: bool,
    /// Accepted for runc compatibility: CRIU switches to the restored root itself.
    pub no_pivot: bool,
    pub systemd_cgroup: bool,
    pub rootless: bool,
    pub tcp_close: bool,
    /// Reopen the paths of the checkpointed stdio files instead of handing over rcrun's stdio
    /// (`migrate`: the container keeps its /dev/null or log file, not the caller's terminal).
    pub reopen_stdio: bool,
    pub common: Common,
    /// Post-copy: the restored tasks run before their memory is in place; a `criu lazy-pages`
    /// daemon fills it on page faults (and in the background).
    pub lazy: Option<Lazy>,
}

/// Where a lazy restore's memory comes from.
#[derive(Debug, Clone)]
pub enum Lazy {
    /// The local images (a normal dump): restore no longer waits for memory to be copied in.
    Local,
    /// The dump side's page server (the dump ran with `--lazy-pages --page-server`).
    Remote(PageServerAddr),
}

/// A restored container.
#[derive(Debug, Clone)]
pub struct Restored {
    pub pid: i32,
    /// How long `criu restore` took.
    pub elapsed: Duration,
    pub stats: Option<RestoreStats>,
    /// The exit code of a foreground restore's container.
    pub exit_code: Option<i32>,
}

/// Undo a failed restore: the restored process, the cgroup, the state directory.
struct Undo {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    pid: i32,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill(2) of the process we just restored.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if let Some(cg) = self.cgroup.take() {
            for pid in cg.pids().unwrap_or_default() {
                // SAFETY: kill(2) of a process in the cgroup we made for this restore.
                unsafe { libc::kill(pid.as_raw(), libc::SIGKILL) };
            }
            if let Err(e) = cg.remove() {
                tracing::warn!("cleanup after failed restore: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.remove() {
                tracing::warn!("cleanup after failed restore: {e}");
            }
        }
    }
}

fn cstring(p: &Path) -> Result<CString, CheckpointError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| CheckpointError::Io {
        what: "path with a NUL byte",
        path: p.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

pub fn restore(opts: &RestoreOptions) -> Result<Restored, Error> {
    let _span = tracing::info_span!("restore", id = opts.id).entered();
    let criu = Criu::locate(opts.criu).map_err(CheckpointError::from)?;
    let LoadedSpec {
        spec,
        bundle,
        rootfs,
    } = crate::spec::load(opts.bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if !terminal && opts.console_socket.is_some() {
        return Err(Error::SocketWithoutTty);
    }
    if terminal && !opts.common.shell_job {
        return Err(CheckpointError::Unsupported(
            "process.terminal is true: restoring a container with a terminal needs --shell-job (it then gets rcrun's terminal; handing a new pty to --console-socket is not supported)".into(),
        )
        .into());
    }
    let image_dir = crate::spec::absolute(&opts.image_path);
    let meta = images::read_meta(&image_dir).map_err(CheckpointError::from)?;
    let descriptors = images::read_descriptors(&image_dir).unwrap_or_default();
    let work_dir = opts
        .work_path
        .as_deref()
        .map(crate::spec::absolute)
        .unwrap_or_else(|| image_dir.clone());
    std::fs::create_dir_all(&work_dir).map_err(io("create work directory", &work_dir))?;

    let dir = StateDir::create(opts.root, opts.id)?;
    let mut undo = Undo {
        dir: Some(dir),
        cgroup: None,
        pid: 0,
    };
    let dir_path = undo.dir.as_ref().map(|d| d.dir.clone()).unwrap_or_default();
    let cg_opts = CgroupOptions {
        container_id: opts.id,
        cgroups_path: spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_deref()),
        systemd: opts.systemd_cgroup,
        rootless: opts.rootless,
    };
    let planned = Cgroup::plan(&cg_opts)?;
    if let Some(d) = undo.dir.as_ref() {
        d.save_cleanup(&CleanupRecord {
            cgroup: Some(planned.state_path()),
            systemd_cgroup: opts.systemd_cgroup,
        })?;
    }
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cg = Cgroup::create_planned(planned, resources)?;
    if let Some(res) = resources {
        cg.apply(res)?;
    }
    undo.cgroup = Some(cg);
    let cg = undo
        .cgroup
        .as_ref()
        .ok_or(Error::Child("cgroup vanished".into()))?;

    // Where each external mount of the checkpoint comes from now.
    let ext_mounts =
        meta.external_mounts
            .iter()
            .map(|m| ExtMount {
                key: m.dest.clone(),
                value: match m.kind {
                    MountKind::Masked => "/dev/null".into(),
                    MountKind::Bind => spec_bind_source(&spec, &bundle, &m.dest)
                        .unwrap_or_else(|| m.source.clone()),
                    MountKind::Cgroup => {
                        cgroup_source(cg, &m.controllers).unwrap_or_else(|| m.source.clone())
                    }
                },
            })
            .collect();
    // Files opened outside the container: our stdio for its stdio, else the path reopened (kept
    // open, without close-on-exec, until CRIU has run).
    let mut reopened = Vec::new();
    let mut inherit_fds: Vec<(i32, String)> = descriptors
        .iter()
        .enumerate()
        .filter(|(_, d)| images::needs_inherit(d))
        .map(|(i, d)| (i as i32, d.clone()))
        .collect();
    for f in &meta.external_files {
        let fd = match f.stdio {
            Some(fd) if !opts.reopen_stdio => fd,
            _ => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&f.path)
                    .or_else(|_| std::fs::File::open(&f.path))
                    .map_err(io("reopen a file of the checkpoint", Path::new(&f.path)))?;
                let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
                // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
                reopened.push(file);
                fd
            }
        };
        inherit_fds.push((fd, f.key.clone()));
    }
    create_mount_points(&spec, &bundle, &rootfs)?;
    let criu_root = dir_path.join("criu-root");
    std::fs::create_dir_all(&criu_root).map_err(io("create", &criu_root))?;
    let pidfile = dir_path.join("criu-restore.pid");
    let cgroup_roots = cg
        .hierarchies()
        .map(|(name, mount, d)| {
            let rel = d.strip_prefix(mount).unwrap_or(d);
            (
                name.to_string(),
                Path::new("/").join(rel).to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut common = opts.common.clone();
    if opts.lazy.is_some() {
        common.lazy_pages = true;
    }
    let args = opts::restore_args(&opts::RestoreOptions {
        image_dir: image_dir.clone(),
        work_dir: work_dir.clone(),
        root: criu_root.clone(),
        pidfile: pidfile.clone(),
        ext_mounts,
        inherit_fds,
        cgroup_roots,
        tcp_skip_in_flight: opts.tcp_close,
        common,
    })
    .map_err(CheckpointError::from)?;

    let rootfs_c = cstring(&rootfs)?;
    let root_c = cstring(&criu_root)?;
    let procs: Vec<CString> = cg
        .hierarchies()
        .map(|(_, _, d)| cstring(&d.join("cgroup.procs")))
        .collect::<Result<_, _>>()?;
    let rootless = opts.rootless;
    let pre_exec = move || -> std::io::Result<()> {
        // Only raw system calls from here to exec (see rcrun_checkpoint::criu::PreExec).
        // SAFETY: valid C strings; unshare/mount/open/write/close have no memory effects on us.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let slash = c"/";
            if libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                rootfs_c.as_ptr(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    if rootless {
                        continue;
                    }
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, c"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 && !rootless {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };

    // Foreground: signals are read from a signalfd from before CRIU runs, so the restored
    // process's exit cannot be missed; it comes to us when CRIU exits.
    let sfd = if opts.detach {
        None
    } else {
        let mask = super::run::forwarded_signals();
        mask.thread_block().map_err(sys("block signals"))?;
        Some(
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(sys("signalfd"))?,
        )
    };
    if !opts.no_subreaper {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }
    let _lazy = match &opts.lazy {
        Some(lazy) => Some(start_lazy_pages(&criu, &image_dir, &work_dir, lazy)?),
        None => None,
    };
    let t0 = Instant::now();
    let ran = criu.run(Invocation {
        action: "restore",
        args,
        log: work_dir.join("restore.log"),
        pre_exec: Some(Box::new(pre_exec)),
    });
    let elapsed = t0.elapsed();
    drop(reopened);
    let _ = std::fs::remove_dir(&criu_root);
    ran.map_err(CheckpointError::from)?;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(CheckpointError::NoPid {
            path: pidfile.clone(),
        })?;
    undo.pid = pid;
    let _ = std::fs::remove_file(&pidfile);
    if opts
        .common
        .empty_ns
        .iter()
        .any(|n| n == "network" || n == "net")
        && crate::spec::creates_namespace(&spec, LinuxNamespaceType::Network)
    {
        loopback_up_in(pid)?;
    }
    if cg.hierarchies().next().is_none() {
        // A systemd-managed cgroup has no directories to join before exec.
        cg.add_task(nix::unistd::Pid::from_raw(pid))?;
    }

    let hooks = spec.hooks().as_ref();
    let state = ContainerState {
        oci_version: spec.version().clone(),
        id: opts.id.to_string(),
        pid,
        pid_start: crate::state::proc_stat(pid).map(|(_, s)| s).unwrap_or(0),
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: crate::time::now_rfc3339(),
        owner: String::new(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: Some(cg.state_path()),
        systemd_cgroup: opts.systemd_cgroup,
        freezer: crate::cgroups::freezer_file(cg),
        rootless: opts.rootless,
        own_pid_ns: crate::spec::namespace(&spec, LinuxNamespaceType::Pid).is_some()
            || crate::spec::creates_namespace(&spec, LinuxNamespaceType::Pid),
        poststart: hooks
            .and_then(|h| h.poststart().clone())
            .unwrap_or_default(),
        poststop: hooks.and_then(|h| h.poststop().clone()).unwrap_or_default(),
    };
    let dir = undo
        .dir
        .as_ref()
        .ok_or(Error::Child("state directory vanished".into()))?;
    dir.save(&state)?;
    if let Some(p) = opts.pid_file {
        super::create::write_pid_file(p, pid)?;
    }
    let restore_stats = stats::restore_stats(&work_dir).unwrap_or(None);
    // The container exists now: nothing more to undo.
    undo.pid = 0;
    let dir = undo
        .dir
        .take()
        .ok_or(Error::Child("state directory vanished".into()))?;
    undo.cgroup = None;
    let Some(sfd) = sfd else {
        return Ok(Restored {
            pid,
            elapsed,
            stats: restore_stats,
            exit_code: None,
        });
    };
    drop(dir);
    let code = super::run::wait_loop(&sfd, nix::unistd::Pid::from_raw(pid), None)?;
    let dir = StateDir::open(opts.root, opts.id)?;
    let state = dir.load()?;
    delete::destroy(dir, &state)?;
    Ok(Restored {
        pid,
        elapsed,
        stats: restore_stats,
        exit_code: Some(code),
    })
}

/// `--empty-ns network`: CRIU restored a bare network namespace; bring `lo` up in it as
/// `create` does for a new one (from a thread of our own: setns moves only the calling thread).
fn loopback_up_in(pid: i32) -> Result<(), CheckpointError> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = std::fs::File::open(&path).map_err(io("open", &path))?;
    let joined = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            // SAFETY: setns with a namespace descriptor we own; only this thread moves.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            crate::namespaces::loopback_up().map_err(std::io::Error::other)
        })
        .join()
    });
    match joined {
        Ok(r) => r.map_err(io("bring lo up in the network namespace", &path)),
        Err(_) => Err(CheckpointError::Unsupported(
            "bring lo up in the restored network namespace: the thread failed".into(),
        )),
    }
}

/// CRIU mounts on the checkpointed mount points and fails on one the rootfs lacks: a fresh
/// rootfs (containerd restores onto a new snapshot of the image) has none of the directories
/// `create` made for the spec's mounts (`/run`). As runc does, make them, inside the rootfs;
/// those below a tmpfs of the spec are CRIU's to make (it restores the tmpfs first).
fn create_mount_points(
    spec: &oci_spec::runtime::Spec,
    bundle: &Path,
    rootfs: &Path,
) -> Result<(), CheckpointError> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    let root =
        crate::secure_path::Root::open(rootfs).map_err(|source| CheckpointError::MountPoint {
            dest: PathBuf::from("/"),
            source,
        })?;
    for m in mounts {
        let dest = m.destination();
        if tmpfs.iter().any(|t| dest != *t && dest.starts_with(t)) {
            continue;
        }
        let opts = m.options().as_deref().unwrap_or(&[]);
        let bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        let file_source = bind
            && m.source().as_ref().is_some_and(|src| {
                std::fs::metadata(bundle.join(src)).is_ok_and(|md| !md.is_dir())
            });
        let made = if file_source {
            root.create_file(dest)
        } else {
            root.mkdir_all(dest)
        };
        made.map_err(|source| CheckpointError::MountPoint {
            dest: dest.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The source of the spec's bind mount at `dest` (relative sources are relative to the bundle).
fn spec_bind_source(spec: &oci_spec::runtime::Spec, bundle: &Path, dest: &str) -> Option<String> {
    let m = spec
        .mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination().to_string_lossy() == dest)?;
    let src = m.source().as_ref()?;
    let src = if src.is_absolute() {
        src.clone()
    } else {
        bundle.join(src)
    };
    Some(src.to_string_lossy().into_owned())
}

/// The new container's cgroup directory for a checkpointed cgroup mount: the unified one for
/// cgroup2 (no controllers), else the v1 hierarchy with those controllers.
fn cgroup_source(cg: &Cgroup, controllers: &str) -> Option<String> {
    let dir = if controllers.is_empty() {
        cg.controller_dir("")
    } else {
        let want: Vec<&str> = controllers.split(',').collect();
        cg.hierarchies()
            .find(|(name, _, _)| {
                let have: Vec<&str> = name.split(',').collect();
                want.iter().all(|w| have.contains(w)) && have.iter().all(|h| want.contains(h))
            })
            .map(|(_, _, d)| d)
    }?;
    Some(dir.to_string_lossy().into_owned())
}

/// Post-copy: the daemon that serves page faults of the restored tasks from the remote page
/// server. Killed when dropped (it exits by itself once every page has arrived).
struct LazyPages(std::process::Child);

impl Drop for LazyPages {
    fn drop(&mut self) {
        // Detached restore: let it finish the transfer; reap it only if it is already done.
        let _ = self.0.try_wait();
    }
}

fn start_lazy_pages(
    criu: &Criu,
    image_dir: &Path,
    work_dir: &Path,
    lazy: &Lazy,
) -> Result<LazyPages, CheckpointError> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--images-dir".into(),
        image_dir.into(),
        "--work-dir".into(),
        work_dir.into(),
        "-v4".into(),
    ];
    if let Lazy::Remote(addr) = lazy {
        args.extend([
            "--page-server".into(),
            "--address".into(),
            addr.address.clone().into(),
            "--port".into(),
            addr.port.to_string().into(),
        ]);
    }
    let child = criu.spawn(Invocation {
        action: "lazy-pages",
        args,
        log: work_dir.join("lazy-pages.log"),
        pre_exec: None,
    })?;
    // It must listen on its socket before restore connects to it.
    let sock = work_dir.join("lazy-pages.socket");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(LazyPages(child))
}
