//! Device pools: claims, errors, persistence and 50 concurrent processes.
//!
//! The multi-process test re-executes this test binary with `RCRUN_NET_POOL_CHILD` set; the
//! `child_claim_one` entry point claims one device in that mode and does nothing otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};

use rcrun_net::config::{Network, Store};
use rcrun_net::pool::PoolError;

type R = Result<(), Box<dyn std::error::Error>>;

const CHILD: &str = "RCRUN_NET_POOL_CHILD";

fn device_store(n: usize) -> Result<(tempfile::TempDir, Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let devices: Vec<String> = (0..n).map(|i| format!("\"cbond{i}\"")).collect();
    let json = format!(
        r#"{{"name":"dev","mode":"device","subnet":"10.20.0.0/24","devices":[{}]}}"#,
        devices.join(",")
    );
    store.create(&Network::from_json(&json)?)?;
    Ok((dir, store))
}

#[test]
fn claims_are_exclusive_idempotent_and_persistent() -> R {
    let (_d, store) = device_store(3)?;
    let pool = store.pool();
    assert_eq!(pool.claim("dev", "c1", None)?, "cbond0");
    assert_eq!(pool.claim("dev", "c1", None)?, "cbond0", "idempotent");
    assert_eq!(pool.claim("dev", "c2", Some("cbond2"))?, "cbond2");
    let e = pool
        .claim("dev", "c3", Some("cbond2"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"dev\"") && e.contains("cbond2") && e.contains("\"c2\""),
        "{e}"
    );
    let e = pool
        .claim("dev", "c3", Some("eth9"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("eth9") && e.contains("not in the pool"), "{e}");
    let e = pool
        .claim("dev", "c1", Some("cbond1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cbond0") && e.contains("cbond1"), "{e}");
    assert_eq!(pool.claim("dev", "c3", None)?, "cbond1");
    match pool.claim("dev", "c4", None) {
        Err(e @ PoolError::Exhausted { .. }) => {
            let m = e.to_string();
            assert!(m.contains("\"dev\"") && m.contains("all 3 device"), "{m}");
        }
        other => panic!("expected exhaustion: {other:?}"),
    }
    assert_eq!(pool.release("dev", "c1")?, Some("cbond0".to_string()));
    assert_eq!(pool.release("dev", "c1")?, None);
    // Persistence: a new handle sees the claims.
    let again = Store::open(store.root())?;
    assert_eq!(again.pool().claim("dev", "c4", None)?, "cbond0");
    assert_eq!(again.pool().claims("dev")?.len(), 3);
    Ok(())
}

#[test]
fn non_device_networks_have_no_pool() -> R {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.create(&Network::from_json(
        r#"{"name":"br","mode":"bridge","subnet":"10.21.0.0/24"}"#,
    )?)?;
    let e = store
        .pool()
        .claim("br", "c1", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"br\"") && e.contains("device mode"), "{e}");
    let e = store
        .pool()
        .claim("missing", "c1", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
    Ok(())
}

/// Child mode: claim one device and print it.
#[test]
fn child_claim_one() -> R {
    let Ok(v) = std::env::var(CHILD) else {
        return Ok(());
    };
    let (root, owner) = v.split_once('|').ok_or("bad child env")?;
    let store = Store::open(root)?;
    println!("DEV={}", store.pool().claim("dev", owner, None)?);
    Ok(())
}

#[test]
fn fifty_processes_get_fifty_distinct_devices() -> R {
    let (_d, store) = device_store(60)?;
    let children: Vec<Child> = (0..50)
        .map(|i| {
            Command::new(std::env::current_exe()?)
                .args([
                    "--exact",
                    "child_claim_one",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, format!("{}|ctr{i}", store.root().display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut devs = HashSet::new();
    for c in children {
        let out = c.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("DEV="))
            .ok_or_else(|| format!("no DEV in {stdout:?}"))?;
        assert!(
            devs.insert(dev.to_string()),
            "device {dev} handed out twice"
        );
    }
    assert_eq!(devs.len(), 50);
    assert_eq!(store.pool().claims("dev")?.len(), 50);
    Ok(())
}
