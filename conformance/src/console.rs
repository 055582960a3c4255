//! `--console-socket` receiver: a unix socket listener that accepts one
//! connection and receives the pty master via SCM_RIGHTS.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct ConsoleSocket {
    path: PathBuf,
    handle: Option<JoinHandle<io::Result<OwnedFd>>>,
}

fn poll_fd(fd: RawFd, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: p is a valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r > 0)
}

/// Receive one fd passed with SCM_RIGHTS on a connected unix stream.
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // room for up to 4 fds
    let mut cbuf = [0u64; 16];
    // SAFETY: zeroed msghdr is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found: Option<OwnedFd> = None;
    // SAFETY: walking the control buffer the kernel filled, via the CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    let owned = OwnedFd::from_raw_fd(fd);
                    if found.is_none() {
                        found = Some(owned);
                    } // extra fds are dropped (closed)
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no fd received over console socket",
        )
    })
}

impl ConsoleSocket {
    /// Bind a listener at `dir/console.sock` and start waiting (in a thread)
    /// for the runtime to connect and send the master.
    pub fn new(dir: &Path) -> ConsoleSocket {
        let path = dir.join(format!("console-{}.sock", crate::util::unique_id("c")));
        let listener =
            UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        let handle = std::thread::spawn(move || -> io::Result<OwnedFd> {
            let deadline = Instant::now() + Duration::from_secs(30);
            let fd = listener.as_raw_fd();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nobody connected to the console socket",
                    ));
                }
                if poll_fd(fd, libc::POLLIN, left.min(Duration::from_millis(200)))? {
                    break;
                }
            }
            let (stream, _) = listener.accept()?;
            recv_fd(stream.as_raw_fd())
        });
        ConsoleSocket {
            path,
            handle: Some(handle),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Wait for the master fd.
    pub fn master(mut self) -> Pty {
        let h = self.handle.take().expect("handle");
        let fd = h
            .join()
            .unwrap_or_else(|_| panic!("console thread panicked"))
            .unwrap_or_else(|e| panic!("console socket: {e}"));
        Pty { fd }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pty master received from the runtime.
pub struct Pty {
    pub fd: OwnedFd,
}

impl Pty {
    /// Read until `needle` has been seen (returns everything read), EOF/EIO,
    /// or `timeout`.
    pub fn read_until(&self, needle: &str, timeout: Duration) -> String {
        let mut acc = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            if String::from_utf8_lossy(&acc).contains(needle) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match poll_fd(self.fd.as_raw_fd(), libc::POLLIN, left) {
                Ok(true) => {}
                _ => break,
            }
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EIO once the slave side is closed
            }
            acc.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8_lossy(&acc).into_owned()
    }
    pub fn write(&self, data: &[u8]) {
        let mut off = 0;
        while off < data.len() {
            // SAFETY: writing from a live slice.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    data[off..].as_ptr().cast(),
                    data.len() - off,
                )
            };
            assert!(n > 0, "write to pty master: {}", io::Error::last_os_error());
            off += n as usize;
        }
    }
}
