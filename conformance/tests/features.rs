//! `features`: the runtime-spec features.json document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::*;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn features_document_parses_and_lists_what_is_supported() {
    let rt = Runtime::rcrun();
    let out = rt.exec(&["features"]);
    out.assert_ok();
    let f = out.json();
    assert!(
        f["ociVersionMin"].as_str().unwrap().starts_with("1."),
        "{f}"
    );
    assert!(
        f["ociVersionMax"].as_str().unwrap().starts_with("1."),
        "{f}"
    );
    let hooks = strings(&f["hooks"]);
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.iter().any(|x| x == h), "hook {h} missing: {f}");
    }
    let opts = strings(&f["mountOptions"]);
    for o in [
        "bind", "rbind", "ro", "nosuid", "nodev", "noexec", "rprivate",
    ] {
        assert!(opts.iter().any(|x| x == o), "mount option {o} missing: {f}");
    }
    let linux = &f["linux"];
    let ns = strings(&linux["namespaces"]);
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.iter().any(|x| x == n), "namespace {n} missing: {f}");
    }
    let caps = strings(&linux["capabilities"]);
    assert_eq!(caps.first().map(String::as_str), Some("CAP_CHOWN"), "{f}");
    for c in [
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_KILL",
        "CAP_AUDIT_READ",
    ] {
        assert!(caps.iter().any(|x| x == c), "capability {c} missing: {f}");
    }
    assert_eq!(linux["cgroup"]["v1"], true, "{f}");
    assert_eq!(linux["cgroup"]["v2"], true, "{f}");
    assert!(linux["seccomp"]["enabled"].is_boolean(), "{f}");
    assert!(f["annotations"].is_object(), "{f}");
}

/// What rcrun does not implement yet must not be claimed.
#[test]
fn features_are_truthful() {
    if Runtime::skip_for_reference("runc implements checkpointing") {
        return;
    }
    let rt = Runtime::rcrun();
    let f = rt.exec(&["features"]).json();
    let linux = &f["linux"];
    assert_eq!(linux["seccomp"]["enabled"], true, "{f}");
    assert!(strings(&linux["seccomp"]["archs"])
        .iter()
        .any(|a| a == "SCMP_ARCH_X86_64" || a == "SCMP_ARCH_AARCH64"));
    // every action is implemented, NOTIFY included (tests/seccomp_notify.rs)
    for action in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ] {
        assert!(
            strings(&linux["seccomp"]["actions"])
                .iter()
                .any(|a| a == action),
            "{action} missing: {f}"
        );
    }
    assert_eq!(linux["intelRdt"]["enabled"], false, "{f}");
    assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], false, "{f}");
    assert_eq!(
        f["annotations"]["org.opencontainers.runc.checkpoint.enabled"], "true",
        "{f}"
    );
    assert!(strings(&linux["namespaces"]).iter().any(|n| n == "time"));
    let opts = strings(&f["mountOptions"]);
    for o in ["idmap", "tmpcopyup"] {
        assert!(!opts.iter().any(|x| x == o), "{o} is not implemented: {f}");
    }
    // AppArmor / SELinux only when the host has them.
    let aa = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    assert_eq!(linux["apparmor"]["enabled"], aa, "{f}");
    let se = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    assert_eq!(linux["selinux"]["enabled"], se, "{f}");
}
