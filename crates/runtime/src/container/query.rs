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
    for (dir, st) in state::list(root)? {
        let status = st.status(&dir);
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
    Ok(out)
}
