//! `update`: new limits of a running container, read back from the host's cgroup files (v1 or
//! v2 layout), from flags (with k/m/g sizes), from `--resources -` (containerd) and
//! `--resources=FILE` (podman); runc's rules: 0 leaves a value alone, device rules are ignored,
//! a stopped container cannot be updated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::cgroups::{
    controller_dir, cpu_quota_period, cpu_shares_or_weight, expected_cpu_value, is_pure_v2,
    memory_limit, pids_max,
};
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::*;

const MIB: u64 = 1024 * 1024;

fn running(rt: &Runtime, b: &mut Bundle) -> String {
    b.args(&["sleep", "1000"]);
    rt.start_detached(b);
    b.cgroups_path().unwrap()
}

fn read(cg: &str, controller: &str, file: &str) -> String {
    let p = controller_dir(controller, cg).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// memory.soft_limit_in_bytes (v1) or memory.low (v2).
fn memory_reservation(cg: &str) -> u64 {
    let dir = controller_dir("memory", cg);
    let f = if dir.join("memory.low").exists() {
        "memory.low"
    } else {
        "memory.soft_limit_in_bytes"
    };
    read(cg, "memory", f).parse().unwrap_or(0)
}

#[test]
fn flags_change_memory_pids_and_cpu() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("memory", json!({"limit": 64 * MIB}))
        .resources("pids", json!({"limit": 10}));
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    assert_eq!(memory_limit(&cg), Some(64 * MIB));

    rt.exec(&[
        "update",
        "--memory",
        "100m",
        "--memory-reservation",
        "50M",
        "--pids-limit",
        "20",
        "--cpu-share",
        "512",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "20000",
        &b.id,
    ])
    .assert_ok();
    assert_eq!(memory_limit(&cg), Some(100 * MIB));
    assert_eq!(memory_reservation(&cg), 50 * MIB);
    assert_eq!(pids_max(&cg), "20");
    assert_eq!(cpu_quota_period(&cg), (20000, 100000));
    assert_eq!(cpu_shares_or_weight(&cg), expected_cpu_value(512));

    // A size in gigabytes, and -1 for unlimited.
    rt.exec(&["update", "--memory", "1g", &b.id]).assert_ok();
    assert_eq!(memory_limit(&cg), Some(1024 * MIB));
    rt.exec(&["update", "--memory", "-1", "--pids-limit", "-1", &b.id])
        .assert_ok();
    assert_eq!(memory_limit(&cg), None);
    assert_eq!(pids_max(&cg), "max");
    // what was not named is unchanged
    assert_eq!(cpu_quota_period(&cg), (20000, 100000));

    // The container still runs and sees its new limit (v1: its own memory cgroup mounted).
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
}

#[test]
fn zero_leaves_values_unchanged() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("memory", json!({"limit": 64 * MIB}))
        .resources("pids", json!({"limit": 10}))
        .resources("cpu", json!({"quota": 30000, "period": 100000}));
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    rt.exec(&[
        "update",
        "--memory",
        "0",
        "--pids-limit",
        "0",
        "--cpu-quota",
        "0",
        "--cpu-share",
        "0",
        &b.id,
    ])
    .assert_ok();
    assert_eq!(memory_limit(&cg), Some(64 * MIB));
    assert_eq!(pids_max(&cg), "10");
    assert_eq!(cpu_quota_period(&cg), (30000, 100000));
    // no flag at all: nothing changes either
    rt.exec(&["update", &b.id]).assert_ok();
    assert_eq!(memory_limit(&cg), Some(64 * MIB));
}

/// containerd: `update --resources - ID` with a LinuxResources document on stdin. Device rules
/// in it are ignored (runc does), and so are the flags.
#[test]
fn resources_from_stdin() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    let doc = json!({
        "memory": {"limit": 96 * MIB},
        "pids": {"limit": 33},
        "cpu": {"shares": 256},
        "devices": [{"allow": true, "access": "rwm"}]
    });
    rt.exec_opts(
        &["update", "--resources", "-", "--pids-limit", "5", &b.id],
        Opts {
            stdin: Some(doc.to_string().into_bytes()),
            ..Opts::default()
        },
    )
    .assert_ok();
    assert_eq!(memory_limit(&cg), Some(96 * MIB));
    assert_eq!(pids_max(&cg), "33");
    assert_eq!(cpu_shares_or_weight(&cg), expected_cpu_value(256));
    if !is_pure_v2() {
        let list = read(&cg, "devices", "devices.list");
        assert!(
            !list.lines().any(|l| l == "a *:* rwm"),
            "device rules of an update were applied: {list}"
        );
    }
}

/// podman: `update --resources=FILE ID`.
#[test]
fn resources_from_file() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    let f = b.path().join("resources.json");
    std::fs::write(
        &f,
        json!({"cpu": {"quota": 40000, "period": 80000}, "pids": {"limit": 7}}).to_string(),
    )
    .unwrap();
    let arg = format!("--resources={}", f.display());
    rt.exec(&["update", &arg, &b.id]).assert_ok();
    assert_eq!(cpu_quota_period(&cg), (40000, 80000));
    assert_eq!(pids_max(&cg), "7");
    rt.exec(&["update", "--resources", "/nonexistent/r.json", &b.id])
        .assert_fail();
}

/// A quota given alone keeps the period set by an earlier update.
#[test]
fn quota_alone_keeps_the_period() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    rt.exec(&["update", "--cpu-period", "50000", &b.id])
        .assert_ok();
    rt.exec(&["update", "--cpu-quota", "20000", &b.id])
        .assert_ok();
    assert_eq!(cpu_quota_period(&cg), (20000, 50000));
}

/// Memory plus swap (v1 memory.memsw.limit_in_bytes = memory+swap; v2 memory.swap.max = swap
/// alone), where the host accounts swap.
#[test]
fn memory_swap() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    let dir = controller_dir("memory", &cg);
    let (file, want) = if dir.join("memory.swap.max").exists() {
        ("memory.swap.max", 64 * MIB)
    } else if dir.join("memory.memsw.limit_in_bytes").exists() {
        ("memory.memsw.limit_in_bytes", 128 * MIB)
    } else {
        eprintln!("no swap accounting on this host; nothing to check");
        return;
    };
    rt.exec(&["update", "--memory", "64m", "--memory-swap", "128m", &b.id])
        .assert_ok();
    assert_eq!(memory_limit(&cg), Some(64 * MIB));
    assert_eq!(read(&cg, "memory", file), want.to_string());
}

#[test]
fn bad_values_and_stopped_containers_fail() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("memory", json!({"limit": 64 * MIB}));
    let _g = rt.guard(&b.id);
    let cg = running(&rt, &mut b);
    // runc: invalid value for memory: invalid size: 'abc'
    rt.exec(&["update", "--memory", "abc", &b.id])
        .assert_fail()
        .assert_one_line_error(&["memory", "abc"]);
    assert_eq!(memory_limit(&cg), Some(64 * MIB));
    rt.exec(&["update", "--memory", "1m", "no-such-container"])
        .assert_fail();
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    // runc: container not running
    rt.exec(&["update", "--memory", "32m", &b.id])
        .assert_fail()
        .assert_one_line_error(&["not running"]);
}
