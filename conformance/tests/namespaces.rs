//! Namespaces: new ones differ from the host's, joined ones are shared,
//! UTS names, user namespace mappings, cgroup and time namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::util::{host, ns_id};
use rcrun_conformance::*;
use std::os::unix::fs::MetadataExt;

/// `name=ns:[inode]` lines for each name, printed from inside the container.
fn ns_script(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("echo {n}=$(readlink /proc/self/ns/{n});"))
        .collect()
}

fn parse_ns(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect()
}

#[test]
fn new_namespaces_differ_from_the_host() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("cgroup", None);
    let names = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let out = rt.sh_ok(&mut b, &ns_script(&names));
    let got = parse_ns(&out);
    for n in names {
        let host_ns = ns_id(&format!("/proc/self/ns/{n}"));
        let c = got.get(n).unwrap_or_else(|| panic!("no {n} in {out}"));
        assert!(c.starts_with(&format!("{n}:[")), "{n}: {c}");
        assert_ne!(c, &host_ns, "{n} namespace is the host's");
    }
}

#[test]
fn namespaces_not_requested_are_the_hosts() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.remove_namespace("ipc")
        .remove_namespace("uts")
        .remove_namespace("network");
    b.unset("/hostname");
    let names = ["ipc", "uts", "net", "user", "cgroup"];
    let got = parse_ns(&rt.sh_ok(&mut b, &ns_script(&names)));
    for n in names {
        assert_eq!(
            got.get(n),
            Some(&ns_id(&format!("/proc/self/ns/{n}"))),
            "{n} should be shared with the host"
        );
    }
}

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    assert_eq!(rt.sh_ok(&mut b, "echo $$"), "1\n");
    // only the container's own processes are visible
    let ps = rt.sh_ok(&mut b, "echo /proc/[0-9]*");
    assert_eq!(ps, "/proc/1\n", "only the shell itself should be visible");
}

#[test]
fn network_namespace_has_only_loopback() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let out = rt.sh_ok(&mut b, "ls /sys/class/net");
    // bonding_masters is the bonding driver's control file, in every netns once it is loaded.
    let links: Vec<&str> = out
        .split_whitespace()
        .filter(|l| *l != "bonding_masters")
        .collect();
    assert_eq!(links, ["lo"], "{out}");
}

/// `ip netns delete` on drop: (ip binary, name)
struct NetnsGuard(String, String);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = host(&self.0, &["netns", "delete", &self.1]);
    }
}

#[test]
fn joining_a_named_netns_by_path() {
    let ip = env::ensure_tool("ip", "iproute2")
        .to_string_lossy()
        .into_owned();
    let name = unique_id("rcc-netns");
    let (code, _, err) = host(&ip, &["netns", "add", &name]);
    assert_eq!(code, 0, "ip netns add: {err}");
    let _ns = NetnsGuard(ip.clone(), name.clone());
    let path = format!("/run/netns/{name}");
    let ino = std::fs::metadata(&path).unwrap().ino();
    // lo stays down in a netns made by `ip netns add` ...

    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("network", Some(&path));
    let out = rt.sh_ok(
        &mut b,
        "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags",
    );
    assert_eq!(
        out,
        format!("net:[{ino}]\n0x8\n"),
        "joined netns must be used as is (lo down = flags 0x8)"
    );

    // ... while the runtime brings lo up in a netns it creates (runc does)
    let mut b = Bundle::new();
    assert_eq!(rt.sh_ok(&mut b, "cat /sys/class/net/lo/flags"), "0x9\n");
}

#[test]
fn joining_another_containers_namespaces() {
    let rt = Runtime::rcrun();
    let mut a = Bundle::new();
    a.args(&["sleep", "1000"]).hostname("container-a");
    let _ga = rt.guard(&a.id);
    let pid = rt.start_detached(&a);

    let mut b = Bundle::new();
    b.namespace("network", Some(&format!("/proc/{pid}/ns/net")))
        .namespace("ipc", Some(&format!("/proc/{pid}/ns/ipc")))
        .namespace("uts", Some(&format!("/proc/{pid}/ns/uts")))
        .unset("/hostname");
    let got = parse_ns(&rt.sh_ok(&mut b, &ns_script(&["net", "ipc", "uts", "pid", "mnt"])));
    for n in ["net", "ipc", "uts"] {
        assert_eq!(
            got.get(n),
            Some(&ns_id(&format!("/proc/{pid}/ns/{n}"))),
            "{n} not joined"
        );
    }
    for n in ["pid", "mnt"] {
        assert_ne!(
            got.get(n),
            Some(&ns_id(&format!("/proc/{pid}/ns/{n}"))),
            "{n} must be new"
        );
    }
    // the shared UTS namespace carries A's hostname
    assert_eq!(rt.sh_ok(&mut b, "hostname"), "container-a\n");
}

#[test]
fn uts_hostname() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.hostname("conf-host");
    let out = rt.sh_ok(&mut b, "hostname; cat /proc/sys/kernel/hostname");
    assert_eq!(out, "conf-host\nconf-host\n");
    // the host's names are untouched
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host_name.trim(), "conf-host");
}

/// `domainname` (OCI 1.0.2): runc 1.1.5 ignores it (the container sees `(none)`), so the
/// self-validation run against runc has nothing to check here.
#[test]
fn uts_domainname() {
    if Runtime::skip_for_reference("runc 1.1 ignores domainname") {
        return;
    }
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.hostname("conf-host").domainname("conf.example");
    assert_eq!(
        rt.sh_ok(&mut b, "cat /proc/sys/kernel/domainname"),
        "conf.example\n"
    );
}

#[test]
fn user_namespace_with_mappings() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("user", None).id_mappings(100000, 100000, 65536);
    // v1 cgroup mounts are not allowed from an unprivileged user namespace
    b.remove_mount("/sys/fs/cgroup");
    let out = rt.sh_ok(
        &mut b,
        "cat /proc/self/uid_map /proc/self/gid_map; id; readlink /proc/self/ns/user",
    );
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(out.lines().nth(2), Some("uid=0(root) gid=0(root)"), "{out}");
    assert_ne!(
        out.lines().nth(3).map(String::from),
        Some(ns_id("/proc/self/ns/user")),
        "user ns is the host's"
    );
}

#[test]
fn user_namespace_process_is_unprivileged_on_the_host() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("user", None)
        .id_mappings(200000, 200000, 65536)
        .remove_mount("/sys/fs/cgroup");
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    let pid = rt.start_detached(&b);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        util::status_field(&status, "Uid").as_deref(),
        Some("200000\t200000\t200000\t200000")
    );
}

#[test]
fn cgroup_namespace_hides_the_cgroup_path() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("cgroup", None);
    let out = rt.sh_ok(&mut b, "cat /proc/self/cgroup");
    for l in out.lines() {
        let path = l.splitn(3, ':').nth(2).unwrap_or("?");
        assert_eq!(
            path, "/",
            "cgroup ns should show / for every hierarchy:\n{out}"
        );
    }
    // without a cgroup namespace the configured path shows
    let mut b = Bundle::new();
    let cg = b.cgroups_path().unwrap();
    let out = rt.sh_ok(&mut b, "cat /proc/self/cgroup");
    assert_eq!(
        cgroups::proc_cgroup_path(&out, "pids").as_deref(),
        Some(cg.as_str()),
        "{out}"
    );
}

/// runc 1.1 does not know the time namespace (added in runc 1.2): checked for rcrun only.
#[test]
fn time_namespace_offsets() {
    if Runtime::skip_for_reference("runc 1.1 has no time namespace") {
        return;
    }
    assert!(env::host_has_ns("time"), "kernel has no time namespace");
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.namespace("time", None).set(
        "/linux/timeOffsets",
        json!({"monotonic": {"secs": 86400 * 365, "nanosecs": 0}}),
    );
    let out = rt.sh_ok(
        &mut b,
        "readlink /proc/self/ns/time; cat /proc/self/timens_offsets; cut -d' ' -f1 /proc/uptime",
    );
    let mut l = out.lines();
    assert_ne!(
        l.next().map(String::from),
        Some(ns_id("/proc/self/ns/time")),
        "{out}"
    );
    assert!(
        out.contains("monotonic") && out.contains("31536000"),
        "{out}"
    );
}
