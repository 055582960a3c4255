//! The channel between the runtime (parent) and the container's first process (child): a
//! SOCK_SEQPACKET socketpair, one message per packet, so no framing and no partial reads.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync socket: {0}")]
    Sys(#[from] nix::Error),
    #[error("the container process exited during set-up")]
    Closed,
    #[error("sync socket: unexpected message {0:?}")]
    Unexpected(String),
}

/// Messages; the child's errors travel as text so the parent prints exactly what failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// parent → child: uid/gid maps written, cgroup joined; go on.
    Go,
    /// child → parent: mounts are prepared; run prestart/createRuntime hooks now.
    RunHooks,
    /// parent → child: hooks done.
    HooksDone,
    /// child → parent: set-up complete, waiting on exec.fifo.
    Ready,
    /// intermediate → parent: the pid of the container process it cloned.
    Pid(i32),
    /// child → parent: set-up failed.
    Error(String),
    /// child → parent: the seccomp user-notification listener, sent as SCM_RIGHTS with it
    /// ([`Channel::send_fd`]) for the runtime to hand to `linux.seccomp.listenerPath`.
    SeccompListener,
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Go => vec![b'G'],
            Msg::RunHooks => vec![b'H'],
            Msg::HooksDone => vec![b'D'],
            Msg::Ready => vec![b'R'],
            Msg::Pid(p) => {
                let mut v = vec![b'P'];
                v.extend_from_slice(&p.to_le_bytes());
                v
            }
            Msg::Error(e) => {
                let mut v = vec![b'E'];
                v.extend_from_slice(e.as_bytes());
                v
            }
            Msg::SeccompListener => vec![b'S'],
        }
    }

    fn decode(b: &[u8]) -> Result<Msg, SyncError> {
        let bad = || SyncError::Unexpected(String::from_utf8_lossy(b).into_owned());
        match b.first() {
            Some(b'G') => Ok(Msg::Go),
            Some(b'H') => Ok(Msg::RunHooks),
            Some(b'D') => Ok(Msg::HooksDone),
            Some(b'R') => Ok(Msg::Ready),
            Some(b'P') => {
                let a: [u8; 4] = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(bad)?;
                Ok(Msg::Pid(i32::from_le_bytes(a)))
            }
            Some(b'E') => Ok(Msg::Error(String::from_utf8_lossy(&b[1..]).into_owned())),
            Some(b'S') => Ok(Msg::SeccompListener),
            _ => Err(bad()),
        }
    }
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(pub OwnedFd);

/// A connected pair (close-on-exec, so neither end reaches the container's program).
pub fn pair() -> Result<(Channel, Channel), SyncError> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<(), SyncError> {
        let data = msg.encode();
        loop {
            match socket::send(self.0.as_raw_fd(), &data, socket::MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => {
                    return Err(SyncError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn recv(&self) -> Result<Msg, SyncError> {
        let mut buf = [0u8; 4096];
        loop {
            match socket::recv(self.0.as_raw_fd(), &mut buf, socket::MsgFlags::empty()) {
                Ok(0) => return Err(SyncError::Closed),
                Ok(n) => return Msg::decode(&buf[..n]),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ECONNRESET) => return Err(SyncError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Send `msg` with `fd` attached (SCM_RIGHTS); the receiver gets its own copy.
    pub fn send_fd(&self, msg: &Msg, fd: BorrowedFd<'_>) -> Result<(), SyncError> {
        let data = msg.encode();
        let iov = [std::io::IoSlice::new(&data)];
        let fds = [fd.as_raw_fd()];
        let cmsg = [socket::ControlMessage::ScmRights(&fds)];
        loop {
            match socket::sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                &cmsg,
                socket::MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => {
                    return Err(SyncError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receive a message and the fd that came with it, if any (close-on-exec).
    pub fn recv_fd(&self) -> Result<(Msg, Option<OwnedFd>), SyncError> {
        let mut buf = [0u8; 4096];
        let mut cmsg_space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let r = socket::recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                socket::MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match r {
                Ok(m) => m,
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ECONNRESET) => return Err(SyncError::Closed),
                Err(e) => return Err(e.into()),
            };
            let mut fd = None;
            for c in msg.cmsgs()? {
                if let socket::ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel installed this descriptor for us just now.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            let n = msg.bytes;
            if n == 0 {
                return Err(SyncError::Closed);
            }
            return Ok((Msg::decode(&buf[..n])?, fd));
        }
    }

    /// Receive and require a specific message; an `Error` from the child becomes the error text.
    pub fn expect(&self, want: Msg) -> Result<(), ChildFailed> {
        match self.recv() {
            Ok(m) if m == want => Ok(()),
            Ok(Msg::Error(e)) => Err(ChildFailed(e)),
            Ok(other) => Err(ChildFailed(
                SyncError::Unexpected(format!("{other:?}")).to_string(),
            )),
            Err(e) => Err(ChildFailed(e.to_string())),
        }
    }
}

/// The container process reported (or caused) a set-up failure; the text is user-facing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChildFailed(pub String);
