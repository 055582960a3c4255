//! podman 4.x with `--runtime $RCRUN_BIN` (conmon runs the runtime; podman
//! passes no `--root` of its own choosing per call beyond its runroot, and
//! reads pid/status from `state`).  Private `--root/--runroot/--tmpdir` and
//! containers.conf; `--network none`.
//! All scenarios are steps of one test; `RCRUN_CLIENT_STEPS=exec,stop` selects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::podman::Podman;
use rcrun_conformance::clients::{
    assert_only_stdio, eventually, on_pty, subject, Cmd, Out, Scenarios, FD_LIST_SH,
};
use rcrun_conformance::env::require_root;
use rcrun_conformance::util::pid_alive;
use rcrun_conformance::{unique_id, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

fn pty(p: &Podman, args: &[String], input: &[u8], secs: u64) -> Out {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let argv = on_pty(&p.argv(&refs));
    let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    Cmd::new(&p.io, Path::new(&argv[0]), &rest)
        .env("CONTAINERS_CONF", &p.conf.display().to_string())
        .stdin(input)
        .timeout(secs)
        .run()
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn status(p: &Podman, name: &str) -> String {
    p.inspect(name, "{{.State.Status}}")
}

#[test]
fn podman_scenarios() {
    require_root();
    let runtime = subject();
    let p = Podman::start(&runtime);
    let mut s = Scenarios::new("podman");
    let name = |x: &str| unique_id(x);

    s.step("run: stdout and exit code, runtime is the subject", || {
        let n = name("pm-run");
        let o = p.run(
            &["--name", &n],
            &["sh", "-c", "echo hello-from-podman; exit 7"],
        );
        o.assert_code(7).assert_stdout_contains("hello-from-podman");
        let rt = p.inspect(&n, "{{.OCIRuntime}}");
        assert!(
            rt == runtime.display().to_string() || rt == "rcrun" || runtime.ends_with(&rt),
            "OCIRuntime = {rt:?}"
        );
        assert_eq!(p.inspect(&n, "{{.State.ExitCode}}"), "7");
        p.podman(&["rm", &n]).assert_ok();
    });

    s.step("run: no fd leaked into the container (only 0 1 2)", || {
        let o = p.run(&["--rm"], &["sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("run -it: interactive shell on a pty", || {
        let args = p.run_args(&["-it", "--rm"], &["sh"]);
        let o = pty(&p, &args, b"tty\necho $((6*7))\nexit 5\n", 60);
        let t = o.stdout.replace('\r', "");
        assert!(t.contains("\n42\n") && t.contains("/dev/pts/"), "{o}");
        o.assert_code(5);
    });

    s.step("run -it: terminal size from the client (stty size)", || {
        let mut args = vec![
            "stty".to_string(),
            "rows".into(),
            "33".into(),
            "cols".into(),
            "111".into(),
            ";".into(),
        ];
        args.extend(p.argv(&[]));
        args.extend(p.run_args(&["-it", "--rm"], &["sh", "-c", "sleep 1; stty size"]));
        let cmdline = args
            .iter()
            .map(|a| {
                if a == ";" {
                    a.clone()
                } else {
                    rcrun_conformance::clients::shell_quote(a)
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let o = Cmd::new(&p.io, Path::new("script"), &["-qec", &cmdline, "/dev/null"])
            .env("CONTAINERS_CONF", &p.conf.display().to_string())
            .timeout(60)
            .run();
        o.assert_code(0);
        assert!(o.text().contains("33 111"), "{o}");
    });

    s.step("--uidmap/--gidmap: user namespace", || {
        let o = p.run(&["--rm", "--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"],
            &["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map | tr -s ' ' | sed 's/^ //'; id -u; touch /tmp/x && echo writable"]);
        o.assert_code(0);
        let text = o.text();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines, ["0 200000 65536", "0 200000 65536", "0", "writable"], "{o}");
    });

    s.step("resources at run: --memory --cpus --pids-limit", || {
        let o = p.run(&["--rm", "--memory", "48m", "--cpus", "0.5", "--pids-limit", "33"],
            &["sh", "-c", "cd /sys/fs/cgroup && cat memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us pids/pids.max 2>/dev/null || { cat memory.max pids.max; cut -d' ' -f1 cpu.max; }"]);
        o.assert_code(0);
        let t = o.text();
        let mut v: Vec<&str> = t.split_whitespace().collect();
        v.sort();
        assert_eq!(v, ["33", "50000", "50331648"], "{o}");
    });

    s.step("exit codes 126 (not executable) / 127 (missing)", || {
        p.run(&["--rm"], &["/etc/motd"]).assert_code(126);
        p.run(&["--rm"], &["/no/such/cmd"]).assert_code(127);
    });

    let main = name("pm-main");
    s.step("run -d: detached, State.Pid alive", || {
        p.run(
            &["-d", "--name", &main],
            &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
        )
        .assert_ok();
        eventually("running", 20, || status(&p, &main) == "running");
        let pid: i64 = p.inspect(&main, "{{.State.Pid}}").parse().unwrap_or(0);
        assert!(pid > 0 && pid_alive(pid), "State.Pid {pid}");
    });

    s.step(
        "the subject really runs it: `$RCRUN_BIN state` (default --root) = running",
        || {
            let id = p.inspect(&main, "{{.Id}}");
            let o = Cmd::new(&p.io, &runtime, &["state", &id]).run();
            o.assert_ok();
            let st: serde_json::Value = serde_json::from_str(&o.stdout)
                .unwrap_or_else(|e| panic!("state not JSON ({e}):\n{o}"));
            assert_eq!(st["status"], "running", "{o}");
            assert_eq!(
                st["pid"].to_string(),
                p.inspect(&main, "{{.State.Pid}}"),
                "{o}"
            );
        },
    );

    s.step("exec: output and exit code", || {
        let o = p.podman(&["exec", &main, "sh", "-c", "echo exec-out; exit 4"]);
        o.assert_code(4).assert_stdout_contains("exec-out");
    });

    s.step("exec -u -w -e", || {
        let o = p.podman(&[
            "exec",
            "-u",
            "1000:2000",
            "-w",
            "/tmp",
            "-e",
            "FOO=bar",
            &main,
            "sh",
            "-c",
            "id -u; id -g; pwd; echo $FOO",
        ]);
        o.assert_code(0);
        assert_eq!(
            o.text().split_whitespace().collect::<Vec<_>>(),
            ["1000", "2000", "/tmp", "bar"],
            "{o}"
        );
    });

    s.step("exec: no fd leaked (only 0 1 2)", || {
        let o = p.podman(&["exec", &main, "sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("exec -it: on a pty", || {
        let o = pty(
            &p,
            &strs(&["exec", "-it", &main, "sh"]),
            b"tty\necho $((6*7))\nexit 3\n",
            60,
        );
        let t = o.stdout.replace('\r', "");
        assert!(t.contains("\n42\n") && t.contains("/dev/pts/"), "{o}");
        o.assert_code(3);
    });

    s.step(
        "exec of a missing / non-executable command: exit codes 127 / 126",
        || {
            p.podman(&["exec", &main, "no-such-cmd"]).assert_code(127);
            p.podman(&["exec", &main, "/etc/motd"]).assert_code(126);
        },
    );

    s.step("top", || {
        let o = p.podman(&["top", &main]);
        o.assert_ok();
        assert!(o.stdout.contains("sleep 1000"), "{o}");
    });

    s.step("pause / unpause", || {
        p.podman(&["pause", &main]).assert_ok();
        assert_eq!(status(&p, &main), "paused");
        p.podman(&["unpause", &main]).assert_ok();
        assert_eq!(status(&p, &main), "running");
        p.podman(&["exec", &main, "true"]).assert_code(0);
    });

    s.step("update: memory + cpu quota visible in the cgroup", || {
        // podman 4.3's update has no --pids-limit
        p.podman(&["update", "--memory", "64m", "--memory-swap", "64m", "--cpu-quota", "50000", "--cpu-period", "100000", &main]).assert_ok();
        let o = p.podman(&["exec", &main, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || { cat /sys/fs/cgroup/memory.max; cut -d' ' -f1 /sys/fs/cgroup/cpu.max; }"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["67108864", "50000"], "{o}");
    });

    s.step("stats --no-stream", || {
        let o = p.podman(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            &main,
        ]);
        o.assert_ok();
        assert!(o.text().starts_with(&main), "{o}");
    });

    s.step("restart: new init process", || {
        let pid0 = p.inspect(&main, "{{.State.Pid}}");
        p.podman(&["restart", "-t", "5", &main]).assert_ok();
        eventually("running", 20, || status(&p, &main) == "running");
        assert_ne!(p.inspect(&main, "{{.State.Pid}}"), pid0);
    });

    s.step("stop: TERM handled, exit code 0", || {
        let t = Instant::now();
        p.podman(&["stop", "-t", "10", &main]).assert_ok();
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "stop waited for the timeout"
        );
        assert_eq!(status(&p, &main), "exited");
        assert_eq!(p.inspect(&main, "{{.State.ExitCode}}"), "0");
        p.podman(&["rm", &main]).assert_ok();
    });

    s.step(
        "stop -t 1: TERM ignored, SIGKILL after the timeout (137)",
        || {
            let n = name("pm-stopkill");
            p.run(&["-d", "--name", &n], &["ignore-term"]).assert_ok();
            eventually("running", 20, || status(&p, &n) == "running");
            let t = Instant::now();
            p.podman(&["stop", "-t", "1", &n]).assert_ok();
            let el = t.elapsed();
            assert!(
                el >= Duration::from_millis(900) && el < Duration::from_secs(20),
                "stop took {el:?}"
            );
            assert_eq!(p.inspect(&n, "{{.State.ExitCode}}"), "137");
            p.podman(&["rm", &n]).assert_ok();
        },
    );

    s.step("kill: -s USR1 delivered, default KILL (137)", || {
        let n = name("pm-kill");
        p.run(
            &["-d", "--name", &n],
            &[
                "sh",
                "-c",
                "trap 'echo got-usr1' USR1; echo trap-set; while :; do sleep 0.2; done",
            ],
        )
        .assert_ok();
        eventually("running", 20, || status(&p, &n) == "running");
        eventually("trap installed", 10, || {
            p.podman(&["logs", &n]).stdout.contains("trap-set")
        });
        p.podman(&["kill", "-s", "USR1", &n]).assert_ok();
        eventually("USR1 trap ran", 10, || {
            p.podman(&["logs", &n]).stdout.contains("got-usr1")
        });
        p.podman(&["kill", &n]).assert_ok();
        eventually("exited", 20, || status(&p, &n) == "exited");
        assert_eq!(p.inspect(&n, "{{.State.ExitCode}}"), "137");
        p.podman(&["rm", &n]).assert_ok();
    });

    s.step("rm -f of a running container", || {
        let n = name("pm-rmf");
        p.run(&["-d", "--name", &n], &["sleep", "1000"]).assert_ok();
        eventually("running", 20, || status(&p, &n) == "running");
        let pid: i64 = p.inspect(&n, "{{.State.Pid}}").parse().unwrap_or(0);
        p.podman(&["rm", "-f", "-t", "0", &n]).assert_ok();
        eventually("process gone", 10, || !pid_alive(pid));
        assert!(!p.podman(&["ps", "-aq", "--no-trunc"]).stdout.contains(&n));
    });

    s.step(
        "--pid host: stop kills the whole container (kill --all)",
        || {
            let n = name("pm-pidhost");
            p.run(
                &["-d", "--pid", "host", "--name", &n],
                &[
                    "sh",
                    "-c",
                    "sleep 1001 & echo $! > /tmp/bg; trap 'exit 0' TERM; sleep 1000 & wait",
                ],
            )
            .assert_ok();
            eventually("running", 20, || status(&p, &n) == "running");
            let mut bg: i64 = 0;
            eventually("background pid written", 10, || {
                bg = p
                    .podman(&["exec", &n, "cat", "/tmp/bg"])
                    .text()
                    .parse()
                    .unwrap_or(0);
                bg > 0
            });
            assert!(pid_alive(bg), "background sleep {bg} not alive");
            p.podman(&["stop", "-t", "5", &n]).assert_ok();
            eventually("background process killed with the container", 10, || {
                !pid_alive(bg)
            });
            p.podman(&["rm", &n]).assert_ok();
        },
    );

    s.step("-v bind mount and --read-only", || {
        let host = TempDir::new("pm-vol");
        std::fs::write(host.join("in.txt"), "from-host\n").unwrap();
        let v = format!("{}:/data", host.path().display());
        let o = p.run(
            &["--rm", "--read-only", "-v", &v],
            &[
                "sh",
                "-c",
                "cat /data/in.txt; echo out > /data/out.txt; touch /x 2>&1; true",
            ],
        );
        o.assert_code(0);
        assert!(
            o.stdout.contains("from-host") && o.stdout.contains("Read-only file system"),
            "{o}"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("out.txt")).unwrap_or_default(),
            "out\n"
        );
    });

    s.step(
        "network: the org.rcrun.net.network annotation attaches the container (rcrun-net hook inserted by rcrun), a stable name keeps its address",
        || {
            if rcrun_conformance::Runtime::subject_is_reference() {
                return; // runc knows nothing of org.rcrun.net.*
            }
            let store = TempDir::new("pm-netstore");
            let br = format!("rcpm{}", std::process::id() % 100_000);
            let net = rcrun_conformance::env::net_bin();
            let st = store.path().display().to_string();
            let created = std::process::Command::new(&net)
                .args(["--store", &st, "network", "create", "pmnet", "--subnet", "10.244.7.0/24", "--bridge", &br])
                .output()
                .unwrap();
            assert!(created.status.success(), "{created:?}");
            let run = |n: &str| {
                p.run(
                    &[
                        "--rm",
                        "--name",
                        n,
                        "--annotation",
                        "org.rcrun.net.network=pmnet",
                        "--annotation",
                        &format!("org.rcrun.net.store={st}"),
                        "--annotation",
                        "org.rcrun.net.name=web",
                    ],
                    &["ip", "-o", "addr", "show", "dev", "eth0"],
                )
            };
            let first = run(&name("pm-net"));
            first.assert_code(0).assert_stdout_contains("10.244.7.2/24");
            // A new container with the same stable name: the same address.
            run(&name("pm-net")).assert_code(0).assert_stdout_contains("10.244.7.2/24");
            let left = std::process::Command::new(&net)
                .args(["--store", &st, "ls", "--format", "json"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "[]", "attachments left");
            let _ = std::process::Command::new("ip").args(["link", "del", &br]).status();
        },
    );

    s.finish();
}
