//! Seccomp user notification: hand the listener fd of a container's filter to the agent at
//! `linux.seccomp.listenerPath`, as runc does. The agent receives, over one connection to that
//! unix socket, the runtime-spec `ContainerProcessState` JSON with the fd as SCM_RIGHTS:
//!
//! ```json
//! {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 4422,
//!  "metadata": "<listenerMetadata>", "state": { <the container's state> }}
//! ```

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};

/// The name of the fd in `fds` (runtime-spec: `seccompFd`).
pub const SECCOMP_FD_NAME: &str = "seccompFd";
/// The runtime-spec version that defined `ContainerProcessState` (what runc sends).
const PROCESS_STATE_VERSION: &str = "1.0.2";

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("linux.seccomp.listenerPath: connect {path}: {source}")]
    Connect { path: PathBuf, source: nix::Error },
    #[error("linux.seccomp.listenerPath: send the listener fd to {path}: {source}")]
    Send { path: PathBuf, source: nix::Error },
    #[error("linux.seccomp.listenerPath: {0}")]
    Encode(String),
}

/// Connect to `path` and send the process state with `fd`.
pub fn hand_over(
    path: &Path,
    metadata: Option<&str>,
    pid: i32,
    state: &serde_json::Value,
    fd: BorrowedFd<'_>,
) -> Result<(), ListenerError> {
    let _span = tracing::info_span!("seccomp_listener", path = %path.display(), pid).entered();
    let msg = serde_json::json!({
        "ociVersion": PROCESS_STATE_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "metadata": metadata.unwrap_or(""),
        "state": state,
    });
    let data = serde_json::to_vec(&msg).map_err(|e| ListenerError::Encode(e.to_string()))?;
    let connect_err = |source| ListenerError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(connect_err)?;
    let addr = socket::UnixAddr::new(path).map_err(connect_err)?;
    socket::connect(sock.as_raw_fd(), &addr).map_err(connect_err)?;
    send_all(&sock, &data, fd).map_err(|source| ListenerError::Send {
        path: path.to_path_buf(),
        source,
    })
}

/// The first chunk carries the fd; a stream socket may take the JSON in several writes.
fn send_all(sock: &OwnedFd, data: &[u8], fd: BorrowedFd<'_>) -> Result<(), nix::Error> {
    let fds = [fd.as_raw_fd()];
    let mut sent = 0;
    while sent < data.len() {
        let iov = [IoSlice::new(&data[sent..])];
        let cmsg_fd = [ControlMessage::ScmRights(&fds)];
        let cmsg: &[ControlMessage] = if sent == 0 { &cmsg_fd } else { &[] };
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
