//! The process' attributes and the final execve, shared by a container's first process
//! ([`crate::init`]) and processes started with `exec` ([`crate::container::exec`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::Process;

use crate::{capabilities, fds, identity, lsm, rlimits, sched};

/// Failures travel to the runtime as text (it prints them as the command's error).
pub type Step<T> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

pub struct Options<'a> {
    /// The container's `linux.seccomp` (exec'd processes get the container's filter too).
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    /// Sockets systemd passed the runtime (LISTEN_FDS), forwarded to the process.
    pub listen_fds: usize,
    /// fds 3 .. 3+preserved stay open across exec.
    pub preserved: usize,
}

/// Everything execve needs, resolved before privileges are dropped.
pub struct Ready {
    prog: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    name: String,
    /// The seccomp user-notification listener (close-on-exec), when the filter has NOTIFY rules:
    /// to be sent to the runtime, which hands it to `linux.seccomp.listenerPath`.
    pub listener: Option<std::os::fd::OwnedFd>,
}

/// Apply the process' attributes, most privileged first, and resolve the program, so that
/// only execve is left: rlimits, oom score, I/O priority, scheduler, LSM label, then the
/// bounding set, groups/gid/uid, cwd, capabilities, umask, no_new_privs, and close-on-exec on
/// every fd that is not stdio or preserved. The seccomp filter is loaded last when
/// no_new_privs is set (so as few syscalls as possible run under it), and before privileges are
/// dropped otherwise (loading a filter without no_new_privs needs CAP_SYS_ADMIN), as runc does.
pub fn prepare(process: &Process, opts: &Options) -> Step<Ready> {
    let nnp = process.no_new_privileges().unwrap_or(false);
    let filter = match opts.seccomp {
        Some(sc) => Some(compile_seccomp(sc)?),
        None => None,
    };
    let mut listener = None;
    if let (Some((prog, flags)), false) = (&filter, nnp) {
        listener = rcrun_seccomp::load(prog, *flags).map_err(|e| format!("linux.seccomp: {e}"))?;
    }
    if let Some(r) = process.rlimits() {
        rlimits::apply(r).map_err(s)?;
    }
    if let Some(v) = process.oom_score_adj() {
        sched::set_oom_score_adj(v).map_err(s)?;
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

    let user = process.user();
    let env = build_env(
        process.env().as_deref().unwrap_or(&[]),
        user.uid(),
        opts.listen_fds,
    );
    let args = process.args().as_deref().unwrap_or(&[]);
    let name = args.first().ok_or("process.args must not be empty")?;
    let prog = find_executable(name, &env)?;
    let c_args: Vec<CString> = args.iter().map(|a| cstring(a)).collect::<Step<_>>()?;
    let c_env: Vec<CString> = env.iter().map(|a| cstring(a)).collect::<Step<_>>()?;

    let caps = capabilities::resolve(process.capabilities().as_ref());
    capabilities::apply_bounding(&caps).map_err(s)?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1) };
    identity::fix_stdio_owner(user.uid(), user.gid());
    identity::switch(user).map_err(s)?;
    nix::unistd::chdir(process.cwd()).map_err(|e| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {e}",
            process.cwd()
        )
    })?;
    verify_cwd(process.cwd())?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0) };
    capabilities::apply(&caps).map_err(s)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022) as _,
    ));
    if nnp {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    fds::cloexec_from(3 + opts.preserved as i32).map_err(s)?;
    if let (Some((prog, flags)), true) = (&filter, nnp) {
        listener = rcrun_seccomp::load(prog, *flags).map_err(|e| format!("linux.seccomp: {e}"))?;
    }
    Ok(Ready {
        prog,
        args: c_args,
        env: c_env,
        name: name.clone(),
        listener,
    })
}

/// CVE-2024-21626: the chdir runs in a process that still holds the runtime's descriptors,
/// so a cwd of `/proc/self/fd/N` (or through another /proc magic link) can land on a host
/// directory, which the program would keep after execve. The kernel's getcwd names a directory
/// outside the process' root "(unreachable)/…": refuse to start then.
fn verify_cwd(cwd: &Path) -> Step<()> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: getcwd(2) writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if rc < 0 {
        return Err(format!(
            "cwd ({cwd:?}) set in config.json: cannot check that it is inside the container: {}",
            std::io::Error::last_os_error()
        ));
    }
    if buf.first() != Some(&b'/') {
        return Err(format!(
            "cwd ({cwd:?}) set in config.json is outside the container's root filesystem \
             (possible container breakout, CVE-2024-21626): refusing to start the process"
        ));
    }
    Ok(())
}

/// Compile `linux.seccomp` for this machine. Syscall names no listed architecture knows are
/// skipped, as runc does (Docker's profile names `recv`/`send`, absent on x86).
fn compile_seccomp(
    sc: &oci_spec::runtime::LinuxSeccomp,
) -> Step<(rcrun_seccomp::Program, libc::c_ulong)> {
    let native = rcrun_seccomp::Arch::native()
        .ok_or("linux.seccomp: this architecture has no seccomp support here")?;
    let opts = rcrun_seccomp::CompileOptions {
        unknown_syscalls: rcrun_seccomp::UnknownSyscalls::Ignore,
        ..Default::default()
    };
    let prog = rcrun_seccomp::compile_with(sc, native, &opts)
        .map_err(|e| format!("linux.seccomp: {e}"))?;
    if prog.uses_notify {
        if sc.listener_path().is_none() {
            return Err(
                "linux.seccomp.listenerPath must be set: a rule uses SCMP_ACT_NOTIFY".into(),
            );
        }
        // The listener travels to the runtime over sendmsg(2) after the filter is loaded, so
        // notifying it (or write, as runc refuses) would wait for an agent that has no fd yet.
        for rule in sc.syscalls().as_deref().unwrap_or(&[]) {
            if rule.action() != oci_spec::runtime::LinuxSeccompAction::ScmpActNotify {
                continue;
            }
            if let Some(name) = rule
                .names()
                .iter()
                .find(|n| matches!(n.as_str(), "sendmsg" | "write"))
            {
                return Err(format!(
                    "linux.seccomp: SCMP_ACT_NOTIFY cannot be used for {name:?}: the runtime needs it to pass the listener on"
                ));
            }
        }
    }
    let flags = rcrun_seccomp::filter_flags(sc, &prog);
    Ok((prog, flags))
}

/// execve the prepared program; on failure print why and exit 127 (not found) or 126.
pub fn exec(r: &Ready) -> ! {
    let argv: Vec<*const libc::c_char> = r
        .args
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = r
        .env
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated argument and environment vectors built by `prepare`.
    unsafe { libc::execve(r.prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = std::io::Error::last_os_error();
    eprintln!("exec {:?}: {err}", r.name);
    // SAFETY: leave without running the runtime's destructors or atexit handlers.
    unsafe {
        libc::_exit(if err.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        })
    }
}

pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default action is always valid for these numbers.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn cstring(s: &str) -> Step<CString> {
    CString::new(s).map_err(|_| format!("process: {s:?} contains a NUL byte"))
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
