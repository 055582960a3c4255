//! A process killed with SIGKILL in the middle of unpacking a layer leaves a layer directory
//! without its committed marker (and no image record); the next import removes it, unpacks
//! the layer again completely, and leaves no stray `l/` link.
//!
//! The child is this test binary re-executed with `CHILD_ENV` set: it runs the import and, half
//! way through the big layer, signals the parent (a marker file) and blocks, so the kill lands
//! mid-layer every time rather than by timing luck.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::import::{import, LayerState};
use rcrun_storage_overlay2::store::{Digest, Store};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use store_support::*;

const CHILD_ENV: &str = "RCRUN_STORE_TEST_IMPORT_CHILD";
const BIG: usize = 8 << 20;

/// The child side; a no-op in a normal test run.
#[test]
fn child_import_until_killed() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = args.split('\n');
    let (root, layout, marker) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let store = Store::open(root).unwrap();
    let mut signalled = false;
    let res = import(&store, Path::new(layout), &import_opts(None), &mut |p| {
        if p.layer == 1
            && p.state == LayerState::Applying
            && p.bytes_done > p.bytes_total / 2
            && !signalled
        {
            signalled = true;
            fs::write(marker, format!("{}/{}", p.bytes_done, p.bytes_total)).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    });
    panic!("the child import should have been killed, it returned {res:?}");
}

fn big_image() -> TestImage {
    let l0 = TestLayer::new(&[file("small", "small")], Comp::Gzip);
    let l1 = TestLayer::new(
        &[
            E::Dir("big".into()),
            file("big/a", noise(BIG, 21)),
            file("big/b", noise(BIG, 22)),
        ],
        Comp::None,
    );
    image(vec![l0, l1], json!({"Cmd": ["x"]}))
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("child exited early with {st}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "child never reached mid-layer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_mid_import_then_reimport_completes_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = big_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, Some("big:1"))]);
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let marker = tmp.path().join("midway");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_import_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}\n{}\n{}",
                root.display(),
                layout.display(),
                marker.display()
            ),
        )
        .spawn()
        .unwrap();
    wait_for(&marker, &mut child);
    child.kill().unwrap(); // SIGKILL: no destructor runs, the flocks die with the process
    child.wait().unwrap();

    let chains: Vec<Digest> = img
        .chain_ids()
        .iter()
        .map(|c| Digest::parse(c).unwrap())
        .collect();
    let big_dir: PathBuf = store.layer_dir(&chains[1]);
    assert!(
        store.is_committed(&chains[0]),
        "layer 0 finished before the kill"
    );
    assert!(
        big_dir.join("diff").is_dir(),
        "the killed import left its half layer"
    );
    assert!(!store.is_committed(&chains[1]), "but not as committed");
    assert!(store.images().unwrap().is_empty());
    let stale_link = fs::read_to_string(big_dir.join("link")).unwrap();
    assert!(store.root().join("l").join(&stale_link).exists());
    // Really half: the second big file is missing or short.
    let b_len = fs::metadata(big_dir.join("diff/big/b"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        b_len < BIG as u64,
        "layer was interrupted mid-way ({b_len} bytes of big/b)"
    );

    let mut applied_states = Vec::new();
    let report = import(&store, &layout, &import_opts(None), &mut |p| {
        applied_states.push((p.layer, p.state))
    })
    .unwrap();
    assert_eq!(report.reused, vec![chains[0].clone()]);
    assert_eq!(report.applied, vec![chains[1].clone()]);
    assert!(applied_states.contains(&(1, LayerState::Applied)));
    let diff = store.layer(&chains[1]).unwrap().diff();
    assert_eq!(fs::read(diff.join("big/a")).unwrap(), noise(BIG, 21));
    assert_eq!(fs::read(diff.join("big/b")).unwrap(), noise(BIG, 22));
    assert!(
        !store.root().join("l").join(&stale_link).exists(),
        "the old link was removed"
    );
    assert_links_consistent(&store);
    assert_eq!(layer_dirs(&store).len(), 2);
    assert_eq!(store.image("big:1").unwrap().layers, chains);
}

#[test]
fn sigkill_mid_import_then_prune_removes_the_half_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = big_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let marker = tmp.path().join("midway");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_import_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}\n{}\n{}",
                root.display(),
                layout.display(),
                marker.display()
            ),
        )
        .spawn()
        .unwrap();
    wait_for(&marker, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();

    let report = store.prune().unwrap();
    let half = img.chain_ids()[1].clone();
    assert_eq!(report.incomplete_layers, vec![hex(&half).to_string()]);
    // Layer 0 was committed but no image references it: garbage too.
    assert_eq!(report.removed_layers.len(), 1);
    assert_eq!(
        report.dangling_links, 0,
        "the half layer's link went with it"
    );
    assert!(report.reclaimed_bytes > (BIG / 2) as u64, "{report:?}");
    assert!(layer_dirs(&store).is_empty());
    assert!(links(&store).is_empty());
}
