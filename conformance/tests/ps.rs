//! `ps`: `--format json` lists the host pids of the container's cgroup; the table is the host's
//! ps(1) output (default `-ef`, or the given ps arguments) cut down to the header and the
//! container's processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::*;

#[test]
fn json_lists_the_containers_pids() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("sleep 1000 & sleep 1001");
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        let v = rt.exec(&["ps", "--format", "json", &b.id]).json();
        v.as_array().map_or(0, Vec::len) >= 2
    }));
    let out = rt.exec(&["ps", "--format", "json", &b.id]);
    let pids: Vec<i64> = out
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("not an array:\n{out}"))
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert!(pids.contains(&pid), "init pid {pid} missing:\n{out}");
    let me = std::process::id() as i64;
    assert!(!pids.contains(&me), "the test's own pid listed:\n{out}");
    // -f is the short form
    let short = rt.exec(&["ps", "-f", "json", &b.id]);
    short.assert_ok();
    assert!(short.json().as_array().unwrap().contains(&json!(pid)));
}

#[test]
fn table_keeps_header_and_container_lines() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    let out = rt.exec(&["ps", &b.id]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].split_whitespace().any(|f| f == "PID"),
        "no header:\n{out}"
    );
    assert_eq!(lines.len(), 2, "header plus the one process:\n{out}");
    // procps puts PID second (UID PID ...), busybox first: find it by name, as runc does.
    let idx = lines[0]
        .split_whitespace()
        .position(|f| f == "PID")
        .unwrap();
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[idx], pid.to_string(), "{out}");
    assert!(lines[1].contains("sleep 1000"), "{out}");

    // ps arguments after the id go to ps(1)
    let out = rt.exec(&["ps", &b.id, "-o", "pid,comm"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"],
        "{out}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [pid.to_string().as_str(), "sleep"],
        "{out}"
    );
    // without a PID column the output cannot be filtered (runc: couldn't find PID field)
    rt.exec(&["ps", &b.id, "-o", "comm"])
        .assert_fail()
        .assert_one_line_error(&["PID"]);
}

#[test]
fn unknown_container_fails() {
    let rt = Runtime::rcrun();
    rt.exec(&["ps", "no-such-container"])
        .assert_fail()
        .assert_one_line_error(&["does not exist"]);
}
