//! `rcrun features`: the runtime-spec `features.json` document — what this runtime really
//! implements (not what the spec allows). Host-dependent parts (capabilities, AppArmor, SELinux)
//! are probed at run time.

use serde_json::{json, Value};

/// The runtime-spec versions config.json may declare.
pub const OCI_VERSION_MIN: &str = "1.0.0";

/// Hooks run by create/start/delete.
pub const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Mount options [`crate::mounts::parse_options`] turns into mount flags, propagation or
/// recursive attributes (anything else is passed to the filesystem as data). `tmpcopyup` is
/// accepted but not implemented, and `idmap` is refused, so neither is listed.
pub const MOUNT_OPTIONS: [&str; 44] = [
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnosuid",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
];

/// Namespaces rcrun creates or joins (`time` included: offsets are written before exec).
pub const NAMESPACES: [&str; 8] = [
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

/// Every capability the running kernel knows, in kernel order (`CAP_CHOWN` first).
pub fn capabilities() -> Vec<String> {
    let mut caps: Vec<caps::Capability> = caps::runtime::procfs_all_supported(None)
        .unwrap_or_else(|_| caps::all())
        .into_iter()
        .collect();
    caps.sort_by_key(|c| c.index());
    caps.iter().map(|c| c.to_string()).collect()
}

/// The features document.
pub fn features() -> Value {
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": HOOKS.to_vec(),
        "mountOptions": MOUNT_OPTIONS.to_vec(),
        "linux": {
            "namespaces": NAMESPACES.to_vec(),
            "capabilities": capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                // The systemd driver works on cgroup v2 with the system instance only.
                "systemd": true,
                "systemdUser": false,
                "rdma": true
            },
            // Our own compiler (crates/seccomp); NOTIFY's listener goes to listenerPath.
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": seccomp_archs(),
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
            },
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
            // runtime-spec 1.3: linux.netDevices (net_devices.rs).
            "netDevices": {"enabled": true}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "true"
        }
    })
}

/// The architectures our seccomp compiler has syscall tables for, by their OCI names.
fn seccomp_archs() -> Vec<String> {
    rcrun_seccomp::Arch::ALL
        .iter()
        .filter(|a| a.has_table())
        .filter_map(|a| serde_json::to_value(a.to_oci()).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listed_mount_options_are_implemented() {
        for o in MOUNT_OPTIONS {
            let p = crate::mounts::parse_options(&[o.to_string()]).unwrap();
            assert!(p.data.is_empty(), "{o} would be passed to the filesystem");
        }
        let mut sorted = MOUNT_OPTIONS.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, MOUNT_OPTIONS.to_vec());
    }

    #[test]
    fn capabilities_start_with_chown() {
        let c = capabilities();
        assert_eq!(c.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(c.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }
}
