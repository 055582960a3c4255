//! `exec`: a new process in a running container — its namespaces, cgroup, user, env, cwd,
//! capabilities, exit code, tty, detach/pid-file, `--process FILE`, and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rcrun_conformance::console::ConsoleSocket;
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{pid_alive, status_field, wait_until, TempDir};
use rcrun_conformance::*;

const T: Duration = Duration::from_secs(10);

/// A running container that sleeps.
fn sleeper(rt: &Runtime) -> Bundle {
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    rt.start_detached(&b);
    b
}

/// `exec FLAGS... ID CMD...`; `args` is `[flags..., "--", cmd...]`, the "--" marking where
/// the container id goes.
fn exec(rt: &Runtime, b: &Bundle, args: &[&str]) -> rcrun_conformance::runtime::Output {
    let i = args
        .iter()
        .position(|x| *x == "--")
        .expect("args need a \"--\"");
    let mut full = vec!["exec"];
    full.extend_from_slice(&args[..i]);
    full.push(&b.id);
    full.extend_from_slice(&args[i + 1..]);
    rt.exec(&full)
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let init = rt.pid(&b.id);
    let out = exec(&rt, &b, &["--", "sh", "-c", "echo $$; for n in mnt pid net; do readlink /proc/self/ns/$n; done; hostname; cat /proc/self/cgroup"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(lines[0], "1", "exec'd process is not the container's init");
    for (i, ns) in ["mnt", "pid", "net"].iter().enumerate() {
        let want = util::ns_id(&format!("/proc/{init}/ns/{ns}"));
        assert_eq!(lines[1 + i], want, "{ns} namespace");
    }
    let init_cg = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let got_cg: Vec<&str> = lines[5..].to_vec();
    for l in got_cg {
        assert!(
            init_cg.contains(l),
            "exec'd process cgroup {l} not the container's:\n{init_cg}"
        );
    }
}

#[test]
fn exec_exit_code_and_missing_program() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    exec(&rt, &b, &["--", "sh", "-c", "exit 7"]).assert_code(7);
    exec(&rt, &b, &["--", "nosuch-program"])
        .assert_fail()
        .assert_one_line_error(&["nosuch-program", "executable file not found"]);
    // The failed exec left no process behind: only init sleeps in the container.
    let ps = exec(&rt, &b, &["--", "ps", "-o", "comm"]);
    assert_eq!(ps.stdout.matches("sleep").count(), 1, "{}", ps.stdout);
}

#[test]
fn exec_user_env_cwd() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let out = exec(
        &rt,
        &b,
        &[
            "--user",
            "1000:1000",
            "--additional-gids",
            "27",
            "--env",
            "FOO=bar baz",
            "--cwd",
            "/bin",
            "--",
            "sh",
            "-c",
            "id; echo \"$FOO\"; pwd",
        ],
    );
    out.assert_ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert!(
        l[0].starts_with("uid=1000") && l[0].contains("gid=1000"),
        "{}",
        l[0]
    );
    assert!(l[0].contains("27"), "additional gid missing: {}", l[0]);
    assert_eq!(l[1], "bar baz");
    assert_eq!(l[2], "/bin");
}

#[test]
fn exec_inherits_the_container_process_and_adds_caps() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let base = exec(&rt, &b, &["--", "cat", "/proc/self/status"]);
    let init = std::fs::read_to_string(format!("/proc/{}/status", rt.pid(&b.id))).unwrap();
    assert_eq!(
        status_field(&base.stdout, "CapBnd"),
        status_field(&init, "CapBnd")
    );
    assert_eq!(
        status_field(&base.stdout, "NoNewPrivs"),
        status_field(&init, "NoNewPrivs")
    );
    let added = exec(
        &rt,
        &b,
        &["--cap", "CAP_SYS_ADMIN", "--", "cat", "/proc/self/status"],
    );
    let eff = u64::from_str_radix(&status_field(&added.stdout, "CapEff").unwrap(), 16).unwrap();
    assert_ne!(
        eff & (1 << 21),
        0,
        "CAP_SYS_ADMIN (21) not in CapEff {eff:x}"
    );
}

#[test]
fn exec_process_file() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let dir = TempDir::new("proc");
    let p = dir.join("process.json");
    std::fs::write(
        &p,
        serde_json::json!({
            "terminal": false, "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "echo from-process-file $A"], "env": ["A=1", "PATH=/bin"],
            "cwd": "/"
        })
        .to_string(),
    )
    .unwrap();
    let ps = p.to_string_lossy().into_owned();
    let out = exec(&rt, &b, &["--process", &ps, "--"]);
    out.assert_ok();
    assert_eq!(out.stdout, "from-process-file 1\n");
}

#[test]
fn exec_detached_writes_pid_file() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let dir = TempDir::new("pid");
    let pf = dir.join("exec.pid");
    let pfs = pf.to_string_lossy().into_owned();
    exec(
        &rt,
        &b,
        &["--detach", "--pid-file", &pfs, "--", "sleep", "500"],
    )
    .assert_ok();
    let pid: i64 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid), "detached exec'd process {pid} is gone");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let init_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", rt.pid(&b.id))).unwrap();
    assert_eq!(cg, init_cg);
    // kill --all reaches it too
    rt.exec(&["kill", "--all", &b.id, "KILL"]).assert_ok();
    assert!(
        wait_until(T, || !pid_alive(pid)),
        "kill --all missed the exec'd process"
    );
}

#[test]
fn exec_with_tty_over_console_socket() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let dir = TempDir::new("console");
    let sock = ConsoleSocket::new(dir.path());
    let sp = sock.path().to_string_lossy().into_owned();
    exec(
        &rt,
        &b,
        &[
            "--tty",
            "--detach",
            "--console-socket",
            &sp,
            "--",
            "sh",
            "-c",
            "echo tty:$(tty); sleep 100",
        ],
    )
    .assert_ok();
    let pty = sock.master();
    let out = pty.read_until("tty:/dev/pts/", T);
    assert!(out.contains("tty:/dev/pts/"), "{out:?}");
}

#[test]
fn exec_leaks_no_fds() {
    let rt = Runtime::rcrun();
    let b = sleeper(&rt);
    let _g = rt.guard(&b.id);
    let dir = TempDir::new("fds");
    let f = dir.join("extra");
    std::fs::write(&f, "x").unwrap();
    let out = rt.exec_opts(
        &["exec", &b.id, "ls", "/proc/self/fd"],
        Opts {
            fds: vec![(f.clone(), 3), (f, 7)],
            ..Default::default()
        },
    );
    out.assert_ok();
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        fds,
        vec!["0", "1", "2", "3"],
        "leaked fds (3 is ls's own dir fd)"
    );
}

#[test]
fn exec_errors() {
    let rt = Runtime::rcrun();
    rt.exec(&["exec", "no-such-container", "true"])
        .assert_fail()
        .assert_one_line_error(&["does not exist"]);
    let mut b = Bundle::new();
    b.args(&["true"]);
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    rt.start(&b.id).assert_ok();
    assert!(rt.wait_status(&b.id, "stopped"));
    rt.exec(&["exec", &b.id, "true"])
        .assert_fail()
        .assert_one_line_error(&["stopped"]);
}

#[test]
fn exec_after_the_joined_namespace_path_is_gone() {
    // As CNI does: the container joined /run/netns/X, then the file is removed. exec joins the
    // init's /proc/PID/ns/net, so it must still work (runc does the same).
    let rt = Runtime::rcrun();
    let name = util::unique_id("rcc-exec-netns");
    let (code, _, err) = util::host("ip", &["netns", "add", &name]);
    assert_eq!(code, 0, "ip netns add: {err}");
    let path = format!("/run/netns/{name}");
    let want = format!(
        "net:[{}]",
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap())
    );
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]).namespace("network", Some(&path));
    rt.start_detached(&b);
    let _g = rt.guard(&b.id);
    let (code, _, err) = util::host("ip", &["netns", "del", &name]);
    assert_eq!(code, 0, "ip netns del: {err}");
    let out = exec(&rt, &b, &["--", "readlink", "/proc/self/ns/net"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), want);
}
