//! `kill`: signal the container's first process, or with `--all` every process in its cgroup.

use std::path::Path;

use nix::sys::signal::Signal;

use super::{sys, Error};
use crate::cgroups::Cgroup;
use crate::state::{StateDir, Status};

pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<(), Error> {
    let _span = tracing::info_span!("kill", id, signal, all).entered();
    let dir = StateDir::open(root, id)?;
    let state = dir.load()?;
    let status = state.status(&dir.dir);
    if all {
        if let Some(cg) = state.cgroup.as_deref() {
            let cg = Cgroup::open(cg, state.systemd_cgroup)?;
            if cg.hierarchies().next().is_some() {
                signal_all(&cg, signal)?;
                return Ok(());
            }
        }
        // No cgroup to read (rootless, not delegated): the processes ps finds for it.
        if status != Status::Stopped {
            for pid in super::ps::without_cgroup(state.pid) {
                // SAFETY: as in `send`.
                unsafe { libc::kill(pid, signal) };
            }
            return Ok(());
        }
        if state.cgroup.is_some() {
            return Ok(());
        }
    }
    if status == Status::Stopped {
        return Err(Error::NotRunning);
    }
    send(state.pid, signal)?;
    // A frozen (cgroup v1) process only dies once thawed: thaw for SIGKILL, as runc does.
    if status == Status::Paused && signal == Signal::SIGKILL as i32 {
        if let Some(cg) = state.cgroup.as_deref() {
            Cgroup::open(cg, state.systemd_cgroup)?.thaw()?;
        }
    }
    Ok(())
}

fn send(pid: i32, signal: i32) -> Result<(), Error> {
    // SAFETY: kill(2) with a plain pid and signal number (numbers beyond nix's enum included).
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = nix::Error::last();
        if e == nix::Error::ESRCH {
            return Err(Error::NotRunning);
        }
        return Err(sys(format!("kill {pid}"))(e));
    }
    Ok(())
}

/// Signal every process in the cgroup, as runc does: freeze it first so no process can fork a
/// new one between reading the pid list and signalling, then thaw it (whatever the signal, and
/// also when it was paused before: a frozen process cannot act on its signal).
pub(crate) fn signal_all(cg: &Cgroup, signal: i32) -> Result<(), Error> {
    if let Err(e) = cg.freeze() {
        tracing::warn!("kill --all: freeze before signalling: {e}");
    }
    let pids = cg.pids();
    if let Ok(pids) = &pids {
        for pid in pids {
            // SAFETY: as in `send`; a process that exited meanwhile is fine.
            unsafe { libc::kill(pid.as_raw(), signal) };
        }
    }
    if let Err(e) = cg.thaw() {
        tracing::warn!("kill --all: thaw after signalling: {e}");
    }
    pids?;
    Ok(())
}
