//! Rootless podman: an unprivileged user (`rcrunrl`, created with subordinate ids if missing)
//! runs podman with `--runtime $RCRUN_BIN`. podman starts the runtime as root of the user's own
//! user namespace, without `--root`, and with `$XDG_RUNTIME_DIR` set: the runtime must pick
//! `$XDG_RUNTIME_DIR/<name>` for its state, bind-mount devices instead of mknod, skip cgroups it
//! cannot write (cgroup v1 here), set supplementary groups as runc does, and join the network
//! namespace podman made for slirp4netns by path.
//! `RCRUN_CLIENT_STEPS=exec,stop` selects steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::podman::{Podman, IMAGE};
use rcrun_conformance::clients::{assert_only_stdio, subject, Scenarios, FD_LIST_SH};
use rcrun_conformance::env::require_root;
use rcrun_conformance::unique_id;
use std::time::{Duration, Instant};

#[test]
fn rootless_podman_scenarios() {
    require_root();
    let runtime = subject();
    let p = Podman::start_rootless(&runtime);
    let u = p.user.clone().unwrap();
    let mut s = Scenarios::new("podman-rootless");
    let run = |opts: &[&str], args: &[&str]| {
        let mut a = vec!["run", "--network", "none"];
        a.extend(opts);
        a.push(IMAGE);
        a.extend(args);
        p.podman(&a)
    };

    s.step("run: output, exit code, the user's id mapping", || {
        let o = run(
            &["--rm"],
            &[
                "sh",
                "-c",
                "echo hello-rootless; cat /proc/self/uid_map; exit 7",
            ],
        );
        o.assert_code(7).assert_stdout_contains("hello-rootless");
        let first: Vec<&str> = o
            .stdout
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            first,
            ["0", &u.uid.to_string(), "1"],
            "root in the container is not the user:\n{o}"
        );
    });

    let n = unique_id("pmrl");
    s.step(
        "run -d: state under $XDG_RUNTIME_DIR/<runtime>, not /run",
        || {
            run(&["-d", "--name", &n], &["sleep", "1000"]).assert_ok();
            let id = p.inspect(&n, "{{.Id}}");
            let label = rcrun_conformance::clients::subject_label();
            let dir = u.runtime_dir.join(label).join(&id);
            assert!(
                dir.join("state.json").exists() || dir.exists(),
                "no state in {}",
                dir.display()
            );
            assert!(
                !std::path::Path::new("/run").join(label).join(&id).exists(),
                "state written to /run/{label} by a rootless runtime"
            );
            assert_eq!(p.inspect(&n, "{{.State.Status}}"), "running");
        },
    );

    s.step("exec: as root and -u 1000:1000, only stdio fds", || {
        let o = p.podman(&[
            "exec",
            &n,
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map | head -1",
        ]);
        o.assert_code(0);
        assert!(o.stdout.starts_with("0\n"), "{o}");
        // runc sets the (empty) supplementary groups in a user namespace that allows it
        let o = p.podman(&[
            "exec",
            "-u",
            "1000:1000",
            &n,
            "sh",
            "-c",
            "id -u; id -g; grep Groups /proc/self/status",
        ]);
        o.assert_code(0);
        let lines: Vec<&str> = o.stdout.lines().map(str::trim).collect();
        assert_eq!(lines, ["1000", "1000", "Groups:"], "{o}");
        let o = p.podman(&["exec", &n, "sh", "-c", FD_LIST_SH]);
        o.assert_code(0);
        assert_only_stdio(&o);
        let o = p.podman(&["exec", &n, "sh", "-c", "exit 5"]);
        o.assert_code(5);
    });

    s.step("top: the container's processes", || {
        let o = p.podman(&["top", &n]);
        o.assert_code(0).assert_stdout_contains("sleep 1000");
    });

    s.step(
        "stop: SIGTERM ignored, SIGKILL after the timeout (137)",
        || {
            let m = unique_id("pmrl-stop");
            run(&["-d", "--name", &m], &["/bin/ignore-term"]).assert_ok();
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            p.podman(&["stop", "-t", "1", &m]).assert_ok();
            assert!(
                t.elapsed() >= Duration::from_millis(900),
                "stopped too early"
            );
            assert_eq!(p.inspect(&m, "{{.State.ExitCode}}"), "137");
            p.podman(&["rm", &m]).assert_ok();
        },
    );

    s.step("kill and rm: nothing left in the state dir", || {
        let id = p.inspect(&n, "{{.Id}}");
        p.podman(&["kill", &n]).assert_ok();
        p.podman(&["rm", &n]).assert_ok();
        let label = rcrun_conformance::clients::subject_label();
        assert!(
            !u.runtime_dir.join(label).join(&id).exists(),
            "state left after rm"
        );
    });

    s.step("missing command: 127 and the file named", || {
        let o = run(&["--rm"], &["/no/such/binary"]);
        o.assert_code(127);
        assert!(o.stderr.contains("/no/such/binary"), "{o}");
    });

    s.step(
        "slirp4netns network: the netns podman made, joined by path",
        || {
            // udev makes /dev/net/tun 0666 on a usual host (50-udev-default.rules); this VM
            // has it 0600, which stops slirp4netns whatever the runtime: lend it the usual
            // mode for this step only.
            use std::os::unix::fs::PermissionsExt;
            let tun = std::path::Path::new("/dev/net/tun");
            let mode = std::fs::metadata(tun).unwrap().permissions().mode();
            std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).unwrap();
            let o = p.podman(&[
                "run",
                "--rm",
                "--network",
                "slirp4netns",
                IMAGE,
                "sh",
                "-c",
                "cat /proc/net/dev",
            ]);
            std::fs::set_permissions(tun, std::fs::Permissions::from_mode(mode & 0o7777)).unwrap();
            o.assert_code(0).assert_stdout_contains("tap0");
        },
    );

    s.step(
        "read-only rootfs and a bind mount owned by the user",
        || {
            let vol = p.dir.join("vol");
            std::fs::create_dir_all(&vol).unwrap();
            std::fs::write(vol.join("f"), "host-data\n").unwrap();
            std::os::unix::fs::chown(&vol, Some(u.uid), Some(u.gid)).unwrap();
            let o = run(
                &[
                    "--rm",
                    "--read-only",
                    "-v",
                    &format!("{}:/vol", vol.display()),
                ],
                &[
                    "sh",
                    "-c",
                    "cat /vol/f; echo x > /vol/g && echo wrote; touch /x 2>&1 || echo ro",
                ],
            );
            o.assert_code(0);
            assert_eq!(o.text().lines().next(), Some("host-data"), "{o}");
            assert!(o.stdout.contains("wrote") && o.stdout.contains("ro"), "{o}");
            assert!(vol.join("g").exists());
        },
    );

    drop(p);
    s.finish();
}
