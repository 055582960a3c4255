//! dockerd (Debian docker.io 20.10, its own containerd + io.containerd.runc.v2
//! shim) with the runtime under test registered as `rcrun`
//! (`--add-runtime rcrun=$RCRUN_BIN`), then once more as `--default-runtime`.
//! A private dockerd is started here (data-root, exec-root, socket under a
//! temp dir; no iptables, no bridge: containers use `--network none`).
//! All scenarios are steps of one test; `RCRUN_CLIENT_STEPS=exec,stop` selects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::docker::{Docker, RUNTIME};
use rcrun_conformance::clients::{
    assert_only_stdio, eventually, on_pty, subject, Cmd, Out, Scenarios, FD_LIST_SH,
};
use rcrun_conformance::env::require_root;
use rcrun_conformance::util::pid_alive;
use rcrun_conformance::{unique_id, TempDir};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn pty(d: &Docker, args: &[String], input: &[u8], secs: u64) -> Out {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let argv = on_pty(&d.argv(&refs));
    let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    Cmd::new(&d.io, Path::new(&argv[0]), &rest)
        .stdin(input)
        .timeout(secs)
        .run()
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn status(d: &Docker, name: &str) -> String {
    d.inspect(name, "{{.State.Status}}")
}

#[test]
fn docker_scenarios() {
    require_root();
    let runtime = subject();
    let d = Rc::new(RefCell::new(Docker::start(&runtime)));
    let mut s = Scenarios::new("docker");
    {
        let d = d.clone();
        s.context = Box::new(move || {
            d.try_borrow()
                .map(|d| format!("dockerd log tail:\n{}", d.log_tail()))
                .unwrap_or_default()
        });
    }
    let name = |p: &str| unique_id(p);

    s.step("run: stdout and exit code, runtime is rcrun", || {
        let d = d.borrow();
        let n = name("dk-run");
        let o = d.run(
            &["--name", &n],
            &["sh", "-c", "echo hello-from-docker; exit 7"],
        );
        o.assert_code(7).assert_stdout_contains("hello-from-docker");
        assert_eq!(d.inspect(&n, "{{.HostConfig.Runtime}}"), RUNTIME);
        assert_eq!(d.inspect(&n, "{{.State.ExitCode}}"), "7");
        d.docker(&["rm", &n]).assert_ok();
    });

    s.step("run: no fd leaked into the container (only 0 1 2)", || {
        let d = d.borrow();
        let o = d.run(&["--rm"], &["sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("run -it: interactive shell on a pty", || {
        let d = d.borrow();
        let args = d.run_args(&["-it", "--rm"], &["sh"]);
        let o = pty(&d, &args, b"tty\necho $((6*7))\nexit 5\n", 60);
        let t = o.stdout.replace('\r', "");
        assert!(t.contains("\n42\n"), "shell did not evaluate input:\n{o}");
        assert!(t.contains("/dev/pts/"), "not a pty:\n{o}");
        o.assert_code(5);
    });

    s.step("run -it: terminal size from the client (stty size)", || {
        let d = d.borrow();
        let mut args = vec![
            "stty".to_string(),
            "rows".into(),
            "33".into(),
            "cols".into(),
            "111".into(),
            ";".into(),
        ];
        args.extend(d.argv(&[]));
        args.extend(d.run_args(&["-it", "--rm"], &["sh", "-c", "sleep 1; stty size"]));
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
        let o = Cmd::new(&d.io, Path::new("script"), &["-qec", &cmdline, "/dev/null"])
            .timeout(60)
            .run();
        o.assert_code(0);
        assert!(o.text().contains("33 111"), "{o}");
    });

    s.step("exit codes 126 (not executable) / 127 (missing)", || {
        let d = d.borrow();
        let o = d.run(&["--rm"], &["/etc/motd"]);
        o.assert_code(126);
        let o = d.run(&["--rm"], &["/no/such/cmd"]);
        o.assert_code(127);
        let o = d.run(&["--rm"], &["no-such-cmd-in-path"]);
        o.assert_code(127);
    });

    let main = name("dk-main");
    s.step("run -d: detached container running", || {
        let d = d.borrow();
        let o = d.run(
            &["-d", "--ipc", "shareable", "--name", &main],
            &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
        );
        o.assert_ok();
        eventually("running", 20, || status(&d, &main) == "running");
        let pid: i64 = d.inspect(&main, "{{.State.Pid}}").parse().unwrap_or(0);
        assert!(pid > 0 && pid_alive(pid), "State.Pid {pid} not alive");
    });

    s.step(
        "the subject really runs it: `$RCRUN_BIN --root <exec-root>/runtime-*/moby state`",
        || {
            let d = d.borrow();
            let id = d.inspect(&main, "{{.Id}}");
            // dockerd 20.10 gives every runc-type runtime the root <exec-root>/runtime-runc/moby
            let root = std::fs::read_dir(d.dir.join("exec"))
                .unwrap()
                .flatten()
                .map(|e| e.path().join("moby"))
                .find(|r| r.join(&id).exists())
                .unwrap_or_else(|| panic!("no <exec-root>/runtime-*/moby/{id}"));
            let o = Cmd::new(
                &d.io,
                &runtime,
                &["--root", &root.display().to_string(), "state", &id],
            )
            .run();
            o.assert_ok();
            let st: serde_json::Value = serde_json::from_str(&o.stdout)
                .unwrap_or_else(|e| panic!("state not JSON ({e}):\n{o}"));
            assert_eq!(st["status"], "running", "{o}");
            assert_eq!(
                st["pid"].to_string(),
                d.inspect(&main, "{{.State.Pid}}"),
                "{o}"
            );
        },
    );

    s.step("exec: output and exit code", || {
        let d = d.borrow();
        let o = d.docker(&["exec", &main, "sh", "-c", "echo exec-out; exit 4"]);
        o.assert_code(4).assert_stdout_contains("exec-out");
    });

    s.step("exec -u -w -e", || {
        let d = d.borrow();
        let o = d.docker(&[
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
        let d = d.borrow();
        let o = d.docker(&["exec", &main, "sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("exec -it: on a pty", || {
        let d = d.borrow();
        let o = pty(
            &d,
            &strs(&["exec", "-it", &main, "sh"]),
            b"tty\necho $((6*7))\nexit 3\n",
            60,
        );
        let t = o.stdout.replace('\r', "");
        assert!(t.contains("\n42\n") && t.contains("/dev/pts/"), "{o}");
        o.assert_code(3);
    });

    s.step("exec -d: detached exec process", || {
        let d = d.borrow();
        d.docker(&[
            "exec",
            "-d",
            &main,
            "sh",
            "-c",
            "echo detached > /tmp/exec-d; sleep 1000",
        ])
        .assert_ok();
        eventually("exec -d wrote its file", 10, || {
            d.docker(&["exec", &main, "cat", "/tmp/exec-d"]).text() == "detached"
        });
    });

    s.step("top: lists the container's processes", || {
        let d = d.borrow();
        let o = d.docker(&["top", &main]);
        o.assert_ok();
        assert!(o.stdout.contains("sleep 1000"), "{o}");
    });

    s.step("pause / unpause", || {
        let d = d.borrow();
        d.docker(&["pause", &main]).assert_ok();
        assert_eq!(status(&d, &main), "paused");
        d.docker(&["unpause", &main]).assert_ok();
        assert_eq!(status(&d, &main), "running");
        d.docker(&["exec", &main, "true"]).assert_code(0);
    });

    s.step("update: memory + pids limits visible in the cgroup", || {
        let d = d.borrow();
        d.docker(&["update", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "77", &main]).assert_ok();
        assert_eq!(d.inspect(&main, "{{.HostConfig.Memory}}"), "67108864");
        let o = d.docker(&["exec", &main, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["67108864", "77"], "{o}");
    });

    s.step("update (live): --cpuset-cpus --cpu-shares --cpus --memory-reservation", || {
        let d = d.borrow();
        d.docker(&["update", "--cpuset-cpus", "0", "--cpu-shares", "256", "--cpus", "0.25", "--memory-reservation", "32m", &main]).assert_ok();
        let o = d.docker(&["exec", &main, "sh", "-c", "cd /sys/fs/cgroup && cat cpuset/cpuset.cpus cpu/cpu.shares cpu/cpu.cfs_quota_us memory/memory.soft_limit_in_bytes"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["0", "256", "25000", "33554432"], "{o}");
    });

    s.step("stats --no-stream", || {
        let d = d.borrow();
        let o = d.docker(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            &main,
        ]);
        o.assert_ok();
        let t = o.text();
        let pids: i64 = t
            .split_whitespace()
            .last()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(t.starts_with(&main) && pids >= 2, "{o}");
        assert!(!t.contains("0B / 0B"), "no memory stats: {o}");
    });

    s.step("parallel execs (8 at once)", || {
        let d = d.borrow();
        let running: Vec<_> = (0..8)
            .map(|i| {
                d.cmd(&[
                    "exec",
                    &main,
                    "sh",
                    "-c",
                    &format!("sleep 0.3; echo par-{i}; exit {i}"),
                ])
                .spawn()
            })
            .collect();
        for (i, r) in running.into_iter().enumerate() {
            let o = r.wait();
            o.assert_code(i as i32)
                .assert_stdout_contains(&format!("par-{i}"));
        }
    });

    s.step("--pid/--ipc/--network container:<main>: joins its namespaces", || {
        let d = d.borrow();
        let pid = d.inspect(&main, "{{.State.Pid}}");
        let ns = |t: &str| std::fs::read_link(format!("/proc/{pid}/ns/{t}")).map(|p| p.display().to_string()).unwrap_or_default();
        let c = format!("container:{main}");
        let o = d.docker(&["run", "--rm", "--runtime", RUNTIME, "--pid", &c, "--ipc", &c, "--network", &c,
            rcrun_conformance::clients::docker::IMAGE, "sh", "-c", "for n in pid ipc net; do readlink /proc/self/ns/$n; done; ps -o args | grep -c 'sleep 1000'"]);
        o.assert_code(0);
        let lines: Vec<&str> = o.stdout.lines().map(str::trim).collect();
        assert!(lines.len() >= 4, "{o}");
        assert_eq!(&lines[..3], &[ns("pid"), ns("ipc"), ns("net")], "{o}");
        assert!(lines[3].parse::<i32>().unwrap_or(0) >= 1, "main's sleep not visible:\n{o}");
    });

    s.step(
        "exec of a missing / non-executable command: exit code 126 + runtime message",
        || {
            // dockerd 20.10 maps every failed exec start to 126 (run distinguishes 127)
            let d = d.borrow();
            let o = d.docker(&["exec", &main, "no-such-cmd"]);
            o.assert_code(126);
            assert!(
                format!("{}{}", o.stdout, o.stderr).contains("executable file not found"),
                "{o}"
            );
            let o = d.docker(&["exec", &main, "/etc/motd"]);
            o.assert_code(126);
            assert!(
                format!("{}{}", o.stdout, o.stderr).contains("permission denied"),
                "{o}"
            );
        },
    );

    s.step(
        "--network container:<helper>, helper stopped, then exec into the joiner",
        || {
            // runc joins an exec to the namespaces of the container's own init
            // (/proc/<pid>/ns/*), not to the path in config.json (/proc/<helper pid>/ns/net here)
            let d = d.borrow();
            let helper = name("dk-nethelper");
            let joiner = name("dk-netjoiner");
            d.run(&["-d", "--name", &helper], &["sleep", "1000"])
                .assert_ok();
            let c = format!("container:{helper}");
            d.docker(&[
                "run",
                "-d",
                "--runtime",
                RUNTIME,
                "--network",
                &c,
                "--name",
                &joiner,
                rcrun_conformance::clients::docker::IMAGE,
                "sleep",
                "1000",
            ])
            .assert_ok();
            eventually("joiner running", 20, || status(&d, &joiner) == "running");
            d.docker(&["exec", &joiner, "true"]).assert_code(0);
            d.docker(&["kill", &helper]).assert_ok();
            eventually("helper exited", 20, || status(&d, &helper) == "exited");
            let o = d.docker(&["exec", &joiner, "sh", "-c", "echo still-reachable"]);
            let _ = d.docker(&["rm", "-f", &joiner, &helper]);
            o.assert_code(0).assert_stdout_contains("still-reachable");
        },
    );

    s.step("restart: new init process, running", || {
        let d = d.borrow();
        let pid0 = d.inspect(&main, "{{.State.Pid}}");
        d.docker(&["restart", "-t", "5", &main]).assert_ok();
        eventually("running again", 20, || status(&d, &main) == "running");
        let pid1 = d.inspect(&main, "{{.State.Pid}}");
        assert_ne!(pid0, pid1, "restart kept the same pid");
        d.docker(&["exec", &main, "true"]).assert_code(0);
    });

    s.step("stop: TERM handled, exit code 0", || {
        let d = d.borrow();
        let t = Instant::now();
        d.docker(&["stop", "-t", "10", &main]).assert_ok();
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "stop waited for the timeout: TERM not delivered?"
        );
        assert_eq!(status(&d, &main), "exited");
        assert_eq!(d.inspect(&main, "{{.State.ExitCode}}"), "0");
        d.docker(&["rm", &main]).assert_ok();
    });

    s.step(
        "stop -t 1: TERM ignored, SIGKILL after the timeout (137)",
        || {
            let d = d.borrow();
            let n = name("dk-stopkill");
            d.run(&["-d", "--name", &n], &["ignore-term"]).assert_ok();
            eventually("running", 20, || status(&d, &n) == "running");
            let t = Instant::now();
            d.docker(&["stop", "-t", "1", &n]).assert_ok();
            let el = t.elapsed();
            assert!(
                el >= Duration::from_millis(900) && el < Duration::from_secs(20),
                "stop took {el:?}"
            );
            assert_eq!(d.inspect(&n, "{{.State.ExitCode}}"), "137");
            d.docker(&["rm", &n]).assert_ok();
        },
    );

    s.step("kill: default KILL (137) and -s USR1 delivered", || {
        let d = d.borrow();
        let n = name("dk-kill");
        d.run(
            &["-d", "--name", &n],
            &[
                "sh",
                "-c",
                "trap 'echo got-usr1' USR1; echo trap-set; while :; do sleep 0.2; done",
            ],
        )
        .assert_ok();
        eventually("running", 20, || status(&d, &n) == "running");
        eventually("trap installed", 10, || {
            d.docker(&["logs", &n]).stdout.contains("trap-set")
        });
        d.docker(&["kill", "-s", "USR1", &n]).assert_ok();
        eventually("USR1 trap ran", 10, || {
            d.docker(&["logs", &n]).stdout.contains("got-usr1")
        });
        d.docker(&["kill", &n]).assert_ok();
        eventually("exited", 20, || status(&d, &n) == "exited");
        assert_eq!(d.inspect(&n, "{{.State.ExitCode}}"), "137");
        d.docker(&["rm", &n]).assert_ok();
    });

    s.step("rm -f of a running container", || {
        let d = d.borrow();
        let n = name("dk-rmf");
        d.run(&["-d", "--name", &n], &["sleep", "1000"]).assert_ok();
        eventually("running", 20, || status(&d, &n) == "running");
        let pid: i64 = d.inspect(&n, "{{.State.Pid}}").parse().unwrap_or(0);
        d.docker(&["rm", "-f", &n]).assert_ok();
        eventually("process gone", 10, || !pid_alive(pid));
    });

    s.step("--init: docker-init is pid 1", || {
        let d = d.borrow();
        let o = d.run(
            &["--rm", "--init"],
            &[
                "sh",
                "-c",
                "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
            ],
        );
        o.assert_code(0);
        let t = o.text();
        assert!(
            t.contains("docker-init") || t.contains("tini"),
            "pid 1 is not the init:\n{o}"
        );
        assert_ne!(t.lines().last(), Some("1"), "{o}");
    });

    s.step("--read-only: root not writable, --tmpfs is", || {
        let d = d.borrow();
        let o = d.run(
            &["--rm", "--read-only", "--tmpfs", "/scratch"],
            &[
                "sh",
                "-c",
                "touch /x 2>&1; echo rc=$?; touch /scratch/y && echo tmpfs-ok",
            ],
        );
        o.assert_code(0);
        assert!(
            o.stdout.contains("Read-only file system") && !o.stdout.contains("rc=0"),
            "{o}"
        );
        assert!(o.stdout.contains("tmpfs-ok"), "{o}");
    });

    s.step("-v bind mounts: rw and :ro", || {
        let d = d.borrow();
        let host = TempDir::new("dk-vol");
        std::fs::write(host.join("in.txt"), "from-host\n").unwrap();
        let v = format!("{}:/data", host.path().display());
        let vro = format!("{}:/ro:ro", host.path().display());
        let o = d.run(
            &["--rm", "-v", &v, "-v", &vro],
            &[
                "sh",
                "-c",
                "cat /data/in.txt; echo from-container > /data/out.txt; touch /ro/z 2>&1; true",
            ],
        );
        o.assert_code(0);
        assert!(o.stdout.contains("from-host"), "{o}");
        assert!(o.stdout.contains("Read-only file system"), "{o}");
        assert_eq!(
            std::fs::read_to_string(host.join("out.txt")).unwrap_or_default(),
            "from-container\n"
        );
    });

    s.step("run options: -u, --cap-add/drop, --ulimit, --shm-size, --hostname, -w, -e, --security-opt no-new-privileges, --device", || {
        let d = d.borrow();
        let o = d.run(
            &["--rm", "-u", "1000:2000", "--group-add", "5", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "--ulimit", "nofile=512:512",
              "--shm-size", "16m", "--hostname", "hn-test", "-w", "/tmp", "-e", "A=b c", "--security-opt", "no-new-privileges",
              "--device", "/dev/zero:/dev/myzero"],
            &["sh", "-c", "id -u; id -g; id -G | tr ' ' ','; grep CapEff /proc/self/status | cut -f2; ulimit -n; df -k /dev/shm | tail -1 | tr -s ' ' | cut -d' ' -f2; hostname; pwd; echo \"$A\"; grep NoNewPrivs /proc/self/status | cut -f2; head -c 4 /dev/myzero | od -An -tx1 | tr -d ' '"],
        );
        o.assert_code(0);
        let lines: Vec<String> = o.text().lines().map(|l| l.trim().to_string()).collect();
        let want = ["1000", "2000", "2000,5", "0000000000000000", "512", "16384", "hn-test", "/tmp", "b c", "1", "00000000"];
        // CapEff of a non-root user without ambient caps is empty
        assert_eq!(lines, want, "{o}");
    });

    s.step("resources at run: --memory --cpus --pids-limit in the cgroup", || {
        let d = d.borrow();
        let o = d.run(&["--rm", "--memory", "48m", "--cpus", "0.5", "--pids-limit", "33"],
            &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/pids/pids.max"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["50331648", "50000", "100000", "33"], "{o}");
    });

    s.step("resources at run: --cpuset-cpus --cpu-shares --memory-reservation", || {
        let d = d.borrow();
        let o = d.run(&["--rm", "--cpuset-cpus", "0", "--cpu-shares", "512", "--memory-reservation", "40m"],
            &["sh", "-c", "cd /sys/fs/cgroup && cat cpuset/cpuset.cpus cpu/cpu.shares memory/memory.soft_limit_in_bytes"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["0", "512", "41943040"], "{o}");
    });

    s.step("docker's default hardening: capabilities, masked and read-only paths", || {
        let d = d.borrow();
        let o = d.run(&["--rm"], &["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status | cut -f2; cat /proc/keys /proc/timer_list 2>/dev/null | wc -c; ls /sys/firmware | wc -l; (echo x > /proc/sys/kernel/domainname) 2>&1 | grep -c Read-only; (touch /sys/x) 2>&1 | grep -c Read-only; grep ' /proc/sys ' /proc/self/mounts | grep -c ' ro,'"]);
        o.assert_code(0);
        // docker 20.10's default capability set = 0xa80425fb; masked paths read empty
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["00000000a80425fb", "00000000a80425fb", "0", "0", "1", "1", "1"], "{o}");
    });

    s.step(
        "seccomp: docker's default profile is enforced (Seccomp: 2)",
        || {
            let d = d.borrow();
            let o = d.run(
                &["--rm"],
                &["sh", "-c", "grep '^Seccomp:' /proc/self/status | cut -f2"],
            );
            o.assert_code(0);
            assert_eq!(o.text(), "2", "{o}");
            // ... and it denies what it should: unshare is not in the default allow list.
            let o = d.run(&["--rm"], &["sh", "-c", "unshare -n true 2>&1; echo rc=$?"]);
            assert!(o.text().contains("not permitted"), "{o}");
            // with the filter switched off there is none
            let o = d.run(
                &["--rm", "--security-opt", "seccomp=unconfined"],
                &["sh", "-c", "grep '^Seccomp:' /proc/self/status | cut -f2"],
            );
            o.assert_code(0);
            assert_eq!(o.text(), "0", "{o}");
        },
    );

    s.step("--cgroupns private, --sysctl, --oom-score-adj", || {
        let d = d.borrow();
        let o = d.run(&["--rm", "--cgroupns", "private", "--sysctl", "net.core.somaxconn=1234", "--oom-score-adj", "321"],
            &["sh", "-c", "grep memory /proc/self/cgroup | cut -d: -f3; cat /proc/sys/net/core/somaxconn /proc/self/oom_score_adj"]);
        o.assert_code(0);
        assert_eq!(o.text().split_whitespace().collect::<Vec<_>>(), ["/", "1234", "321"], "{o}");
    });

    s.step("OOM: memory hog killed, State.OOMKilled, exit 137", || {
        let d = d.borrow();
        let n = name("dk-oom");
        let o = d.run(
            &["--name", &n, "--memory", "24m", "--memory-swap", "24m"],
            &["sh", "-c", "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done"],
        );
        o.assert_code(137);
        assert_eq!(d.inspect(&n, "{{.State.OOMKilled}}"), "true", "{o}");
        d.docker(&["rm", &n]).assert_ok();
    });

    s.step(
        "--pid host: stop kills the whole container (shim's kill --all)",
        || {
            let d = d.borrow();
            let n = name("dk-pidhost");
            d.run(
                &["-d", "--pid", "host", "--name", &n],
                &[
                    "sh",
                    "-c",
                    "sleep 1001 & echo $! > /tmp/bg; trap 'exit 0' TERM; sleep 1000 & wait",
                ],
            )
            .assert_ok();
            eventually("running", 20, || status(&d, &n) == "running");
            let mut bg: i64 = 0;
            eventually("background pid written", 10, || {
                bg = d
                    .docker(&["exec", &n, "cat", "/tmp/bg"])
                    .text()
                    .parse()
                    .unwrap_or(0);
                bg > 0
            });
            assert!(pid_alive(bg), "background sleep {bg} (host pid) not alive");
            d.docker(&["stop", "-t", "5", &n]).assert_ok();
            eventually("background process killed with the container", 10, || {
                !pid_alive(bg)
            });
            d.docker(&["rm", &n]).assert_ok();
        },
    );

    s.step("logs / wait: exit code through docker wait", || {
        let d = d.borrow();
        let n = name("dk-wait");
        d.run(
            &["-d", "--name", &n],
            &["sh", "-c", "echo to-log; sleep 0.5; exit 9"],
        )
        .assert_ok();
        let o = d.docker(&["wait", &n]);
        o.assert_ok();
        assert_eq!(o.text(), "9", "{o}");
        assert!(d.docker(&["logs", &n]).stdout.contains("to-log"));
        d.docker(&["rm", &n]).assert_ok();
    });

    s.step("--default-runtime rcrun: plain docker run uses it", || {
        let mut d = d.borrow_mut();
        d.launch(true);
        let info = d.docker(&["info", "--format", "{{.DefaultRuntime}}"]);
        assert_eq!(info.text(), RUNTIME, "{info}");
        let n = name("dk-default");
        let o = d.run(&["--name", &n], &["sh", "-c", "echo via-default; exit 3"]);
        o.assert_code(3).assert_stdout_contains("via-default");
        assert_eq!(d.inspect(&n, "{{.HostConfig.Runtime}}"), RUNTIME);
        let o = d.run(&["--rm", "-d"], &["sleep", "1000"]);
        o.assert_ok();
        let id = o.text();
        d.docker(&["exec", &id, "true"]).assert_code(0);
        d.docker(&["rm", "-f", &id, &n]).assert_ok();
    });

    s.context = Box::new(String::new);
    let finish = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.finish()));
    drop(d);
    if let Err(e) = finish {
        std::panic::resume_unwind(e);
    }
}
