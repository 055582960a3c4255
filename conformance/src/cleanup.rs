//! "Nothing left behind" checks.

use crate::bundle::Bundle;
use crate::cgroups;
use crate::runtime::Runtime;
use crate::util::{mounts_under, pid_alive, wait_until};
use std::time::Duration;

/// Problems found for container `id` of bundle `b`: state dir, cgroup dirs,
/// mounts of the rootfs, and (if given) a live container pid.
pub fn leftovers(rt: &Runtime, b: &Bundle, id: &str, pid: Option<i64>) -> Vec<String> {
    let mut problems = Vec::new();
    let sd = rt.state_dir(id);
    if sd.exists() {
        problems.push(format!("state dir {} still exists", sd.display()));
    }
    if let Some(cg) = b.cgroups_path() {
        for d in cgroups::all_dirs(&cg) {
            if d.exists() {
                problems.push(format!("cgroup dir {} still exists", d.display()));
            }
        }
    }
    let m = mounts_under(&b.rootfs());
    if !m.is_empty() {
        problems.push(format!("rootfs still mounted: {m:?}"));
    }
    if let Some(p) = pid {
        if pid_alive(p) {
            problems.push(format!("container process {p} still alive"));
        }
    }
    problems
}

/// Assert [`leftovers`] is empty (retrying for up to 3s: process exit and
/// cgroup removal may lag a little behind the runtime's exit).
pub fn assert_no_leftovers(rt: &Runtime, b: &Bundle, id: &str, pid: Option<i64>) {
    let mut last = Vec::new();
    let clean = wait_until(Duration::from_secs(3), || {
        last = leftovers(rt, b, id, pid);
        last.is_empty()
    });
    assert!(clean, "container {id} left things behind: {last:#?}");
}
