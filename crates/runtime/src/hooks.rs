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
    #[error("{kind} hook {path}: {status}{}", if stderr.is_empty() { String::new() } else { format!(", stderr: {stderr}") })]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
        /// The hook's last lines on stderr (runc reports them too), joined on one line.
        stderr: String,
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
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    let stderr = child.stderr.take().map(collect_stderr);
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
    let said = stderr.map(StderrTail::finish).unwrap_or_default();
    if !status.success() {
        return Err(HookError::Failed {
            kind,
            path,
            status: status.to_string(),
            stderr: said,
        });
    }
    if !said.is_empty() {
        tracing::info!("{kind} hook {path}: {said}");
    }
    Ok(())
}

/// The tail of a hook's stderr, read on a thread: a hook that leaves a child holding the
/// pipe open must not keep us waiting, so `finish` takes what arrived soon after the exit.
struct StderrTail(std::sync::mpsc::Receiver<Vec<u8>>);

fn collect_stderr(mut pipe: std::process::ChildStderr) -> StderrTail {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    StderrTail(rx)
}

impl StderrTail {
    fn finish(self) -> String {
        const KEEP: usize = 2048;
        let mut all = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(chunk) => {
                    all.extend_from_slice(&chunk);
                    if all.len() > 4 * KEEP {
                        all.drain(..all.len() - KEEP);
                    }
                }
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&all);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let joined = lines[lines.len().saturating_sub(3)..].join(" | ");
        match joined.char_indices().nth(KEEP) {
            Some((i, _)) => joined[..i].to_string(),
            None => joined,
        }
    }
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
