//! The container's first process, from the clone until execve of the user's program.
//!
//! It runs rcrun's code (a forked copy of the runtime, not a re-exec of the binary), inside the
//! new namespaces, and talks to the runtime over [`crate::sync`]. Between `create` and `start` it
//! blocks in read(2) on exec.fifo; `start` writes one byte. Nothing of rcrun is left once it execs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::namespaces::Plan;
use crate::sync::{Channel, Msg};
use crate::{capabilities, console, fds, hooks, identity, lsm, namespaces, rlimits, rootfs, sched};

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

fn setup(cfg: &InitConfig, chan: &Channel) -> Step<Never> {
    for fd in &cfg.close_now {
        let _ = nix::unistd::close(*fd);
    }
    let in_userns = cfg.plan.new_user
        || cfg
            .plan
            .join
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::User);
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
    reset_signal_dispositions();
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
        in_userns: cfg.plan.new_user
            || cfg
                .plan
                .join
                .iter()
                .any(|(t, _)| *t == LinuxNamespaceType::User),
        new_netns: crate::spec::creates_namespace(spec, LinuxNamespaceType::Network),
        new_cgroupns: crate::spec::creates_namespace(spec, LinuxNamespaceType::Cgroup),
        cgroup_path: cfg.cgroup_path.as_deref(),
    };
    let _span = tracing::debug_span!("rootfs").entered();
    rootfs::prepare(&ctx).map_err(s)?;
    // runc creates a missing cwd rather than failing.
    if let Ok(cwd) = crate::secure_path::join(cfg.rootfs, process.cwd()) {
        let _ = std::fs::create_dir_all(cwd);
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
        console::setup_in_container(fd, size).map_err(s)?;
        let _ = nix::unistd::close(fd);
    }

    // The process' attributes, most privileged first.
    if let Some(r) = process.rlimits() {
        rlimits::apply(r).map_err(s)?;
    }
    if let Some(v) = process.oom_score_adj() {
        sched::set_oom_score_adj(v).map_err(s)?;
    }
    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        sched::set_personality(p).map_err(s)?;
    }
    if let Some(p) = process.io_priority() {
        sched::set_io_priority(p).map_err(s)?;
    }
    if let Some(p) = process.scheduler() {
        sched::set_scheduler(p).map_err(s)?;
    }
    lsm::apply_on_exec(
        process.apparmor_profile().as_deref(),
        process.selinux_label().as_deref(),
    )
    .map_err(s)?;
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        // Filter generation for every architecture is its own component (issue 5).
        tracing::warn!(default_action = ?seccomp.default_action(), "linux.seccomp is not enforced yet; ignored");
    }

    let user = process.user();
    let env = build_env(
        process.env().as_deref().unwrap_or(&[]),
        user.uid(),
        cfg.listen_fds,
    );
    let args = process.args().as_deref().unwrap_or(&[]);
    let prog = find_executable(&args[0], &env)?;
    let c_args: Vec<CString> = args.iter().map(|a| cstring(a)).collect::<Step<_>>()?;
    let c_env: Vec<CString> = env.iter().map(|a| cstring(a)).collect::<Step<_>>()?;

    let caps = capabilities::resolve(process.capabilities().as_ref());
    capabilities::apply_bounding(&caps).map_err(s)?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1) };
    identity::fix_stdio_owner(user.uid(), user.gid());
    let setgroups_ok = !cfg.rootless;
    identity::switch(user, setgroups_ok).map_err(s)?;
    nix::unistd::chdir(process.cwd()).map_err(|e| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {e}",
            process.cwd()
        )
    })?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0) };
    capabilities::apply(&caps).map_err(s)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022) as _,
    ));
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    fds::cloexec_from(3 + cfg.preserved as i32).map_err(s)?;

    // Set-up is complete: from here on the runtime may exit, so stop tying our life to it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
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
    let argv: Vec<*const libc::c_char> = c_args
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = c_env
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated argument and environment vectors built above.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = std::io::Error::last_os_error();
    eprintln!("exec {:?}: {err}", args[0]);
    // SAFETY: as above.
    unsafe {
        libc::_exit(if err.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        })
    }
}

fn cstring(s: &str) -> Step<CString> {
    CString::new(s).map_err(|_| format!("process: {s:?} contains a NUL byte"))
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

fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default action is always valid for these numbers.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// The process environment plus what runc adds: HOME when unset, LISTEN_FDS for socket activation.
fn build_env(env: &[String], uid: u32, listen_fds: usize) -> Vec<String> {
    let mut out: Vec<String> = env.to_vec();
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        out.push(format!("HOME={}", identity::home_dir(uid)));
    }
    if listen_fds > 0 {
        out.retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
        out.push(format!("LISTEN_FDS={listen_fds}"));
        out.push("LISTEN_PID=1".into());
    }
    out
}

/// Resolve the program like runc's exec.LookPath, with the container's PATH, inside the new root,
/// so a missing program fails `create` with the words Docker maps to exit code 127.
fn find_executable(name: &str, env: &[String]) -> Step<CString> {
    let check = |p: &Path| -> Result<(), std::io::Error> {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(p)?;
        if m.is_dir() || m.permissions().mode() & 0o111 == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if name.contains('/') {
        return match check(Path::new(name)) {
            Ok(()) => cstring(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "exec: {name:?}: stat {name}: no such file or directory"
            )),
            Err(_) => Err(format!("exec: {name:?}: permission denied")),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let mut denied = false;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        match check(&cand) {
            Ok(()) => {
                return CString::new(cand.as_os_str().as_bytes())
                    .map_err(|_| format!("exec: {name:?}: invalid path"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        return Err(format!("exec: {name:?}: permission denied"));
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}
