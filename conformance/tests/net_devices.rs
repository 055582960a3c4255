//! runtime-spec 1.3 `linux.netDevices`: a host interface moves into the container's network
//! namespace at create (renamed, addresses and MTU kept) and comes back at delete with its
//! original name, MTU and addresses. A veth end stands in for an SR-IOV VF on this host; a
//! dummy (a device that outlives its namespace like a VF) where the kernel has it (the guest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::util::{spare_nics, unique_id};
use rcrun_conformance::*;
use serde_json::json;
use std::process::Command;

fn ip(args: &[&str]) -> (bool, String) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn ip_ok(args: &[&str]) -> String {
    let (ok, out) = ip(args);
    assert!(ok, "ip {args:?}: {out}");
    out
}

/// Short, unique interface names (15 bytes max).
fn ifname(prefix: &str) -> String {
    let id = unique_id("x");
    let h = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    format!("{prefix}{:06x}", h & 0xff_ffff)
}

/// A veth pair on the host, deleted on drop (deleting either end removes both).
struct Veth {
    a: String,
    b: String,
}

impl Veth {
    fn new(addr: &str, mtu: &str) -> Veth {
        let a = ifname("rcva");
        let b = ifname("rcvb");
        ip_ok(&[
            "link", "add", &a, "mtu", mtu, "type", "veth", "peer", "name", &b,
        ]);
        ip_ok(&["addr", "add", addr, "dev", &a]);
        ip_ok(&["link", "set", &a, "up"]);
        Veth { a, b }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.a]);
        let _ = ip(&["link", "del", &self.b]);
    }
}

/// A named netns (`ip netns add`), deleted on drop.
struct NamedNs(String);

impl NamedNs {
    fn new() -> NamedNs {
        let n = ifname("rcns");
        ip_ok(&["netns", "add", &n]);
        NamedNs(n)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn link_on_host(name: &str) -> Option<String> {
    let (ok, out) = ip(&["-o", "addr", "show", "dev", name]);
    let (lok, lout) = ip(&["-o", "link", "show", "dev", name]);
    (ok && lok).then(|| lout + &out)
}

fn bundle_with(devices: serde_json::Value, script: &str) -> Bundle {
    let mut b = Bundle::new();
    b.set("/linux/netDevices", devices);
    b.sh(script);
    b
}

#[test]
fn device_moves_in_renamed_with_its_addresses_and_mtu() {
    let rt = Runtime::rcrun();
    let v = Veth::new("10.213.7.1/24", "1400");
    let b = bundle_with(
        json!({ &v.a: { "name": "eth1" } }),
        "ip -o addr show dev eth1; ip -o link show dev eth1",
    );
    let id = unique_id("nd");
    let _g = rt.guard(&id);
    let out = rt.run_id(&b, &id, &[]);
    out.assert_ok();
    assert!(out.stdout.contains("10.213.7.1/24"), "{out}");
    assert!(out.stdout.contains("mtu 1400"), "{out}");
    // Not on the host while the container had it; a veth dies with the container's own netns.
    assert!(link_on_host(&v.a).is_none(), "{} still on the host", v.a);
}

#[test]
fn device_in_a_joined_netns_comes_back_at_delete_with_its_settings() {
    let rt = Runtime::rcrun();
    let v = Veth::new("10.213.8.1/24", "1420");
    let ns = NamedNs::new();
    let mut b = bundle_with(json!({ &v.a: { "name": "vf0" } }), "sleep 60");
    b.namespace("network", Some(&ns.path()));
    let id = unique_id("nd");
    let _g = rt.guard(&id);
    rt.create_id(&b, &id, &[]).assert_ok();
    rt.start(&id).assert_ok();
    let inside = ip_ok(&["-n", &ns.0, "-o", "addr", "show", "dev", "vf0"]);
    assert!(inside.contains("10.213.8.1/24"), "{inside}");
    assert!(link_on_host(&v.a).is_none());
    // Killed, then deleted: the device goes back under its own name with its address.
    rt.kill(&id, "KILL").assert_ok();
    assert!(rt.wait_status(&id, "stopped"));
    rt.delete(&id).assert_ok();
    let host = link_on_host(&v.a).unwrap_or_else(|| panic!("{} did not come back", v.a));
    assert!(host.contains("10.213.8.1/24"), "{host}");
    assert!(host.contains("mtu 1420"), "{host}");
    assert!(host.contains(",UP") || host.contains("<UP"), "{host}");
    let (_, left) = ip(&["-n", &ns.0, "-o", "link", "show", "dev", "vf0"]);
    assert!(!left.contains("vf0:"), "still in the netns: {left}");
}

#[test]
fn failed_create_gives_the_device_back_and_leaves_nothing() {
    let rt = Runtime::rcrun();
    let v = Veth::new("10.213.9.1/24", "1500");
    let ns = NamedNs::new();
    let mut b = Bundle::new();
    b.set("/linux/netDevices", json!({ &v.a: { "name": "eth5" } }));
    b.namespace("network", Some(&ns.path()));
    b.args(&["/no/such/binary"]);
    let id = unique_id("nd");
    let _g = rt.guard(&id);
    rt.create_id(&b, &id, &[]).assert_fail();
    assert!(!rt.state_dir(&id).exists(), "state dir left behind");
    let host = link_on_host(&v.a).unwrap_or_else(|| panic!("{} not given back", v.a));
    assert!(host.contains("10.213.9.1/24"), "{host}");
}

#[test]
fn missing_device_is_a_one_line_error_naming_it() {
    let rt = Runtime::rcrun();
    let b = bundle_with(json!({ "rcnosuchdev0": { "name": "eth1" } }), "true");
    let id = unique_id("nd");
    let _g = rt.guard(&id);
    rt.create_id(&b, &id, &[])
        .assert_fail()
        .assert_one_line_error(&["linux.netDevices", "rcnosuchdev0"]);
    assert!(!rt.state_dir(&id).exists(), "state dir left behind");
}

#[test]
fn bad_names_and_no_netns_are_refused_before_anything_is_made() {
    let rt = Runtime::rcrun();
    let cases: Vec<(serde_json::Value, bool, Vec<&str>)> = vec![
        (
            json!({ "eth9": { "name": "a-name-longer-than-15" } }),
            true,
            vec!["linux.netDevices", "a-name-longer-than-15", "15"],
        ),
        (
            json!({ "eth9": { "name": "a/b" } }),
            true,
            vec!["linux.netDevices", "a/b"],
        ),
        (
            json!({ "eth9": {}, "eth8": { "name": "eth9" } }),
            true,
            vec!["linux.netDevices", "eth9"],
        ),
        (
            json!({ "eth9": {} }),
            false,
            vec!["linux.netDevices", "network namespace"],
        ),
    ];
    for (devices, netns, needles) in cases {
        let mut b = bundle_with(devices.clone(), "true");
        if !netns {
            b.remove_namespace("network");
        }
        let id = unique_id("nd");
        let _g = rt.guard(&id);
        rt.create_id(&b, &id, &[])
            .assert_fail()
            .assert_one_line_error(&needles);
        assert!(!rt.state_dir(&id).exists(), "{devices}: state dir left");
    }
}

/// A real device leaves the container's own netns when the container dies and comes back
/// to the host under its container-side name; delete gives its name and address back.
#[test]
fn physical_device_returns_from_a_dead_netns_renamed_back() {
    let Some(d) = spare_nics().into_iter().next() else {
        if std::env::var_os("RCRUN_NET_HOST_ONLY").is_some() {
            eprintln!("skipped: needs a spare PCI NIC (guest net profile)");
            return;
        }
        panic!("no spare NIC (MAC 52:54:00:c0:ff:1x): run in the guest (guest/run-suite --profile cgroup2,net) or set RCRUN_NET_HOST_ONLY=1");
    };
    ip_ok(&["addr", "add", "10.213.10.1/24", "dev", &d]);
    ip_ok(&["link", "set", &d, "mtu", "1380", "up"]);
    struct Clean(String);
    impl Drop for Clean {
        fn drop(&mut self) {
            let _ = ip(&["addr", "flush", "dev", &self.0]);
            let _ = ip(&["link", "set", &self.0, "mtu", "1500"]);
        }
    }
    let _clean = Clean(d.clone());
    let rt = Runtime::rcrun();
    let b = bundle_with(
        json!({ &d: { "name": "eth3" } }),
        "ip -o addr show dev eth3",
    );
    let id = unique_id("nd");
    let _g = rt.guard(&id);
    let out = rt.run_id(&b, &id, &[]);
    out.assert_ok();
    assert!(out.stdout.contains("10.213.10.1/24"), "{out}");
    rt.delete_force(&id).assert_ok();
    let host = link_on_host(&d).unwrap_or_else(|| panic!("{d} did not come back"));
    assert!(host.contains("10.213.10.1/24"), "{host}");
    assert!(host.contains("mtu 1380"), "{host}");
    let (_, eth3) = ip(&["-o", "link", "show", "dev", "eth3"]);
    assert!(!eth3.contains("eth3:"), "left on the host as eth3: {eth3}");
}
