//! Hostile input and faults (issue 5): a damaged state.json, racing creates, SIGKILL of the
//! runtime at every step of create/start/exec, and many short runs under CPU load.
//!
//! The cleanup contract checked after every fault: `delete --force ID` exits 0 and leaves no
//! state directory, no cgroup directory (any hierarchy), no mount under the bundle, no process
//! of the container (in its cgroup, or a fork of the runtime naming its state root) and no
//! tracer. It holds whether or not state.json was ever written: `create` records the cgroup it
//! is about to make before making it, and the container process dies with `create` until set-up
//! is done (PR_SET_PDEATHSIG).
//!
//! The tests load the machine (100 creates at once, busy loops, strace), so they take turns.
//! The kill test needs strace (installed with apt-get when missing; skipped, saying so, on a
//! machine without apt-get such as the test guest). `RCRUN_HOSTILE_RUNS` sets the number of
//! runs under load (default 1000; the qemu TCG guest wants fewer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::env::{ensure_tool, subject_bin, which};
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{mounts_under, pid_alive};
use rcrun_conformance::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn quick() -> Opts {
    Opts {
        timeout: Some(Duration::from_secs(30)),
        ..Opts::default()
    }
}

// ---------------------------------------------------------------------------------------------
// processes and leftovers
// ---------------------------------------------------------------------------------------------

/// Live (not zombie) processes other than this one, with their command line and cgroup file.
fn processes() -> Vec<(i64, String, String)> {
    let me = std::process::id() as i64;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|&p| p != me && pid_alive(p))
        .filter_map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
            Some((p, cmd.trim().to_string(), cg))
        })
        .collect()
}

fn in_cgroup(cgroup_file: &str, path: &str) -> bool {
    cgroup_file.lines().any(|l| {
        let p = l.splitn(3, ':').nth(2).unwrap_or("");
        p == path || p.starts_with(&format!("{path}/"))
    })
}

/// Processes of a container whose cgroupsPath is `cg` and whose runtime uses state root `root`:
/// anything in its cgroup, and any fork of the runtime (its command line names the root).
/// Tracers (strace) are reported by [`tracers`].
fn container_processes(root: &Path, cg: &str) -> Vec<String> {
    let root = root.to_string_lossy();
    processes()
        .into_iter()
        .filter(|(_, cmd, cgf)| {
            !cmd.starts_with(&strace_path())
                && (in_cgroup(cgf, cg) || cmd.contains(&format!("--root {root} ")))
        })
        .map(|(p, cmd, _)| format!("pid {p}: {cmd}"))
        .collect()
}

/// strace processes still tracing something of this runtime.
fn tracers(root: &Path) -> Vec<(i64, String)> {
    let root = root.to_string_lossy().into_owned();
    processes()
        .into_iter()
        .filter(|(_, cmd, _)| cmd.starts_with(&strace_path()) && cmd.contains(&root))
        .map(|(p, cmd, _)| (p, cmd))
        .collect()
}

/// Everything [`cleanup::leftovers`] checks plus processes and tracers, polled for up to `wait`
/// (a killed process and its cgroup disappear a little after the command returns).
fn problems_after(rt: &Runtime, b: &Bundle, id: &str, wait: Duration) -> Vec<String> {
    let cg = b.cgroups_path().unwrap_or_default();
    let mut last = Vec::new();
    wait_until(wait, || {
        last = cleanup::leftovers(rt, b, id, None);
        last.extend(container_processes(rt.root(), &cg));
        last.extend(
            tracers(rt.root())
                .into_iter()
                .map(|(p, c)| format!("tracer {p} still running: {c}")),
        );
        last.is_empty()
    });
    last
}

/// Remove by hand what a failed check found (so the next case starts clean): kill the
/// container's processes and tracers, remove its cgroup dirs and state dir.
fn sweep(rt: &Runtime, b: &Bundle, id: &str) {
    let cg = b.cgroups_path().unwrap_or_default();
    for _ in 0..3 {
        for (p, _, cgf) in processes() {
            let ours = in_cgroup(&cgf, &cg)
                || std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&*rt.root().to_string_lossy()))
                    .unwrap_or(false);
            if ours {
                // SAFETY: kill(2) of a process of this test's container or runtime.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for d in cgroups::all_dirs(&cg) {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        let _ = std::fs::remove_dir(&d);
    }
    if mounts_under(b.path()).is_empty() {
        let _ = std::fs::remove_dir_all(rt.state_dir(id));
    }
}

// ---------------------------------------------------------------------------------------------
// damaged state.json
// ---------------------------------------------------------------------------------------------

/// The ways state.json can be found damaged.
fn damage(kind: &str, path: &Path) {
    let good = std::fs::read(path).unwrap_or_default();
    match kind {
        "truncated" => std::fs::write(path, &good[..good.len() / 2]).unwrap(),
        "garbage" => std::fs::write(path, b"\x7fELF garbage \xff\xfe{{[").unwrap(),
        "empty" => std::fs::write(path, b"").unwrap(),
        "wrong-shape" => std::fs::write(path, br#"{"id": 7, "pid": "x"}"#).unwrap(),
        "missing" => std::fs::remove_file(path).unwrap(),
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn damaged_state_json_state_fails_and_delete_force_cleans_up() {
    let _s = serial();
    let rt = Runtime::rcrun();
    if Runtime::skip_for_reference(
        "runc 1.1 cannot delete a container whose state.json is damaged (see the runc case)",
    ) {
        return;
    }
    for kind in ["truncated", "garbage", "empty", "wrong-shape", "missing"] {
        let t = Instant::now();
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"]);
        let _g = rt.guard(&b.id);
        rt.create(&b).assert_ok();
        let pid = rt.pid(&b.id);
        assert!(pid_alive(pid));
        damage(kind, &rt.state_dir(&b.id).join("state.json"));

        // A clear one-line error naming the container, for `state`; `list` skips it.
        rt.state(&b.id)
            .assert_fail()
            .assert_one_line_error(&[&b.id, "state"]);
        let l = rt.exec(&["list", "--format", "json"]);
        l.assert_ok();
        // Without --force nothing is touched (runc's rule: a container it cannot read is not
        // known to be stopped).
        rt.delete(&b.id)
            .assert_fail()
            .assert_one_line_error(&[&b.id]);
        assert!(
            pid_alive(pid),
            "{kind}: delete without --force killed {pid}"
        );

        let out = rt.delete_force(&b.id);
        out.assert_ok();
        let left = problems_after(&rt, &b, &b.id, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "{kind}: delete --force left: {left:#?}\n{out}"
        );
        assert!(!pid_alive(pid), "{kind}: container process {pid} survived");
        eprintln!("damaged state.json ({kind}): ok in {:?}", t.elapsed());
    }
}

/// What runc 1.1 does with the same damage (informational; the assertions are what both do).
#[test]
fn damaged_state_json_runc_comparison() {
    let _s = serial();
    if which("runc").is_none() && std::env::var_os("RUNC_BIN").is_none() {
        eprintln!("runc not installed: nothing to compare");
        return;
    }
    let rt = Runtime::runc();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let state = rt.state_dir(&b.id).join("state.json");
    let good = std::fs::read(&state).unwrap();
    damage("truncated", &state);
    // runc also fails `state` with a one-line error ("unexpected EOF") ...
    rt.state(&b.id).assert_fail().assert_one_line_error(&[]);
    // ... but then cannot delete it at all, even with --force: everything stays.
    let del = rt.delete_force(&b.id);
    eprintln!(
        "runc delete --force with a truncated state.json: exit {:?}, stderr {:?}, state dir \
         kept: {} (rcrun: exit 0, nothing left)",
        del.code,
        del.stderr.trim(),
        rt.state_dir(&b.id).exists()
    );
    // Put the file back so the guard can remove the container.
    std::fs::write(&state, good).unwrap();
}

// ---------------------------------------------------------------------------------------------
// concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn hundred_parallel_creates_with_distinct_ids() {
    let _s = serial();
    let rt = Runtime::rcrun();
    // One rootfs for all; each container its own bundle dir (config) and cgroup.
    let mut b = Bundle::new();
    let rootfs = b.rootfs().to_string_lossy().into_owned();
    b.args(&["sleep", "1000"]).set("/root/path", json!(rootfs));
    let dirs = TempDir::new("bundles");
    let ids: Vec<String> = (0..100).map(|i| format!("{}-{i}", b.id)).collect();
    let bundles: Vec<PathBuf> = ids
        .iter()
        .map(|id| {
            let d = dirs.join(id);
            std::fs::create_dir_all(&d).unwrap();
            let mut cfg = b.cfg.clone();
            cfg["linux"]["cgroupsPath"] = json!(format!("/rcrun-conformance/{id}"));
            std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
            d
        })
        .collect();
    let reaper = Reaper { rt: &rt, ids: &ids };

    let t = Instant::now();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .zip(&bundles)
            .map(|(id, d)| {
                let rt = &rt;
                s.spawn(move || {
                    rt.exec_opts(
                        &["create", "--bundle", &d.to_string_lossy(), id],
                        Opts {
                            timeout: Some(Duration::from_secs(120)),
                            ..Opts::default()
                        },
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = t.elapsed();
    let failed: Vec<&Output> = outs.iter().filter(|o| !o.success()).collect();
    assert!(
        failed.is_empty(),
        "{} of 100 parallel creates failed, e.g.:\n{}",
        failed.len(),
        failed[0]
    );
    let list = rt.list_json();
    let listed = list.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(listed, 100, "list shows {listed} containers");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "created" && c["pid"].as_i64().is_some_and(pid_alive)),
        "not all created and alive: {list}"
    );
    let pids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["pid"].as_i64())
        .collect();

    let t2 = Instant::now();
    let dels: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let rt = &rt;
                s.spawn(move || rt.exec_opts(&["delete", "--force", id], quick()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for d in &dels {
        d.assert_ok();
    }
    let deleted = t2.elapsed();
    for id in &ids {
        let cg = format!("/rcrun-conformance/{id}");
        assert!(!rt.state_dir(id).exists(), "state dir of {id} left");
        for d in cgroups::all_dirs(&cg) {
            assert!(
                wait_until(Duration::from_secs(3), || !d.exists()),
                "{} left",
                d.display()
            );
        }
    }
    assert!(mounts_under(b.path()).is_empty());
    for p in pids {
        assert!(
            wait_until(Duration::from_secs(3), || !pid_alive(p)),
            "pid {p} alive"
        );
    }
    drop(reaper);
    eprintln!("100 parallel creates: {created:?}; 100 parallel deletes: {deleted:?}");
}

/// Force-deletes containers still there when dropped, then kills what is left in their cgroups
/// (`/rcrun-conformance/<id>`) and removes those.
struct Reaper<'a> {
    rt: &'a Runtime,
    ids: &'a [String],
}

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for id in self.ids {
            if self.rt.state_dir(id).exists() {
                let _ = self.rt.exec_opts(&["delete", "--force", id], quick());
            }
            for d in cgroups::all_dirs(&format!("/rcrun-conformance/{id}")) {
                if d.exists() {
                    for p in std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                    {
                        // SAFETY: kill(2) of a process in this test's container cgroup.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }
}

#[test]
fn twenty_parallel_creates_of_one_id_exactly_one_wins() {
    let _s = serial();
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("echo won");
    b.write();
    let _g = rt.guard(&b.id);
    rt.remember(&b.id, &b);
    let bp = b.path().to_string_lossy().into_owned();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                let (rt, bp, id) = (&rt, &bp, &b.id);
                s.spawn(move || rt.exec_opts(&["create", "--bundle", bp, id], quick()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (won, lost): (Vec<&Output>, Vec<&Output>) = outs.iter().partition(|o| o.success());
    assert_eq!(
        won.len(),
        1,
        "exactly one create must win:\n{}",
        outs.iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for o in &lost {
        o.assert_fail().assert_one_line_error(&["exists", &b.id]);
    }
    // The losers left nothing: one container, one process in its cgroup, no stray runtime.
    let list = rt.list_json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(rt.status(&b.id).as_deref(), Some("created"));
    let pid = rt.pid(&b.id);
    let procs = container_processes(rt.root(), &b.cgroups_path().unwrap());
    assert_eq!(
        procs.len(),
        1,
        "only the winner's init may exist: {procs:#?}"
    );
    // The winner still works.
    rt.start(&b.id).assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"), "never stopped");
    assert!(
        wait_until(Duration::from_secs(5), || won[0].stdout_now() == "won\n"),
        "winner's output: {:?}",
        won[0].stdout_now()
    );
    rt.delete(&b.id).assert_ok();
    assert_no_leftovers(&rt, &b, &b.id, Some(pid));
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at every step
// ---------------------------------------------------------------------------------------------

fn strace_path() -> String {
    static P: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    P.get_or_init(|| match which("strace") {
        Some(p) => p.to_string_lossy().into_owned(),
        // A host without apt-get (the test guest's initramfs) cannot install it: no tracer
        // can exist there either, so "/usr/bin/strace" only serves the process filters.
        None if which("apt-get").is_none() => "/usr/bin/strace".into(),
        None => ensure_tool("strace", "strace")
            .to_string_lossy()
            .into_owned(),
    })
    .clone()
}

/// A runtime whose binary is a wrapper: with `HOSTILE_INJECT=SYSCALL:N` it runs rcrun under
/// `strace -D -f`, which SIGKILLs each process (the runtime and every process it forks) on
/// entry to its N-th SYSCALL, before the call happens; with `HOSTILE_TRACE=FILE` it records
/// every syscall. `-D` keeps rcrun the direct child (its exit is the command's) and the tracer
/// a detached grandchild that follows the container process until it exits (so kills also land
/// in it after `create` returned: at `start`, at execve). Otherwise it just execs rcrun.
fn traced_runtime(dir: &TempDir) -> Runtime {
    let wrapper = dir.join("rcrun-under-strace");
    let script = format!(
        r#"#!/bin/sh
if [ -n "$HOSTILE_INJECT" ]; then
  sc=${{HOSTILE_INJECT%%:*}}; n=${{HOSTILE_INJECT##*:}}
  exec {strace} -D -f -qq -o /dev/null -e trace="$sc" -e inject="$sc":signal=SIGKILL:when="$n" {bin} "$@"
fi
if [ -n "$HOSTILE_TRACE" ]; then
  exec {strace} -D -f -qq -o "$HOSTILE_TRACE" {bin} "$@"
fi
exec {bin} "$@"
"#,
        strace = strace_path(),
        bin = subject_bin().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    Runtime::with_bin(wrapper, "subject")
}

fn env_opts(var: &str, val: &str) -> Opts {
    Opts {
        env: vec![(var.into(), val.into())],
        timeout: Some(case_timeout()),
        ..Opts::default()
    }
}

/// Time limit of one command in a kill case (a command under strace normally takes < 1 s).
fn case_timeout() -> Duration {
    Duration::from_secs(20)
}

fn case_opts() -> Opts {
    Opts {
        timeout: Some(case_timeout()),
        ..Opts::default()
    }
}

/// Syscalls that are steps of create/start/exec (set-up of the state dir, cgroup, namespaces,
/// mounts, identity, the parent/child protocol, state.json). Others (mmap, statx, ...) are
/// not steps of their own; the kills before these land between every pair of steps.
const STEPS: &[&str] = &[
    "mkdir",
    "mkdirat",
    "rmdir",
    "openat",
    "write",
    "rename",
    "renameat2",
    "unlink",
    "unlinkat",
    "flock",
    "mknodat",
    "socketpair",
    "clone",
    "clone3",
    "sendto",
    "sendmsg",
    "recvfrom",
    "recvmsg",
    "wait4",
    "kill",
    "poll",
    "ppoll",
    "setns",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "chdir",
    "fchdir",
    "sethostname",
    "setsid",
    "setresuid",
    "setresgid",
    "setgroups",
    "capset",
    "prctl",
    "keyctl",
    "socket",
    "ioctl",
    "symlink",
    "chmod",
    "chown",
    "close_range",
    "prlimit64",
    "execve",
];

/// Per syscall, how often the first traced process (the runtime) and the busiest other
/// process (the container process, an intermediate) make it, from a `strace -f` log. A
/// process' syscalls after it execs a program other than rcrun are not counted.
fn step_counts(log: &str, rcrun: &str) -> BTreeMap<String, (usize, usize)> {
    let mut first: Option<String> = None;
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut execd: std::collections::HashSet<String> = Default::default();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((name, args)) = rest.trim_start().split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            continue;
        }
        if first.is_none() {
            first = Some(pid.to_string());
        }
        if execd.contains(pid) {
            continue;
        }
        if name == "execve" {
            // The runtime's own exec is not counted by strace's injection either.
            if args.starts_with(&format!("\"{rcrun}\"")) {
                continue;
            }
            execd.insert(pid.to_string());
        }
        *per.entry((pid.to_string(), name.to_string())).or_default() += 1;
    }
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for ((pid, name), n) in per {
        if !STEPS.contains(&name.as_str()) {
            continue;
        }
        let e = out.entry(name).or_default();
        if Some(&pid) == first.as_ref() {
            e.0 = e.0.max(n);
        } else {
            e.1 = e.1.max(n);
        }
    }
    out
}

/// The occurrences to kill at: every one up to 30 (each cgroup mkdir and write, each mount
/// point...); beyond (the dynamic loader's openat, the bounding set's prctl loop) 1, the
/// runtime's last, the first the runtime does not reach (then the other process is hit), the
/// last, and 8 evenly between.
fn sample(runtime: usize, other: usize) -> Vec<usize> {
    let max = runtime.max(other);
    if max <= 30 {
        return (1..=max).collect();
    }
    let mut v = vec![1, max];
    for k in [runtime, runtime + 1] {
        if (1..=max).contains(&k) {
            v.push(k);
        }
    }
    for i in 1..9 {
        v.push(1 + (max - 1) * i / 9);
    }
    v.sort();
    v.dedup();
    v
}

/// Wait for the detached tracer of a `HOSTILE_TRACE` run to finish writing.
fn wait_tracers_gone(rt: &Runtime) {
    let gone = wait_until(Duration::from_secs(10), || tracers(rt.root()).is_empty());
    if !gone {
        for (p, _) in tracers(rt.root()) {
            // SAFETY: kill(2) of a strace this test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `create` under the injection (then `start` if it succeeded: the tracer still follows
    /// the container process, so kills land in it at start and at execve too).
    Create,
    /// `create` normally, `start` under the injection.
    Start,
    /// A running container; `exec` under the injection.
    Exec,
}

/// The container's program: it must outlive `exec`, and nothing else.
fn program(phase: Phase) -> &'static [&'static str] {
    if phase == Phase::Exec {
        &["sleep", "1000"]
    } else {
        &["true"]
    }
}

/// One case: returns a description of what was left behind, if anything.
fn kill_case(
    rt: &Runtime,
    b: &mut Bundle,
    phase: Phase,
    inject: Option<(&str, usize)>,
) -> Vec<String> {
    let id = unique_id("kill");
    b.set(
        "/linux/cgroupsPath",
        json!(format!("/rcrun-conformance/{id}")),
    );
    b.args(program(phase));
    let spec = inject.map(|(s, n)| format!("{s}:{n}"));
    let opts = || match &spec {
        Some(s) => env_opts("HOSTILE_INJECT", s),
        None => case_opts(),
    };
    let mut log = Vec::new();
    let bp = b.path().to_string_lossy().into_owned();
    b.write();
    match phase {
        Phase::Create => {
            let c = rt.exec_opts(&["create", "--bundle", &bp, &id], opts());
            if c.success() {
                log.push(rt.exec_opts(&["start", &id], case_opts()));
            }
            log.insert(0, c);
        }
        Phase::Start => {
            log.push(rt.exec_opts(&["create", "--bundle", &bp, &id], case_opts()));
            log.push(rt.exec_opts(&["start", &id], opts()));
        }
        Phase::Exec => {
            log.push(rt.exec_opts(&["create", "--bundle", &bp, &id], case_opts()));
            log.push(rt.exec_opts(&["start", &id], case_opts()));
            log.push(rt.exec_opts(&["exec", &id, "sh", "-c", "exit 0"], opts()));
        }
    }
    let del = rt.exec_opts(&["delete", "--force", &id], quick());
    let mut problems = Vec::new();
    // A kill may make a command fail, never hang.
    for o in log.iter().filter(|o| o.timed_out) {
        problems.push(format!("hung (killed after {:?}):\n{o}", case_timeout()));
    }
    if !del.success() {
        problems.push(format!("delete --force failed:\n{del}"));
    }
    problems.extend(problems_after(rt, b, &id, Duration::from_secs(5)));
    if !problems.is_empty() {
        for o in &log {
            problems.push(format!("after:\n{o}"));
        }
        sweep(rt, b, &id);
    }
    problems
}

#[test]
fn sigkill_at_every_step_of_create_start_exec_leaves_nothing_after_delete_force() {
    let _s = serial();
    if Runtime::skip_for_reference("runc's own kill-safety is not what this suite checks") {
        return;
    }
    if !Path::new(&strace_path()).exists() {
        eprintln!("SKIPPED: no strace here and no apt-get to install it (the test guest?)");
        return;
    }
    let tmp = TempDir::new("strace");
    let rt = traced_runtime(&tmp);
    let mut b = Bundle::new();
    let rcrun = subject_bin().to_string_lossy().into_owned();
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut cases = 0usize;
    for phase in [Phase::Create, Phase::Start, Phase::Exec] {
        let t = Instant::now();
        // Baseline: which steps, how often, in the runtime and in the processes it forks.
        let trace = tmp.join(format!("{phase:?}.log"));
        {
            let id = unique_id("trace");
            b.set(
                "/linux/cgroupsPath",
                json!(format!("/rcrun-conformance/{id}")),
            );
            b.args(program(phase));
            b.write();
            let bp = b.path().to_string_lossy().into_owned();
            let tr = env_opts("HOSTILE_TRACE", &trace.to_string_lossy());
            match phase {
                Phase::Create => {
                    rt.exec_opts(&["create", "--bundle", &bp, &id], tr)
                        .assert_ok();
                    rt.start(&id).assert_ok();
                }
                Phase::Start => {
                    rt.exec_opts(&["create", "--bundle", &bp, &id], quick())
                        .assert_ok();
                    rt.exec_opts(&["start", &id], tr).assert_ok();
                }
                Phase::Exec => {
                    rt.exec_opts(&["create", "--bundle", &bp, &id], quick())
                        .assert_ok();
                    rt.start(&id).assert_ok();
                    rt.exec_opts(&["exec", &id, "sh", "-c", "exit 0"], tr)
                        .assert_ok();
                }
            }
            rt.exec_opts(&["delete", "--force", &id], quick())
                .assert_ok();
            wait_tracers_gone(&rt);
        }
        let log = std::fs::read_to_string(&trace).unwrap_or_default();
        let counts = step_counts(&log, &rcrun);
        assert!(
            counts.contains_key("execve") || phase == Phase::Start,
            "{phase:?}: baseline trace has no execve: {counts:?}"
        );
        let mut phase_cases = 0;
        for (name, (in_runtime, in_other)) in &counts {
            for n in sample(*in_runtime, *in_other) {
                phase_cases += 1;
                let tc = Instant::now();
                let left = kill_case(&rt, &mut b, phase, Some((name, n)));
                if tc.elapsed() > Duration::from_secs(1) {
                    eprintln!("{phase:?} {name} #{n}: took {:?}", tc.elapsed());
                }
                if !left.is_empty() {
                    failures.push(format!(
                        "{phase:?}, SIGKILL before {name} #{n}:\n{}",
                        left.join("\n")
                    ));
                }
            }
        }
        cases += phase_cases;
        eprintln!(
            "{phase:?}: {phase_cases} kill points over {} syscalls {counts:?} in {:?}",
            counts.len(),
            t.elapsed()
        );
    }
    eprintln!("{cases} kill points in {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {cases} kill points left something behind:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `delete --force` of an id that never existed succeeds and makes nothing (the end of the
/// contract for a `create` killed before it made its state directory).
#[test]
fn delete_force_of_an_unknown_id_succeeds() {
    let _s = serial();
    let rt = Runtime::rcrun();
    let id = unique_id("never");
    rt.delete_force(&id).assert_ok();
    assert!(!rt.state_dir(&id).exists());
    rt.delete(&id).assert_fail().assert_one_line_error(&[&id]);
}

// ---------------------------------------------------------------------------------------------
// many runs under load
// ---------------------------------------------------------------------------------------------

#[test]
fn thousand_runs_of_true_under_cpu_load_never_hang() {
    let _s = serial();
    let rt = Runtime::rcrun();
    let b = Bundle::new();
    let stop = AtomicBool::new(false);
    // RCRUN_HOSTILE_RUNS: fewer for a slow machine (the qemu TCG test guest).
    let runs: usize = std::env::var("RCRUN_HOSTILE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let workers = 2;
    let t = Instant::now();
    let results: Vec<Vec<(String, Output)>> = std::thread::scope(|s| {
        // The load: two busy loops.
        for _ in 0..2 {
            let stop = &stop;
            s.spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                let (rt, b) = (&rt, &b);
                s.spawn(move || {
                    let dir = TempDir::new("runs");
                    let mut out = Vec::new();
                    for i in 0..runs / workers + usize::from(w < runs % workers) {
                        let id = format!("{}-{w}-{i}", b.id);
                        let d = dir.join(&id);
                        std::fs::create_dir_all(&d).unwrap();
                        let mut cfg = b.cfg.clone();
                        cfg["root"]["path"] = json!(b.rootfs().to_string_lossy());
                        cfg["linux"]["cgroupsPath"] = json!(format!("/rcrun-conformance/{id}"));
                        std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
                        let o = rt.exec_opts(
                            &["run", "--bundle", &d.to_string_lossy(), &id],
                            Opts {
                                timeout: Some(Duration::from_secs(30)),
                                ..Opts::default()
                            },
                        );
                        let bad = !o.success();
                        out.push((id, o));
                        if bad && out.iter().filter(|(_, o)| !o.success()).count() >= 5 {
                            break; // enough to report; do not spend 30 s per hang on the rest
                        }
                    }
                    out
                })
            })
            .collect();
        let r = hs.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        r
    });
    let elapsed = t.elapsed();
    let all: Vec<&(String, Output)> = results.iter().flatten().collect();
    let ids: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
    let _reaper = Reaper { rt: &rt, ids: &ids };
    let hangs: Vec<&&(String, Output)> = all.iter().filter(|(_, o)| o.timed_out).collect();
    let failed: Vec<&&(String, Output)> = all.iter().filter(|(_, o)| !o.success()).collect();
    // Nothing left by any of them.
    let mut left = Vec::new();
    for (id, _) in &all {
        if rt.state_dir(id).exists() {
            left.push(format!("state dir of {id}"));
        }
        for d in cgroups::all_dirs(&format!("/rcrun-conformance/{id}")) {
            if d.exists() {
                left.push(d.display().to_string());
            }
        }
    }
    eprintln!(
        "{} runs of true under 2 busy loops in {elapsed:?} ({:?} per run, {workers} at a time)",
        all.len(),
        elapsed / all.len().max(1) as u32
    );
    assert!(
        hangs.is_empty(),
        "{} runs hung (30 s timeout), e.g.:\n{}",
        hangs.len(),
        hangs[0].1
    );
    assert!(
        failed.is_empty(),
        "{} runs failed, e.g.:\n{}",
        failed.len(),
        failed[0].1
    );
    assert_eq!(all.len(), runs);
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(mounts_under(b.path()).is_empty());
}
