//! `exec`: run another process in a running container.
//!
//! The process joins every namespace the container has (through /proc/PID/ns of its first
//! process, user namespace first, via an intermediate process so it lands in the container's pid
//! namespace), is moved into the container's cgroup by the runtime, gets the process attributes
//! (runc's rules: the container's config.json process is the template, the flags override it,
//! or `--process FILE` gives the whole process), and execs. The runtime learns that execve
//! succeeded when the close-on-exec sync socket reaches EOF; a failure arrives as text.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxNamespaceType, Process};

use super::run::{forwarded_signals, make_raw, wait_loop};
use super::{spawn, sys, Error};
use crate::cgroups::Cgroup;
use crate::state::{self, Status};
use crate::sync::{self, Channel, Msg, SyncError};
use crate::{console, namespaces, process as proc_attrs, spec};

/// Where the process comes from.
pub enum ProcessSpec {
    /// `--process FILE`: the whole process, as containerd and conmon pass it.
    File(PathBuf),
    /// Arguments and flags over the container's own process.
    Args(Overrides),
}

/// runc's `exec` flags.
#[derive(Default)]
pub struct Overrides {
    pub args: Vec<String>,
    pub tty: bool,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<(u32, Option<u32>)>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
}

pub struct ExecOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub process: ProcessSpec,
    pub console_socket: Option<&'a Path>,
    pub detach: bool,
    pub pid_file: Option<&'a Path>,
    pub preserve_fds: usize,
    pub ignore_paused: bool,
}

/// Runs the process; returns its exit status (0 when detached).
pub fn exec(o: &ExecOptions) -> Result<i32, Error> {
    let _span = tracing::info_span!("exec", id = o.id).entered();
    state::validate_id(o.id)?;
    let dir = o.root.join(o.id);
    let st = state::load_state(&dir, o.id)?;
    match st.status(&dir) {
        Status::Stopped => return Err(Error::ExecStopped),
        Status::Paused if !o.ignore_paused => return Err(Error::ExecPaused),
        _ => {}
    }
    // The namespaces are joined through the init's /proc/PID/ns, not the config's paths.
    let spec = spec::read(&st.bundle)?;
    let process = build_process(&o.process, spec.process().as_ref())?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && o.detach && o.console_socket.is_none() {
        return Err(Error::TtyNeedsSocket);
    }
    if !terminal && o.console_socket.is_some() {
        return Err(Error::SocketWithoutTty);
    }

    // Every namespace the container has, from its first process, opened before anything starts.
    let mut joins = Vec::new();
    let mut in_userns = false;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let path = PathBuf::from(format!("/proc/{}/ns/{}", st.pid, ns_file(ns.typ())));
        let file = namespaces::open(ns.typ(), &path)?;
        in_userns |= ns.typ() == LinuxNamespaceType::User;
        joins.push((ns.typ(), path, file));
    }
    joins.sort_by_key(|(t, _, _)| *t != LinuxNamespaceType::User);
    let cgroup = match st.cgroup.as_deref() {
        Some(c) => Some(Cgroup::open(c, st.systemd_cgroup)?),
        None => None,
    };

    let console_sock: Option<OwnedFd> = match o.console_socket {
        Some(p) => Some(console::connect(p)?),
        None => None,
    };
    let (own_parent, own_child) = if terminal && console_sock.is_none() {
        let (a, b) = console::own_pair()?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let console_fd = console_sock
        .as_ref()
        .or(own_child.as_ref())
        .map(|f| f.as_raw_fd());
    let sfd = if o.detach {
        None
    } else {
        let mask = forwarded_signals();
        mask.thread_block().map_err(sys("block signals"))?;
        Some(
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(sys("signalfd"))?,
        )
    };

    let (parent_chan, child_chan) = sync::pair()?;
    let child = ChildConfig {
        process: &process,
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
        in_userns,
        console_fd,
        preserved: o.preserve_fds,
    };
    let (pid, _) = spawn::spawn(
        CloneFlags::empty(),
        &joins,
        &parent_chan,
        child_chan,
        None,
        |chan| exec_child(&child, chan),
    )?;
    drop(joins);
    drop(own_child);
    drop(console_sock);
    let fail = |e: Error| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    if let Some(cg) = cgroup.as_ref() {
        cg.add_task(pid).map_err(|e| fail(e.into()))?;
    }
    parent_chan.send(&Msg::Go).map_err(|e| fail(e.into()))?;
    let master = match own_parent {
        Some(sock) => match console::recv_master(sock.as_raw_fd()) {
            Ok(m) => Some(m),
            Err(e) => return Err(fail(child_error(&parent_chan).unwrap_or_else(|| e.into()))),
        },
        None => None,
    };
    // EOF: the sync socket closed on a successful execve (after the seccomp listener, if any,
    // which goes to the agent as for the first process).
    loop {
        match parent_chan.recv_fd() {
            Err(SyncError::Closed) => break,
            Ok((Msg::SeccompListener, Some(fd))) => {
                super::create::hand_over_listener(&spec, &st, st.status(&dir), &fd)
                    .map_err(&fail)?;
            }
            Ok((Msg::Error(e), _)) => return Err(fail(Error::Child(e))),
            Ok((other, _)) => {
                return Err(fail(Error::Child(format!(
                    "exec: unexpected message {other:?}"
                ))))
            }
            Err(e) => return Err(fail(e.into())),
        }
    }
    if let Some(p) = o.pid_file {
        super::create::write_pid_file(p, pid.as_raw()).map_err(fail)?;
    }
    let Some(sfd) = sfd else { return Ok(0) };
    let saved_tty = master.as_ref().and_then(|m| {
        if let Some((rows, cols)) = console::window_size(0) {
            console::set_window_size(m.as_raw_fd(), rows, cols);
        }
        make_raw(0)
    });
    let code = wait_loop(&sfd, pid, master.as_ref());
    if let Some(t) = saved_tty {
        // SAFETY: fd 0 is open for the life of the process.
        let _ = nix::sys::termios::tcsetattr(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(0) },
            nix::sys::termios::SetArg::TCSANOW,
            &t,
        );
    }
    code
}

/// The error text the child sent before it died, if any.
fn child_error(chan: &Channel) -> Option<Error> {
    match chan.recv() {
        Ok(Msg::Error(e)) => Some(Error::Child(e)),
        _ => None,
    }
}

/// /proc/PID/ns file name of a namespace type.
fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// runc's rules for the exec'd process.
fn build_process(src: &ProcessSpec, template: Option<&Process>) -> Result<Process, Error> {
    let o = match src {
        ProcessSpec::File(path) => {
            let data = std::fs::read(path).map_err(|source| Error::Io {
                what: "read process file",
                path: path.clone(),
                source,
            })?;
            let p: Process = serde_json::from_slice(&data)
                .map_err(|e| Error::Child(format!("process file {}: {e}", path.display())))?;
            check(&p)?;
            return Ok(p);
        }
        ProcessSpec::Args(o) => o,
    };
    let mut p = template.cloned().unwrap_or_default();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(o.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &o.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    let mut user = p.user().clone();
    if let Some((uid, gid)) = o.user {
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
    }
    if !o.additional_gids.is_empty() {
        user.set_additional_gids(Some(o.additional_gids.clone()));
    }
    p.set_user(user);
    if !o.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let mut add = Capabilities::new();
        for c in &o.caps {
            let cap: Capability = serde_json::from_value(serde_json::Value::String(c.clone()))
                .map_err(|_| Error::Child(format!("--cap: unknown capability {c:?}")))?;
            add.insert(cap);
        }
        let merged = |set: &Option<Capabilities>| -> Option<Capabilities> {
            let mut s = set.clone().unwrap_or_default();
            s.extend(add.iter().copied());
            Some(s)
        };
        let updated: LinuxCapabilities = {
            caps.set_bounding(merged(caps.bounding()));
            caps.set_effective(merged(caps.effective()));
            caps.set_permitted(merged(caps.permitted()));
            caps.set_inheritable(merged(caps.inheritable()));
            caps.set_ambient(merged(caps.ambient()));
            caps
        };
        p.set_capabilities(Some(updated));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(a) = &o.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &o.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    check(&p)?;
    Ok(p)
}

fn check(p: &Process) -> Result<(), Error> {
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Child("exec: process args must not be empty".into()));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::Child(format!(
            "exec: cwd {:?} must be an absolute path",
            p.cwd()
        )));
    }
    Ok(())
}

struct ChildConfig<'a> {
    process: &'a Process,
    seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    in_userns: bool,
    console_fd: Option<i32>,
    preserved: usize,
}

/// In the new process, already in the container's namespaces: wait for the cgroup, then become
/// the process and exec. Errors go to the runtime as text.
fn exec_child(c: &ChildConfig, chan: &Channel) -> std::convert::Infallible {
    let err = match exec_setup(c, chan) {
        Ok(mut ready) => {
            if let Some(listener) = ready.listener.take() {
                if let Err(e) = chan.send_fd(&Msg::SeccompListener, listener.as_fd()) {
                    let _ = chan.send(&Msg::Error(format!("send the seccomp listener: {e}")));
                    // SAFETY: leave without running the runtime's destructors.
                    unsafe { libc::_exit(1) }
                }
            }
            // The runtime may exit (detached) once we exec; the process must not die with it.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
            proc_attrs::exec(&ready)
        }
        Err(e) => e,
    };
    let _ = chan.send(&Msg::Error(err));
    // SAFETY: leave without running the runtime's destructors.
    unsafe { libc::_exit(1) }
}

fn exec_setup(c: &ChildConfig, chan: &Channel) -> Result<proc_attrs::Ready, String> {
    if !c.in_userns {
        // As for the first process (see init.rs): this is rcrun's code inside the container's
        // pid namespace until execve; other container processes must not reach it through
        // /proc/PID/{exe,mem,fd}. execve makes the program dumpable again.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    }
    crate::fds::close_inherited_from(3 + c.preserved as i32).map_err(|e| e.to_string())?;
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    proc_attrs::reset_signal_dispositions();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    match chan.recv() {
        Ok(Msg::Go) => {}
        Ok(other) => return Err(format!("exec: unexpected message {other:?}")),
        Err(e) => return Err(e.to_string()),
    }
    if c.in_userns {
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setgid 0 in user namespace: {e}"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setuid 0 in user namespace: {e}"))?;
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if let Some(fd) = c.console_fd {
        let size = c
            .process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup_in_container(fd, size, false).map_err(|e| e.to_string())?;
        let _ = nix::unistd::close(fd);
    }
    proc_attrs::prepare(
        c.process,
        &proc_attrs::Options {
            seccomp: c.seccomp,
            listen_fds: 0,
            preserved: c.preserved,
        },
    )
}
