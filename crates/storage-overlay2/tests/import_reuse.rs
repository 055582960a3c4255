//! Layer sharing: a second image with common layers does not unpack them again (same diff
//! inode, mtime and a sentinel file survive; the layer blobs are not even read), and two
//! concurrent imports of images sharing layers both succeed with each shared layer unpacked
//! exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::import::{import, LayerState};
use rcrun_storage_overlay2::store::{Digest, Store};
use serde_json::json;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Barrier};
use store_support::*;

#[test]
fn second_image_reuses_shared_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let l0 = TestLayer::new(&[file("base", noise(200 << 10, 1))], Comp::Gzip);
    let l1 = TestLayer::new(&[file("mid", "mid")], Comp::Zstd);
    let a_top = TestLayer::new(&[file("a", "a")], Comp::None);
    let b_top = TestLayer::new(&[file("b", "b")], Comp::Gzip);
    let a = image(vec![l0.clone(), l1.clone(), a_top], json!({"Cmd": ["a"]}));
    let b = image(vec![l0.clone(), l1.clone(), b_top], json!({"Cmd": ["b"]}));
    let la = tmp.path().join("a");
    let lb = tmp.path().join("b");
    write_oci_layout(&la, &[(&a, Some("a:1"))]);
    write_oci_layout(&lb, &[(&b, Some("b:1"))]);
    let store = Store::open(tmp.path().join("store")).unwrap();

    let ra = do_import(&store, &la, None);
    assert_eq!(ra.applied.len(), 3);
    let shared: Vec<String> = a.chain_ids()[..2].to_vec();
    let before: Vec<(u64, i64, i64)> = shared
        .iter()
        .map(|c| {
            let md = fs::metadata(store.root().join(hex(c)).join("diff")).unwrap();
            (md.ino(), md.mtime(), md.mtime_nsec())
        })
        .collect();
    // A file an unpack would wipe (the diff dir would be recreated).
    for c in &shared {
        fs::write(store.root().join(hex(c)).join("sentinel"), "still here").unwrap();
    }
    // Remove the shared blobs from b's layout: reused layers must not be read at all.
    for l in [&l0, &l1] {
        fs::remove_file(lb.join("blobs/sha256").join(hex(&l.digest))).unwrap();
    }

    let mut states = Vec::new();
    let rb = import(&store, &lb, &import_opts(None), &mut |p| {
        states.push((p.layer, p.state))
    })
    .unwrap();
    let reused: Vec<String> = rb.reused.iter().map(Digest::to_string).collect();
    assert_eq!(reused, shared);
    assert_eq!(rb.applied.len(), 1);
    assert_eq!(rb.applied[0].as_str(), b.chain_ids()[2]);
    assert!(states.contains(&(0, LayerState::Reused)) && states.contains(&(1, LayerState::Reused)));
    assert!(!states.contains(&(0, LayerState::Applying)));
    for (i, c) in shared.iter().enumerate() {
        let md = fs::metadata(store.root().join(hex(c)).join("diff")).unwrap();
        assert_eq!(
            (md.ino(), md.mtime(), md.mtime_nsec()),
            before[i],
            "layer {i} untouched"
        );
        assert_eq!(
            fs::read_to_string(store.root().join(hex(c)).join("sentinel")).unwrap(),
            "still here"
        );
    }
    assert_eq!(rb.bytes_read, b.layers[2].blob.len() as u64);
    // Both images list the same chain ids for the shared part.
    assert_eq!(ra.image.layers[..2], rb.image.layers[..2]);
    assert_eq!(store.layers().unwrap().len(), 4);
    assert_links_consistent(&store);

    // Importing a again changes nothing but keeps the record.
    let again = do_import(&store, &la, None);
    assert!(again.applied.is_empty());
    assert_eq!(again.reused.len(), 3);
    assert_eq!(again.bytes_read, 0);
    assert_eq!(store.images().unwrap().len(), 2);
}

#[test]
fn concurrent_imports_share_layers_and_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = vec![
        TestLayer::new(&[file("s0", noise(4 << 20, 10))], Comp::Gzip),
        TestLayer::new(&[file("s1", noise(4 << 20, 11))], Comp::Zstd),
        TestLayer::new(&[file("s2", noise(2 << 20, 12))], Comp::None),
    ];
    let mut images = Vec::new();
    for (k, name) in ["x:1", "y:1"].iter().enumerate() {
        let mut layers = shared.clone();
        layers.push(TestLayer::new(&[file("own", name)], Comp::Gzip));
        let img = image(layers, json!({"Cmd": [name]}));
        let dir = tmp.path().join(format!("layout{k}"));
        write_oci_layout(&dir, &[(&img, Some(name))]);
        images.push((img, dir));
    }
    let root = tmp.path().join("store");
    Store::open(&root).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = images
        .iter()
        .map(|(_, dir)| {
            let dir = dir.clone();
            let root = root.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Each thread opens the store itself, as two processes would.
                let store = Store::open(&root).unwrap();
                barrier.wait();
                let mut paused = false;
                // Whoever unpacks a shared layer pauses in the middle of it, so the other
                // import certainly arrives at that layer while it is half written.
                import(&store, &dir, &import_opts(None), &mut |p| {
                    if p.layer < 3 && p.state == LayerState::Applying && p.bytes_done > 0 && !paused
                    {
                        paused = true;
                        std::thread::sleep(std::time::Duration::from_millis(400));
                    }
                })
            })
        })
        .collect();
    let reports: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let store = Store::open(&root).unwrap();
    let chains = images[0].0.chain_ids();
    for c in &chains[..3] {
        let d = Digest::parse(c).unwrap();
        let unpacked = reports.iter().filter(|r| r.applied.contains(&d)).count();
        let reused = reports.iter().filter(|r| r.reused.contains(&d)).count();
        assert_eq!(
            (unpacked, reused),
            (1, 1),
            "layer {c} unpacked exactly once"
        );
    }
    for (k, r) in reports.iter().enumerate() {
        assert_eq!(r.image.id.as_str(), images[k].0.config_digest);
        assert_eq!(r.image.layers[..3], reports[0].image.layers[..3]);
    }
    assert_eq!(store.images().unwrap().len(), 2);
    assert_eq!(store.layers().unwrap().len(), 5);
    assert_eq!(layer_dirs(&store).len(), 5);
    assert_links_consistent(&store);
    let s0 = store.root().join(hex(&chains[0])).join("diff/s0");
    assert_eq!(fs::read(s0).unwrap(), noise(4 << 20, 10));
}
