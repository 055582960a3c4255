//! tc over netlink: a tbf egress limit visible in a qdisc dump and actually limiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{tcp_throughput, TestNs, TestResult};
use ipnet::IpNet;
use rcrun_net::link::{LinkKind, NewLink};
use rcrun_net::qos::{self, EgressLimit, Rate};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn rates_parse_like_tc() {
    assert_eq!("100mbit".parse::<Rate>().unwrap(), Rate(100_000_000));
    assert_eq!("1gbit".parse::<Rate>().unwrap(), Rate(1_000_000_000));
    assert_eq!("500kbit".parse::<Rate>().unwrap(), Rate(500_000));
    assert_eq!("1.5mbit".parse::<Rate>().unwrap(), Rate(1_500_000));
    assert_eq!("10mbps".parse::<Rate>().unwrap(), Rate(80_000_000));
    assert_eq!("1Mibit".parse::<Rate>().unwrap(), Rate(1_048_576));
    for (bad, why) in [
        ("100", "missing unit"),
        ("mbit", "missing number"),
        ("10mbt", "unknown unit \"mbt\""),
        ("1.2.3kbit", "is not a number"),
        ("0bit", "at least"),
    ] {
        let e = bad.parse::<Rate>().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("rate {bad:?}: ")) && e.contains(why),
            "{e}"
        );
    }
}

#[test]
fn tbf_limits_egress() -> TestResult {
    let host = TestNs::new("qos-host")?;
    let ct = TestNs::new("qos-ct")?;
    host.with(|h| {
        h.add_link(&NewLink::new(
            "qv0",
            LinkKind::Veth {
                peer: "qv0c",
                peer_netns: Some(&ct.ns),
            },
        ))?;
        h.add_address("qv0", net("10.97.0.1/24"))?;
        h.set_up("qv0", true)?;
        Ok(())
    })?;
    ct.with(|h| {
        h.add_address("qv0c", net("10.97.0.2/24"))?;
        h.set_up("qv0c", true)?;
        h.set_up("lo", true)?;
        Ok(())
    })?;
    let to = "10.97.0.2".parse()?;
    let unlimited = tcp_throughput(&host.ns, &ct.ns, to, 0.5)?;
    host.with(|h| {
        qos::set_egress(h, "qv0", &EgressLimit::new("10mbit".parse()?))?;
        // Replacing works too.
        qos::set_egress(h, "qv0", &EgressLimit::new("10mbit".parse()?))?;
        let q = qos::qdiscs(h, "qv0")?;
        assert!(
            q.iter()
                .any(|q| q.kind == "tbf" && q.parent == (0xffff, 0xffff)),
            "no tbf root qdisc in {q:?}"
        );
        Ok(())
    })?;
    let limited = tcp_throughput(&host.ns, &ct.ns, to, 1.0)?;
    println!(
        "unlimited {:.1} Mbit/s, limited to 10mbit: {:.1} Mbit/s",
        unlimited / 1e6,
        limited / 1e6
    );
    assert!(limited > 1e6, "almost nothing got through: {limited} bit/s");
    assert!(limited < 30e6, "10mbit limit let {limited} bit/s through");
    host.with(|h| {
        qos::clear(h, "qv0")?;
        qos::clear(h, "qv0")?;
        let q = qos::qdiscs(h, "qv0")?;
        assert!(!q.iter().any(|q| q.kind == "tbf"), "tbf left: {q:?}");
        Ok(())
    })?;
    Ok(())
}

#[test]
fn qos_errors_name_the_interface() -> TestResult {
    let host = TestNs::new("qos-err")?;
    host.with(|h| {
        let e = qos::set_egress(h, "nope0", &EgressLimit::new(Rate(1_000_000)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "egress limit on \"nope0\": interface \"nope0\" not found"
        );
        Ok(())
    })
}
