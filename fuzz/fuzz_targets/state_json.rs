//! state.json as found in the state directory (possibly truncated, damaged or hand-edited):
//! parsing, the JSON rcrun prints from it (`state`, `list`, hooks' stdin), and a save/load round
//! trip.
//!
//! Also the cleanup record and the cgroup locator inside either (parsed as `delete` does).
//!
//! Properties: no panic, bounded time, an error is one line, and what `save` would write parses
//! back to the same state.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rcrun_runtime::cgroups::Cgroup;
use rcrun_runtime::state::{self, Status};

fuzz_target!(|data: &[u8]| {
    // The cleanup record `delete --force` falls back on is read from the same kind of bytes.
    if let Ok(rec) = serde_json::from_slice::<state::CleanupRecord>(data) {
        open_cgroup(rec.cgroup.as_deref(), rec.systemd_cgroup);
    }
    let st = match state::parse_state("fuzz", Path::new("state.json"), data) {
        Ok(st) => st,
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
            return;
        }
    };
    for status in [
        Status::Creating,
        Status::Created,
        Status::Running,
        Status::Paused,
        Status::Stopped,
    ] {
        let v = st.to_oci_json(status);
        assert_eq!(v["status"], status.as_str());
        let hook: serde_json::Value = match serde_json::from_str(&st.hook_state(status)) {
            Ok(v) => v,
            Err(e) => panic!("hook state is not JSON: {e}"),
        };
        assert_eq!(hook["id"], st.id.as_str());
    }
    open_cgroup(st.cgroup.as_deref(), st.systemd_cgroup);
    // save() writes serde_json::to_vec of the state; load() must read it back unchanged.
    let saved = match serde_json::to_vec(&st) {
        Ok(b) => b,
        Err(e) => panic!("a parsed state does not serialize: {e}"),
    };
    let again = match state::parse_state("fuzz", Path::new("state.json"), &saved) {
        Ok(s) => s,
        Err(e) => panic!("a saved state does not load: {e}"),
    };
    let a: serde_json::Value = serde_json::from_slice(&saved).unwrap_or_default();
    let b = serde_json::to_value(&again).unwrap_or_default();
    assert_eq!(a, b, "state changed in a save/load round trip");
});

/// What every command does first with the saved cgroup locator (parse it; for a plain path,
/// plan the hierarchies from /proc/self/mountinfo). Not for systemd locators, which connect to
/// the bus.
fn open_cgroup(locator: Option<&str>, systemd: bool) {
    if let Some(l) = locator.filter(|l| !systemd && !l.contains("systemd")) {
        let _ = Cgroup::open(l, false);
    }
}
