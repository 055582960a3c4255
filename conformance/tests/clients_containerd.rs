//! containerd 1.6 + `ctr` + the io.containerd.runc.v2 shim driving the runtime
//! under test (`ctr run --runc-binary $RCRUN_BIN`), against a private
//! containerd started here.  All scenarios are steps of one test (one daemon);
//! `RCRUN_CLIENT_STEPS=exec,pause` selects steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::containerd::{Containerd, CRI_HANDLER, IMAGE};
use rcrun_conformance::clients::{
    assert_only_stdio, eventually, on_pty, process_tree, subject, Cmd, Scenarios, FD_LIST_SH,
};
use rcrun_conformance::env::require_root;
use rcrun_conformance::unique_id;
use rcrun_conformance::util::pid_alive;
use std::cell::RefCell;
use std::rc::Rc;

fn pty_ctr(
    c: &Containerd,
    args: &[String],
    input: &[u8],
    secs: u64,
) -> rcrun_conformance::clients::Out {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let argv = on_pty(&c.argv(&refs));
    let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    Cmd::new(&c.io, std::path::Path::new(&argv[0]), &rest)
        .stdin(input)
        .timeout(secs)
        .run()
}

/// Container ids created by the test (removed at the end, whatever happened).
struct Ids(Vec<String>);

#[test]
fn containerd_ctr_scenarios() {
    require_root();
    let runtime = subject();
    let c = Rc::new(Containerd::start(&runtime));
    let mut s = Scenarios::new("containerd");
    {
        let c = c.clone();
        s.context = Box::new(move || format!("containerd log tail:\n{}", c.log_tail()));
    }
    let ids = Rc::new(RefCell::new(Ids(Vec::new())));
    let new_id = |p: &str| {
        let id = unique_id(p);
        ids.borrow_mut().0.push(id.clone());
        id
    };

    s.step("run: stdout and exit code", || {
        let id = new_id("ctd-run");
        let o = c.run(&["--rm"], &id, &["sh", "-c", "echo hello-from-ctr; exit 7"]);
        o.assert_code(7).assert_stdout_contains("hello-from-ctr");
    });

    s.step("run: exit code 0 and env/cwd from the image", || {
        let id = new_id("ctd-run0");
        let o = c.run(
            &["--rm", "--env", "FOO=bar", "--cwd", "/tmp"],
            &id,
            &["sh", "-c", "echo $FOO $(pwd)"],
        );
        o.assert_code(0);
        assert_eq!(o.text(), "bar /tmp", "{o}");
    });

    s.step("run: no fd leaked into the container (only 0 1 2)", || {
        let id = new_id("ctd-fds");
        let o = c.run(&["--rm"], &id, &["sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("run -t: process on a pty", || {
        let id = new_id("ctd-tty");
        let args = c.run_args(
            &["--rm", "-t"],
            &id,
            &["sh", "-c", "tty; test -t 0 && echo stdin-is-tty; exit 3"],
        );
        let o = pty_ctr(&c, &args, b"", 60);
        assert!(o.stdout.contains("/dev/pts/"), "tty not a pts:\n{o}");
        assert!(o.stdout.contains("stdin-is-tty"), "{o}");
        o.assert_code(3);
    });

    // one long-running detached task for exec/ps/pause/metrics/kill
    let main = new_id("ctd-main");
    s.step("run -d: detached task is RUNNING", || {
        let o = c.run(
            &["-d"],
            &main,
            &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
        );
        o.assert_ok();
        eventually("task RUNNING", 20, || {
            c.task_status(&main).as_deref() == Some("RUNNING")
        });
    });

    s.step(
        "the subject really runs it: `$RCRUN_BIN --root R state` = running, same pid",
        || {
            let root = c
                .runc_root()
                .join(rcrun_conformance::clients::containerd::ns());
            let o = Cmd::new(
                &c.io,
                &runtime,
                &["--root", &root.display().to_string(), "state", &main],
            )
            .run();
            o.assert_ok();
            let st: serde_json::Value = serde_json::from_str(&o.stdout)
                .unwrap_or_else(|e| panic!("state not JSON ({e}):\n{o}"));
            assert_eq!(st["status"], "running", "{o}");
            let tl = c.ctr(&["task", "ls"]);
            let pid = tl
                .stdout
                .lines()
                .find(|l| l.starts_with(main.as_str()))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("");
            assert_eq!(
                st["pid"].to_string(),
                pid,
                "state pid vs ctr task ls:\n{tl}"
            );
        },
    );

    s.step("task exec: output and exit code", || {
        let o = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            &main,
            "sh",
            "-c",
            "echo exec-out; exit 4",
        ]);
        o.assert_code(4).assert_stdout_contains("exec-out");
    });

    s.step("task exec: --cwd/--user, no fd leak", || {
        let o = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e2",
            "--cwd",
            "/tmp",
            "--user",
            "1000",
            &main,
            "sh",
            "-c",
            "id -u; pwd",
        ]);
        o.assert_code(0);
        assert_eq!(
            o.text().split_whitespace().collect::<Vec<_>>(),
            ["1000", "/tmp"],
            "{o}"
        );
        let o = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e3",
            &main,
            "sh",
            "-c",
            FD_LIST_SH,
        ]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step("task exec -t: on a pty", || {
        let args: Vec<String> = [
            "task",
            "exec",
            "-t",
            "--exec-id",
            "e4",
            &main,
            "sh",
            "-c",
            "tty; exit 2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = pty_ctr(&c, &args, b"", 60);
        assert!(o.stdout.contains("/dev/pts/"), "{o}");
        o.assert_code(2);
    });

    s.step("task ps: lists the container's processes", || {
        let o = c.ctr(&["task", "ps", &main]);
        o.assert_ok();
        let pids: Vec<i64> = o
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(pids.len() >= 2, "expected init + sleep:\n{o}");
        for p in &pids {
            assert!(pid_alive(*p), "listed pid {p} not alive:\n{o}");
        }
    });

    s.step("task pause / resume", || {
        c.ctr(&["task", "pause", &main]).assert_ok();
        eventually("PAUSED", 10, || {
            c.task_status(&main).as_deref() == Some("PAUSED")
        });
        c.ctr(&["task", "resume", &main]).assert_ok();
        eventually("RUNNING", 10, || {
            c.task_status(&main).as_deref() == Some("RUNNING")
        });
        c.ctr(&["task", "exec", "--exec-id", "e5", &main, "true"])
            .assert_code(0);
    });

    s.step("task metrics: cgroup stats", || {
        let o = c.ctr(&["task", "metrics", &main]);
        o.assert_ok();
        assert!(
            o.stdout.contains("pids.current") || o.stdout.contains("memory"),
            "no cgroup metrics:\n{o}"
        );
    });

    s.step(
        "task kill (TERM): exit status 0 via trap, STOPPED, delete",
        || {
            c.ctr(&["task", "kill", &main]).assert_ok();
            eventually("STOPPED", 20, || {
                c.task_status(&main).as_deref() == Some("STOPPED")
            });
            let o = c.ctr(&["task", "delete", &main]);
            o.assert_ok();
            assert!(
                !o.stderr.contains("non-zero exit code"),
                "trap exit 0 expected:\n{o}"
            );
            c.ctr(&["container", "delete", &main]).assert_ok();
        },
    );

    s.step("task kill -s SIGKILL: exit status 137", || {
        let id = new_id("ctd-kill9");
        c.run(&["-d"], &id, &["sleep", "1000"]).assert_ok();
        eventually("RUNNING", 20, || {
            c.task_status(&id).as_deref() == Some("RUNNING")
        });
        c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
        eventually("STOPPED", 20, || {
            c.task_status(&id).as_deref() == Some("STOPPED")
        });
        let o = c.ctr(&["task", "delete", &id]);
        o.assert_ok();
        assert!(
            o.stderr.contains("137"),
            "expected exit code 137 warning:\n{o}"
        );
        c.ctr(&["container", "delete", &id]).assert_ok();
    });

    s.step(
        "task kill --all: every process of the container dies",
        || {
            let id = new_id("ctd-killall");
            c.run(
                &["-d"],
                &id,
                &[
                    "sh",
                    "-c",
                    "trap '' TERM; sleep 1000 & sleep 1001 & wait; sleep 1002",
                ],
            )
            .assert_ok();
            eventually("RUNNING", 20, || {
                c.task_status(&id).as_deref() == Some("RUNNING")
            });
            // the processes from /proc (not `task ps`, so this step does not depend on `ps`)
            let mut pids: Vec<i64> = Vec::new();
            eventually("init + 2 sleeps", 10, || {
                let o = c.ctr(&["task", "ls"]);
                let init: i64 = o
                    .stdout
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(id.as_str()))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(0);
                pids = if init > 0 { process_tree(init) } else { vec![] };
                pids.len() >= 3
            });
            c.ctr(&["task", "kill", "--all", "-s", "SIGKILL", &id])
                .assert_ok();
            eventually("STOPPED", 20, || {
                c.task_status(&id).as_deref() == Some("STOPPED")
            });
            eventually("all processes dead", 10, || {
                pids.iter().all(|p| !pid_alive(*p))
            });
            c.ctr(&["task", "delete", &id]).assert_ok();
            c.ctr(&["container", "delete", &id]).assert_ok();
        },
    );

    s.step("task delete --force of a running task", || {
        let id = new_id("ctd-delforce");
        c.run(&["-d"], &id, &["sleep", "1000"]).assert_ok();
        eventually("RUNNING", 20, || {
            c.task_status(&id).as_deref() == Some("RUNNING")
        });
        c.ctr(&["task", "delete", "--force", &id]).assert_ok();
        assert_eq!(c.task_status(&id), None, "task still listed");
        c.ctr(&["container", "delete", &id]).assert_ok();
    });

    // a container joining a named network namespace (`ip netns add`), as CNI/CRI do
    let ns_id = new_id("ctd-ns");
    let netns = format!("rcrun-clients-{}", std::process::id());
    let netns_path = format!("/run/netns/{netns}");
    s.step(
        "run --memory-limit --with-ns network:<ip netns path>",
        || {
            rcrun_conformance::env::ensure_tool("ip", "iproute2");
            let (rc, _, err) = rcrun_conformance::util::host("ip", &["netns", "add", &netns]);
            assert_eq!(rc, 0, "ip netns add: {err}");
            let ns_ino = std::fs::metadata(&netns_path)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0);
            let o = c.run(
                &[
                    "-d",
                    "--memory-limit",
                    "50331648",
                    "--with-ns",
                    &format!("network:{netns_path}"),
                ],
                &ns_id,
                &[
                    "sh",
                    "-c",
                    "readlink /proc/self/ns/net > /tmp/net; sleep 1000",
                ],
            );
            o.assert_ok();
            eventually("RUNNING", 20, || {
                c.task_status(&ns_id).as_deref() == Some("RUNNING")
            });
            // ctr's spec has no /sys/fs/cgroup mount: read the limit on the host (/<namespace>/<id>)
            let cg = format!("/{}/{ns_id}", rcrun_conformance::clients::containerd::ns());
            assert_eq!(
                rcrun_conformance::cgroups::memory_limit(&cg),
                Some(50331648),
                "memory limit of cgroup {cg}"
            );
            let mut net = String::new();
            eventually("init wrote /tmp/net", 10, || {
                net = c
                    .ctr(&[
                        "task",
                        "exec",
                        "--exec-id",
                        "ns1",
                        &ns_id,
                        "cat",
                        "/tmp/net",
                    ])
                    .text();
                !net.is_empty()
            });
            assert_eq!(net, format!("net:[{ns_ino}]"));
        },
    );

    s.step(
        "task exec after the joined netns path was removed (ip netns del)",
        || {
            // runc joins an exec'd process to the namespaces of the container's init
            // (/proc/<pid>/ns/*), not to the paths in config.json, which may be gone by now
            let (rc, _, err) = rcrun_conformance::util::host("ip", &["netns", "del", &netns]);
            assert_eq!(rc, 0, "ip netns del: {err}");
            let o = c.ctr(&[
                "task",
                "exec",
                "--exec-id",
                "ns2",
                &ns_id,
                "cat",
                "/tmp/net",
            ]);
            o.assert_code(0);
            assert!(o.text().starts_with("net:["), "{o}");
        },
    );
    c.remove(&ns_id);
    let _ = rcrun_conformance::util::host("ip", &["netns", "del", &netns]);

    s.step("run: missing command fails cleanly", || {
        let id = new_id("ctd-missing");
        let o = c.run(&["--rm"], &id, &["/no/such/binary"]);
        assert!(!o.ok(), "expected failure:\n{o}");
        assert!(
            o.stderr.contains("no such file") || o.stderr.contains("not found"),
            "error should name the missing file:\n{o}"
        );
        let _ = c.ctr(&["container", "delete", &id]);
        assert!(
            !c.ctr(&["container", "ls", "-q"]).stdout.contains(&id),
            "container left behind"
        );
    });

    s.step(
        "CRI: config with BinaryName accepted (runtime handler)",
        || {
            let o = c.ctr(&["plugins", "ls"]);
            o.assert_ok();
            let cri = o
                .stdout
                .lines()
                .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
                .unwrap_or_else(|| panic!("no cri plugin:\n{o}"));
            assert!(
                cri.trim_end().ends_with("ok"),
                "cri plugin not ok: {cri}\n{}",
                c.log_tail()
            );
            let log = std::fs::read_to_string(&c.daemon.log).unwrap_or_default();
            let needle = format!("BinaryName:{}", runtime.display());
            assert!(
                log.contains(&needle)
                    && log.contains(&format!("{CRI_HANDLER}:{{Type:io.containerd.runc.v2")),
                "containerd's CRI config does not show the {CRI_HANDLER} handler with {needle}"
            );
            let _ = IMAGE;
        },
    );

    for id in ids.borrow().0.iter() {
        if c.ctr(&["container", "ls", "-q"])
            .stdout
            .lines()
            .any(|l| l == id)
        {
            c.remove(id);
        }
    }
    s.finish();
}
