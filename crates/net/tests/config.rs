//! Network definitions: validation messages and the on-disk store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_net::config::{ConfigError, Mode, Network, Store};
use rcrun_net::ipam::Owner;

type R = Result<(), Box<dyn std::error::Error>>;

fn bridge_net(name: &str, subnet: &str) -> Network {
    Network::from_json(&format!(
        r#"{{"name":"{name}","mode":"bridge","subnet":"{subnet}"}}"#
    ))
    .unwrap()
}

fn err_of(json: &str) -> String {
    match Network::from_json(json) {
        Ok(n) => panic!("accepted {n:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(json: &str, parts: &[&str]) {
    let msg = err_of(json);
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} lacks {p:?}");
    }
}

#[test]
fn full_definition_roundtrips() -> R {
    let json = r#"{
        "name": "fast-net_1.x", "mode": "macvlan", "parent": "eth0", "macvlanMode": "vepa", "vlan": 42,
        "subnet": "192.168.50.0/24", "gateway": "192.168.50.254",
        "range": {"start": "192.168.50.100", "end": "192.168.50.199"}, "mtu": 9000,
        "qos": {"egress": "100mbit", "ingress": "1gbit"},
        "dns": {"nameservers": ["1.1.1.1"], "search": ["example.com"], "options": ["ndots:2"]}
    }"#;
    let n = Network::from_json(json)?;
    assert_eq!(n.mode, Mode::Macvlan);
    assert_eq!(n.vlan, Some(42));
    assert_eq!(
        n.qos.as_ref().and_then(|q| q.egress_bps()),
        Some(100_000_000)
    );
    let again = Network::from_json(&serde_json::to_string(&n)?)?;
    assert_eq!(n, again);
    let text = serde_json::to_string(&n)?;
    assert!(
        text.contains("\"macvlanMode\":\"vepa\""),
        "camelCase output: {text}"
    );
    Ok(())
}

#[test]
fn device_mode_with_bond() -> R {
    let n = Network::from_json(
        r#"{"name":"vf","mode":"device","subnet":"10.9.0.0/24","devices":["cbond0"],
            "bond":{"mode":"active-backup","pairs":[{"name":"cbond1","members":["eth1v0","eth2v0"]}]}}"#,
    )?;
    assert_eq!(
        n.device_pool(),
        vec!["cbond0".to_string(), "cbond1".to_string()]
    );
    assert_err(
        r#"{"name":"vf","mode":"device","subnet":"10.9.0.0/24",
            "bond":{"mode":"fastest","pairs":[{"name":"b0","members":["a","b"]}]}}"#,
        &["\"vf\"", "bond.mode", "fastest"],
    );
    assert_err(
        r#"{"name":"vf","mode":"device","subnet":"10.9.0.0/24",
            "bond":{"mode":"802.3ad","pairs":[{"name":"b0","members":["a","b"]},{"name":"b1","members":["b","c"]}]}}"#,
        &["bond.pairs.members", "\"b\"", "twice"],
    );
    assert_err(
        r#"{"name":"vf","mode":"device","subnet":"10.9.0.0/24"}"#,
        &["\"vf\"", "devices", "at least one"],
    );
    assert_err(
        r#"{"name":"vf","mode":"device","subnet":"10.9.0.0/24","devices":["a","a"]}"#,
        &["devices", "twice"],
    );
    Ok(())
}

#[test]
fn validation_errors_name_network_field_and_value() {
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","colour":"blue"}"#,
        &["\"a\"", "unknown field", "colour"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/33"}"#,
        &["\"a\"", "subnet", "10.0.0.0/33", "33"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.300/24"}"#,
        &["\"a\"", "subnet", "10.0.0.300/24"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.1/24"}"#,
        &["subnet", "host bits", "10.0.0.0/24"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/32"}"#,
        &["subnet", "no usable host"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","gateway":"10.0.1.1"}"#,
        &["\"a\"", "gateway", "10.0.1.1", "outside subnet 10.0.0.0/24"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","gateway":"10.0.0.255"}"#,
        &["gateway", "10.0.0.255", "broadcast"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","gateway":"fd00::1"}"#,
        &["gateway", "fd00::1"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","range":{"start":"10.0.0.50","end":"10.0.0.10"}}"#,
        &["range", "start is after end"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","range":{"start":"10.0.0.5","end":"10.0.1.10"}}"#,
        &["range.end", "10.0.1.10"],
    );
    assert_err(
        r#"{"name":"bad/name","mode":"bridge","subnet":"10.0.0.0/24"}"#,
        &["name", "bad/name"],
    );
    assert_err(
        r#"{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mode":"bridge","subnet":"10.0.0.0/24"}"#,
        &["name", "1 to 32"],
    );
    assert_err(
        r#"{"name":"a","mode":"tunnel","subnet":"10.0.0.0/24"}"#,
        &["\"a\"", "mode", "tunnel"],
    );
    assert_err(
        r#"{"name":"a","mode":"macvlan","subnet":"10.0.0.0/24"}"#,
        &["parent", "required"],
    );
    assert_err(
        r#"{"name":"a","mode":"macvlan","parent":"eth0","macvlanMode":"open","subnet":"10.0.0.0/24"}"#,
        &["macvlanMode", "open"],
    );
    assert_err(
        r#"{"name":"a","mode":"macvlan","parent":"eth0","vlan":4095,"subnet":"10.0.0.0/24"}"#,
        &["\"a\"", "vlan", "4095"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","mtu":67}"#,
        &["mtu", "67"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"fd00::/64","mtu":1000}"#,
        &["mtu", "1000", "1280"],
    );
    assert_err(
        r#"{"name":"a","mode":"macvlan","parent":"eth0","nat":true,"subnet":"10.0.0.0/24"}"#,
        &["nat", "bridge mode"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","bridge":"averyveryverylongbridge","subnet":"10.0.0.0/24"}"#,
        &["bridge", "averyveryverylongbridge", "15 bytes"],
    );
    assert_err(
        r#"{"name":"a","mode":"bridge","subnet":"10.0.0.0/24","qos":{"egress":"fast"}}"#,
        &["qos.egress", "fast"],
    );
}

#[test]
fn store_create_load_list_remove() -> R {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let a = store.create(&bridge_net("a", "10.1.0.0/24"))?;
    assert_eq!(a.bridge.as_deref(), Some("rcrun0"), "default bridge name");
    assert_eq!(
        a.gateway,
        Some("10.1.0.1".parse()?),
        "default gateway stored"
    );
    let b = store.create(&bridge_net("b", "fd00:1::/64"))?;
    assert_eq!(b.bridge.as_deref(), Some("rcrun1"));
    assert_eq!(b.gateway, Some("fd00:1::1".parse()?));

    // Persistence: a fresh handle on the same directory sees both.
    let again = Store::open(dir.path())?;
    assert_eq!(again.load("a")?, a);
    let names: Vec<String> = again.list()?.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "b"]);

    match store.create(&bridge_net("a", "10.2.0.0/24")) {
        Err(ConfigError::Exists(n)) => assert_eq!(n, "a"),
        other => panic!("duplicate accepted: {other:?}"),
    }
    let e = store
        .create(&bridge_net("c", "10.1.0.128/25"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"c\"")
            && e.contains("10.1.0.128/25")
            && e.contains("\"a\"")
            && e.contains("10.1.0.0/24"),
        "{e}"
    );
    let e = store
        .create(&bridge_net("d", "10.0.0.0/8"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("overlaps") && e.contains("\"a\""), "{e}");
    let mut same_bridge = bridge_net("e", "10.3.0.0/24");
    same_bridge.bridge = Some("rcrun0".into());
    let e = store.create(&same_bridge).unwrap_err().to_string();
    assert!(e.contains("rcrun0") && e.contains("\"a\""), "{e}");

    match store.load("nope") {
        Err(ConfigError::NotFound(n)) => assert_eq!(n, "nope"),
        other => panic!("{other:?}"),
    }

    // Remove is refused while a container holds an address, allowed after release or forced.
    store.ipam().allocate("a", &Owner::container("c1"), None)?;
    let e = store.remove("a", false).unwrap_err().to_string();
    assert!(e.contains("\"a\"") && e.contains("c1"), "{e}");
    store.ipam().release("a", "c1")?;
    store.remove("a", false)?;
    store.ipam().allocate("b", &Owner::container("c2"), None)?;
    store.remove("b", true)?;
    assert!(store.list()?.is_empty());
    assert!(
        !dir.path().join("ipam/b.json").exists(),
        "IPAM state removed with the network"
    );
    // The name and subnet are free again.
    store.create(&bridge_net("a", "10.1.0.0/24"))?;
    Ok(())
}

#[test]
fn stored_file_with_unknown_field_is_reported() -> R {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.create(&bridge_net("a", "10.1.0.0/24"))?;
    std::fs::write(
        dir.path().join("networks/a.json"),
        r#"{"name":"a","mode":"bridge","subnet":"10.1.0.0/24","bridg":"x"}"#,
    )?;
    let e = store.load("a").unwrap_err().to_string();
    assert!(e.contains("\"a\"") && e.contains("bridg"), "{e}");
    Ok(())
}
