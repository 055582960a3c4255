//! Bridge and macvlan modes, namespaces and error messages against the real kernel.
//! Every test works in its own fresh pinned namespaces (the "host" included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{udp_exchange, TestNs, TestResult};
use ipnet::IpNet;
use rcrun_net::bridge;
use rcrun_net::iface::{self, IfaceConfig};
use rcrun_net::link::{LinkKind, MacvlanMode, NewLink};
use rcrun_net::macvlan;
use rcrun_net::netlink::Handle;
use rcrun_net::netns::NetNs;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn netns_run_leaves_caller_alone_and_pins_outlive_handles() -> TestResult {
    let before = NetNs::current()?;
    let t = TestNs::new("run")?;
    let inside = t.ns.run(NetNs::current)??;
    assert!(inside.same_as(&t.ns));
    assert!(!inside.same_as(&before));
    assert!(
        NetNs::current()?.same_as(&before),
        "caller's thread changed netns"
    );
    // Pinning twice stacks two mounts; unpin removes both.
    let dir = tempfile::tempdir()?;
    let twice = dir.path().join("sub/dir/pin");
    NetNs::pin(std::process::id() as i32, &twice)?;
    NetNs::pin(std::process::id() as i32, &twice)?;
    assert!(NetNs::open(&twice)?.same_as(&before));
    NetNs::unpin(&twice)?;
    assert!(!twice.exists());
    // A second open of the pin is the same namespace; unpin is idempotent.
    let again = NetNs::open(&t.path)?;
    assert!(again.same_as(&t.ns));
    let p = t.path.clone();
    drop(t);
    assert!(!p.exists());
    NetNs::unpin(&p)?;
    Ok(())
}

#[test]
fn bridge_two_containers_talk() -> TestResult {
    let host = TestNs::new("br-host")?;
    let c1 = TestNs::new("br-c1")?;
    let c2 = TestNs::new("br-c2")?;
    let (h1, h2) = host.with(|h| {
        bridge::ensure_bridge(h, "rcbr0", &[net("10.88.0.1/24")], Some(1400))?;
        // Idempotent.
        bridge::ensure_bridge(h, "rcbr0", &[net("10.88.0.1/24")], Some(1400))?;
        let h1 = bridge::attach(h, "rcbr0", "container-one", &c1.ns, "eth0", Some(1400))?;
        let h2 = bridge::attach(h, "rcbr0", "container-two", &c2.ns, "eth0", Some(1400))?;
        Ok((h1, h2))
    })?;
    assert_ne!(h1, h2);
    assert!(h1.len() <= 15 && h2.len() <= 15);
    assert_eq!(h1, bridge::host_veth_name("container-one"));
    for (c, addr) in [(&c1, "10.88.0.2/24"), (&c2, "10.88.0.3/24")] {
        iface::configure(
            &c.ns,
            &IfaceConfig {
                name: "eth0".into(),
                addresses: vec![net(addr)],
                gateways: vec![ip("10.88.0.1")],
                mtu: Some(1400),
                mac: None,
            },
        )?;
    }
    // The container end never shows up in the host, the host end never in the container.
    host.with(|h| {
        assert!(h.link("eth0")?.is_none());
        let br = h.require_link("rcbr0")?;
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert!(br.up);
        assert_eq!(br.mtu, 1400);
        assert!(h.addresses("rcbr0")?.contains(&net("10.88.0.1/24")));
        for n in [&h1, &h2] {
            let l = h.require_link(n)?;
            assert_eq!(l.master, Some(br.index), "{n} not on the bridge");
            assert!(l.up);
            assert_eq!(l.kind.as_deref(), Some("veth"));
        }
        Ok(())
    })?;
    c1.with(|h| {
        assert!(h.link(&h1)?.is_none());
        let l = h.require_link("eth0")?;
        assert_eq!(l.mtu, 1400);
        assert!(l.up);
        assert!(h.require_link("lo")?.up);
        let routes = h.routes()?;
        assert!(
            routes
                .iter()
                .any(|r| r.destination.prefix_len() == 0 && r.gateway == Some(ip("10.88.0.1"))),
            "no default route: {routes:?}"
        );
        Ok(())
    })?;
    udp_exchange(&c1.ns, ip("10.88.0.2"), &c2.ns, ip("10.88.0.3"))?;
    udp_exchange(&c2.ns, ip("10.88.0.3"), &c1.ns, ip("10.88.0.2"))?;
    // The gateway (the bridge's address in the host) answers too.
    udp_exchange(&c1.ns, ip("10.88.0.2"), &host.ns, ip("10.88.0.1"))?;

    host.with(|h| {
        bridge::detach(h, "container-one")?;
        bridge::detach(h, "container-one")?;
        assert!(h.link(&h1)?.is_none());
        Ok(())
    })?;
    c1.with(|h| {
        assert!(h.link("eth0")?.is_none(), "container end survived detach");
        Ok(())
    })?;
    host.with(|h| {
        bridge::detach(h, "container-two")?;
        bridge::remove_bridge(h, "rcbr0")?;
        bridge::remove_bridge(h, "rcbr0")?;
        assert!(h.link("rcbr0")?.is_none());
        Ok(())
    })?;
    Ok(())
}

#[test]
fn macvlan_pair_on_veth_parent_talk() -> TestResult {
    let host = TestNs::new("mv-host")?;
    let c1 = TestNs::new("mv-c1")?;
    let c2 = TestNs::new("mv-c2")?;
    host.with(|h| {
        // A veth stands in for the NIC; its peer must be up for the parent to have carrier.
        h.add_link(&NewLink::new(
            "uplink0",
            LinkKind::Veth {
                peer: "uplink0p",
                peer_netns: None,
            },
        ))?;
        h.set_up("uplink0p", true)?;
        macvlan::setup(
            h,
            "uplink0",
            &c1.ns,
            "eth0",
            MacvlanMode::Bridge,
            Some(1400),
            None,
        )?;
        macvlan::setup(
            h,
            "uplink0",
            &c2.ns,
            "eth0",
            MacvlanMode::Bridge,
            None,
            None,
        )?;
        assert!(h.link("eth0")?.is_none());
        Ok(())
    })?;
    for (c, addr, addr6, mtu) in [
        (&c1, "10.89.0.2/24", "fd89::2/64", Some(1400)),
        (&c2, "10.89.0.3/24", "fd89::3/64", None),
    ] {
        iface::configure(
            &c.ns,
            &IfaceConfig {
                name: "eth0".into(),
                addresses: vec![net(addr), net(addr6)],
                gateways: vec![ip("10.89.0.1")],
                mtu,
                mac: None,
            },
        )?;
    }
    c1.with(|h| {
        let l = h.require_link("eth0")?;
        assert_eq!(l.kind.as_deref(), Some("macvlan"));
        assert_eq!(l.mtu, 1400);
        let addrs = h.addresses("eth0")?;
        assert!(
            addrs.contains(&net("10.89.0.2/24")) && addrs.contains(&net("fd89::2/64")),
            "{addrs:?}"
        );
        Ok(())
    })?;
    udp_exchange(&c1.ns, ip("10.89.0.2"), &c2.ns, ip("10.89.0.3"))?;
    udp_exchange(&c2.ns, ip("fd89::3"), &c1.ns, ip("fd89::2"))?;
    macvlan::teardown(&c1.ns, "eth0")?;
    macvlan::teardown(&c1.ns, "eth0")?;
    c1.with(|h| {
        assert!(h.link("eth0")?.is_none());
        Ok(())
    })?;
    Ok(())
}

#[test]
fn errors_name_the_operation_and_object() -> TestResult {
    let host = TestNs::new("err")?;
    let c = TestNs::new("err-c")?;
    host.with(|h| {
        let e = macvlan::setup(
            h,
            "nosuchparent",
            &c.ns,
            "eth0",
            MacvlanMode::Bridge,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("parent interface \"nosuchparent\" not found"),
            "{e}"
        );
        assert!(e.contains("create macvlan eth0 on nosuchparent"), "{e}");

        let e = h
            .add_link(&NewLink::new("a-name-that-is-too-long", LinkKind::Bridge))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"a-name-that-is-too-long\"") && e.contains("limit of 15"),
            "{e}"
        );
        for bad in ["", "a/b", "a b", "tab\tx"] {
            let e = rcrun_net::link::validate_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("interface name"), "{e}");
        }
        assert!(rcrun_net::link::validate_name("exactly15bytes_").is_ok());

        let e = h.set_up("ghost0", true).unwrap_err().to_string();
        assert_eq!(e, "interface \"ghost0\" not found");

        h.add_link(&NewLink::new("dup0", LinkKind::Bridge))?;
        h.add_address("dup0", net("10.0.0.2/24"))?;
        let e = h
            .add_address("dup0", net("10.0.0.2/24"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("add address 10.0.0.2/24 to dup0: File exists (os error 17)"),
            "{e}"
        );
        let e = h
            .add_link(&NewLink::new("dup0", LinkKind::Bridge))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("create bridge dup0: File exists"), "{e}");
        let e = bridge::ensure_bridge(h, "lo", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a bridge"), "{e}");
        Ok(())
    })?;
    Ok(())
}

#[test]
fn handle_is_bound_to_its_namespace() -> TestResult {
    let a = TestNs::new("bind-a")?;
    let b = TestNs::new("bind-b")?;
    // A handle opened in `a` keeps configuring `a` even when used from another thread.
    let mut h = a.ns.run(Handle::new)??;
    assert!(h.netns().same_as(&a.ns));
    h.add_link(&NewLink::new("onlyina", LinkKind::Bridge))?;
    b.with(|hb| {
        assert!(hb.link("onlyina")?.is_none());
        Ok(())
    })?;
    assert!(h.link("onlyina")?.is_some());
    Ok(())
}
