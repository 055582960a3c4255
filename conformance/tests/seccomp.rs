//! linux.seccomp in real containers: an errno rule, a kill rule, an argument condition, the
//! filter reaching exec'd processes, and a Docker-style default profile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::util::status_field;
use rcrun_conformance::*;
use serde_json::json;

fn profile(syscalls: serde_json::Value) -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls
    })
}

#[test]
fn errno_rule_denies_mkdir() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        profile(
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]),
        ),
    );
    let out = rt.sh_ok(
        &mut b,
        "mkdir /dev/shm/x 2>&1; grep Seccomp: /proc/self/status; touch /dev/shm/y && echo touch-ok",
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("touch-ok"), "{out}");
}

#[test]
fn kill_rule_kills_with_sigsys() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        profile(json!([{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}])),
    );
    b.args(&["uname"]);
    let out = rt.run(&b, &[]);
    // 128 + SIGSYS
    assert_eq!(out.code, Some(128 + libc::SIGSYS), "{out}");
}

#[test]
fn argument_condition() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    // kill(pid, SIGUSR1) is denied, kill(pid, 0) is not.
    b.set(
        "/linux/seccomp",
        profile(
            json!([{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ"}]}]),
        ),
    );
    let out = rt.sh_ok(
        &mut b,
        "trap '' USR1; kill -USR1 $$ 2>&1 || echo usr1-denied; kill -0 $$ && echo zero-ok",
    );
    assert!(out.contains("usr1-denied"), "{out}");
    assert!(out.contains("zero-ok"), "{out}");
}

#[test]
fn exec_gets_the_containers_filter() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        profile(json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}])),
    );
    b.args(&["sleep", "1000"]);
    rt.start_detached(&b);
    let _g = rt.guard(&b.id);
    let out = rt.exec(&[
        "exec",
        &b.id,
        "sh",
        "-c",
        "mkdir /dev/shm/z 2>&1; grep Seccomp: /proc/self/status",
    ]);
    assert!(out.stdout.contains("Operation not permitted"), "{out}");
    assert_eq!(status_field(&out.stdout, "Seccomp").as_deref(), Some("2"));
}

#[test]
fn docker_default_profile() {
    // A realistic allow-list profile (default ERRNO), as dockerd passes it.
    // Compiled in, so the test binary carries it into the qemu guest too.
    let prof: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/seccomp/tests/data/docker-default.json"
    )))
    .unwrap();
    let rt = Runtime::rcrun();
    // Docker leaves no_new_privileges off: the filter is then loaded while the process is still
    // privileged, before the user switch and the capability drop, which it must allow.
    for nnp in [true, false] {
        let mut b = Bundle::new();
        b.set("/linux/seccomp", prof.clone())
            .set("/process/noNewPrivileges", json!(nnp))
            .user(1000, 1000, &[]);
        let out = rt.sh_ok(&mut b, "echo hello; id -u; ls / >/dev/null && echo ls-ok; grep Seccomp: /proc/self/status; unshare -n true 2>&1 || echo unshare-denied");
        assert!(
            out.contains("hello") && out.contains("ls-ok") && out.contains("1000"),
            "nnp={nnp}: {out}"
        );
        assert!(out.contains("Seccomp:\t2"), "nnp={nnp}: {out}");
        assert!(
            out.contains("unshare-denied") || out.contains("not permitted"),
            "nnp={nnp}: {out}"
        );
    }
}
