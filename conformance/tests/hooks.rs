//! OCI hooks: order, the state they get on stdin, failures and timeouts.
//!
//! Runtime-namespace hooks (prestart, createRuntime, createContainer,
//! poststart, poststop) run the host's /bin/sh and append to a host file;
//! startContainer resolves in the container, so it runs the busybox sh and
//! appends through a bind mount.  Each hook appends one line: `NAME <state json>`.
//!
//! runc 1.1.5 observations (the reference):
//! * poststart hooks already run at the end of `create` (status "created"),
//!   and a failing poststart makes create/run fail (spec: only a warning).
//! * createContainer/startContainer see `"pid": 1` (the pid-namespace view).
//! * a failing poststop hook is only logged; delete / run still succeed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::pid_alive;
use rcrun_conformance::*;
use std::time::{Duration, Instant};

struct HookLog {
    dir: TempDir,
}

impl HookLog {
    fn new() -> HookLog {
        HookLog {
            dir: TempDir::new("hooklog"),
        }
    }
    fn host_file(&self) -> String {
        self.dir.join("log").to_string_lossy().into_owned()
    }
    /// Script appending `NAME <stdin>` to `file`.
    fn script(name: &str, file: &str) -> String {
        // one append per entry: the container's own line may be written at the same moment
        format!("s=$(cat); printf '%s %s\\n' {name} \"$s\" >> {file}")
    }
    fn entries(&self) -> Vec<(String, Value)> {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (name, rest) = l.split_once(' ').unwrap_or((l, ""));
                let v = if rest.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(rest)
                        .unwrap_or_else(|e| panic!("bad state JSON from {name} hook ({e}): {rest}"))
                };
                (name.to_string(), v)
            })
            .collect()
    }
    fn names(&self) -> Vec<String> {
        self.entries().into_iter().map(|(n, _)| n).collect()
    }
}

fn all_hooks_bundle(log: &HookLog) -> Bundle {
    let mut b = Bundle::new();
    let hf = log.host_file();
    b.bind(log.dir.path(), "/hooklog", &["rw"]);
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        b.sh_hook(kind, &HookLog::script(kind, &hf));
    }
    b.sh_hook(
        "startContainer",
        &HookLog::script("startContainer", "/hooklog/log"),
    );
    b.sh("echo main >> /hooklog/log; sleep 1000");
    b
}

fn pos(names: &[String], n: &str) -> usize {
    names
        .iter()
        .position(|x| x == n)
        .unwrap_or_else(|| panic!("hook {n} did not run: {names:?}"))
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let log = HookLog::new();
    let b = all_hooks_bundle(&log);
    let rt = Runtime::rcrun();
    let _g = rt.guard(&b.id);

    rt.create(&b).assert_ok();
    let pid = rt.pid(&b.id);
    let names = log.names();
    for n in ["prestart", "createRuntime", "createContainer"] {
        pos(&names, n);
    }
    assert!(
        pos(&names, "createRuntime") < pos(&names, "createContainer"),
        "{names:?}"
    );
    assert!(
        pos(&names, "prestart") < pos(&names, "createContainer"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "startContainer" || n == "main"),
        "ran before start: {names:?}"
    );

    rt.start(&b.id).assert_ok();
    assert!(
        wait_until(Duration::from_secs(5), || log
            .names()
            .iter()
            .any(|n| n == "main")),
        "{:?}",
        log.names()
    );
    assert!(
        wait_until(Duration::from_secs(5), || log
            .names()
            .iter()
            .any(|n| n == "poststart")),
        "{:?}",
        log.names()
    );
    let names = log.names();
    assert!(
        pos(&names, "createContainer") < pos(&names, "startContainer"),
        "{names:?}"
    );
    assert!(
        pos(&names, "startContainer") < pos(&names, "main"),
        "{names:?}"
    );

    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.delete(&b.id).assert_ok();
    let names = log.names();
    assert_eq!(
        names.last().map(String::as_str),
        Some("poststop"),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "poststop").count(),
        1,
        "{names:?}"
    );

    let bundle = b.path().canonicalize().unwrap();
    for (name, st) in log.entries() {
        if name == "main" {
            continue;
        }
        assert_eq!(st["id"], b.id.as_str(), "{name}: {st}");
        assert!(st["ociVersion"].is_string(), "{name}: {st}");
        assert_eq!(
            st["bundle"].as_str().map(std::path::PathBuf::from),
            Some(bundle.clone()),
            "{name}: {st}"
        );
        let status = st["status"].as_str().unwrap_or("");
        match name.as_str() {
            "prestart" | "createRuntime" => {
                assert_eq!(status, "creating", "{name}: {st}");
                assert_eq!(
                    st["pid"].as_i64(),
                    Some(pid),
                    "{name} must get the container pid: {st}"
                );
            }
            "createContainer" => {
                assert_eq!(status, "creating", "{name}: {st}");
                assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{name}: {st}");
            }
            "startContainer" => {
                assert_eq!(status, "created", "{name}: {st}");
                assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{name}: {st}");
            }
            "poststart" => {
                assert!(status == "created" || status == "running", "{name}: {st}");
                assert_eq!(st["pid"].as_i64(), Some(pid), "{name}: {st}");
            }
            "poststop" => assert_eq!(status, "stopped", "{name}: {st}"),
            other => panic!("unexpected log entry {other}"),
        }
    }
}

#[test]
fn hooks_get_their_args_and_env() {
    let log = HookLog::new();
    let hf = log.host_file();
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.hook(
        "createRuntime",
        json!({"path": "/bin/sh",
               "args": ["sh", "-c", format!("echo \"args $0 $1 env $HOOKVAR leak ${{CONF_LEAK:-unset}}\" >> {hf}"), "first", "second"],
               "env": ["HOOKVAR=hook-value"]}),
    );
    b.args(&["true"]);
    b.write();
    let out = rt.exec_opts(
        &["run", "--bundle", b.path().to_str().unwrap(), &b.id],
        Opts {
            env: vec![("CONF_LEAK".into(), "leaked".into())],
            ..Opts::default()
        },
    );
    out.assert_ok();
    let text = std::fs::read_to_string(log.dir.join("log")).unwrap();
    // only the configured env is passed, not the runtime's own
    assert_eq!(text, "args first second env hook-value leak unset\n");
}

#[test]
fn hooks_of_one_kind_run_in_array_order() {
    let log = HookLog::new();
    let hf = log.host_file();
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    for i in 0..4 {
        b.sh_hook("prestart", &format!("echo {i} >> {hf}"));
    }
    rt.run_capture(&mut b, &["true"]).assert_ok();
    assert_eq!(
        std::fs::read_to_string(log.dir.join("log")).unwrap(),
        "0\n1\n2\n3\n"
    );
}

fn assert_failing_hook_aborts_create(kind: &str) {
    let log = HookLog::new();
    let hf = log.host_file();
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh_hook(kind, "echo hook-said-no >&2; exit 3");
    b.sh_hook("poststop", &HookLog::script("poststop", &hf));
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    // runc: `runc create failed: unable to start container process: error during container init:
    //        error running hook #0: error running hook: exit status 3, stdout: , stderr: hook-said-no`
    let out = rt.create(&b);
    out.assert_fail();
    assert!(
        out.stderr.contains("hook"),
        "error should say a hook failed:\n{out}"
    );
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn failing_prestart_hook_fails_create_and_leaves_nothing() {
    assert_failing_hook_aborts_create("prestart");
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    assert_failing_hook_aborts_create("createRuntime");
}

#[test]
fn failing_create_container_hook_fails_create_and_leaves_nothing() {
    assert_failing_hook_aborts_create("createContainer");
}

#[test]
fn failing_poststart_hook_is_reported() {
    // Spec: a failing poststart only warns. runc 1.1.5 fails `run` (exit 1)
    // and removes the container.  Accept either, but the failure must be
    // reported on stderr and nothing may be half-left.
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh_hook("poststart", "echo poststart-broke >&2; exit 3");
    b.sh("echo main-ran");
    let out = rt.run(&b, &[]);
    assert!(!out.timed_out, "{out}");
    assert!(
        out.stderr.contains("hook") || out.stderr.contains("poststart"),
        "poststart failure not reported:\n{out}"
    );
    if out.success() {
        assert_eq!(out.stdout, "main-ran\n", "{out}");
    }
    rt.state(&b.id).assert_fail();
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn failing_poststop_hook_only_warns() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh_hook("poststop", "echo poststop-broke >&2; exit 4");
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    // runc: logs `error running hook #0: error running hook: exit status 4, stdout: , stderr: poststop-broke` and exits 0
    let out = rt.delete(&b.id);
    out.assert_ok();
    assert!(
        !out.stderr.trim().is_empty(),
        "the hook failure should be logged:\n{out}"
    );
    assert!(!pid_alive(pid));
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

#[test]
fn hook_timeout_is_enforced() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.hook(
        "prestart",
        json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}),
    );
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let t = Instant::now();
    // runc: `... error running hook #0: hook ran past specified timeout of 1.0s`
    let out = rt.create(&b);
    out.assert_fail();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "timeout of 1s not enforced ({:?})",
        t.elapsed()
    );
    assert!(
        out.stderr.contains("timeout") || out.stderr.contains("timed out"),
        "{out}"
    );
    assert_no_leftovers(&rt, &b, &b.id, None);
}
