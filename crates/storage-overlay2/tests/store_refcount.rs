//! Reference counting from records: `remove_image` deletes only the layers nothing else uses,
//! refuses while a container uses the image (unless forced, when the container's record keeps
//! the layers alive), untags before it deletes; `prune` removes unreferenced layers, incomplete
//! layer and container directories and dangling links, and reports the bytes it freed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::store::{Digest, Store, StoreError};
use serde_json::json;
use std::fs;
use std::path::Path;
use store_support::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    a: TestImage,
    b: TestImage,
}

/// Images a and b share their two bottom layers; each has its own top layer.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = TestLayer::new(&[file("base", noise(300 << 10, 1))], Comp::Gzip);
    let mid = TestLayer::new(&[file("mid", noise(100 << 10, 2))], Comp::None);
    let a = image(
        vec![
            base.clone(),
            mid.clone(),
            TestLayer::new(&[file("a", noise(50 << 10, 3))], Comp::Zstd),
        ],
        json!({"Cmd": ["a"]}),
    );
    let b = image(
        vec![base, mid, TestLayer::new(&[file("b", "b")], Comp::Gzip)],
        json!({"Cmd": ["b"]}),
    );
    let store = Store::open(tmp.path().join("store")).unwrap();
    for (img, name) in [(&a, "a:1"), (&b, "b:1")] {
        let dir = tmp.path().join(name.replace(':', "_"));
        write_oci_layout(&dir, &[(img, Some(name))]);
        do_import(&store, &dir, None);
    }
    Fixture {
        _tmp: tmp,
        store,
        a,
        b,
    }
}

fn digests(v: &[String]) -> Vec<Digest> {
    v.iter().map(|c| Digest::parse(c).unwrap()).collect()
}

#[test]
fn rm_keeps_layers_another_image_uses() {
    let f = fixture();
    let a_chains = digests(&f.a.chain_ids());
    let b_chains = digests(&f.b.chain_ids());
    assert_eq!(f.store.layers().unwrap().len(), 4);

    let r = f.store.remove_image("a:1", false).unwrap();
    assert_eq!(
        r.removed_image.as_ref().unwrap().as_str(),
        f.a.config_digest
    );
    assert_eq!(r.untagged, vec!["a:1"]);
    assert_eq!(
        r.removed_layers,
        vec![a_chains[2].clone()],
        "only a's own top layer"
    );
    assert!(r.reclaimed_bytes >= 50 << 10, "{r:?}");
    assert!(!f.store.layer_dir(&a_chains[2]).exists());
    for c in &b_chains {
        assert!(f.store.is_committed(c), "b's layer {c} kept");
    }
    assert!(matches!(
        f.store.image("a:1"),
        Err(StoreError::ImageNotFound(_))
    ));
    assert_links_consistent(&f.store);

    // Nothing left to prune: all remaining layers are b's.
    let p = f.store.prune().unwrap();
    assert!(
        p.removed_layers.is_empty() && p.incomplete_layers.is_empty(),
        "{p:?}"
    );

    let r = f.store.remove_image(&f.b.config_digest, false).unwrap();
    assert_eq!(r.removed_layers.len(), 3);
    assert!(r.reclaimed_bytes >= 400 << 10, "{r:?}");
    assert!(layer_dirs(&f.store).is_empty());
    assert!(links(&f.store).is_empty());
}

#[test]
fn rm_refused_while_a_container_uses_the_image_unless_forced() {
    let f = fixture();
    let c = f.store.create_container("c1", "a:1").unwrap();
    assert_eq!(c.image.as_str(), f.a.config_digest);
    assert_eq!(c.layers, digests(&f.a.chain_ids()));
    let paths = f.store.container_paths("c1").unwrap();
    assert!(paths.upper.is_dir() && paths.work.is_dir() && paths.merged.is_dir());

    let err = f.store.remove_image("a:1", false).unwrap_err();
    match &err {
        StoreError::ImageInUse { containers, .. } => {
            assert_eq!(containers, &vec!["c1".to_string()])
        }
        e => panic!("expected ImageInUse, got {e}"),
    }
    assert!(err.to_string().contains("c1"), "{err}");
    assert!(f.store.image("a:1").is_ok(), "refused rm changed nothing");

    // Forced: the record goes, the container's layers stay (its record lists them).
    let r = f.store.remove_image("a:1", true).unwrap();
    assert!(r.removed_layers.is_empty(), "{r:?}");
    for l in &c.layers {
        assert!(f.store.is_committed(l));
    }
    assert!(f.store.prune().unwrap().removed_layers.is_empty());

    // Container gone: a's own top layer is garbage now, the shared ones are b's.
    f.store.remove_container("c1").unwrap();
    assert!(!paths.dir.exists());
    let p = f.store.prune().unwrap();
    assert_eq!(p.removed_layers, vec![c.layers[2].clone()]);
    assert!(p.reclaimed_bytes >= 50 << 10);
    assert!(matches!(
        f.store.container("c1"),
        Err(StoreError::ContainerNotFound(_))
    ));
}

#[test]
fn rm_of_one_name_untags_and_tag_moves_names() {
    let f = fixture();
    f.store.tag("a:1", "a:latest").unwrap();
    assert_eq!(f.store.image("a").unwrap().names, vec!["a:1", "a:latest"]);
    let r = f.store.remove_image("a:latest", false).unwrap();
    assert_eq!(r.untagged, vec!["a:latest"]);
    assert!(r.removed_image.is_none() && r.removed_layers.is_empty());
    assert_eq!(f.store.image("a:1").unwrap().names, vec!["a:1"]);
    // A name held by another image moves, as docker tag does.
    f.store.tag("b:1", "a:1").unwrap();
    assert_eq!(f.store.image("a:1").unwrap().id.as_str(), f.b.config_digest);
    assert!(f.store.image(&f.a.config_digest).unwrap().names.is_empty());
}

#[test]
fn prune_removes_incomplete_dirs_and_unreferenced_layers() {
    let f = fixture();
    let root = f.store.root().to_path_buf();
    // An interrupted import: a layer dir with diff and link but no committed marker.
    let half = hex(&sha(b"half")).to_string();
    fs::create_dir_all(root.join(&half).join("diff")).unwrap();
    fs::write(root.join(&half).join("diff/file"), noise(64 << 10, 9)).unwrap();
    fs::write(root.join(&half).join("link"), "ABCDEFGHIJKLMNOPQRSTUVWXYZ").unwrap();
    std::os::unix::fs::symlink(
        format!("../{half}/diff"),
        root.join("l/ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    )
    .unwrap();
    // A dangling link whose layer vanished, and a container dir without a record.
    std::os::unix::fs::symlink(
        format!("../{}/diff", "0".repeat(64)),
        root.join("l/ZZZZZZZZZZZZZZZZZZZZZZZZZZ"),
    )
    .unwrap();
    fs::create_dir_all(root.join("containers/halfdone/upper")).unwrap();
    fs::write(root.join("tmp/archive-x.tar"), b"leftover").unwrap();
    // Layers no record lists: delete image b's record by hand (as if rm crashed after it).
    fs::remove_file(
        root.join("images")
            .join(format!("{}.json", hex(&f.b.config_digest))),
    )
    .unwrap();

    let p = f.store.prune().unwrap();
    assert_eq!(p.incomplete_layers, vec![half.clone()]);
    assert_eq!(
        p.removed_layers,
        vec![Digest::parse(&f.b.chain_ids()[2]).unwrap()]
    );
    assert_eq!(p.incomplete_containers, vec!["halfdone".to_string()]);
    assert_eq!(
        p.dangling_links, 1,
        "the vanished layer's link; the half layer's went with it"
    );
    assert!(p.reclaimed_bytes >= 64 << 10, "{p:?}");
    assert!(!root.join(&half).exists());
    assert!(!root.join("containers/halfdone").exists());
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    // a is intact and still importable/usable.
    for c in f.a.chain_ids() {
        assert!(root.join(hex(&c)).join("committed").exists());
    }
    assert_links_consistent(&f.store);
    let again = f.store.prune().unwrap();
    assert_eq!(again.reclaimed_bytes, 0, "{again:?}");
}

#[test]
fn containers_are_validated() {
    let f = fixture();
    assert!(matches!(
        f.store.create_container("../x", "a:1"),
        Err(StoreError::InvalidContainerId(_))
    ));
    assert!(matches!(
        f.store.create_container("ok", "nope:1"),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(!Path::new(&f.store.root().join("containers/ok")).exists());
    f.store.create_container("ok", "a:1").unwrap();
    assert!(matches!(
        f.store.create_container("ok", "b:1"),
        Err(StoreError::ContainerExists(_))
    ));
    assert_eq!(f.store.containers().unwrap().len(), 1);
}
