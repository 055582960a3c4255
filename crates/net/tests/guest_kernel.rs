//! Tests that need kernel features the development host lacks (bonding, dummy, 8021q,
//! ipvlan, act_police/cls_matchall). Run them in the guest:
//!
//! ```sh
//! CARGO_TARGET_DIR=... cargo test -p rcrun-net --no-run   # prints the guest_kernel-HASH path
//! guest/run --profile net --modules sch_ingress,cls_matchall,act_police \
//!     -- $TARGET/debug/deps/guest_kernel-HASH --test-threads 1
//! ```
//!
//! Each test checks its feature first: where it is missing the test fails with a
//! message saying so, unless RCRUN_NET_HOST_ONLY=1 (then it prints "skipped: needs X").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{skip_or_fail, udp_exchange, AnyErr, TestNs, TestResult};
use ipnet::IpNet;
use rcrun_net::bond::{self, BondError, BondMode};
use rcrun_net::device::{self, ContainerSide};
use rcrun_net::iface::{self, IfaceConfig};
use rcrun_net::ipvlan;
use rcrun_net::link::{IpvlanMode, LinkKind, NewLink};
use rcrun_net::netlink::Handle;
use rcrun_net::qos::{self, QosError};
use rcrun_net::vlan;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Creates dummy links; Ok(false) when the kernel has no dummy driver.
fn dummies(h: &mut Handle, names: &[&str]) -> Result<bool, AnyErr> {
    for n in names {
        match h.add_link(&NewLink::new(n, LinkKind::Dummy)) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

macro_rules! need_dummy {
    ($h:expr, $names:expr) => {
        if !dummies($h, $names)? {
            return Ok(Some("the dummy driver (modprobe dummy)"));
        }
    };
}

/// Runs a test body that returns Some(feature) when the kernel lacks it.
fn feature_test(f: impl FnOnce() -> Result<Option<&'static str>, AnyErr>) -> TestResult {
    match f()? {
        None => Ok(()),
        Some(feature) => skip_or_fail(feature, &"the kernel refused it"),
    }
}

#[test]
fn bond_of_two_dummy_vfs() -> TestResult {
    feature_test(|| {
        let host = TestNs::new("g-bond")?;
        let ct = TestNs::new("g-bond-ct")?;
        let r = host.with(|h| {
            need_dummy!(h, &["vfa", "vfb"]);
            for n in ["vfa", "vfb"] {
                h.set_up(n, true)?;
            }
            let name = match bond::create(h, &["vfa", "vfb"], BondMode::ActiveBackup) {
                Err(BondError::Unavailable) => return Ok(Some("bonding (modprobe bonding)")),
                r => r?,
            };
            assert_eq!(name, "cbond0");
            let b = h.require_link(&name)?;
            assert_eq!(b.kind.as_deref(), Some("bond"));
            assert!(b.up);
            let mut m = bond::members(h, &name)?;
            m.sort();
            assert_eq!(m, vec!["vfa".to_string(), "vfb".to_string()]);
            // A second bond gets the next name; 802.3ad and balance-rr are accepted.
            h.add_link(&NewLink::new("vfc", LinkKind::Dummy))?;
            let second = bond::create(h, &["vfc"], "802.3ad".parse()?)?;
            assert_eq!(second, "cbond1");
            bond::destroy(h, &second)?;
            bond::destroy(h, &second)?;
            assert!(h.link("cbond1")?.is_none());
            assert_eq!(h.require_link("vfc")?.master, None);
            Ok(None)
        })?;
        if r.is_some() {
            return Ok(r);
        }
        // Bonds cannot change namespace (NETIF_F_NETNS_LOCAL): the VFs move into the
        // container and the bond is made there.
        let records = host.with(|h| {
            let mut out = Vec::new();
            for (vf, inner) in [("vfa", "net0"), ("vfb", "net1")] {
                let r = device::capture(
                    h,
                    vf,
                    &ct.path,
                    ContainerSide {
                        name: inner.into(),
                        mtu: Some(1400),
                        mac: None,
                        vlan: None,
                    },
                )?;
                device::move_in(h, &r)?;
                out.push(r);
            }
            // Moving the bond itself is refused with a clear message.
            let e = device::capture(
                h,
                "cbond0",
                &ct.path,
                ContainerSide {
                    name: "eth0".into(),
                    ..Default::default()
                },
            )
            .and_then(|r| device::move_in(h, &r))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("does not let it change network namespace"),
                "{e}"
            );
            bond::destroy(h, "cbond0")?;
            Ok(out)
        })?;
        ct.with(|h| {
            let name = bond::create(h, &["net0", "net1"], BondMode::ActiveBackup)?;
            assert_eq!(name, "cbond0");
            let b = h.require_link(&name)?;
            assert_eq!(b.kind.as_deref(), Some("bond"));
            let mut m = bond::members(h, &name)?;
            m.sort();
            assert_eq!(m, vec!["net0".to_string(), "net1".to_string()]);
            Ok(())
        })?;
        iface::configure(
            &ct.ns,
            &IfaceConfig {
                name: "cbond0".into(),
                addresses: vec![net("192.168.50.2/24")],
                gateways: vec![ip("192.168.50.1")],
                mtu: None,
                mac: None,
            },
        )?;
        // Restore without tearing the bond down first: members are released on the way.
        host.with(|h| {
            for r in &records {
                device::restore(h, r)?;
                device::restore(h, r)?;
                let l = h.require_link(&r.host_name)?;
                assert_eq!(l.master, None);
                assert_eq!(l.mtu, r.mtu);
                assert_eq!(l.mac, r.mac);
                assert!(l.up);
            }
            Ok(())
        })?;
        ct.with(|h| {
            bond::destroy(h, "cbond0")?;
            assert!(h.link("cbond0")?.is_none());
            Ok(None)
        })
    })
}

#[test]
fn bond_unavailable_error_is_clear() {
    let e = BondError::Unavailable.to_string();
    assert_eq!(
        e,
        "bonding is not available in this kernel (modprobe bonding)"
    );
}

#[test]
fn vlan_on_dummy_parent() -> TestResult {
    feature_test(|| {
        let host = TestNs::new("g-vlan")?;
        host.with(|h| {
            need_dummy!(h, &["uplink1", "averylongparent"]);
            let name = match vlan::ensure(h, "uplink1", 100, None) {
                Err(e) if e.to_string().contains("Operation not supported") => {
                    return Ok(Some("802.1Q VLANs (modprobe 8021q)"))
                }
                r => r?,
            };
            assert_eq!(name, "uplink1.100");
            // Idempotent.
            assert_eq!(vlan::ensure(h, "uplink1", 100, None)?, name);
            let l = h.require_link(&name)?;
            assert_eq!(l.kind.as_deref(), Some("vlan"));
            assert_eq!(l.vlan_id, Some(100));
            assert_eq!(l.parent, Some(h.require_link("uplink1")?.index));
            assert!(l.up && h.require_link("uplink1")?.up);
            // "averylongparent.4000" is 20 bytes: a short stable name is derived.
            let long = vlan::ensure(h, "averylongparent", 4000, Some(1400))?;
            assert!(long.len() <= 15 && long.ends_with(".4000"), "{long}");
            assert_eq!(vlan::ensure(h, "averylongparent", 4000, Some(1400))?, long);
            assert_eq!(h.require_link(&long)?.mtu, 1400);
            // A name taken by something else is reported, not reused.
            h.add_link(&NewLink::new("uplink1.200", LinkKind::Dummy))?;
            let e = vlan::ensure(h, "uplink1", 200, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("exists but is not that VLAN"), "{e}");
            let e = vlan::ensure(h, "uplink1", 4095, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("1..=4094"), "{e}");
            vlan::remove(h, "uplink1", 100)?;
            vlan::remove(h, "uplink1", 100)?;
            assert!(h.link(&name)?.is_none());
            Ok(None)
        })
    })
}

#[test]
fn ipvlan_l2_and_l3_containers_talk() -> TestResult {
    feature_test(|| {
        let host = TestNs::new("g-ipvl")?;
        let c1 = TestNs::new("g-ipvl-c1")?;
        let c2 = TestNs::new("g-ipvl-c2")?;
        let c3 = TestNs::new("g-ipvl-c3")?;
        let missing = host.with(|h| {
            need_dummy!(h, &["ipvparent", "ipvparent3"]);
            match ipvlan::setup(h, "ipvparent", &c1.ns, "eth0", IpvlanMode::L2, None) {
                Err(e) if e.to_string().contains("Operation not supported") => {
                    return Ok(Some("ipvlan (modprobe ipvlan)"))
                }
                r => r?,
            }
            ipvlan::setup(h, "ipvparent", &c2.ns, "eth0", IpvlanMode::L2, Some(1400))?;
            ipvlan::setup(h, "ipvparent3", &c3.ns, "eth0", IpvlanMode::L3, None)?;
            Ok(None)
        })?;
        if missing.is_some() {
            return Ok(missing);
        }
        for (c, a) in [
            (&c1, "10.77.0.2/24"),
            (&c2, "10.77.0.3/24"),
            (&c3, "10.78.0.2/24"),
        ] {
            iface::configure(
                &c.ns,
                &IfaceConfig {
                    name: "eth0".into(),
                    addresses: vec![net(a)],
                    gateways: vec![],
                    mtu: None,
                    mac: None,
                },
            )?;
        }
        c2.with(|h| {
            let l = h.require_link("eth0")?;
            assert_eq!(l.kind.as_deref(), Some("ipvlan"));
            assert_eq!(l.mtu, 1400);
            Ok(())
        })?;
        udp_exchange(&c1.ns, ip("10.77.0.2"), &c2.ns, ip("10.77.0.3"))?;
        ipvlan::teardown(&c3.ns, "eth0")?;
        ipvlan::teardown(&c3.ns, "eth0")?;
        c3.with(|h| {
            assert!(h.link("eth0")?.is_none());
            Ok(())
        })?;
        Ok(None)
    })
}

#[test]
fn dummy_moved_in_with_vlan_and_restored() -> TestResult {
    feature_test(|| {
        let host = TestNs::new("g-dev")?;
        let ct = TestNs::new("g-dev-ct")?;
        let record = host.with(|h| {
            if !dummies(h, &["vf9"])? {
                return Ok(None);
            }
            h.set_mtu("vf9", 1450)?;
            h.add_address("vf9", net("192.168.9.1/24"))?;
            h.set_up("vf9", true)?;
            Ok(Some(device::capture(
                h,
                "vf9",
                &ct.path,
                ContainerSide {
                    name: "eth0".into(),
                    mtu: Some(1400),
                    mac: Some("02:00:00:00:09:09".parse()?),
                    vlan: Some(100),
                },
            )?))
        })?;
        let Some(record) = record else {
            return Ok(Some("the dummy driver (modprobe dummy)"));
        };
        let ifname = match host.with(|h| Ok(device::move_in(h, &record)?)) {
            Err(e) if e.to_string().contains("Operation not supported") => {
                return Ok(Some("802.1Q VLANs (modprobe 8021q)"))
            }
            r => r?,
        };
        assert_eq!(ifname, "eth0.100");
        iface::configure(
            &ct.ns,
            &IfaceConfig {
                name: ifname.clone(),
                addresses: vec![net("10.100.0.2/24")],
                gateways: vec![ip("10.100.0.1")],
                mtu: None,
                mac: None,
            },
        )?;
        ct.with(|h| {
            let l = h.require_link("eth0")?;
            assert_eq!(l.kind.as_deref(), Some("dummy"));
            assert_eq!(l.mtu, 1400);
            let v = h.require_link("eth0.100")?;
            assert_eq!(v.vlan_id, Some(100));
            assert!(h.addresses("eth0.100")?.contains(&net("10.100.0.2/24")));
            Ok(())
        })?;
        host.with(|h| {
            assert!(h.link("vf9")?.is_none());
            device::restore(h, &record)?;
            device::restore(h, &record)?;
            let l = h.require_link("vf9")?;
            assert_eq!(l.mtu, 1450);
            assert_eq!(l.mac, record.mac);
            assert!(l.up);
            assert!(h.addresses("vf9")?.contains(&net("192.168.9.1/24")));
            Ok(())
        })?;
        ct.with(|h| {
            assert!(h.link("eth0")?.is_none() && h.link("eth0.100")?.is_none());
            Ok(())
        })?;
        Ok(None)
    })
}

#[test]
fn ingress_police_installed_and_cleared() -> TestResult {
    feature_test(|| {
        let host = TestNs::new("g-police")?;
        let ct = TestNs::new("g-police-ct")?;
        host.with(|h| {
            h.add_link(&NewLink::new(
                "pv0",
                LinkKind::Veth {
                    peer: "pv0c",
                    peer_netns: Some(&ct.ns),
                },
            ))?;
            h.add_address("pv0", net("10.96.0.1/24"))?;
            h.set_up("pv0", true)?;
            Ok(())
        })?;
        ct.with(|h| {
            h.add_address("pv0c", net("10.96.0.2/24"))?;
            h.set_up("pv0c", true)?;
            Ok(())
        })?;
        let missing = ct.with(|h| {
            match qos::set_ingress(h, "pv0c", "10mbit".parse()?, None) {
                Err(QosError::Unsupported { feature, .. }) => return Ok(Some(feature)),
                r => r?,
            }
            // Replacing works.
            qos::set_ingress(h, "pv0c", "10mbit".parse()?, Some(32 * 1024))?;
            let q = qos::qdiscs(h, "pv0c")?;
            assert!(
                q.iter().any(|q| q.kind == "ingress"),
                "no ingress qdisc in {q:?}"
            );
            Ok(None)
        })?;
        if missing.is_some() {
            return Ok(missing);
        }
        let rate = common::tcp_throughput(&host.ns, &ct.ns, ip("10.96.0.2"), 1.0)?;
        println!("policed to 10mbit at ingress: {:.1} Mbit/s", rate / 1e6);
        assert!(
            rate < 30e6,
            "ingress police at 10mbit let {rate} bit/s through"
        );
        ct.with(|h| {
            qos::clear(h, "pv0c")?;
            let q = qos::qdiscs(h, "pv0c")?;
            assert!(
                !q.iter().any(|q| q.kind == "ingress"),
                "ingress left: {q:?}"
            );
            Ok(None)
        })
    })
}
