//! `checkpoint` / `restore` / `migrate` through CRIU: a counting container checkpointed and
//! restored goes on counting; `--leave-running`; a pre-dump chain with `--parent-path`; restore
//! into another bundle and id (state, ps, kill, delete, pid file, cgroup work on it); a
//! foreground restore exits with the container's status; `migrate` to another `--root` with
//! per-round figures; a 200 MB workload dirtying memory slowly (pre-copy converges) and quickly
//! (cut over after a bounded number of rounds); and the clear errors when CRIU is missing or too
//! old for the kernel.
//!
//! Guest-only (CRIU needs soft-dirty tracking and a kernel it knows; on the 6.18 development
//! host CRIU 3.17 fails its kernel detection): run them with
//! `guest/run-suite --profile criu --memory 3G --env RCRUN_REQUIRE_CRIU=1 --package rcrun-conformance -- checkpoint`.
//! Where `criu check` fails they print why and check nothing, unless `RCRUN_REQUIRE_CRIU=1`,
//! which makes that a failure. The error tests run everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcrun_conformance::runtime::Opts;
use rcrun_conformance::*;

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
    let out = std::process::Command::new(bin).arg("check").output();
    match out {
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

/// The guard of the guest-only tests.
fn need_criu() -> bool {
    match criu_broken() {
        None => true,
        Some(why) if std::env::var("RCRUN_REQUIRE_CRIU").as_deref() == Ok("1") => {
            panic!("RCRUN_REQUIRE_CRIU=1 but CRIU cannot work here: {why}")
        }
        Some(why) => {
            eprintln!(
                "SKIPPED (guest-only; run in `guest/run-suite --profile criu`): CRIU cannot work here: {why}"
            );
            false
        }
    }
}

fn long() -> Opts {
    Opts {
        timeout: Some(Duration::from_secs(600)),
        ..Opts::default()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Counts into /dev/shm/c ten times a second (tmpfs, dumped and restored by CRIU).
fn counter_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.sh("i=0; while true; do i=$((i+1)); echo $i > /dev/shm/c; usleep 100000; done");
    b
}

/// A bundle running the same program as `like`, with its own id and cgroup.
fn twin(like: &Bundle) -> Bundle {
    let mut b = Bundle::new();
    b.cfg["process"] = like.cfg["process"].clone();
    b
}

fn count(pid: i64) -> u64 {
    // The shell truncates the file before it writes: retry an empty read.
    for _ in 0..50 {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/c")).unwrap_or_default();
        if let Ok(n) = text.trim().parse() {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    0
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

fn checkpoint(rt: &Runtime, id: &str, img: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["checkpoint", "--image-path", s(img)];
    args.extend_from_slice(extra);
    args.push(id);
    rt.exec_opts(&args, long())
}

fn restore(rt: &Runtime, id: &str, b: &Bundle, img: &Path, extra: &[&str]) -> Output {
    b.write();
    rt.remember(id, b);
    let mut args = vec!["restore", "--image-path", s(img), "--bundle", s(b.path())];
    args.extend_from_slice(extra);
    args.push(id);
    rt.exec_opts(&args, long())
}

#[test]
fn checkpoint_restore_counter_continues() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let img = TempDir::new("ckpt");
    let before = count(pid);
    checkpoint(&rt, &b.id, img.path(), &[]).assert_ok();
    assert!(!pid_alive(pid), "the checkpointed process is still alive");
    assert!(
        rt.state(&b.id).code != Some(0),
        "checkpoint left the container's state behind"
    );
    assert!(img.join("descriptors.json").exists());
    assert!(img.join("inventory.img").exists());
    restore(&rt, &b.id, &b, img.path(), &["--detach"]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    let pid2 = rt.pid(&b.id);
    assert!(pid2 > 0 && pid2 != pid);
    let first = count(pid2);
    assert!(
        first >= before,
        "restored count {first} < {before}: not the same process state"
    );
    let later = wait_count(pid2, first + 2);
    eprintln!("count before checkpoint {before}, after restore {first}, then {later}");
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.delete(&b.id).assert_ok();
}

#[test]
fn leave_running_then_restore_a_copy_elsewhere() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let img = TempDir::new("ckpt");
    checkpoint(&rt, &b.id, img.path(), &["--leave-running"]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    let c = count(pid);
    wait_count(pid, c + 2);
    // The copy: another bundle directory (same program, fresh rootfs) and another id.
    let b2 = twin(&b);
    let _g2 = rt.guard(&b2.id);
    restore(&rt, &b2.id, &b2, img.path(), &["--detach"]).assert_ok();
    let pid2 = rt.pid(&b2.id);
    assert!(pid2 > 0 && pid2 != pid);
    wait_count(pid2, count(pid2) + 2);
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
}

#[test]
fn pre_dump_chain_with_parent_path() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let img = TempDir::new("chain");
    let (d1, d2, d3) = (img.join("1"), img.join("2"), img.join("3"));
    checkpoint(&rt, &b.id, &d1, &["--pre-dump"]).assert_ok();
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    checkpoint(&rt, &b.id, &d2, &["--pre-dump", "--parent-path", "../1"]).assert_ok();
    assert!(
        d2.join("parent").exists(),
        "no parent link in the second pre-dump"
    );
    let before = count(pid);
    checkpoint(&rt, &b.id, &d3, &["--parent-path", "../2"]).assert_ok();
    let pages = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    eprintln!(
        "page bytes: pre-dump 1 {}, pre-dump 2 {}, dump {}",
        pages(&d1),
        pages(&d2),
        pages(&d3)
    );
    assert!(
        pages(&d2) < pages(&d1),
        "the second pre-dump wrote as much as the first"
    );
    restore(&rt, &b.id, &b, &d3, &["--detach"]).assert_ok();
    let pid2 = rt.pid(&b.id);
    let first = count(pid2);
    assert!(first >= before, "restored count {first} < {before}");
    wait_count(pid2, first + 2);
}

#[test]
fn restore_into_other_bundle_and_id_is_a_full_container() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let img = TempDir::new("ckpt");
    let before = count(pid);
    checkpoint(&rt, &b.id, img.path(), &[]).assert_ok();
    let b2 = twin(&b);
    let _g2 = rt.guard(&b2.id);
    let pidfile = img.join("restored.pid");
    restore(
        &rt,
        &b2.id,
        &b2,
        img.path(),
        &["-d", "--pid-file", s(&pidfile)],
    )
    .assert_ok();
    let st = rt.state_json(&b2.id);
    assert_eq!(st["status"], "running");
    assert_eq!(st["bundle"].as_str(), Some(s(b2.path())));
    let pid2 = st["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid2.to_string()
    );
    assert!(count(pid2) >= before);
    // Its cgroup is the new bundle's.
    let cg = b2.cgroups_path().unwrap();
    let self_cg = std::fs::read_to_string(format!("/proc/{pid2}/cgroup")).unwrap();
    assert!(self_cg.contains(&cg), "{self_cg} does not name {cg}");
    let ps = rt.exec(&["ps", "--format", "json", &b2.id]);
    ps.assert_ok();
    assert!(ps.stdout.contains(&pid2.to_string()), "{}", ps.stdout);
    rt.kill(&b2.id, "KILL").assert_ok();
    assert!(rt.wait_status(&b2.id, "stopped"));
    rt.delete(&b2.id).assert_ok();
    assert!(rt.state(&b2.id).code != Some(0));
}

#[test]
fn foreground_restore_exits_with_the_container_status() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo $i > /dev/shm/c; usleep 100000; done; exit 7");
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let img = TempDir::new("ckpt");
    checkpoint(&rt, &b.id, img.path(), &[]).assert_ok();
    let out = restore(&rt, &b.id, &b, img.path(), &[]);
    out.assert_code(7);
    assert!(
        rt.state(&b.id).code != Some(0),
        "foreground restore left the container"
    );
}

fn migrate(
    rt: &Runtime,
    id: &str,
    to: &Runtime,
    to_id: &str,
    bundle: &Path,
    extra: &[&str],
) -> Value {
    let mut args = vec![
        "migrate",
        "--to-root",
        s(to.root()),
        "--to-id",
        to_id,
        "--to-bundle",
        s(bundle),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    args.push(id);
    let out = rt.exec_opts(&args, long());
    out.assert_ok();
    eprintln!("migrate {id} {extra:?}: {}", out.stdout.trim());
    out.json()
}

#[test]
fn migrate_to_another_root_bundle_and_id() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let rt2 = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let dst = TempDir::new("dst-bundle");
    let id2 = unique_id("mig");
    rt2.remember(&id2, &b);
    let _g2 = rt2.guard(&id2);
    let before = count(pid);
    let r = migrate(&rt, &b.id, &rt2, &id2, dst.path(), &[]);
    let rounds = r["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 3, "{r}");
    assert_eq!(rounds[0]["phase"], "pre-dump");
    assert_eq!(rounds[rounds.len() - 2]["phase"], "final-dump");
    assert_eq!(rounds[rounds.len() - 1]["phase"], "restore");
    assert!(r["bytes"].as_u64().unwrap() > 0 && r["downtime"].as_f64().unwrap() > 0.0);
    // The source is gone, the destination runs from its own bundle and rootfs.
    assert!(rt.state(&b.id).code != Some(0));
    let st = rt2.state_json(&id2);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["bundle"].as_str(), Some(s(dst.path())));
    assert!(dst.join("rootfs/bin/busybox").exists());
    let pid2 = st["pid"].as_i64().unwrap();
    let first = count(pid2);
    assert!(first >= before);
    wait_count(pid2, first + 2);
}

#[test]
fn migrate_over_a_page_server() {
    if !need_criu() {
        return;
    }
    let rt = Runtime::rcrun();
    let rt2 = Runtime::rcrun();
    let b = counter_bundle();
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    wait_count(pid, 3);
    let dst = TempDir::new("dst-bundle");
    let id2 = unique_id("mig");
    rt2.remember(&id2, &b);
    let _g2 = rt2.guard(&id2);
    let before = count(pid);
    let r = migrate(
        &rt,
        &b.id,
        &rt2,
        &id2,
        dst.path(),
        &[
            "--transport",
            "page-server",
            "--page-server",
            "127.0.0.1:27027",
        ],
    );
    // Memory went over TCP into the destination's images, whose other files were copied.
    let rounds = r["rounds"].as_array().unwrap();
    assert!(rounds[0]["memory_bytes"].as_u64().unwrap() > 0, "{r}");
    let st = rt2.state_json(&id2);
    assert_eq!(st["status"], "running", "{st}");
    let pid2 = st["pid"].as_i64().unwrap();
    let first = count(pid2);
    assert!(first >= before);
    wait_count(pid2, first + 2);
}

/// 200 MB in 200 shell variables of 1 MB; then one variable rewritten per second (slow), or as
/// fast as the shell can (fast). No fork in the loops (the slow one waits with `read -t` on a
/// fifo, not `sleep`): a child forked from 200 MB and caught by a pre-dump before its exec would
/// be a new process with 200 MB of its own to copy in every round.
fn dirtier(fast: bool) -> Bundle {
    let setup = "a=$(head -c 1048576 /dev/zero | tr '\\0' a); i=0; \
        while [ $i -lt 200 ]; do i=$((i+1)); eval \"v$i=\\\"\\${a}$i\\\"\"; done; \
        echo ready > /dev/shm/ready; n=0; ";
    let run = if fast {
        "while :; do n=$((n%200+1)); eval \"v$n=\\\"\\${a}x$n\\\"\"; echo $n > /dev/shm/c; done"
    } else {
        "mkfifo /dev/shm/tick; exec 3<>/dev/shm/tick; \
         while :; do n=$((n%200+1)); eval \"v$n=\\\"\\${a}x$n\\\"\"; echo $n > /dev/shm/c; read -t 1 x <&3; done"
    };
    let mut b = Bundle::new();
    b.sh(&format!("{setup}{run}"));
    // glibc's heap must not grow or shrink with brk in the loop: the kernel marks the whole heap
    // VMA soft-dirty when it expands (VM_SOFTDIRTY), and every pre-dump would copy all 200 MB.
    // A 384 MB top pad, no trimming, and 1 MB strings on the heap (not in mmap chunks, whose
    // VMAs merge and spread the flag the same way).
    for kv in MALLOC_ENV {
        b.env(kv);
    }
    b
}

const MALLOC_ENV: [&str; 3] = [
    "MALLOC_TOP_PAD_=402653184",
    "MALLOC_TRIM_THRESHOLD_=4294967295",
    "MALLOC_MMAP_THRESHOLD_=33554432",
];

fn migrate_dirtier(fast: bool, precopy: bool) -> Value {
    let rt = Runtime::rcrun();
    let rt2 = Runtime::rcrun();
    let b = dirtier(fast);
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    assert!(
        wait_until(Duration::from_secs(300), || Path::new(&format!(
            "/proc/{pid}/root/dev/shm/ready"
        ))
        .exists()),
        "the 200 MB workload did not get ready"
    );
    let rss: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(rss > 200 * 1024, "workload RSS {rss} kB, want > 200 MB");
    let dst = TempDir::new("dst-bundle");
    let id2 = unique_id("mig");
    rt2.remember(&id2, &b);
    let _g2 = rt2.guard(&id2);
    let mut extra = vec![
        "--max-rounds",
        "6",
        "--threshold",
        "16m",
        "--min-shrink",
        "0.8",
    ];
    if !precopy {
        extra.push("--no-precopy");
    }
    let t = Instant::now();
    let r = migrate(&rt, &b.id, &rt2, &id2, dst.path(), &extra);
    eprintln!(
        "{} dirtier, {}: {:.1} s",
        if fast { "fast" } else { "slow" },
        if precopy { "pre-copy" } else { "stop-and-copy" },
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rt2.status(&id2).as_deref(), Some("running"));
    let pid2 = rt2.pid(&id2);
    let c = count(pid2);
    wait_count(pid2, c);
    r
}

fn pre_dumps(r: &Value) -> Vec<u64> {
    r["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["phase"] == "pre-dump")
        .map(|x| x["memory_bytes"].as_u64().unwrap())
        .collect()
}

#[test]
fn migrate_200mb_slow_dirtier_converges_and_fast_one_is_cut_over() {
    if !need_criu() {
        return;
    }
    let slow = migrate_dirtier(false, true);
    let w = pre_dumps(&slow);
    assert_eq!(slow["stop"], "converged", "{slow}");
    assert!(w[0] > 150 << 20, "first round wrote {} bytes", w[0]);
    assert!(w.last().unwrap() < &(16 << 20));
    let fast = migrate_dirtier(true, true);
    let w = pre_dumps(&fast);
    assert!(
        fast["stop"] == "not-shrinking" || fast["stop"] == "round-limit",
        "{fast}"
    );
    assert!(w.len() <= 6, "{} rounds", w.len());
    let sc = migrate_dirtier(false, false);
    assert_eq!(sc["stop"], "disabled");
    eprintln!(
        "downtime: slow pre-copy {} ms, fast pre-copy {} ms, stop-and-copy {} ms",
        slow["downtime"], fast["downtime"], sc["downtime"]
    );
}

/// Where CRIU is older than the kernel (the 6.18 development host with CRIU 3.17), checkpoint
/// fails at once with that reason, not a hang and not CRIU's first error.
#[test]
fn criu_too_old_for_the_kernel_is_a_clear_error() {
    let Some(why) = criu_broken() else {
        eprintln!("CRIU works on this kernel: nothing to check (this is the host-side test)");
        return;
    };
    if criu_bin().is_none() {
        eprintln!("criu not installed: nothing to check ({why})");
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let img = TempDir::new("ckpt");
    let t = Instant::now();
    let out = rt.exec_opts(
        &["checkpoint", "--image-path", s(img.path()), &b.id],
        Opts {
            timeout: Some(Duration::from_secs(20)),
            ..Opts::default()
        },
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    out.assert_fail();
    out.assert_one_line_error(&["too old for this kernel", "dump.log"]);
    eprintln!("{}", out.stderr.trim());
    // The container is untouched.
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
}

#[test]
fn criu_missing_is_a_clear_error() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let img = TempDir::new("ckpt");
    let missing = Opts {
        global: vec!["--criu".into(), "/nonexistent/criu".into()],
        ..Opts::default()
    };
    let out = rt.exec_opts(
        &["checkpoint", "--image-path", s(img.path()), &b.id],
        missing,
    );
    out.assert_fail();
    out.assert_one_line_error(&["criu not found", "apt-get install criu"]);
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
    let out = rt.exec_opts(
        &[
            "restore",
            "--image-path",
            s(img.path()),
            "--bundle",
            s(b.path()),
            "other",
        ],
        Opts {
            global: vec!["--criu".into(), "/nonexistent/criu".into()],
            ..Opts::default()
        },
    );
    out.assert_fail();
    out.assert_one_line_error(&["criu not found"]);
}

fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
}
