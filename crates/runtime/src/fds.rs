//! File descriptors crossing into the container: only stdio and the preserved ones (LISTEN_FDS
//! and `--preserve-fds`) survive exec; what the runtime inherited by accident is closed as soon
//! as the container's process exists, everything else at execve.

#[derive(Debug, thiserror::Error)]
#[error("mark inherited file descriptors close-on-exec: {0}")]
pub struct FdError(#[source] std::io::Error);

/// Mark every fd >= `first` close-on-exec: one close_range(2) call on 5.11+, /proc walk before.
pub fn cloexec_from(first: i32) -> Result<(), FdError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing, it only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let rd = std::fs::read_dir("/proc/self/fd").map_err(FdError)?;
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale number just fails.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Close every descriptor >= `first` that is not close-on-exec. rcrun opens all of its own
/// descriptors close-on-exec, and the preserved ones lie below `first`, so these are what the
/// caller left open by accident (CVE-2024-21626's leaked directory, for one). Called first
/// thing in a process that will enter a container: until its execve it holds everything the
/// runtime holds, and a host directory among them is a way out (a cwd of /proc/self/fd/N).
/// Without /proc (nothing to list) this does nothing: close-on-exec still applies at execve.
pub fn close_inherited_from(first: i32) -> Result<(), FdError> {
    let rd = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FdError(e)),
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD only reads the flags; a stale number (the directory listing's own
        // descriptor, closed by now) just fails.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: closing a descriptor this process inherited and no code here owns.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Number of sockets systemd passed us (LISTEN_FDS), which runc forwards to the container.
pub fn listen_fds() -> usize {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
