//! `pause` / `resume`: the cgroup freezer (v1 `freezer.state`, v2 `cgroup.freeze` +
//! `cgroup.events`), the `paused` status, runc's errors, and killing / force-deleting a paused
//! container without leaving a frozen cgroup behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use rcrun_conformance::cgroups::{hierarchies, is_pure_v2};
use rcrun_conformance::*;

/// The directory whose files tell whether the container's cgroup is frozen, and whether it is v2.
fn freezer_dir(cg: &str) -> (PathBuf, bool) {
    let rel = cg.trim_start_matches('/');
    let hs = hierarchies();
    if !is_pure_v2() {
        if let Some(h) = hs
            .iter()
            .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "freezer"))
        {
            return (h.mount.join(rel), false);
        }
    }
    let h = hs.iter().find(|h| h.v2).expect("no freezer and no cgroup2");
    (h.mount.join(rel), true)
}

/// Frozen as the kernel reports it: v1 `FROZEN`, v2 `frozen 1` in cgroup.events.
fn kernel_frozen(cg: &str) -> bool {
    let (dir, v2) = freezer_dir(cg);
    if v2 {
        std::fs::read_to_string(dir.join("cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == "frozen 1")
    } else {
        std::fs::read_to_string(dir.join("freezer.state"))
            .unwrap_or_default()
            .trim()
            == "FROZEN"
    }
}

/// A container that counts into /dev/shm/c (tmpfs: the root is read-only) ten times a second.
fn counter_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.sh("i=0; while true; do i=$((i+1)); echo $i > /dev/shm/c; usleep 50000; done");
    b
}

fn count(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/c"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let rt = Runtime::rcrun();
    let b = counter_bundle();
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    assert!(wait_until(Duration::from_secs(5), || count(pid) > 2));

    rt.exec(&["pause", &b.id]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("paused"));
    assert!(
        wait_until(Duration::from_secs(5), || kernel_frozen(&cg)),
        "cgroup not frozen"
    );
    let list = rt.list_json();
    assert_eq!(list[0]["status"], "paused", "{list}");
    // Nothing runs while frozen.
    let before = count(pid);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(pid), before, "the counter moved while paused");

    rt.exec(&["resume", &b.id]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    assert!(!kernel_frozen(&cg), "still frozen after resume");
    assert!(
        wait_until(Duration::from_secs(5), || count(pid) > before),
        "the counter did not move after resume"
    );
}

#[test]
fn pause_and_resume_errors_follow_runc() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    // resume of a running container: runc says "container not paused"
    rt.exec(&["resume", &b.id])
        .assert_fail()
        .assert_one_line_error(&["container not paused"]);
    rt.exec(&["pause", &b.id]).assert_ok();
    // pause of a paused container: runc says "container not running"
    rt.exec(&["pause", &b.id])
        .assert_fail()
        .assert_one_line_error(&["not running"]);
    rt.exec(&["resume", &b.id]).assert_ok();
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.exec(&["pause", &b.id])
        .assert_fail()
        .assert_one_line_error(&["not running"]);
    rt.exec(&["resume", &b.id])
        .assert_fail()
        .assert_one_line_error(&["not paused"]);
    rt.exec(&["pause", "no-such-container"]).assert_fail();
}

/// runc allows pausing a created container; `resume` makes it `created` again and it still
/// starts.
#[test]
fn created_container_can_be_paused() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    rt.exec(&["pause", &b.id]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("paused"));
    rt.exec(&["resume", &b.id]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("created"));
    rt.start(&b.id).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
}

#[test]
fn paused_container_can_be_killed() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    rt.exec(&["pause", &b.id]).assert_ok();
    assert!(wait_until(Duration::from_secs(5), || kernel_frozen(&cg)));
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "a paused container survived SIGKILL"
    );
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn paused_container_can_be_force_deleted() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("sleep 1000 & sleep 1000");
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    rt.exec(&["pause", &b.id]).assert_ok();
    // not without --force (runc: "cannot delete container X that is not stopped: paused")
    rt.delete(&b.id)
        .assert_fail()
        .assert_one_line_error(&["paused"]);
    rt.delete_force(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

/// runc's words for `start` of a container that is not `created`.
#[test]
fn start_of_paused_or_running_container_fails_as_in_runc() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    rt.exec(&["pause", &b.id]).assert_ok();
    rt.start(&b.id)
        .assert_fail()
        .assert_one_line_error(&["cannot start a container in the paused state"]);
    rt.exec(&["resume", &b.id]).assert_ok();
    rt.start(&b.id).assert_ok();
    rt.start(&b.id)
        .assert_fail()
        .assert_one_line_error(&["cannot start an already running container"]);
}

/// `kill --all` freezes, signals and thaws, as runc does: a paused container gets its signal
/// delivered (here SIGTERM, which a frozen process would never act on) and runs again.
#[test]
fn kill_all_on_paused_container_delivers_and_thaws() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("trap 'exit 3' TERM; sleep 1000 & wait");
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    rt.exec(&["pause", &b.id]).assert_ok();
    assert!(wait_until(Duration::from_secs(5), || kernel_frozen(&cg)));
    rt.exec(&["kill", "--all", &b.id, "TERM"]).assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "SIGTERM to a paused container with kill --all was not delivered"
    );
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}
