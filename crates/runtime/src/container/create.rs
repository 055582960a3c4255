//! `create`: from a bundle to a container process waiting on exec.fifo.
//!
//! Parent side of the process model (see docs/architecture.md): validate, make the state dir and
//! cgroup, clone the container process (directly, or through an intermediate process when
//! namespaces must be joined by path first), write id maps and join the cgroup for it, run the
//! runtime-namespace hooks when it asks, and save state.json once it reports ready. Any failure
//! undoes all of that.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{spawn, sys, Error};
use crate::cgroups::{Cgroup, CgroupOptions};
use crate::init::{self, InitConfig};
use crate::namespaces::{self, Plan};
use crate::spec::{self, LoadedSpec};
use crate::state::{CleanupRecord, ContainerState, StateDir, Status};
use crate::sync::{self, Msg};
use crate::{console, fds, hooks, lsm, seccomp_listener};

pub struct CreateOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: usize,
    pub systemd_cgroup: bool,
    pub rootless: bool,
    /// A foreground `run` with a terminal: rcrun receives the pty master itself.
    pub own_console: bool,
}

/// A created container: its saved state, its locked directory, and for a foreground terminal
/// `run` the pty master.
pub struct Created {
    pub state: ContainerState,
    pub dir: StateDir,
    pub cgroup: Option<Cgroup>,
    pub console: Option<OwnedFd>,
}

/// Undo everything a failed create made, in reverse order.
struct Undo {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    pids: Vec<Pid>,
    /// ipc-shm: channels joined; dropped (after the state dir) they are left again.
    shm: Option<crate::shm_channels::Joined>,
    /// linux.netDevices moved into the container: given back while its netns still lives.
    net_devices: Option<crate::net_devices::Moved>,
    /// Once runtime hooks have run, a failed create runs the poststop hooks too (runc's
    /// destroy does): what a createRuntime hook set up (a network) is torn down.
    poststop: Option<(Vec<oci_spec::runtime::Hook>, String)>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(moved) = self.net_devices.take() {
            moved.undo();
        }
        for pid in self.pids.drain(..) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some((hooks, state)) = self.poststop.take() {
            hooks::run_all_warn("poststop", &hooks, &state);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.remove() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
    }
}

pub fn create(opts: &CreateOptions) -> Result<Created, Error> {
    let _span = tracing::info_span!("create", id = opts.id).entered();
    let LoadedSpec {
        mut spec, // ipc-shm: shm_channels::join adds mounts and placement
        bundle,
        rootfs,
    } = spec::load(opts.bundle)?;
    // org.rcrun.net.network: the network hooks go into the spec before anything reads them.
    crate::net_hooks::inject(&mut spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or(Error::Child("process must be set".into()))?;
    let plan = Plan::from_spec(&spec);
    if !plan.new_mount && spec::namespace(&spec, LinuxNamespaceType::Mount).is_none() {
        return Err(Error::NoMountNamespace);
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() && !opts.own_console {
        return Err(Error::TtyNeedsSocket);
    }
    if !terminal && opts.console_socket.is_some() {
        return Err(Error::SocketWithoutTty);
    }
    lsm::check(
        process.apparmor_profile().as_deref(),
        process.selinux_label().as_deref(),
    )?;
    // Open everything that can fail on bad input before anything is made.
    let ns_files = plan
        .join
        .iter()
        .map(|(t, p)| namespaces::open(*t, p).map(|f| (*t, p.clone(), f)))
        .collect::<Result<Vec<_>, _>>()?;
    let console_sock: Option<OwnedFd> = match opts.console_socket {
        Some(p) => Some(console::connect(p)?),
        None => None,
    };

    let dir = StateDir::create(opts.root, opts.id)?;
    let mut undo = Undo {
        dir: Some(dir),
        cgroup: None,
        pids: Vec::new(),
        shm: None,
        net_devices: None,
        poststop: None,
    };
    let dir_path = undo.dir.as_ref().map(|d| d.dir.clone()).unwrap_or_default();
    // ipc-shm: make/join the annotation's channels (recorded in the state dir first).
    undo.shm = crate::shm_channels::join(&mut spec, opts.id, &dir_path)?;

    // The console for a foreground run: a socketpair, we keep one end.
    let (own_console_parent, own_console_child) =
        if terminal && opts.own_console && opts.console_socket.is_none() {
            let (a, b) = console::own_pair()?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
    let console_fd = console_sock
        .as_ref()
        .or(own_console_child.as_ref())
        .map(|f| f.as_raw_fd());

    let fifo = dir_path.join(crate::state::EXEC_FIFO);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
        .map_err(sys(format!("mkfifo {}", fifo.display())))?;
    // O_RDWR: never blocks on open, and keeps read(2) in the child blocking until `start` writes.
    let fifo_fd = nix::fcntl::open(&fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys(format!("open {}", fifo.display())))?;

    let cgroup = {
        let _s = tracing::debug_span!("cgroup").entered();
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let cg_opts = CgroupOptions {
            container_id: opts.id,
            cgroups_path: spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_deref()),
            systemd: opts.systemd_cgroup,
            rootless: opts.rootless,
        };
        // Record the cgroup before it exists: a create killed from here on leaves nothing that
        // `delete --force` cannot find, even without state.json.
        let made = match Cgroup::plan(&cg_opts) {
            Ok(planned) => {
                if let Some(d) = undo.dir.as_ref() {
                    d.save_cleanup(&CleanupRecord {
                        cgroup: Some(planned.state_path()),
                        systemd_cgroup: opts.systemd_cgroup,
                    })?;
                }
                Cgroup::create_planned(planned, resources)
            }
            Err(e) => Err(e),
        };
        match made {
            Ok(cg) => Some(cg),
            Err(e) if opts.rootless => {
                tracing::warn!("rootless: running without a cgroup: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        }
    };
    undo.cgroup = cgroup;

    let hooks = spec.hooks().as_ref();
    let prestart = hooks.and_then(|h| h.prestart().clone()).unwrap_or_default();
    let create_runtime = hooks
        .and_then(|h| h.create_runtime().clone())
        .unwrap_or_default();
    let runtime_hooks = !prestart.is_empty() || !create_runtime.is_empty();
    let listen_fds = fds::listen_fds();
    let mut state = ContainerState {
        oci_version: spec.version().clone(),
        id: opts.id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: crate::time::now_rfc3339(),
        owner: String::new(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: undo.cgroup.as_ref().map(|c| c.state_path()),
        systemd_cgroup: opts.systemd_cgroup,
        freezer: undo.cgroup.as_ref().and_then(crate::cgroups::freezer_file),
        rootless: opts.rootless,
        own_pid_ns: plan.new_pid || spec::namespace(&spec, LinuxNamespaceType::Pid).is_some(),
        poststart: hooks
            .and_then(|h| h.poststart().clone())
            .unwrap_or_default(),
        poststop: hooks.and_then(|h| h.poststop().clone()).unwrap_or_default(),
    };
    let mut hook_state: serde_json::Value =
        serde_json::from_str(&state.hook_state(Status::Creating)).unwrap_or_default();
    hook_state["pid"] = 0.into();

    let cfg = InitConfig {
        id: opts.id,
        spec: &spec,
        bundle: &bundle,
        rootfs: &rootfs,
        plan: &plan,
        fifo_fd,
        console_fd,
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserved: listen_fds + opts.preserve_fds,
        listen_fds,
        cgroup_path: undo.cgroup.as_ref().map(|c| c.path().to_path_buf()),
        rootless: opts.rootless,
        runtime_hooks,
        close_now: undo.dir.as_ref().map(|d| d.lock_fd()).into_iter().collect(),
        hook_state,
    };

    let (parent_chan, child_chan) = sync::pair()?;
    let (pid, in_cgroup) = {
        let _s = tracing::debug_span!("clone", flags = ?plan.clone_flags).entered();
        let into = undo.cgroup.as_ref().and_then(|c| c.clone_into_fd());
        let (pid, in_cgroup) = spawn::spawn(
            plan.clone_flags,
            &ns_files,
            &parent_chan,
            child_chan,
            into.as_ref().map(|f| f.as_raw_fd()),
            |chan| init::run(&cfg, chan),
        )?;
        undo.pids.push(pid);
        (pid, in_cgroup)
    };
    drop(ns_files);
    // Only the child may hold exec.fifo now, or `start` would never see it close on exec.
    let _ = nix::unistd::close(fifo_fd);
    drop(own_console_child);
    drop(console_sock);

    if plan.new_user {
        namespaces::write_id_maps(pid.as_raw(), &spec)?;
    }
    if let Some(cg) = undo.cgroup.as_ref() {
        if !in_cgroup {
            cg.add_task(pid)?;
        }
        // After the process is in: a limit below its usage then fails here with the kernel's
        // EBUSY (as with runc) instead of an OOM kill in the middle of set-up. The cgroup
        // module adds runc's default device allow-list to the spec's rules.
        if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cg.apply(res)?;
        }
    }
    // Devices move before "go": the createRuntime hooks and the process see them in place.
    undo.net_devices = Some(crate::net_devices::move_in(&spec, &dir_path, pid.as_raw())?);
    parent_chan.send(&Msg::Go)?;
    state.pid = pid.as_raw();
    state.pid_start = crate::state::proc_stat(pid.as_raw())
        .map(|(_, s)| s)
        .unwrap_or(0);

    if runtime_hooks {
        parent_chan
            .expect(Msg::RunHooks)
            .map_err(|e| Error::Child(e.0))?;
        let st = state.hook_state(Status::Creating);
        if !state.poststop.is_empty() {
            undo.poststop = Some((state.poststop.clone(), state.hook_state(Status::Stopped)));
        }
        hooks::run_all("prestart", &prestart, &st)?;
        hooks::run_all("createRuntime", &create_runtime, &st)?;
        parent_chan.send(&Msg::HooksDone)?;
    }
    // The console master arrives before Ready: receive it now or the child could block on it.
    let console_master = match own_console_parent {
        Some(sock) => match console::recv_master(sock.as_raw_fd()) {
            Ok(m) => Some(m),
            // No master because set-up failed before the console: report that failure.
            Err(e) => {
                return Err(match parent_chan.recv() {
                    Ok(Msg::Error(text)) => Error::Child(text),
                    _ => e.into(),
                })
            }
        },
        None => None,
    };
    // Ready, after the seccomp user-notification listener when the filter has one.
    loop {
        let failure = match parent_chan.recv_fd() {
            Ok((Msg::Ready, _)) => break,
            Ok((Msg::SeccompListener, Some(fd))) => {
                hand_over_listener(&spec, &state, Status::Creating, &fd)?;
                continue;
            }
            Ok((Msg::Error(text), _)) => text,
            Ok((other, _)) => format!("unexpected message {other:?} from the container process"),
            Err(e) => e.to_string(),
        };
        return Err(explain_death(
            pid,
            undo.cgroup.as_ref(),
            &spec,
            failure,
            &mut undo.pids,
        ));
    }

    let dir = undo
        .dir
        .as_ref()
        .ok_or(Error::Child("state directory vanished".into()))?;
    dir.save(&state)?;
    if let Some(p) = opts.pid_file {
        write_pid_file(p, pid.as_raw())?;
    }
    undo.pids.clear();
    undo.net_devices = None; // given back at delete (net-devices.json)
    undo.poststop = None; // run at delete
    let dir = undo
        .dir
        .take()
        .ok_or(Error::Child("state directory vanished".into()))?;
    let cgroup = undo.cgroup.take();
    if let Some(shm) = undo.shm.take() {
        shm.keep(); // ipc-shm: the channels stay until delete
    }
    Ok(Created {
        state,
        dir,
        cgroup,
        console: console_master,
    })
}

/// Give the listener fd of a seccomp filter to the agent at `listenerPath`, with the container's
/// state as runc sends it (`creating` for the first process, whose container is not created
/// until Ready; the current status for an exec'd one).
pub(crate) fn hand_over_listener(
    spec: &Spec,
    state: &ContainerState,
    status: Status,
    fd: &OwnedFd,
) -> Result<(), Error> {
    let Some(sc) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(());
    };
    let Some(path) = sc.listener_path() else {
        return Ok(());
    };
    let oci_state: serde_json::Value =
        serde_json::from_str(&state.hook_state(status)).unwrap_or_default();
    seccomp_listener::hand_over(
        path,
        sc.listener_metadata().as_deref(),
        state.pid,
        &oci_state,
        fd.as_fd(),
    )?;
    Ok(())
}

/// The container process died during set-up: if the kernel's OOM killer did it (a memory limit
/// below what set-up needs), say so and name the limit rather than "exited during set-up".
fn explain_death(
    pid: Pid,
    cgroup: Option<&Cgroup>,
    spec: &oci_spec::runtime::Spec,
    msg: String,
    pids: &mut Vec<Pid>,
) -> Error {
    use nix::sys::wait::WaitStatus;
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit());
    let (Some(limit), Some(cg)) = (limit, cgroup) else {
        return Error::Child(msg);
    };
    if !matches!(
        waitpid(pid, None),
        Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))
    ) {
        return Error::Child(msg);
    }
    pids.retain(|p| *p != pid);
    let oom = cg.controller_dir("memory").is_some_and(|dir| {
        ["memory.oom_control", "memory.events"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f)).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
            })
        })
    });
    if oom {
        Error::Child(format!(
            "linux.resources.memory.limit {limit}: the container process was killed by the OOM killer during set-up (limit too low)"
        ))
    } else {
        Error::Child(msg)
    }
}

/// Write the pid file atomically (temp file + rename), as runc does.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let path = spec::absolute(path);
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    std::fs::write(&tmp, pid.to_string()).map_err(|source| Error::Io {
        what: "write pid file",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
        what: "write pid file",
        path,
        source,
    })
}
