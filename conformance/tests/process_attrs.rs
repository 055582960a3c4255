//! Process attributes beyond the basics: ioPriority, scheduler, personality, LSM requests on a
//! host without that LSM, rootfsPropagation and recursive read-only binds.
//! Each is read back from inside the container (or the failure is checked to leave nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::cleanup::assert_no_leftovers;
use rcrun_conformance::util::TempDir;
use rcrun_conformance::*;
use serde_json::json;

/// Field `n` (1-based, as proc(5) numbers them) of a /proc/PID/stat line.
fn stat_field(stat: &str, n: usize) -> String {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(n - 3).unwrap().to_string()
}

#[test]
fn io_priority_is_applied() {
    if Runtime::skip_for_reference("runc 1.1 does not implement this field") {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/process/ioPriority",
        json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0}),
    );
    // busybox ionice prints the class name of a pid.
    let out = rt.sh_ok(&mut b, "ionice -p $$");
    assert!(out.starts_with("idle"), "ionice says {out:?}");
}

#[test]
fn scheduler_policy_and_nice() {
    if Runtime::skip_for_reference("runc 1.1 does not implement this field") {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/process/scheduler",
        json!({"policy": "SCHED_BATCH", "nice": 7}),
    );
    let stat = rt.sh_ok(&mut b, "cat /proc/self/stat");
    assert_eq!(stat_field(&stat, 19), "7", "nice in {stat}");
    // SCHED_BATCH is policy 3 in the kernel's uapi.
    assert_eq!(stat_field(&stat, 41), "3", "policy in {stat}");
}

#[test]
fn personality_linux32() {
    if Runtime::skip_for_reference("runc 1.1 does not implement this field") {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set("/linux/personality", json!({"domain": "LINUX32"}));
    let m = rt.sh_ok(&mut b, "uname -m");
    let host = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    if host == "x86_64" {
        assert_eq!(m.trim(), "i686");
    } else {
        assert_ne!(
            m.trim(),
            host,
            "LINUX32 must change the machine name on {host}"
        );
    }
}

#[test]
fn apparmor_profile_without_apparmor_is_a_clear_error() {
    if std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists()
        || Runtime::subject_is_reference()
    {
        // With AppArmor present the profile applies; runc ignores a profile without it.
        eprintln!("AppArmor present or subject is runc: the absent-LSM error does not apply");
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set("/process/apparmorProfile", json!("conf-profile"));
    let _g = rt.guard(&b.id);
    rt.create(&b)
        .assert_fail()
        .assert_one_line_error(&["conf-profile", "AppArmor"]);
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn selinux_label_without_selinux_is_a_clear_error() {
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() || Runtime::subject_is_reference() {
        eprintln!("SELinux present or subject is runc: the absent-LSM error does not apply");
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/process/selinuxLabel",
        json!("system_u:system_r:container_t:s0"),
    );
    let _g = rt.guard(&b.id);
    rt.create(&b)
        .assert_fail()
        .assert_one_line_error(&["container_t", "SELinux"]);
    assert_no_leftovers(&rt, &b, &b.id, None);
}

#[test]
fn rootfs_propagation_shared_and_private() {
    // The spec: rootfsPropagation "sets the rootfs's mount propagation". runc 1.1.5 applies it
    // to the host-side root before making the rootfs' parent private, so its container root
    // ends up private even for "shared": rcrun follows the spec here.
    if Runtime::skip_for_reference("runc 1.1 leaves the container's / private for \"shared\"") {
        return;
    }
    let rt = Runtime::rcrun();
    for (prop, want_shared) in [("shared", true), ("private", false)] {
        let mut b = Bundle::new();
        b.set("/linux/rootfsPropagation", json!(prop));
        let line = rt.sh_ok(&mut b, "awk '$5 == \"/\"' /proc/self/mountinfo");
        assert_eq!(line.contains("shared:"), want_shared, "{prop}: {line}");
    }
}

#[test]
fn recursive_read_only_bind() {
    let rt = Runtime::rcrun();
    let src = TempDir::new("rro");
    let sub = src.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    // A submount under the source: plain `ro` leaves it writable, `rro` does not.
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(ok.success());
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Umount(sub.clone());
    let mut b = Bundle::new();
    b.bind(src.path(), "/data", &["rbind", "rro"]);
    let out = rt.sh_ok(
        &mut b,
        "touch /data/sub/x 2>/dev/null && echo writable || echo read-only",
    );
    assert_eq!(out.trim(), "read-only");
}
