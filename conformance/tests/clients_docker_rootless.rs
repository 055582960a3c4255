//! Rootless Docker (`dockerd-rootless.sh` + rootlesskit, run by an unprivileged user) with the
//! runtime under test added as `rcrun`: the shim runs it as root of rootlesskit's user
//! namespace, without cgroups on this cgroup v1 host, with Docker's default seccomp profile.
//! `RCRUN_CLIENT_STEPS=exec,top` selects steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::docker_rootless::RootlessDocker;
use rcrun_conformance::clients::{
    assert_only_stdio, skip, subject, subject_label, Scenarios, FD_LIST_SH,
};
use rcrun_conformance::env::require_root;
use rcrun_conformance::unique_id;
use std::time::{Duration, Instant};

#[test]
fn rootless_docker_scenarios() {
    require_root();
    let runtime = subject();
    let d = RootlessDocker::start(&runtime);
    let mut s = Scenarios::new("docker-rootless");
    {
        let log = d.dir.join("dockerd.log");
        s.context = Box::new(move || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        });
    }

    s.step("run: output, exit code, user mapping, seccomp enforced", || {
        let o = d.run(
            &["--rm"],
            &[
                "sh",
                "-c",
                "echo hello; head -1 /proc/self/uid_map; grep '^Seccomp:' /proc/self/status; exit 7",
            ],
        );
        o.assert_code(7);
        let lines: Vec<String> = o
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "hello".to_string(),
                format!("0 {} 1", d.user.uid),
                "Seccomp: 2".to_string()
            ],
            "{o}"
        );
    });

    let n = unique_id("dkrl");
    s.step("run -d, exec -u -w -e, exit code, only stdio fds", || {
        d.run(&["-d", "--name", &n], &["sleep", "1000"]).assert_ok();
        let o = d.docker(&[
            "exec",
            "-u",
            "1000",
            "-w",
            "/tmp",
            "-e",
            "FOO=bar",
            &n,
            "sh",
            "-c",
            "echo $(id -u) $(pwd) $FOO",
        ]);
        o.assert_code(0);
        assert_eq!(o.text(), "1000 /tmp bar", "{o}");
        d.docker(&["exec", &n, "sh", "-c", "exit 4"]).assert_code(4);
        let o = d.docker(&["exec", &n, "sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
    });

    s.step(
        "top without cgroups: the container's processes (runc fails here)",
        || {
            if subject_label() == "runc" {
                skip("runc 1.1 fails `ps` without a cgroup (lstat of an empty path)");
            }
            d.docker(&["exec", "-d", &n, "sleep", "1002"]).assert_ok();
            std::thread::sleep(Duration::from_millis(300));
            let o = d.docker(&["top", &n]);
            o.assert_code(0);
            assert!(
                o.stdout.contains("sleep 1000") && o.stdout.contains("sleep 1002"),
                "docker top misses processes:\n{o}"
            );
        },
    );

    s.step("stop: SIGKILL after the timeout (137), restart", || {
        let m = unique_id("dkrl-stop");
        d.run(&["-d", "--name", &m], &["/bin/ignore-term"])
            .assert_ok();
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        d.docker(&["stop", "-t", "1", &m]).assert_ok();
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "stopped too early"
        );
        assert_eq!(d.inspect(&m, "{{.State.ExitCode}}"), "137");
        d.docker(&["start", &m]).assert_ok();
        assert_eq!(d.inspect(&m, "{{.State.Status}}"), "running");
        d.docker(&["rm", "-f", &m]).assert_ok();
    });

    s.step("kill and rm: the runtime's state is gone", || {
        let id = d.inspect(&n, "{{.Id}}");
        let state = d.user.runtime_dir.join("dexec/runtime-runc/moby").join(&id);
        assert!(state.exists(), "no runtime state at {}", state.display());
        d.docker(&["kill", &n]).assert_ok();
        d.docker(&["rm", &n]).assert_ok();
        assert!(!state.exists(), "state left at {}", state.display());
    });

    s.step(
        "exit codes 127 and 126 for missing / non-executable commands",
        || {
            d.run(&["--rm"], &["/no/such/binary"]).assert_code(127);
            d.run(&["--rm"], &["/etc/motd"]).assert_code(126);
        },
    );

    s.step("read-only rootfs and a bind mount", || {
        let vol = d.dir.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("f"), "host-data\n").unwrap();
        std::os::unix::fs::chown(&vol, Some(d.user.uid), Some(d.user.gid)).unwrap();
        let o = d.run(
            &[
                "--rm",
                "--read-only",
                "-v",
                &format!("{}:/vol", vol.display()),
            ],
            &[
                "sh",
                "-c",
                "cat /vol/f; echo x > /vol/g && echo wrote; touch /x 2>/dev/null || echo ro",
            ],
        );
        o.assert_code(0);
        assert_eq!(o.text(), "host-data\nwrote\nro", "{o}");
    });

    drop(d);
    s.finish();
}
