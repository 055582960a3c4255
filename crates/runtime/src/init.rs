//! The container's first process, from the clone until execve of the user's program.
//!
//! It runs rcrun's code (a forked copy of the runtime, not a re-exec of the binary), inside the
//! new namespaces, and talks to the runtime over [`crate::sync`]. Between `create` and `start` it
//! blocks in read(2) on exec.fifo; `start` writes one byte. Nothing of rcrun is left once it execs.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::namespaces::Plan;
use crate::sync::{Channel, Msg};
use crate::{console, hooks, namespaces, process as proc_attrs, rootfs, sched};

/// Everything the child needs; it lives in the parent's memory, copied by the clone.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    pub fifo_fd: RawFd,
    pub console_fd: Option<RawFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// fds 3 .. 3+preserved stay open across exec (LISTEN_FDS + --preserve-fds).
    pub preserved: usize,
    pub listen_fds: usize,
    pub cgroup_path: Option<PathBuf>,
    pub rootless: bool,
    /// Whether the parent will run prestart/createRuntime hooks (one extra round trip).
    pub runtime_hooks: bool,
    /// Descriptors of the runtime the child must close at once (the state-dir lock: a flock
    /// lives as long as any copy of its descriptor).
    pub close_now: Vec<RawFd>,
    /// The state for createContainer/startContainer hooks (pid filled in by the child).
    pub hook_state: serde_json::Value,
}

/// Entry point in the cloned child. Never returns: it execs or exits.
pub fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    match setup(cfg, chan) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = chan.send(&Msg::Error(e));
            // SAFETY: leave without running the parent's destructors or atexit handlers.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Set-up errors travel to the parent as text: it prints them as the command's error.
type Step<T> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

enum Never {}

/// Whether the container's process is in a user namespace: a new or joined one, or the one
/// rcrun itself was started in (rootless podman/Docker run the runtime inside theirs).
fn runs_in_userns(cfg: &InitConfig) -> bool {
    cfg.plan.new_user
        || cfg
            .plan
            .join
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User)
        || crate::identity::in_user_namespace()
}

fn setup(cfg: &InitConfig, chan: &Channel) -> Step<Never> {
    for fd in &cfg.close_now {
        let _ = nix::unistd::close(*fd);
    }
    // The caller's stray descriptors (host directories among them) must not live on in a
    // process that will enter the container.
    crate::fds::close_inherited_from(3 + cfg.preserved as i32).map_err(s)?;
    let in_userns = runs_in_userns(cfg);
    if !in_userns {
        // Until execve this process is rcrun's code: keep container processes (exec'd into the
        // container before start) from reaching it through /proc/PID/{exe,mem,fd}. execve of
        // the user's program makes it dumpable again. In a user namespace the process must
        // still write its own /proc files as the namespace's root, so it stays dumpable there
        // (the sealed-binary defence of the security work covers that case).
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    }
    // Signals blocked by a foreground `run` and ignored dispositions must not reach the program.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    proc_attrs::reset_signal_dispositions();
    // Die with the runtime while it still owns us (cleared before waiting for start).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };

    match chan.recv() {
        Ok(Msg::Go) => {}
        Ok(other) => return Err(format!("container init: unexpected message {other:?}")),
        Err(e) => return Err(s(e)),
    }
    let spec = cfg.spec;
    if cfg.plan.new_user {
        // Now that the maps exist, become root of the new user namespace.
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setgid 0 in user namespace: {e}"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setuid 0 in user namespace: {e}"))?;
    }
    if crate::spec::creates_namespace(spec, LinuxNamespaceType::Cgroup) {
        // After the parent moved us into the container's cgroup, so that it becomes the root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    }
    if cfg.plan.new_time {
        namespaces::unshare_time(spec).map_err(s)?;
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("hostname {h:?}: {e}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: setdomainname with a valid buffer and length.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(format!(
                "domainname {d:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if cfg.plan.clone_flags.contains(CloneFlags::CLONE_NEWNET) {
        namespaces::loopback_up().map_err(s)?;
    }
    if !cfg.no_new_keyring {
        sched::join_session_keyring(cfg.id).map_err(s)?;
    }

    let process = spec.process().as_ref().ok_or("process must be set")?;
    let ctx = rootfs::Context {
        spec,
        rootfs: cfg.rootfs,
        bundle: cfg.bundle,
        in_userns: runs_in_userns(cfg),
        new_netns: crate::spec::creates_namespace(spec, LinuxNamespaceType::Network),
        new_cgroupns: crate::spec::creates_namespace(spec, LinuxNamespaceType::Cgroup),
        cgroup_path: cfg.cgroup_path.as_deref(),
    };
    let _span = tracing::debug_span!("rootfs").entered();
    rootfs::prepare(&ctx).map_err(s)?;
    // runc creates a missing cwd rather than failing; inside the root, race-free (a shared
    // volume must not be able to turn this mkdir into one on the host).
    if let Ok(root) = crate::secure_path::Root::open(cfg.rootfs) {
        let _ = root.mkdir_all(process.cwd());
    }
    if cfg.runtime_hooks {
        chan.send(&Msg::RunHooks).map_err(s)?;
        chan.expect(Msg::HooksDone).map_err(s)?;
    }
    let own_pid = std::process::id() as i32;
    let mut hook_state = cfg.hook_state.clone();
    hook_state["pid"] = own_pid.into();
    let state = hook_state.to_string();
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().as_ref())
    {
        hooks::run_all("createContainer", h, &state).map_err(s)?;
    }
    rootfs::finish(&ctx, cfg.no_pivot).map_err(s)?;
    drop(_span);

    if let Some(fd) = cfg.console_fd {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup_in_container(fd, size, true).map_err(s)?;
        let _ = nix::unistd::close(fd);
    }

    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        sched::set_personality(p).map_err(s)?;
    }
    crate::mempolicy::apply(spec).map_err(s)?; // ipc-shm: linux.memoryPolicy
    let mut ready = proc_attrs::prepare(
        process,
        &proc_attrs::Options {
            seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
            listen_fds: cfg.listen_fds,
            preserved: cfg.preserved,
        },
    )?;

    // Set-up is complete: from here on the runtime may exit, so stop tying our life to it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    if let Some(listener) = ready.listener.take() {
        chan.send_fd(&Msg::SeccompListener, listener.as_fd())
            .map_err(s)?;
    }
    chan.send(&Msg::Ready).map_err(s)?;
    wait_for_start(cfg.fifo_fd)?;

    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().as_ref())
    {
        hook_state["status"] = "created".into();
        let started = hook_state.to_string();
        if let Err(e) = hooks::run_all("startContainer", h, &started) {
            eprintln!("{e}");
            // SAFETY: exit without unwinding into the runtime's code.
            unsafe { libc::_exit(1) }
        }
    }
    proc_attrs::exec(&ready)
}

/// Block until `start` writes to exec.fifo (opened O_RDWR by the runtime, so open never blocks
/// and read only returns when there is data).
fn wait_for_start(fd: RawFd) -> Step<()> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: the fd stays open for the life of this process.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match nix::unistd::read(borrowed.as_raw_fd(), &mut b) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("wait for start on exec.fifo: {e}")),
        }
    }
}
