//! File descriptors crossing into the container: only stdio and the preserved ones (LISTEN_FDS
//! and `--preserve-fds`) survive exec; everything else the runtime inherited is closed then.

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

/// Number of sockets systemd passed us (LISTEN_FDS), which runc forwards to the container.
pub fn listen_fds() -> usize {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
