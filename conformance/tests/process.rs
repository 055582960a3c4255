//! The container process: args, env, cwd, user, umask, rlimits,
//! capabilities, no_new_privs, oom_score_adj, fds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{caps_hex, status_field};
use rcrun_conformance::*;

#[test]
fn args_are_passed_verbatim() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let out = rt.run_capture(
        &mut b,
        &[
            "sh",
            "-c",
            "printf '[%s]' \"$0\" \"$@\"",
            "zero",
            "a b",
            "",
            "c'd",
            "*",
        ],
    );
    out.assert_ok();
    assert_eq!(out.stdout, "[zero][a b][][c'd][*]");
}

#[test]
fn args_resolve_through_path() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    // `echo` is found via PATH, absolute paths work too
    assert_eq!(
        rt.run_capture(&mut b, &["echo", "via-path"])
            .assert_ok()
            .stdout,
        "via-path\n"
    );
    assert_eq!(
        rt.run_capture(&mut b, &["/bin/echo", "abs"])
            .assert_ok()
            .stdout,
        "abs\n"
    );
}

#[test]
fn env_is_exactly_the_configured_one() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.env("FOO=bar baz").env("EMPTY=").env("TERM=dumb");
    let out = rt.sh_ok(&mut b, "env");
    let mut vars: Vec<&str> = out.lines().collect();
    vars.sort();
    assert!(vars.contains(&"FOO=bar baz"), "{out}");
    assert!(vars.contains(&"EMPTY="), "{out}");
    assert!(vars.contains(&"TERM=dumb"), "{out}");
    assert!(
        vars.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
    // nothing from the runtime's own environment leaks in
    assert!(!out.contains("CARGO"), "host environment leaked: {out}");
    assert!(!out.contains("RCRUN_BIN"), "host environment leaked: {out}");
}

#[test]
fn home_defaults_from_passwd() {
    // runc sets HOME from /etc/passwd of the rootfs when the config has none.
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    assert_eq!(rt.sh_ok(&mut b, "echo $HOME"), "/root\n");
    b.user(1000, 1000, &[]);
    assert_eq!(rt.sh_ok(&mut b, "echo $HOME"), "/home/user\n");
    b.env("HOME=/custom");
    assert_eq!(rt.sh_ok(&mut b, "echo $HOME"), "/custom\n");
}

#[test]
fn cwd_is_honoured() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.cwd("/tmp");
    assert_eq!(rt.sh_ok(&mut b, "pwd"), "/tmp\n");
    // a cwd that does not exist in the rootfs is created (runc behaviour)
    b.cwd("/made/by/runtime");
    assert_eq!(rt.sh_ok(&mut b, "pwd"), "/made/by/runtime\n");
}

#[test]
fn user_uid_gid_and_additional_gids() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.user(1000, 1000, &[2000, 5]);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    assert_eq!(
        status_field(&status, "Uid").as_deref(),
        Some("1000\t1000\t1000\t1000")
    );
    assert_eq!(
        status_field(&status, "Gid").as_deref(),
        Some("1000\t1000\t1000\t1000")
    );
    let mut groups: Vec<&str> = status_field(&status, "Groups")
        .unwrap_or_default()
        .leak()
        .split_whitespace()
        .collect();
    groups.sort();
    assert_eq!(groups, ["2000", "5"], "{status}");
    let id = rt.sh_ok(&mut b, "id");
    assert!(id.starts_with("uid=1000(user) gid=1000(user)"), "{id}");
}

#[test]
fn root_user_has_no_supplementary_groups_by_default() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    assert_eq!(status_field(&status, "Uid").as_deref(), Some("0\t0\t0\t0"));
    assert_eq!(
        status_field(&status, "Groups").as_deref(),
        Some(""),
        "{status}"
    );
    // busybox `id` prints no groups= part when there are no supplementary groups
    assert_eq!(rt.sh_ok(&mut b, "id"), "uid=0(root) gid=0(root)\n");
}

#[test]
fn umask_is_applied() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    // default is 0022
    assert_eq!(rt.sh_ok(&mut b, "umask"), "0022\n");
    b.umask(0o027);
    assert_eq!(rt.sh_ok(&mut b, "umask"), "0027\n");
    b.readonly_root(false);
    let out = rt.sh_ok(&mut b, "touch /tmp/f && stat -c %a /tmp/f");
    assert_eq!(out, "640\n");
}

fn limits_line(limits: &str, name: &str) -> Vec<String> {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/limits:\n{limits}"));
    line[name.len()..]
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn rlimits_are_set() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.rlimit("RLIMIT_NOFILE", 1024, 1024)
        .rlimit("RLIMIT_NPROC", 500, 600)
        .rlimit("RLIMIT_CORE", 0, 4096)
        .rlimit("RLIMIT_MSGQUEUE", 8192, 16384);
    let limits = rt.sh_ok(&mut b, "cat /proc/self/limits");
    assert_eq!(
        limits_line(&limits, "Max open files")[..2],
        ["1024", "1024"],
        "{limits}"
    );
    assert_eq!(
        limits_line(&limits, "Max processes")[..2],
        ["500", "600"],
        "{limits}"
    );
    assert_eq!(
        limits_line(&limits, "Max core file size")[..2],
        ["0", "4096"],
        "{limits}"
    );
    assert_eq!(
        limits_line(&limits, "Max msgqueue size")[..2],
        ["8192", "16384"],
        "{limits}"
    );
    assert_eq!(rt.sh_ok(&mut b, "ulimit -n"), "1024\n");
}

#[test]
fn default_capabilities_match_the_spec_lists() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    let want = caps_hex(&bundle::DEFAULT_CAPS);
    for k in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            status_field(&status, k),
            Some(want.clone()),
            "{k}:\n{status}"
        );
    }
    // no inheritable set in the default spec, so ambient caps cannot be raised
    assert_eq!(
        status_field(&status, "CapInh").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        status_field(&status, "CapAmb").as_deref(),
        Some("0000000000000000")
    );
}

#[test]
fn capability_sets_follow_the_config() {
    let rt = Runtime::rcrun();
    let caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SETUID"];
    let mut b = Bundle::new();
    b.caps(&caps, true);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    let want = caps_hex(&caps);
    assert_eq!(want, "0000000000202081");
    for k in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&status, k),
            Some(want.clone()),
            "{k}:\n{status}"
        );
    }

    // distinct sets
    let mut b = Bundle::new();
    b.cap_set("bounding", &["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"])
        .cap_set("permitted", &["CAP_CHOWN", "CAP_KILL"])
        .cap_set("effective", &["CAP_CHOWN"])
        .cap_set("inheritable", &["CAP_KILL"])
        .cap_set("ambient", &["CAP_KILL"]);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    let f = |k| status_field(&status, k).unwrap_or_default();
    assert_eq!(
        f("CapBnd"),
        caps_hex(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]),
        "{status}"
    );
    assert_eq!(f("CapInh"), caps_hex(&["CAP_KILL"]), "{status}");
    assert_eq!(f("CapAmb"), caps_hex(&["CAP_KILL"]), "{status}");
    // observed with runc 1.1.5: permitted as configured, effective = effective ∪ ambient
    assert_eq!(
        f("CapPrm"),
        caps_hex(&["CAP_CHOWN", "CAP_KILL"]),
        "{status}"
    );
    assert_eq!(
        f("CapEff"),
        caps_hex(&["CAP_CHOWN", "CAP_KILL"]),
        "{status}"
    );
}

#[test]
fn empty_capabilities_drop_everything() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.caps(&[], true);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    for k in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&status, k).as_deref(),
            Some("0000000000000000"),
            "{k}:\n{status}"
        );
    }
    // and root without CAP_CHOWN cannot chown
    let mut b = Bundle::new();
    b.caps(&[], false).readonly_root(false);
    let out = rt.run_capture(&mut b, &["sh", "-c", "touch /tmp/x && chown 1000 /tmp/x"]);
    assert_ne!(
        out.code,
        Some(0),
        "chown must fail without CAP_CHOWN:\n{out}"
    );
}

#[test]
fn non_root_user_with_ambient_caps() {
    let rt = Runtime::rcrun();
    let caps = ["CAP_NET_BIND_SERVICE", "CAP_KILL"];
    let mut b = Bundle::new();
    b.user(1000, 1000, &[]).caps(&caps, true);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    for k in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(
            status_field(&status, k),
            Some(caps_hex(&caps)),
            "{k}:\n{status}"
        );
    }
    // non-root without ambient caps ends up with empty effective/permitted
    let mut b = Bundle::new();
    b.user(1000, 1000, &[])
        .caps(&caps, false)
        .cap_set("ambient", &[]);
    let status = rt.sh_ok(&mut b, "cat /proc/self/status");
    assert_eq!(
        status_field(&status, "CapEff").as_deref(),
        Some("0000000000000000"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapBnd"),
        Some(caps_hex(&caps)),
        "{status}"
    );
}

#[test]
fn no_new_privileges() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.no_new_privileges(true);
    let s = rt.sh_ok(&mut b, "cat /proc/self/status");
    assert_eq!(status_field(&s, "NoNewPrivs").as_deref(), Some("1"));
    b.no_new_privileges(false);
    let s = rt.sh_ok(&mut b, "cat /proc/self/status");
    assert_eq!(status_field(&s, "NoNewPrivs").as_deref(), Some("0"));
}

#[test]
fn oom_score_adj() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.oom_score_adj(500);
    assert_eq!(rt.sh_ok(&mut b, "cat /proc/self/oom_score_adj"), "500\n");
    b.oom_score_adj(0);
    assert_eq!(rt.sh_ok(&mut b, "cat /proc/self/oom_score_adj"), "0\n");
}

#[test]
fn preserve_fds_passes_extra_fds_with_listen_fds() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let f3 = b.path().join("fd3");
    let f4 = b.path().join("fd4");
    std::fs::write(&f3, "three\n").unwrap();
    std::fs::write(&f4, "four\n").unwrap();
    b.env("LISTEN_FDS=2").terminal(false).sh(
        "echo LISTEN_FDS=$LISTEN_FDS; cat <&3; cat <&4; ls /proc/self/fd | sort -n | tr '\\n' ' '",
    );
    b.write();
    let _g = rt.guard(&b.id);
    let out = rt.exec_opts(
        &[
            "run",
            "--preserve-fds",
            "2",
            "--bundle",
            b.path().to_str().unwrap(),
            &b.id,
        ],
        Opts {
            fds: vec![(f3, 3), (f4, 4)],
            ..Opts::default()
        },
    );
    out.assert_ok();
    // ls opens its directory as fd 5
    assert_eq!(
        out.stdout, "LISTEN_FDS=2\nthree\nfour\n0 1 2 3 4 5 ",
        "{out}"
    );
}

#[test]
fn preserve_fds_limits_what_is_passed() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let f = b.path().join("fdfile");
    std::fs::write(&f, "x\n").unwrap();
    b.sh("cat <&3; cat <&4 2>/dev/null && echo fd4-open || echo fd4-closed");
    b.write();
    let _g = rt.guard(&b.id);
    let out = rt.exec_opts(
        &[
            "run",
            "--preserve-fds",
            "1",
            "--bundle",
            b.path().to_str().unwrap(),
            &b.id,
        ],
        Opts {
            fds: vec![(f.clone(), 3), (f, 4)],
            ..Opts::default()
        },
    );
    out.assert_ok();
    assert_eq!(out.stdout, "x\nfd4-closed\n", "{out}");
}

#[test]
fn no_fds_leak_into_the_container() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let f = b.path().join("leak");
    std::fs::write(&f, "secret\n").unwrap();
    b.sh("ls /proc/self/fd | sort -n | tr '\\n' ' '");
    b.write();
    let _g = rt.guard(&b.id);
    // the runtime itself gets fds 3, 4 and 9; none may reach the container
    let out = rt.exec_opts(
        &["run", "--bundle", b.path().to_str().unwrap(), &b.id],
        Opts {
            fds: vec![(f.clone(), 3), (f.clone(), 4), (f, 9)],
            ..Opts::default()
        },
    );
    out.assert_ok();
    assert_eq!(
        out.stdout, "0 1 2 3 ",
        "only stdio (+ ls's own dir fd 3) expected:\n{out}"
    );
}

#[test]
fn stdin_is_passed_through_in_foreground_run() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.sh("read line; echo got:$line");
    b.write();
    let _g = rt.guard(&b.id);
    let out = rt.exec_opts(
        &["run", "--bundle", b.path().to_str().unwrap(), &b.id],
        Opts {
            stdin: Some(b"hello\n".to_vec()),
            ..Opts::default()
        },
    );
    out.assert_ok();
    assert_eq!(out.stdout, "got:hello\n");
}

#[test]
fn stderr_is_separate_from_stdout() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let out = rt.run_capture(&mut b, &["sh", "-c", "echo to-out; echo to-err >&2"]);
    out.assert_ok();
    assert_eq!(out.stdout, "to-out\n");
    assert!(out.stderr.contains("to-err"), "{out}");
}

#[test]
fn executable_that_does_not_exist_fails_run() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    // runc: `runc run failed: unable to start container process: exec: "no-such-binary": executable file not found in $PATH`
    let out = rt.run_capture(&mut b, &["no-such-binary"]);
    out.assert_fail();
    assert!(out.stderr.contains("no-such-binary"), "{out}");
}
