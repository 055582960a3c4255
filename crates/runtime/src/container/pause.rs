//! `pause` and `resume`: freeze and thaw every process of the container through its cgroup
//! (v1 freezer or v2 `cgroup.freeze`). The status `paused` is read back from the freezer (see
//! [`crate::state::ContainerState::status`]), so nothing else is recorded.

use std::path::Path;

use super::Error;
use crate::cgroups::Cgroup;
use crate::state::{ContainerState, StateDir, Status};

/// Freeze a running (or created, as runc allows) container.
pub fn pause(root: &Path, id: &str) -> Result<(), Error> {
    let _span = tracing::info_span!("pause", id).entered();
    let dir = StateDir::open(root, id)?;
    let state = dir.load()?;
    match state.status(&dir.dir) {
        Status::Running | Status::Created => {}
        // runc: "container not running" for stopped and already paused containers alike.
        _ => return Err(Error::NotRunningOrCreated),
    }
    cgroup(&state)?.freeze()?;
    Ok(())
}

/// Thaw a paused container.
pub fn resume(root: &Path, id: &str) -> Result<(), Error> {
    let _span = tracing::info_span!("resume", id).entered();
    let dir = StateDir::open(root, id)?;
    let state = dir.load()?;
    if state.status(&dir.dir) != Status::Paused {
        return Err(Error::NotPaused);
    }
    cgroup(&state)?.thaw()?;
    Ok(())
}

fn cgroup(state: &ContainerState) -> Result<Cgroup, Error> {
    let Some(cg) = state.cgroup.as_deref() else {
        return Err(crate::cgroups::CgroupError::ControllerUnavailable {
            field: "pause/resume",
            controller: "freezer",
            detail: "the container has no cgroup".into(),
        }
        .into());
    };
    Ok(Cgroup::open(cg, state.systemd_cgroup)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::cgroups::is_frozen;

    #[test]
    fn frozen_is_read_from_the_freezer_files() {
        let d = std::env::temp_dir().join(format!("rcrun-frozen-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let state = |name: &str| {
            serde_json::json!({"version": 1, "mode": "legacy", "path": "/x",
                "hierarchies": [{"name": name, "dir": d, "mount": "/sys/fs/cgroup"}]})
            .to_string()
        };
        let (v1, v2) = (state("freezer"), state(""));
        std::fs::write(d.join("freezer.self_freezing"), "1\n").unwrap();
        assert!(is_frozen(&v1));
        std::fs::write(d.join("freezer.self_freezing"), "0\n").unwrap();
        assert!(!is_frozen(&v1));
        std::fs::write(d.join("cgroup.freeze"), "1\n").unwrap();
        assert!(is_frozen(&v2));
        std::fs::write(d.join("cgroup.freeze"), "0\n").unwrap();
        assert!(!is_frozen(&v2));
        assert!(!is_frozen("/plain/path"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
