//! `delete`: remove everything `create` made: the process (with `--force`, or a created but
//! never started one), the cgroup, and the state directory, then run poststop hooks.

use std::path::Path;
use std::time::Duration;

use super::{kill::signal_all, Error};
use crate::cgroups::Cgroup;
use crate::hooks;
use crate::state::{CleanupRecord, ContainerState, StateDir, StateError, Status};

pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), Error> {
    let _span = tracing::info_span!("delete", id, force).entered();
    let dir = match StateDir::open(root, id) {
        Ok(d) => d,
        Err(StateError::NotExist(_)) if force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let state = match dir.load() {
        Ok(s) => s,
        Err(e @ StateError::Corrupt { .. }) => {
            if !force {
                return Err(e.into());
            }
            tracing::warn!("{e}; removing what the cleanup record names");
            return recover(dir);
        }
        Err(e) => return Err(e.into()),
    };
    let status = state.status(&dir.dir);
    match status {
        Status::Stopped => {}
        // A container that was never started is deleted without --force, as runc does.
        Status::Created => stop(&state),
        _ if force => {
            if status == Status::Paused {
                // Frozen processes die only once thawed; SIGKILL is queued first so that
                // nothing runs between the thaw and the kill.
                // SAFETY: kill(2) with a plain pid.
                unsafe { libc::kill(state.pid, libc::SIGKILL) };
                if let Some(cg) = state.cgroup.as_deref() {
                    if let Err(e) = Cgroup::open(cg, state.systemd_cgroup).and_then(|c| c.thaw()) {
                        tracing::warn!("thaw before delete: {e}");
                    }
                }
            }
            stop(&state)
        }
        _ => {
            return Err(Error::DeleteRunning {
                id: id.to_string(),
                status,
            })
        }
    }
    destroy(dir, &state)
}

/// `delete --force` without a usable state.json (a `create` killed before it saved one, or a
/// damaged file): kill every process in the cgroup the cleanup record names (the container's
/// init included: it is in there, or still has PR_SET_PDEATHSIG and died with its `create`),
/// remove that cgroup, then the directory. No record: `create` made nothing else yet.
fn recover(dir: StateDir) -> Result<(), Error> {
    match dir.load_cleanup() {
        Ok(Some(CleanupRecord {
            cgroup: Some(locator),
            systemd_cgroup,
        })) => {
            let cg = Cgroup::open(&locator, systemd_cgroup)?;
            // Quietly: the cgroup may be half made or not made at all. Frozen tasks cannot die,
            // so thaw first; `remove` kills again whatever appears meanwhile.
            let _ = cg.thaw();
            for pid in cg.pids().unwrap_or_default() {
                // SAFETY: kill(2) of a process in the container's own cgroup.
                unsafe { libc::kill(pid.as_raw(), libc::SIGKILL) };
            }
            cg.remove()?;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}; only the state directory can be removed"),
    }
    crate::shm_channels::release(&dir.dir, &dir.id); // ipc-shm
    give_back_devices(&dir.dir);
    dir.remove()?;
    Ok(())
}

fn stop(state: &ContainerState) {
    // SAFETY: kill(2) with a plain pid.
    unsafe { libc::kill(state.pid, libc::SIGKILL) };
    if !super::wait_gone(state.pid, state.pid_start, Duration::from_secs(10)) {
        tracing::warn!(
            pid = state.pid,
            "container process did not exit after SIGKILL"
        );
    }
}

/// Tear down a stopped container: leftover processes (without its own pid namespace they
/// outlive the first process), cgroup, state dir, then poststop hooks.
pub fn destroy(dir: StateDir, state: &ContainerState) -> Result<(), Error> {
    if let Some(cg) = state.cgroup.as_deref() {
        let cg = Cgroup::open(cg, state.systemd_cgroup)?;
        if !state.own_pid_ns {
            signal_all(&cg, libc::SIGKILL)?;
        }
        cg.remove()?;
    }
    let hook_state = state.hook_state(Status::Stopped);
    crate::shm_channels::release(&dir.dir, &state.id); // ipc-shm
    give_back_devices(&dir.dir);
    dir.remove()?;
    if !state.poststop.is_empty() {
        hooks::run_all_warn("poststop", &state.poststop, &hook_state);
    }
    Ok(())
}

/// linux.netDevices: the devices go back to the host before the state dir (their records)
/// goes. A device that cannot be found or moved is reported, not fatal: delete must finish.
fn give_back_devices(dir: &Path) {
    if let Err(e) = crate::net_devices::release(dir) {
        tracing::warn!("{e}");
    }
}
