//! linux.resources applied to the container's cgroup: read back on the host
//! (v1 or v2 files, layout detected at run time) and seen from inside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::cgroups::{
    controller_dir, cpu_quota_period, cpu_shares_or_weight, expected_cpu_value, memory_limit,
    pids_max, proc_cgroup_path,
};
use rcrun_conformance::*;

#[test]
fn memory_limit_is_applied() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let limit: u64 = 64 * 1024 * 1024;
    b.resources("memory", json!({"limit": limit}))
        .args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    assert_eq!(memory_limit(&cg), Some(limit));
    // the container's init is in exactly that cgroup (host view)
    let dump = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        proc_cgroup_path(&dump, "memory").as_deref(),
        Some(cg.as_str()),
        "{dump}"
    );
    let procs =
        std::fs::read_to_string(controller_dir("memory", &cg).join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "pid {pid} not in cgroup.procs: {procs}"
    );

    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.delete(&b.id).assert_ok();
    assert!(
        !controller_dir("memory", &cg).exists(),
        "cgroup not removed after delete"
    );
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn cgroup_path_is_visible_from_inside() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("memory", json!({"limit": 48 * 1024 * 1024}));
    let cg = b.cgroups_path().unwrap();
    // v1: the container's own memory cgroup is bind-mounted at /sys/fs/cgroup/memory.
    // v2 without a cgroup ns: runc mounts a fresh cgroup2, which shows the whole
    // tree, so look under the cgroupsPath first.
    let script = if cgroups::is_pure_v2() {
        format!("cat /proc/self/cgroup; echo; f=/sys/fs/cgroup{cg}/memory.max; [ -f $f ] || f=/sys/fs/cgroup/memory.max; cat $f")
    } else {
        "cat /proc/self/cgroup; echo; cat /sys/fs/cgroup/memory/memory.limit_in_bytes".to_string()
    };
    let out = rt.sh_ok(&mut b, &script);
    let (dump, limit) = out.split_once("\n\n").unwrap();
    for ctrl in ["memory", "pids", "cpu"] {
        assert_eq!(
            proc_cgroup_path(dump, ctrl).as_deref(),
            Some(cg.as_str()),
            "{ctrl}:\n{dump}"
        );
    }
    assert_eq!(limit.trim(), (48 * 1024 * 1024).to_string());
}

#[test]
fn pids_limit_is_applied_and_enforced() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("pids", json!({"limit": 5}))
        .args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    {
        let _g = rt.guard(&b.id);
        rt.start_detached(&b);
        assert_eq!(pids_max(&cg), "5");
    }
    // fork beyond the limit fails inside
    let mut b = Bundle::new();
    b.resources("pids", json!({"limit": 3}));
    let out = rt.run_capture(
        &mut b,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do sleep 5 & done 2>&1; echo end",
        ],
    );
    assert!(
        out.stdout.contains("can't fork")
            || out.stderr.contains("can't fork")
            || out.stdout.contains("Resource temporarily unavailable"),
        "forking past pids.max should fail:\n{out}"
    );
}

#[test]
fn cpu_shares_and_quota() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources(
        "cpu",
        json!({"shares": 512, "quota": 50000, "period": 100000}),
    )
    .args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    assert_eq!(cpu_shares_or_weight(&cg), expected_cpu_value(512));
    assert_eq!(cpu_quota_period(&cg), (50000, 100000));
}

#[test]
fn unlimited_by_default() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    assert_eq!(memory_limit(&cg), None);
    assert_eq!(pids_max(&cg), "max");
    assert_eq!(cpu_quota_period(&cg).0, -1);
}

#[test]
fn cgroup_dirs_are_removed_after_run() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("memory", json!({"limit": 32 * 1024 * 1024}))
        .resources("pids", json!({"limit": 100}));
    let cg = b.cgroups_path().unwrap();
    // the cgroup exists while it runs ...
    let out = rt.sh_ok(&mut b, "cat /proc/self/cgroup");
    assert_eq!(proc_cgroup_path(&out, "pids").as_deref(), Some(cg.as_str()));
    // ... and is gone in every hierarchy afterwards
    for d in cgroups::all_dirs(&cg) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// `update` of a running container (more in update.rs).
#[test]
fn update_changes_limits_of_a_running_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.resources("pids", json!({"limit": 10}))
        .args(&["sleep", "1000"]);
    let cg = b.cgroups_path().unwrap();
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    assert_eq!(pids_max(&cg), "10");
    rt.exec(&["update", "--pids-limit", "20", &b.id])
        .assert_ok();
    assert_eq!(pids_max(&cg), "20");
}
