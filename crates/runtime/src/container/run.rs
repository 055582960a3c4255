//! `run`: create + start, then (unless detached) stay as the container's parent: forward signals
//! to it, proxy its terminal, reap it, delete it, and exit with its status.
//!
//! Signals are blocked before the clone and read from a signalfd, so a SIGCHLD is never lost
//! between a check and a wait: the loop cannot hang on a container that already exited.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::create::{create, CreateOptions};
use super::start::start_locked;
use super::{delete, sys, Error};
use crate::console;
use crate::state::StateDir;

pub struct RunOptions<'a> {
    pub create: CreateOptions<'a>,
    pub detach: bool,
    /// Keep the container's state after it exits (runc's `--keep`).
    pub keep: bool,
}

/// Returns the exit code rcrun should exit with.
pub fn run(opts: RunOptions) -> Result<i32, Error> {
    let _span = tracing::info_span!("run", id = opts.create.id).entered();
    if opts.detach {
        let created = create(&opts.create)?;
        start_or_destroy(created.dir)?;
        return Ok(0);
    }
    let mask = forwarded_signals();
    mask.thread_block().map_err(sys("block signals"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;
    // Orphans of a container without its own pid namespace come to us, not to init.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };

    let create_opts = CreateOptions {
        own_console: true,
        ..opts.create
    };
    let created = create(&create_opts)?;
    let pid = Pid::from_raw(created.state.pid);
    let master = created.console;
    let saved_tty = master.as_ref().and_then(|m| {
        if let Some((rows, cols)) = console::window_size(0) {
            console::set_window_size(m.as_raw_fd(), rows, cols);
        }
        make_raw(0)
    });
    let root = create_opts.root.to_path_buf();
    let id = create_opts.id.to_string();
    let started = start_or_destroy(created.dir);
    let code = match started {
        Ok(()) => wait_loop(&sfd, pid, master.as_ref()),
        Err(e) => Err(e),
    };
    if let Some(t) = saved_tty {
        let _ = termios::tcsetattr(unsafe { BorrowedFd::borrow_raw(0) }, SetArg::TCSANOW, &t);
    }
    let code = code?;
    if !opts.keep {
        let dir = StateDir::open(&root, &id)?;
        let state = dir.load()?;
        delete::destroy(dir, &state)?;
    }
    Ok(code)
}

/// Start; if that fails, tear the container down so a failed `run` leaves nothing.
fn start_or_destroy(dir: StateDir) -> Result<(), Error> {
    match start_locked(&dir) {
        Ok(_) => Ok(()),
        Err(e) => {
            if let Ok(state) = dir.load() {
                // SAFETY: kill(2) with a plain pid.
                unsafe { libc::kill(state.pid, libc::SIGKILL) };
                let _ = super::wait_gone(
                    state.pid,
                    state.pid_start,
                    std::time::Duration::from_secs(10),
                );
                let _ = delete::destroy(dir, &state);
            }
            Err(e)
        }
    }
}

/// Every signal we can catch except the synchronous ones, which belong to us, not the container.
pub(crate) fn forwarded_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        set.remove(s);
    }
    set
}

pub(crate) fn make_raw(fd: RawFd) -> Option<Termios> {
    // SAFETY: fd 0 is open for the life of the process.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let saved = termios::tcgetattr(b).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(b, SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Poll the signalfd and the terminal until the container's first process has exited.
pub(crate) fn wait_loop(sfd: &SignalFd, pid: Pid, master: Option<&OwnedFd>) -> Result<i32, Error> {
    let mut stdin_open = master.is_some();
    let mut buf = [0u8; 8192];
    let mut exit: Option<i32> = None;
    while exit.is_none() {
        let mut fds = vec![libc::pollfd {
            fd: sfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(m) = master {
            fds.push(libc::pollfd {
                fd: m.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            if stdin_open {
                fds.push(libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        // SAFETY: a valid array of pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = nix::Error::last();
            if e == nix::Error::EINTR {
                continue;
            }
            return Err(sys("poll")(e));
        }
        if fds[0].revents != 0 {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    exit = exit.or(reap(pid));
                } else if signo == libc::SIGWINCH {
                    if let (Some(m), Some((r, c))) = (master, console::window_size(0)) {
                        console::set_window_size(m.as_raw_fd(), r, c);
                    }
                } else {
                    // SAFETY: kill(2) with plain numbers.
                    unsafe { libc::kill(pid.as_raw(), signo) };
                }
            }
        }
        if let Some(m) = master {
            if fds[1].revents != 0 {
                copy(m.as_raw_fd(), 1, &mut buf);
            }
            if stdin_open
                && fds.len() > 2
                && fds[2].revents != 0
                && !copy(0, m.as_raw_fd(), &mut buf)
            {
                stdin_open = false;
            }
        }
    }
    if let Some(m) = master {
        // Output written just before exit is still in the pty.
        let _ = nix::fcntl::fcntl(
            m.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while copy(m.as_raw_fd(), 1, &mut buf) {}
    }
    let _ =
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded_signals()), None);
    exit.ok_or(Error::Child("lost the container's exit status".into()))
}

/// Reap every exited child; return the container's exit code if it was among them.
fn reap(pid: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(ws) => {
                if ws.pid() == Some(pid) {
                    code = exit_code(ws);
                }
            }
        }
    }
}

/// Copy one chunk; false on EOF or error.
fn copy(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(from, buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let mut off = 0;
            while off < n {
                // SAFETY: fd `to` is open for our life.
                match nix::unistd::write(unsafe { BorrowedFd::borrow_raw(to) }, &buf[off..n]) {
                    Ok(w) => off += w,
                    Err(nix::Error::EINTR) => {}
                    Err(_) => return false,
                }
            }
            true
        }
    }
}
