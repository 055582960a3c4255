//! `state` and `list`: read-only views, no lock taken (state.json is replaced atomically).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Error;
use crate::state::{self, ContainerState, Status};

/// runc's `state` object for one container.
pub fn state(root: &Path, id: &str) -> Result<serde_json::Value, Error> {
    state::validate_id(id)?;
    let dir = root.join(id);
    let st = state::load_state(&dir, id)?;
    Ok(st.to_oci_json(st.status(&dir)))
}

/// One row of `list`.
pub struct Entry {
    pub state: ContainerState,
    pub status: Status,
    /// User name of the state directory's owner, as runc's OWNER column shows it.
    pub owner: String,
}

pub fn list(root: &Path) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    let mut owners: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    for (dir, id) in state::list_dirs(root)? {
        let Ok(mut st) = state::load_state(&dir, &id) else {
            continue;
        };
        let status = st.status(&dir);
        // Only what `list` prints stays: with 100 containers the cgroup locators and hooks
        // would otherwise all be alive at once (peak RSS is a benchmark figure).
        st.cgroup = None;
        st.freezer = None;
        st.poststart = Vec::new();
        st.poststop = Vec::new();
        let uid = std::fs::metadata(&dir).map(|m| m.uid()).unwrap_or(0);
        // One /etc/passwd read per distinct owner, not per container.
        let owner = owners
            .entry(uid)
            .or_insert_with(|| crate::identity::host_user_name(uid))
            .clone();
        out.push(Entry {
            state: st,
            status,
            owner,
        });
    }
    out.sort_by(|a, b| {
        a.state
            .created
            .cmp(&b.state.created)
            .then(a.state.id.cmp(&b.state.id))
    });
    Ok(out)
}
