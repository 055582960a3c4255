//! `checkpoint` / `restore` driven by containerd 1.6's io.containerd.runc.v2 shim with rcrun as
//! its runtime binary (`ctr run --runc-binary`): `ctr task checkpoint` (the shim pauses the task,
//! dumps it with `--leave-running`, resumes it), `ctr container checkpoint --task` into a
//! checkpoint image, then `ctr container restore --live`: a new task from that image, whose
//! counter goes on from where it was. The runtime is a wrapper logging the shim's argv, checked
//! against the flags the shim gives runc. On a host where CRIU cannot work (the 6.18 development
//! host), `ctr task checkpoint` fails at once with rcrun's "too old for this kernel".
//!
//! Guest-only, with the skip rules of `checkpoint.rs` (`RCRUN_REQUIRE_CRIU=1` turns a skip into
//! a failure); containerd is not in the guest image, add it:
//! `guest/run-suite --profile criu --memory 3G --env RCRUN_REQUIRE_CRIU=1 --env RCRUN_CMD_TIMEOUT=300
//!  --add /usr/bin/containerd --add /usr/bin/ctr --add /usr/bin/containerd-shim-runc-v2
//!  --package rcrun-conformance -- checkpoint --test-threads 1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rcrun_conformance::clients::containerd::Containerd;
use rcrun_conformance::clients::{subject, Out};
use rcrun_conformance::env::{require_root, which};
use rcrun_conformance::util::pid_alive;
use rcrun_conformance::{unique_id, wait_until, TempDir};

const CONTAINERD_BINS: [&str; 3] = ["containerd", "ctr", "containerd-shim-runc-v2"];

fn criu_bin() -> Option<PathBuf> {
    ["/usr/sbin/criu", "/usr/bin/criu", "/sbin/criu"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Why CRIU cannot work here, if it cannot.
fn criu_broken() -> Option<String> {
    let Some(bin) = criu_bin() else {
        return Some("criu is not installed".into());
    };
    match std::process::Command::new(bin).arg("check").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`criu check` failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Some(format!("cannot run criu: {e}")),
    }
}

/// Why containerd cannot run here, if it cannot (the guest image does not carry it).
fn containerd_missing() -> Option<String> {
    let missing: Vec<&str> = CONTAINERD_BINS
        .iter()
        .copied()
        .filter(|b| which(b).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not on PATH (in the guest: --add /usr/bin/containerd --add /usr/bin/ctr \
             --add /usr/bin/containerd-shim-runc-v2)",
            missing.join(", ")
        )
    })
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("RCRUN_REQUIRE_CRIU").as_deref() == Ok("1") {
        panic!("RCRUN_REQUIRE_CRIU=1 but checkpoint under containerd cannot work here: {why}");
    }
    eprintln!(
        "SKIPPED (guest-only; run in `guest/run-suite --profile criu` with containerd added): {why}"
    );
    false
}

/// The guard of the guest-only test: CRIU works and containerd is there.
fn need_criu_and_containerd() -> bool {
    if let Some(why) = criu_broken() {
        return skip_or_fail(&format!("CRIU cannot work here: {why}"));
    }
    if let Some(why) = containerd_missing() {
        return skip_or_fail(&why);
    }
    true
}

/// A runtime binary for the shim: logs its argv (one call a line) and runs the runtime under
/// test.
struct Wrapper {
    dir: TempDir,
}

impl Wrapper {
    fn new() -> Wrapper {
        let dir = TempDir::new("ctd-wrap");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("argv.log").display(),
            subject().display()
        );
        let bin = dir.join("rcrun-logged");
        std::fs::write(&bin, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Wrapper { dir }
    }
    fn bin(&self) -> PathBuf {
        self.dir.join("rcrun-logged")
    }
    /// The runtime calls so far, argv after the program name.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    /// The one call of `command` (e.g. "checkpoint"), split into words.
    fn call(&self, command: &str) -> Vec<String> {
        let calls: Vec<Vec<String>> = self
            .calls()
            .iter()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|w| w.iter().any(|x| x == command))
            .collect();
        assert!(
            !calls.is_empty(),
            "no `{command}` call; calls:\n{}",
            self.calls().join("\n")
        );
        calls.last().cloned().unwrap_or_default()
    }
}

/// Removes the test's containers and tasks whatever happens (before the daemon stops).
struct Cleanup<'a> {
    c: &'a Containerd,
    ids: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.c.remove(id);
        }
        for image in &self.images {
            let _ = self.c.ctr(&["image", "rm", image]);
        }
    }
}

fn ctr_long(c: &Containerd, args: &[&str]) -> Out {
    c.cmd(args).timeout(600).run()
}

fn task_pid(c: &Containerd, id: &str) -> i64 {
    let o = c.ctr(&["task", "ls"]);
    o.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Counts into /dev/shm/c ten times a second (the spec's /dev/shm tmpfs: dumped by CRIU), after
/// a token drawn at start: a restored process goes on with its token, a fresh one draws another.
const COUNTER: &str =
    "r=$RANDOM$RANDOM; i=0; while true; do i=$((i+1)); echo $r $i > /dev/shm/c; usleep 100000; done";

/// (token, count) of the counter in `pid`'s container.
fn read(pid: i64) -> (String, u64) {
    // The shell truncates the file before it writes: retry an empty read.
    for _ in 0..50 {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/c")).unwrap_or_default();
        if let Some((r, i)) = text.trim().split_once(' ') {
            if let Ok(n) = i.parse() {
                return (r.to_string(), n);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (String::new(), 0)
}

fn count(pid: i64) -> u64 {
    read(pid).1
}

fn wait_count(pid: i64, above: u64) -> u64 {
    let mut c = 0;
    assert!(
        wait_until(Duration::from_secs(60), || {
            c = count(pid);
            c > above
        }),
        "count of pid {pid} stayed at {c}, not above {above}"
    );
    c
}

fn has(words: &[String], flag: &str) -> bool {
    words.iter().any(|w| w == flag)
}

/// The value after `flag`.
fn value<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| w == flag)
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

#[test]
fn checkpoint_containerd_ctr_checkpoint_and_restore_counter_continues() {
    require_root();
    if !need_criu_and_containerd() {
        return;
    }
    let wrap = Wrapper::new();
    let c = Containerd::start(&wrap.bin());
    let id = unique_id("ctd-ckpt");
    let ckpt_ref = format!("docker.io/library/{id}-checkpoint:latest");
    let _clean = Cleanup {
        c: &c,
        ids: vec![id.clone()],
        images: vec![ckpt_ref.clone()],
    };
    c.run(&["-d"], &id, &["sh", "-c", COUNTER]).assert_ok();
    let pid = task_pid(&c, &id);
    assert!(pid > 0, "no pid for task {id}: {}", c.ctr(&["task", "ls"]));
    wait_count(pid, 5);

    // 1. `ctr task checkpoint --image-path`: pause, dump --leave-running, resume.
    let img = TempDir::new("ctd-img");
    let t = Instant::now();
    ctr_long(
        &c,
        &[
            "task",
            "checkpoint",
            "--image-path",
            &img.path().display().to_string(),
            &id,
        ],
    )
    .assert_ok();
    eprintln!("ctr task checkpoint --image-path: {:?}", t.elapsed());
    assert!(img.join("inventory.img").exists(), "no CRIU images");
    assert!(img.join("descriptors.json").exists());
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    assert_eq!(task_pid(&c, &id), pid);
    let n = count(pid);
    wait_count(pid, n + 2);

    // 2. `ctr container checkpoint --task`: the same, into a checkpoint image.
    let (token, before) = read(pid);
    assert!(!token.is_empty());
    let t = Instant::now();
    ctr_long(&c, &["container", "checkpoint", "--task", &id, &ckpt_ref]).assert_ok();
    eprintln!("ctr container checkpoint --task: {:?}", t.elapsed());
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    let after = wait_count(pid, count(pid) + 2);

    // 3. Away with the original, then a new container and task from the checkpoint.
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    assert!(
        wait_until(Duration::from_secs(30), || !pid_alive(pid)),
        "pid {pid} outlived SIGKILL"
    );
    ctr_long(&c, &["task", "delete", &id]);
    c.ctr(&["container", "delete", &id]).assert_ok();
    let t = Instant::now();
    let o = ctr_long(&c, &["container", "restore", "--live", &id, &ckpt_ref]);
    assert!(
        o.ok(),
        "restore failed:\n{o}\nruntime calls:\n{}",
        wrap.calls().join("\n")
    );
    eprintln!("ctr container restore --live: {:?}", t.elapsed());
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    let pid2 = task_pid(&c, &id);
    assert!(pid2 > 0, "no pid for the restored task");
    let (token2, first) = read(pid2);
    assert_eq!(
        token2, token,
        "the restored counter drew a new token: a fresh start, not the checkpointed process"
    );
    assert!(
        first >= before,
        "restored count {first} < {before}: not the checkpointed state"
    );
    let later = wait_count(pid2, first + 2);
    eprintln!(
        "token {token}: count before the checkpoint {before}, {after} when killed; \
         restored at {first}, then {later}"
    );

    // 4. What the shim gave the runtime, against the flags it gives runc.
    eprintln!("runtime calls:\n{}", wrap.calls().join("\n"));
    let ck = wrap.call("checkpoint");
    for flag in [
        "--image-path",
        "--work-path",
        "--leave-running",
        "--root",
        "--log",
    ] {
        assert!(has(&ck, flag), "checkpoint without {flag}: {ck:?}");
    }
    let calls = wrap.calls();
    let pause_then_ckpt = calls
        .iter()
        .position(|l| l.split_whitespace().any(|w| w == "pause"))
        .zip(
            calls
                .iter()
                .position(|l| l.split_whitespace().any(|w| w == "checkpoint")),
        )
        .is_some_and(|(p, k)| p < k);
    assert!(pause_then_ckpt, "the shim did not pause before checkpoint");
    let rs = wrap.call("restore");
    for flag in [
        "--image-path",
        "--detach",
        "--pid-file",
        // go-runc's spelling, one dash (runc's flag parser takes it; rcrun reads it too)
        "-no-subreaper",
        "--bundle",
    ] {
        assert!(has(&rs, flag), "restore without {flag}: {rs:?}");
    }
    assert_eq!(rs.last().map(String::as_str), Some(id.as_str()));
    let pidfile = value(&rs, "--pid-file").unwrap_or_default();
    assert!(!pidfile.is_empty());

    // 5. The restored task is an ordinary one: it stops and is deleted.
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    assert!(
        wait_until(Duration::from_secs(30), || c.task_status(&id).as_deref()
            == Some("STOPPED")),
        "restored task not stopped: {:?}",
        c.task_status(&id)
    );
    ctr_long(&c, &["task", "delete", &id]).assert_ok();
    assert!(!pid_alive(pid2));
    let state = c
        .runc_root()
        .join(rcrun_conformance::clients::containerd::ns());
    assert!(
        !state.join(&id).exists(),
        "rcrun state {} left behind",
        state.join(&id).display()
    );
}

#[test]
fn checkpoint_containerd_exit_stops_the_task() {
    require_root();
    if !need_criu_and_containerd() {
        return;
    }
    let wrap = Wrapper::new();
    let c = Containerd::start(&wrap.bin());
    let id = unique_id("ctd-exit");
    let _clean = Cleanup {
        c: &c,
        ids: vec![id.clone()],
        images: vec![],
    };
    c.run(&["-d"], &id, &["sh", "-c", COUNTER]).assert_ok();
    let pid = task_pid(&c, &id);
    wait_count(pid, 3);
    let img = TempDir::new("ctd-img");
    // `--exit`: a final dump of the task the shim has paused; the task ends.
    ctr_long(
        &c,
        &[
            "task",
            "checkpoint",
            "--exit",
            "--image-path",
            &img.path().display().to_string(),
            &id,
        ],
    )
    .assert_ok();
    assert!(img.join("inventory.img").exists());
    assert!(
        wait_until(Duration::from_secs(30), || !pid_alive(pid)),
        "the checkpointed process is still alive"
    );
    let ck = wrap.call("checkpoint");
    assert!(!has(&ck, "--leave-running"), "{ck:?}");
    assert!(
        wait_until(Duration::from_secs(30), || c.task_status(&id).as_deref()
            == Some("STOPPED")),
        "task not stopped after checkpoint --exit: {:?}",
        c.task_status(&id)
    );
    // The shim deletes a container the runtime has already removed (runc does the same).
    ctr_long(&c, &["task", "delete", &id]).assert_ok();
    c.ctr(&["container", "delete", &id]).assert_ok();
}

#[test]
fn checkpoint_containerd_criu_too_old_is_a_clear_error() {
    require_root();
    let Some(why) = criu_broken() else {
        eprintln!("CRIU works on this kernel: nothing to check (this is the host-side test)");
        return;
    };
    if criu_bin().is_none() {
        eprintln!("criu not installed: nothing to check ({why})");
        return;
    }
    if let Some(why) = containerd_missing() {
        eprintln!("containerd not here: nothing to check ({why})");
        return;
    }
    let c = Containerd::start(&subject());
    let id = unique_id("ctd-old");
    let _clean = Cleanup {
        c: &c,
        ids: vec![id.clone()],
        images: vec![],
    };
    c.run(&["-d"], &id, &["sleep", "600"]).assert_ok();
    let img = TempDir::new("ctd-img");
    let t = Instant::now();
    let out = c
        .cmd(&[
            "task",
            "checkpoint",
            "--image-path",
            &img.path().display().to_string(),
            &id,
        ])
        .timeout(60)
        .run();
    assert!(!out.timed_out, "ctr task checkpoint hung:\n{out}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        !out.ok(),
        "checkpoint succeeded where criu is broken:\n{out}"
    );
    assert!(
        out.stderr.contains("too old for this kernel"),
        "not rcrun's clear error:\n{out}"
    );
    eprintln!("{}", out.stderr.trim());
    // The shim resumed the task it paused: untouched.
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
}
