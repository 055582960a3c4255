//! OCI hooks: each runs with the container state on stdin, its own args and env, and an optional
//! timeout. Whether a failure is fatal depends on the hook kind (the caller decides).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: start: {source}")]
    Spawn {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {path}: {status}")]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
    },
    #[error("{kind} hook {path}: timed out after {secs}s")]
    Timeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
}

/// Run `hooks` in order; the first failure stops the list and is returned.
pub fn run_all(kind: &'static str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for h in hooks {
        let _span = tracing::debug_span!("hook", kind, path = %h.path().display()).entered();
        run_one(kind, h, state)?;
    }
    Ok(())
}

/// Run every hook even if some fail (poststart, poststop): failures are logged as warnings.
pub fn run_all_warn(kind: &'static str, hooks: &[Hook], state: &str) {
    for h in hooks {
        if let Err(e) = run_one(kind, h, state) {
            tracing::warn!("{e}");
        }
    }
}

fn run_one(kind: &'static str, h: &Hook, state: &str) -> Result<(), HookError> {
    let path = h.path().display().to_string();
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args().as_ref().filter(|a| !a.is_empty()) {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that never reads its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    if let Some(secs) = h.timeout().filter(|t| *t > 0) {
        if !wait_with_timeout(child.id() as i32, secs) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout { kind, path, secs });
        }
    }
    let status = child.wait().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if !status.success() {
        return Err(HookError::Failed {
            kind,
            path,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// Wait up to `secs` for `pid` to exit, with a pidfd and poll (no sleeping loop).
/// Returns false on timeout. Without pidfd support (pre-5.3) it waits without a limit.
fn wait_with_timeout(pid: i32, secs: i64) -> bool {
    // SAFETY: pidfd_open(pid, 0) returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true;
    }
    // SAFETY: fd was just returned by the kernel and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs as u64);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc > 0 {
            return true;
        }
        if rc == 0 {
            return false;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true;
        }
    }
}
