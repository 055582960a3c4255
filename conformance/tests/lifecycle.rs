//! Container lifecycle through the CLI: create/start/state/kill/delete,
//! list, run (foreground and detached), exit codes, pid files, logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{is_rfc3339, pid_alive};
use rcrun_conformance::*;
use std::time::{Duration, Instant};

#[test]
fn create_start_kill_delete_walks_through_states() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);

    rt.create(&b).assert_ok();
    let st = rt.state_json(&b.id);
    assert_eq!(st["status"], "created", "{st}");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(
        pid > 0 && pid_alive(pid),
        "created container must have a live pid: {st}"
    );

    rt.start(&b.id).assert_ok();
    assert!(
        rt.wait_status(&b.id, "running"),
        "never running: {:?}",
        rt.status(&b.id)
    );
    assert_eq!(rt.pid(&b.id), pid, "pid must not change on start");

    rt.kill(&b.id, "KILL").assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "never stopped: {:?}",
        rt.status(&b.id)
    );
    assert!(!pid_alive(pid), "process {pid} survived kill");

    rt.delete(&b.id).assert_ok();
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn state_json_has_the_oci_shape() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"])
        .annotation("org.example.key", "value-1");
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let st = rt.state_json(&b.id);
    let o = st.as_object().expect("state is an object");
    for k in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        assert!(o.contains_key(k), "state lacks {k}: {st}");
    }
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{st}"
    );
    assert_eq!(st["id"], b.id.as_str());
    assert!(st["pid"].as_i64().unwrap_or(0) > 0);
    assert_eq!(st["status"], "created");
    let bundle = b.path().canonicalize().unwrap();
    assert_eq!(
        st["bundle"].as_str().map(std::path::PathBuf::from),
        Some(bundle.clone()),
        "{st}"
    );
    let rootfs = st["rootfs"].as_str().expect("rootfs string");
    assert!(rootfs.starts_with('/'), "rootfs must be absolute: {rootfs}");
    assert_eq!(std::path::Path::new(rootfs), bundle.join("rootfs"));
    let created = st["created"].as_str().expect("created string");
    assert!(is_rfc3339(created), "created is not RFC3339: {created}");
    assert!(st["owner"].is_string(), "{st}");
    assert_eq!(st["annotations"]["org.example.key"], "value-1", "{st}");

    // once stopped: status "stopped", still the same id/bundle
    rt.start(&b.id).assert_ok();
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    let st = rt.state_json(&b.id);
    assert_eq!(st["id"], b.id.as_str());
    assert_eq!(
        st["created"].as_str(),
        Some(created),
        "created must not change"
    );
}

#[test]
fn list_json_table_and_quiet() {
    let rt = Runtime::rcrun();
    // empty root: runc prints `null` for json (an empty array is fine too)
    let empty = rt.list_json();
    assert!(
        empty.is_null() || empty.as_array().is_some_and(|a| a.is_empty()),
        "{empty}"
    );

    let mut b1 = Bundle::new();
    b1.args(&["sleep", "1000"]);
    let mut b2 = Bundle::new();
    b2.args(&["sleep", "1000"]);
    let _g1 = rt.guard(&b1.id);
    let _g2 = rt.guard(&b2.id);
    rt.create(&b1).assert_ok();
    rt.start_detached(&b2);

    let l = rt.list_json();
    let arr = l.as_array().expect("list json is an array");
    assert_eq!(arr.len(), 2, "{l}");
    let find = |id: &str| {
        arr.iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {l}"))
    };
    let c1 = find(&b1.id);
    let c2 = find(&b2.id);
    assert_eq!(c1["status"], "created");
    assert_eq!(c2["status"], "running");
    assert_eq!(c1["pid"], rt.pid(&b1.id));
    assert_eq!(
        c1["bundle"].as_str().map(std::path::PathBuf::from),
        Some(b1.path().canonicalize().unwrap())
    );

    let table = rt.exec(&["list"]).assert_ok().stdout.clone();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "table:\n{table}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "table:\n{table}");
    let row1 = rows.iter().find(|r| r[0] == b1.id).expect("row for b1");
    assert_eq!(row1[2], "created", "table:\n{table}");
    let row2 = rows.iter().find(|r| r[0] == b2.id).expect("row for b2");
    assert_eq!(row2[2], "running", "table:\n{table}");
    assert_eq!(row2[1], rt.pid(&b2.id).to_string());

    let quiet = rt.exec(&["list", "--quiet"]).assert_ok().stdout.clone();
    let mut ids: Vec<&str> = quiet.lines().collect();
    ids.sort();
    let mut want = vec![b1.id.as_str(), b2.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "list --quiet:\n{quiet}");
    let quiet_short = rt.exec(&["list", "-q"]).assert_ok().stdout.clone();
    assert_eq!(quiet, quiet_short);
}

#[test]
fn run_returns_the_process_exit_code() {
    let rt = Runtime::rcrun();
    for code in [0, 1, 7, 255] {
        let mut b = Bundle::new();
        let out = rt.run_capture(
            &mut b,
            &["sh", "-c", &format!("echo out-{code}; exit {code}")],
        );
        out.assert_code(code);
        assert_eq!(out.stdout.trim(), format!("out-{code}"), "{out}");
    }
}

#[test]
fn run_returns_128_plus_signal_when_process_is_killed() {
    let rt = Runtime::rcrun();
    // Without a pid namespace the shell is not an init and can SIGKILL itself.
    // (With one, `kill -9 $$` from pid 1 is ignored by the kernel.)
    let mut b = Bundle::new();
    b.remove_namespace("pid");
    rt.run_capture(&mut b, &["sh", "-c", "kill -9 $$"])
        .assert_code(137);

    // SIGKILL from outside while `run` waits in the foreground.
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| rt.run(&b, &[]));
        assert!(rt.wait_status(&b.id, "running"), "never running");
        rt.kill(&b.id, "KILL").assert_ok();
        h.join().unwrap()
    });
    out.assert_code(137);
    // `run` deletes the container itself once the process is gone
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn run_removes_the_container_after_exit() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("echo done");
    let out = rt.run(&b, &[]);
    out.assert_ok();
    assert_eq!(out.stdout, "done\n");
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("exit 3");
    let _g = rt.guard(&b.id);
    rt.run(&b, &["--keep"]).assert_code(3);
    assert_eq!(rt.status(&b.id).as_deref(), Some("stopped"));
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn run_detach_leaves_it_running() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let t = Instant::now();
    rt.run(&b, &["--detach"]).assert_ok();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "run -d did not return promptly"
    );
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    let pid = rt.pid(&b.id);
    assert!(pid_alive(pid));
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn kill_accepts_name_prefixed_name_and_number() {
    let rt = Runtime::rcrun();
    for sig in ["KILL", "SIGKILL", "9"] {
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"]);
        let _g = rt.guard(&b.id);
        let pid = rt.start_detached(&b);
        rt.kill(&b.id, sig).assert_ok();
        assert!(
            rt.wait_status(&b.id, "stopped"),
            "kill {sig}: still {:?}",
            rt.status(&b.id)
        );
        assert!(!pid_alive(pid), "kill {sig}: pid {pid} alive");
    }
}

#[test]
fn kill_default_signal_is_term() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    // the shell is pid 1, so it needs a handler for TERM to die
    b.sh("trap 'exit 0' TERM; while true; do sleep 0.1; done");
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    rt.exec(&["kill", &b.id]).assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "SIGTERM (default) did not stop it"
    );
}

#[test]
fn kill_all_reaches_every_process() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("sleep 1000 & sleep 1000 & wait");
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let cg = b.cgroups_path().unwrap();
    let procs = cgroups::controller_dir("pids", &cg).join("cgroup.procs");
    let count = || {
        std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || count() >= 3),
        "expected 3 processes, got {}",
        count()
    );
    rt.exec(&["kill", "--all", &b.id, "KILL"]).assert_ok();
    assert!(
        wait_until(Duration::from_secs(10), || count() == 0),
        "processes left: {}",
        count()
    );
    assert!(rt.wait_status(&b.id, "stopped"));
}

#[test]
fn kill_of_a_stopped_container_fails() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    // runc: `container not running`
    rt.kill(&b.id, "KILL").assert_fail();
}

#[test]
fn delete_force_removes_a_running_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    rt.delete_force(&b.id).assert_ok();
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn delete_force_removes_a_created_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let pid = rt.pid(&b.id);
    rt.delete_force(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn delete_of_a_created_container_without_force() {
    // runc deletes a "created" container without --force (it is not running).
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let pid = rt.pid(&b.id);
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn pid_file_holds_the_container_pid() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let pf = b.path().join("container.pid");
    rt.create_id(&b, &b.id, &["--pid-file", pf.to_str().unwrap()])
        .assert_ok();
    let text = std::fs::read_to_string(&pf).expect("pid file written");
    let pid: i64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file content {text:?}"));
    assert_eq!(pid, rt.pid(&b.id));

    // run -d as well
    let mut b2 = Bundle::new();
    b2.args(&["sleep", "1000"]);
    let _g2 = rt.guard(&b2.id);
    let pf2 = b2.path().join("run.pid");
    rt.run(&b2, &["-d", "--pid-file", pf2.to_str().unwrap()])
        .assert_ok();
    let pid2: i64 = std::fs::read_to_string(&pf2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid2, rt.pid(&b2.id));
}

#[test]
fn start_runs_the_process_only_after_start() {
    let rt = Runtime::rcrun();
    let marker_dir = TempDir::new("marker");
    let mut b = Bundle::new();
    b.bind(marker_dir.path(), "/out", &["rw"])
        .sh("echo started > /out/m; sleep 1000");
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker_dir.join("m").exists(), "process ran before start");
    rt.start(&b.id).assert_ok();
    assert!(
        wait_until(Duration::from_secs(5), || marker_dir.join("m").exists()),
        "process never ran"
    );
}

/// `--log FILE --log-format json`.
fn json_log(log: &std::path::Path) -> Opts {
    Opts {
        global: vec![
            "--log".into(),
            log.to_string_lossy().into(),
            "--log-format".into(),
            "json".into(),
        ],
        ..Opts::default()
    }
}

#[test]
fn log_json_records_errors() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set("/root/path", json!("no-such-rootfs"));
    let log = b.path().join("runtime.log");
    b.write();
    let out = rt.exec_opts(
        &["run", "--bundle", b.path().to_str().unwrap(), &b.id],
        json_log(&log),
    );
    out.assert_fail();
    let text = std::fs::read_to_string(&log).expect("log file written");
    let entries: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect();
    let err = entries
        .iter()
        .find(|e| e["level"] == "error")
        .unwrap_or_else(|| panic!("no level=error entry in log:\n{text}"));
    let msg = err["msg"].as_str().expect("msg string");
    assert!(
        msg.contains("no-such-rootfs"),
        "error msg should name the rootfs: {msg}"
    );
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn detached_container_writes_to_the_creators_stdio() {
    // Without a terminal, the container inherits create's stdout/stderr
    // ("pass-through" mode, what containerd-shim relies on).
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("echo to-stdout; echo to-stderr >&2");
    let _g = rt.guard(&b.id);
    let created = rt.create(&b);
    created.assert_ok();
    rt.start(&b.id).assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"), "process never exited");
    assert!(
        wait_until(Duration::from_secs(5), || created.stdout_now()
            == "to-stdout\n"),
        "create's stdout: {:?}",
        created.stdout_now()
    );
    let err = std::fs::read_to_string(&created.stderr_path).unwrap();
    assert!(err.contains("to-stderr"), "create's stderr: {err:?}");
}

#[test]
fn state_is_stopped_after_the_process_exits_by_itself() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["true"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let pid = rt.pid(&b.id);
    rt.start(&b.id).assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "status {:?}",
        rt.status(&b.id)
    );
    assert!(!pid_alive(pid));
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn kill_a_created_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let pid = rt.pid(&b.id);
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(
        rt.wait_status(&b.id, "stopped"),
        "status {:?}",
        rt.status(&b.id)
    );
    assert!(!pid_alive(pid));
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

/// Pid of the runtime process whose command line contains `needle`.
fn find_runtime_pid(bin: &std::path::Path, needle: &str) -> Option<i32> {
    let bin = bin.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|c| *c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first().is_some_and(|a| *a == bin)
            && args.iter().any(|a| a == needle)
            && args.iter().any(|a| a == "run"))
        .then_some(pid)
    })
}

#[test]
fn foreground_run_forwards_signals() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("trap 'exit 42' TERM; while true; do sleep 0.1; done");
    let _g = rt.guard(&b.id);
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| rt.run(&b, &[]));
        assert!(rt.wait_status(&b.id, "running"), "never running");
        let pid = find_runtime_pid(&rt.bin, &b.id).expect("runtime process of `run`");
        // resend until it lands: the shell may not have installed its trap yet
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.is_finished() && Instant::now() < deadline {
            // SAFETY: plain kill(2) on a pid we just looked up.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
        }
        h.join().unwrap()
    });
    out.assert_code(42);
}

/// A flag the runtime does not know is a usage error: shims read the error from `--log`
/// (containerd's log.json), so it is written there too, not only to stderr.
#[test]
fn log_json_records_usage_errors() {
    if Runtime::skip_for_reference("runc prints usage errors only to stderr") {
        return;
    }
    let rt = Runtime::rcrun();
    let dir = TempDir::new("usagelog");
    let log = dir.join("runtime.log");
    let out = rt.exec_opts(&["restore", "--no-such-flag", "x"], json_log(&log));
    out.assert_fail();
    let text = std::fs::read_to_string(&log).expect("log file written");
    let line: Value = serde_json::from_str(text.lines().next().unwrap_or("")).expect("JSON line");
    assert_eq!(line["level"], "error", "{text}");
    assert!(
        line["msg"]
            .as_str()
            .unwrap_or("")
            .contains("--no-such-flag"),
        "{text}"
    );
}
