//! Terminals: the container's first process opens a pty inside the container's devpts, keeps the
//! slave as its stdio and controlling terminal, and sends the master to whoever holds the other
//! end of the console socket (`--console-socket`, or rcrun itself for a foreground `run`), with
//! SCM_RIGHTS as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connect to console socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("console: {what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("console: /dev/console: {0}")]
    Console(String),
    #[error("console: the console socket peer sent no file descriptor")]
    NoFd,
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |source| ConsoleError::Sys { what, source }
}

/// Connect to a `--console-socket` (in the runtime, before the clone, so errors come early).
pub fn connect(path: &Path) -> Result<OwnedFd, ConsoleError> {
    let s =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ConsoleError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    Ok(OwnedFd::from(s))
}

/// A socketpair over which rcrun itself receives the pty master (a foreground `run`/`exec`
/// with a terminal and no `--console-socket`): (rcrun's end, the container process' end).
pub fn own_pair() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("console socketpair"))
}

/// In the container (after pivot_root): make the pty, send the master, adopt the slave.
/// The container's first process also gets it bound over /dev/console (`dev_console`).
pub fn setup_in_container(
    socket: RawFd,
    size: Option<(u16, u16)>,
    dev_console: bool,
) -> Result<(), ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("open /dev/ptmx"))?;
    grantpt(&master).map_err(sys("grantpt"))?;
    unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys("ptsname"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize on a pty master we own.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open pty slave"))?;
    if dev_console {
        // runc's /dev/console: the pty slave bound over it, so programs writing there reach the pty.
        let console = Path::new("/dev/console");
        if !console.exists() {
            let _ = std::fs::File::create(console);
        }
        crate::mounts::do_mount(
            Some(Path::new(&name)),
            console,
            Some("bind"),
            nix::mount::MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| ConsoleError::Console(e.to_string()))?;
    }
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("send pty master"))?;
    drop(master);
    for fd in 0..3 {
        nix::unistd::dup2(slave, fd).map_err(sys("dup pty slave onto stdio"))?;
    }
    if slave > 2 {
        let _ = nix::unistd::close(slave);
    }
    // SAFETY: TIOCSCTTY on our stdin, which is now the slave; we are a session leader.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(ConsoleError::Sys {
            what: "set controlling terminal",
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Receive a pty master sent with SCM_RIGHTS.
pub fn recv_master(socket: RawFd) -> Result<OwnedFd, ConsoleError> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receive pty master"))?;
    for c in msg.cmsgs().map_err(sys("read control message"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(ConsoleError::NoFd)
}

/// The window size of a terminal fd, if it is one.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into our struct.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid struct.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}
