//! IPAM: allocation rules, sticky names, persistence, and safety across processes.
//!
//! The multi-process tests re-execute this test binary with `RCRUN_NET_IPAM_CHILD` set; the
//! `child_*` entry points do one job in that mode and nothing otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcrun_net::config::{Network, Store};
use rcrun_net::ipam::{IpamError, Owner, Released};

type R = Result<(), Box<dyn std::error::Error>>;

const CHILD: &str = "RCRUN_NET_IPAM_CHILD";

fn store_with(json: &str) -> Result<(tempfile::TempDir, Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.create(&Network::from_json(json)?)?;
    Ok((dir, store))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allocates_sequentially_idempotently_and_reuses() -> R {
    let (_d, store) = store_with(r#"{"name":"n","mode":"bridge","subnet":"10.5.0.0/24"}"#)?;
    let ipam = store.ipam();
    let a = ipam.allocate("n", &Owner::container("c1"), None)?;
    assert_eq!(a.address.to_string(), "10.5.0.2/24");
    assert_eq!(a.gateway, ip("10.5.0.1"));
    assert_eq!(
        ipam.allocate("n", &Owner::container("c1"), None)?,
        a,
        "idempotent"
    );
    let b = ipam.allocate("n", &Owner::container("c2"), None)?;
    assert_eq!(b.address.addr(), ip("10.5.0.3"));
    assert_eq!(ipam.release("n", "c1")?, Released::Freed(ip("10.5.0.2")));
    assert_eq!(ipam.release("n", "c1")?, Released::Nothing);
    assert_eq!(
        ipam.allocate("n", &Owner::container("c3"), None)?
            .address
            .addr(),
        ip("10.5.0.2")
    );
    // Persistence: another handle (another process, after a reboot) sees the same table.
    let again = Store::open(store.root())?;
    assert_eq!(
        again.ipam().allocate("n", &Owner::container("c2"), None)?,
        b
    );
    assert_eq!(again.ipam().leases("n")?.len(), 2);
    Ok(())
}

#[test]
fn static_requests_are_checked() -> R {
    let (_d, store) = store_with(
        r#"{"name":"s","mode":"bridge","subnet":"10.6.0.0/24","range":{"start":"10.6.0.10","end":"10.6.0.20"}}"#,
    )?;
    let ipam = store.ipam();
    let got = ipam.allocate("s", &Owner::container("c1"), Some(ip("10.6.0.15")))?;
    assert_eq!(got.address.to_string(), "10.6.0.15/24");
    let cases: &[(&str, &[&str])] = &[
        ("10.7.0.5", &["\"s\"", "10.7.0.5", "outside subnet"]),
        ("10.6.0.1", &["10.6.0.1", "gateway"]),
        ("10.6.0.0", &["10.6.0.0", "network or broadcast"]),
        ("10.6.0.255", &["10.6.0.255", "network or broadcast"]),
        ("10.6.0.30", &["10.6.0.30", "outside range"]),
        ("fd00::5", &["fd00::5", "outside subnet"]),
        ("10.6.0.15", &["10.6.0.15", "taken", "\"c1\""]),
    ];
    for (addr, parts) in cases {
        let e = ipam
            .allocate("s", &Owner::container("c2"), Some(ip(addr)))
            .unwrap_err()
            .to_string();
        for p in *parts {
            assert!(e.contains(p), "request {addr}: error {e:?} lacks {p:?}");
        }
    }
    // The same owner asking for another address is told what it holds.
    let e = ipam
        .allocate("s", &Owner::container("c1"), Some(ip("10.6.0.16")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("10.6.0.15") && e.contains("10.6.0.16"), "{e}");
    // Dynamic allocation stays in the range and skips the static address.
    assert_eq!(
        ipam.allocate("s", &Owner::container("c3"), None)?
            .address
            .addr(),
        ip("10.6.0.10")
    );
    Ok(())
}

#[test]
fn exhaustion_names_network_and_range_size() -> R {
    let (_d, store) = store_with(
        r#"{"name":"tiny","mode":"bridge","subnet":"10.8.0.0/24","range":{"start":"10.8.0.1","end":"10.8.0.4"}}"#,
    )?;
    let ipam = store.ipam();
    // .1 is the gateway: three addresses to hand out.
    for i in 0..3 {
        ipam.allocate("tiny", &Owner::container(format!("c{i}")), None)?;
    }
    match ipam.allocate("tiny", &Owner::container("c9"), None) {
        Err(e @ IpamError::Exhausted { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("\"tiny\"") && m.contains("exhausted") && m.contains("4 address"),
                "{m}"
            );
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    Ok(())
}

#[test]
fn named_owners_are_sticky() -> R {
    let (_d, store) = store_with(r#"{"name":"st","mode":"bridge","subnet":"10.9.0.0/24"}"#)?;
    let ipam = store.ipam();
    ipam.allocate("st", &Owner::container("filler"), None)?;
    let web = ipam.allocate("st", &Owner::named("ctr-1", "web"), None)?;
    assert_eq!(web.address.addr(), ip("10.9.0.3"));
    assert_eq!(
        ipam.release("st", "ctr-1")?,
        Released::Kept {
            address: ip("10.9.0.3"),
            name: "web".into()
        }
    );
    // The reservation is not handed to anyone else, and survives a new store handle (reboot).
    assert_eq!(
        ipam.allocate("st", &Owner::container("other"), None)?
            .address
            .addr(),
        ip("10.9.0.4")
    );
    let rebooted = Store::open(store.root())?;
    let again = rebooted
        .ipam()
        .allocate("st", &Owner::named("ctr-2", "web"), None)?;
    assert_eq!(again, web, "same name, same address after restart");
    let e = rebooted
        .ipam()
        .allocate("st", &Owner::named("ctr-3", "web"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("web") && e.contains("ctr-2") && e.contains("10.9.0.3"),
        "{e}"
    );
    let e = rebooted.ipam().forget("st", "web").unwrap_err().to_string();
    assert!(e.contains("ctr-2"), "{e}");
    rebooted.ipam().release("st", "ctr-2")?;
    assert_eq!(rebooted.ipam().forget("st", "web")?, Some(ip("10.9.0.3")));
    assert_eq!(
        rebooted
            .ipam()
            .allocate("st", &Owner::container("new"), None)?
            .address
            .addr(),
        ip("10.9.0.3")
    );
    Ok(())
}

#[test]
fn ipv6_without_bitmaps() -> R {
    let (_d, store) = store_with(r#"{"name":"v6","mode":"bridge","subnet":"fd00:abcd::/64"}"#)?;
    let ipam = store.ipam();
    let a = ipam.allocate("v6", &Owner::container("a"), None)?;
    assert_eq!(a.address.to_string(), "fd00:abcd::2/64");
    assert_eq!(a.gateway, ip("fd00:abcd::1"));
    let s = ipam.allocate(
        "v6",
        &Owner::container("s"),
        Some(ip("fd00:abcd::ffff:ffff:ffff:fffe")),
    )?;
    assert_eq!(s.address.prefix_len(), 64);
    // A /64 is 2^64 addresses: allocation cost follows the lease count, not the range size.
    let start = std::time::Instant::now();
    let mut seen = HashSet::new();
    for i in 0..200 {
        assert!(seen.insert(
            ipam.allocate("v6", &Owner::container(format!("c{i}")), None)?
                .address
                .addr()
        ));
    }
    assert!(start.elapsed() < Duration::from_secs(30));
    let e = ipam
        .allocate("v6", &Owner::container("x"), Some(ip("fd00:abce::1")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fd00:abce::1") && e.contains("outside subnet"),
        "{e}"
    );
    Ok(())
}

// ---- multi-process ----

fn spawn_child(entry: &str, root: &std::path::Path, owner: &str) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--exact", entry, "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{}|{owner}", root.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn child_args() -> Option<(Store, String)> {
    let v = std::env::var(CHILD).ok()?;
    let (root, owner) = v.split_once('|')?;
    Some((Store::open(root).ok()?, owner.to_string()))
}

/// Child mode: allocate one address and print it.
#[test]
fn child_allocate_one() -> R {
    let Some((store, owner)) = child_args() else {
        return Ok(());
    };
    let a = store
        .ipam()
        .allocate("par", &Owner::container(owner), None)?;
    println!("ADDR={}", a.address.addr());
    Ok(())
}

/// Child mode: allocate and release in a loop until killed.
#[test]
fn child_allocate_forever() -> R {
    let Some((store, owner)) = child_args() else {
        return Ok(());
    };
    for i in 0u64.. {
        let o = format!("{owner}-{i}");
        store.ipam().allocate("par", &Owner::container(&o), None)?;
        if i % 3 == 0 {
            store.ipam().release("par", &o)?;
        }
    }
    Ok(())
}

#[test]
fn fifty_processes_get_fifty_distinct_addresses() -> R {
    let (_d, store) = store_with(r#"{"name":"par","mode":"bridge","subnet":"10.10.0.0/24"}"#)?;
    let children: Vec<Child> = (0..50)
        .map(|i| spawn_child("child_allocate_one", store.root(), &format!("ctr{i}")))
        .collect::<Result<_, _>>()?;
    let mut addrs = HashSet::new();
    for c in children {
        let out = c.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ADDR="))
            .ok_or_else(|| format!("no ADDR line in {stdout:?}"))?;
        assert!(addrs.insert(addr.to_string()), "duplicate address {addr}");
    }
    assert_eq!(addrs.len(), 50);
    let leases = store.ipam().leases("par")?;
    assert_eq!(leases.len(), 50);
    Ok(())
}

#[test]
fn killed_writers_never_corrupt_or_duplicate() -> R {
    let (_d, store) = store_with(r#"{"name":"par","mode":"bridge","subnet":"10.11.0.0/16"}"#)?;
    for round in 0..6u64 {
        let mut children: Vec<Child> = (0..6)
            .map(|i| {
                spawn_child(
                    "child_allocate_forever",
                    store.root(),
                    &format!("r{round}k{i}"),
                )
            })
            .collect::<Result<_, _>>()?;
        // Kill at staggered times so some die inside a write.
        for (i, c) in children.iter_mut().enumerate() {
            std::thread::sleep(Duration::from_millis(40 + 13 * i as u64 + 7 * round));
            c.kill()?;
        }
        for mut c in children {
            c.wait()?;
        }
        let leases = store.ipam().leases("par")?;
        let mut seen = HashSet::new();
        for l in &leases {
            assert!(
                seen.insert(l.address),
                "duplicate address {} after kills",
                l.address
            );
        }
    }
    assert!(
        !store.ipam().leases("par")?.is_empty(),
        "the children did allocate"
    );
    let torn = std::fs::read_dir(store.root().join("ipam"))?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(".tmp."))
        })
        .count();
    eprintln!("temp files left by writers killed mid-write: {torn}");
    // Leftover temp files of killed writers do not disturb later allocations.
    let a = store
        .ipam()
        .allocate("par", &Owner::container("after"), None)?;
    assert!(!store
        .ipam()
        .leases("par")?
        .iter()
        .any(|l| l.address == a.address.addr() && l.container.as_deref() != Some("after")));
    Ok(())
}

#[test]
fn corrupt_table_gives_clear_error_not_duplicates() -> R {
    let (d, store) = store_with(r#"{"name":"cor","mode":"bridge","subnet":"10.12.0.0/24"}"#)?;
    store
        .ipam()
        .allocate("cor", &Owner::container("c1"), None)?;
    let path = d.path().join("ipam/cor.json");
    let text = std::fs::read(&path)?;
    // A torn write (what a non-atomic writer would leave): half of the file.
    std::fs::write(&path, &text[..text.len() / 2])?;
    let e = store
        .ipam()
        .allocate("cor", &Owner::container("c2"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt") && e.contains("cor.json"), "{e}");
    assert_eq!(
        std::fs::read(&path)?,
        &text[..text.len() / 2],
        "the corrupt file is left for inspection"
    );
    Ok(())
}
