//! `events`: `--stats` prints one `{"type":"stats","id":..,"data":{..}}` object in runc's shape
//! with live values; without `--stats` a stats object every interval and `oom` events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use rcrun_conformance::cgroups::controller_dir;
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::*;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn stats_of(rt: &Runtime, id: &str) -> Value {
    let out = rt.exec(&["events", "--stats", id]);
    out.assert_ok();
    assert_eq!(
        out.stdout.trim().lines().count(),
        1,
        "one JSON object on one line:\n{out}"
    );
    out.json()
}

#[test]
fn stats_have_runcs_shape_and_live_values() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("pids", json!({"limit": 50}))
        .resources("memory", json!({"limit": 128 * 1024 * 1024}))
        .sh("sleep 1000 & sleep 1000");
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let ev = stats_of(&rt, &b.id);
    assert_eq!(ev["type"], "stats", "{ev}");
    assert_eq!(ev["id"], b.id.as_str(), "{ev}");
    let d = &ev["data"];
    for k in [
        "cpu",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "hugetlb",
        "intel_rdt",
        "network_interfaces",
    ] {
        assert!(d.get(k).is_some(), "data.{k} missing: {d}");
    }
    // cpu
    assert!(d["cpu"]["usage"]["kernel"].is_u64(), "{d}");
    assert!(d["cpu"]["usage"]["user"].is_u64(), "{d}");
    assert!(d["cpu"]["throttling"].is_object(), "{d}");
    // memory: usage > 0, the limit we set, failcnt present; swap/kernel entries exist
    let mem = &d["memory"];
    assert!(mem["usage"]["usage"].as_u64().unwrap_or(0) > 0, "{mem}");
    assert_eq!(mem["usage"]["limit"], 128 * 1024 * 1024, "{mem}");
    assert!(mem["usage"]["failcnt"].is_u64(), "{mem}");
    for k in ["swap", "kernel", "kernelTCP"] {
        assert!(mem[k]["limit"].is_u64(), "memory.{k}.limit missing: {mem}");
    }
    assert!(!keys(&mem["raw"]).is_empty(), "memory.raw empty: {mem}");
    // pids: the shell and its two sleeps
    assert!(d["pids"]["current"].as_u64().unwrap_or(0) >= 2, "{d}");
    assert_eq!(d["pids"]["limit"], 50, "{d}");
}

/// Same bundle under runc and the subject: the same keys at the levels clients read.
#[test]
fn stats_keys_match_runc() {
    let rt = Runtime::rcrun();
    let runc = Runtime::runc();
    let mut got = Vec::new();
    for r in [&rt, &runc] {
        let mut b = Bundle::new();
        b.resources("pids", json!({"limit": 50}))
            .args(&["sleep", "1000"]);
        let _g = r.guard(&b.id);
        r.start_detached(&b);
        got.push(stats_of(r, &b.id));
    }
    let (a, b) = (&got[0], &got[1]);
    for ptr in [
        "",
        "/data",
        "/data/cpu",
        "/data/cpu/usage",
        "/data/memory",
        "/data/memory/usage",
        "/data/memory/kernelTCP",
        "/data/pids",
        "/data/cpuset",
    ] {
        let (ka, kb) = (keys(a.pointer(ptr).unwrap()), keys(b.pointer(ptr).unwrap()));
        // `cache` and `max` are omitted by runc when zero: compare what both must have.
        let strip = |s: BTreeSet<String>| -> BTreeSet<String> {
            s.into_iter()
                .filter(|k| !matches!(k.as_str(), "cache" | "max" | "usage"))
                .collect()
        };
        assert_eq!(strip(ka), strip(kb), "keys of {ptr:?}:\n{a}\n{b}");
    }
}

#[test]
fn stats_of_a_stopped_container_fail() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    // runc: container with id X is not running
    rt.exec(&["events", "--stats", &b.id])
        .assert_fail()
        .assert_one_line_error(&["not running"]);
}

/// The stream: a stats line every interval (runc streams until it is killed).
#[test]
fn stream_prints_stats_every_interval() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let out = rt.exec_opts(
        &["events", "--interval", "200ms", &b.id],
        Opts {
            timeout: Some(Duration::from_millis(2500)),
            ..Opts::default()
        },
    );
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{out}")))
        .collect();
    assert!(lines.len() >= 3, "too few events:\n{out}");
    for v in &lines {
        assert_eq!(v["type"], "stats", "{v}");
        assert_eq!(v["id"], b.id.as_str(), "{v}");
    }
}

/// rcrun's stream ends when the container stops (runc's never does).
#[test]
fn stream_ends_when_the_container_stops() {
    if Runtime::skip_for_reference("runc 1.1's events stream runs until killed") {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "2"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let out = rt.exec_opts(
        &["events", "--interval", "100ms", &b.id],
        Opts {
            timeout: Some(Duration::from_secs(10)),
            ..Opts::default()
        },
    );
    out.assert_ok();
    assert!(
        out.stdout.lines().count() >= 1,
        "no stats before the end:\n{out}"
    );
    assert_eq!(rt.status(&b.id).as_deref(), Some("stopped"), "{out}");
}

/// A process killed by the OOM killer shows up as `{"type":"oom","id":ID}`.
#[test]
fn oom_kill_is_reported() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let limit = 32 * 1024 * 1024;
    let cg = b.cgroups_path().unwrap();
    let mut mem = json!({"limit": limit});
    // No escape into swap: memory+swap (v1) equal to the limit, no swap (v2).
    if controller_dir("memory", "/")
        .join("memory.memsw.limit_in_bytes")
        .exists()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        mem["swap"] = json!(limit);
    }
    // dd's 64 MiB buffer, filled from /dev/zero, does not fit: the OOM killer comes at once.
    b.resources("memory", mem)
        .sh("sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 2");
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let out = rt.exec_opts(
        &["events", "--interval", "1s", &b.id],
        Opts {
            timeout: Some(Duration::from_secs(10)),
            ..Opts::default()
        },
    );
    let oom = json!({"type": "oom", "id": b.id});
    assert!(
        out.stdout
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).ok().as_ref() == Some(&oom)),
        "no oom event (cgroup {cg}):\n{out}"
    );
}
