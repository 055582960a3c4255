//! Digest verification: a layer, config or manifest whose bytes do not match its digest (and
//! a config whose diff_ids do not match the layers) fails the import with an error naming the
//! blob; no layer of the bad blob is committed, no image is recorded, no stray `l/` link or
//! directory is left, and the store imports the correct image afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::import::{import, ImportError};
use rcrun_storage_overlay2::store::Store;
use serde_json::json;
use std::fs;
use std::path::Path;
use store_support::*;

fn good_image(second: Comp) -> TestImage {
    let l0 = TestLayer::new(&[file("base", "base layer")], Comp::Gzip);
    let l1 = TestLayer::new(
        &[
            E::Dir("data".into()),
            file("data/payload", noise(64 << 10, 7)),
        ],
        second,
    );
    image(vec![l0, l1], json!({"Cmd": ["/bin/true"]}))
}

/// Flip one byte in the middle of the blob `digest` inside a layout (same size, so only the
/// digest can tell).
fn corrupt_blob(layout: &Path, digest: &str) {
    let p = layout.join("blobs/sha256").join(hex(digest));
    let mut data = fs::read(&p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&p, data).unwrap();
}

/// Nothing of the failed import is visible; then the good image imports fine.
fn assert_store_clean_then_usable(store: &Store, img: &TestImage, committed_before: usize) {
    assert!(store.images().unwrap().is_empty(), "no image recorded");
    let committed = store.layers().unwrap();
    assert_eq!(committed.len(), committed_before, "{committed:?}");
    assert_eq!(
        layer_dirs(store).len(),
        committed_before,
        "no incomplete layer directory is left behind"
    );
    assert_links_consistent(store);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("good");
    write_oci_layout(&layout, &[(img, Some("good:1"))]);
    let r = do_import(store, &layout, None);
    assert_eq!(r.image.id.as_str(), img.config_digest);
    assert_eq!(r.applied.len() + r.reused.len(), img.layers.len());
    assert_eq!(
        r.reused.len(),
        committed_before,
        "verified layers of the failed import are reused"
    );
    assert_links_consistent(store);
    let top = store
        .root()
        .join(hex(&img.chain_ids()[1]))
        .join("diff/data/payload");
    assert_eq!(fs::read(top).unwrap(), noise(64 << 10, 7));
}

fn import_err(store: &Store, path: &Path) -> ImportError {
    import(store, path, &import_opts(None), &mut |_| {}).unwrap_err()
}

#[test]
fn corrupt_uncompressed_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::None);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    corrupt_blob(&layout, &img.layers[1].digest);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    match &err {
        ImportError::DigestMismatch { what, expected, .. } => {
            assert_eq!(what, "layer 1 blob");
            assert_eq!(expected.as_str(), img.layers[1].digest);
        }
        e => panic!("expected a digest mismatch, got {e}"),
    }
    assert!(err.to_string().contains(&img.layers[1].digest), "{err}");
    // Layer 0 verified fine and stays (prune would collect it), layer 1 is gone.
    assert!(!store
        .is_committed(&rcrun_storage_overlay2::store::Digest::parse(&img.chain_ids()[1]).unwrap()));
    assert_store_clean_then_usable(&store, &img, 1);
}

#[test]
fn corrupt_gzip_layer_is_reported_as_a_digest_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::Gzip);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    // A flipped byte inside deflate data usually breaks decompression first: the error must
    // still say which blob is bad rather than only "corrupt deflate stream".
    corrupt_blob(&layout, &img.layers[1].digest);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    assert!(
        matches!(&err, ImportError::DigestMismatch { what, .. } if what == "layer 1 blob"),
        "{err}"
    );
    assert_store_clean_then_usable(&store, &img, 1);
}

#[test]
fn substituted_zstd_layer_with_correct_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::Zstd);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    // A different, perfectly valid zstd blob of the same length under the expected name.
    let evil_tar = layer_tar(&[
        E::Dir("data".into()),
        file("data/payload", noise(64 << 10, 8)),
    ]);
    let evil = compress(&evil_tar, Comp::Zstd);
    assert_eq!(
        evil.len(),
        img.layers[1].blob.len(),
        "noise does not compress: same size"
    );
    fs::write(
        layout.join("blobs/sha256").join(hex(&img.layers[1].digest)),
        &evil,
    )
    .unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    assert!(matches!(&err, ImportError::DigestMismatch { .. }), "{err}");
    assert_store_clean_then_usable(&store, &img, 1);
}

#[test]
fn diff_id_not_matching_the_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = good_image(Comp::Gzip);
    // The config (and so the manifest) is self-consistent but claims another diff for layer 1.
    let mut diff_ids = good.diff_ids();
    diff_ids[1] = sha(b"something else");
    let bad = image_with_diff_ids(good.layers.clone(), json!({"Cmd": ["x"]}), diff_ids);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&bad, None)]);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    match &err {
        ImportError::DiffIdMismatch {
            index,
            expected,
            actual,
            ..
        } => {
            assert_eq!(*index, 1);
            assert_eq!(expected.as_str(), sha(b"something else"));
            assert_eq!(actual.as_str(), good.layers[1].diff_id);
        }
        e => panic!("expected a diffID mismatch, got {e}"),
    }
    assert!(err.to_string().contains("rootfs.diff_ids[1]"), "{err}");
    assert_store_clean_then_usable(&store, &good, 1);
}

#[test]
fn corrupt_config_is_refused_before_any_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::Gzip);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    // Same size, still valid JSON: "/bin/true" -> "/bin/trUe".
    let p = layout.join("blobs/sha256").join(hex(&img.config_digest));
    let s = fs::read_to_string(&p)
        .unwrap()
        .replace("/bin/true", "/bin/trUe");
    fs::write(&p, s).unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    match &err {
        ImportError::DigestMismatch { what, expected, .. } => {
            assert_eq!(what, "config");
            assert_eq!(expected.as_str(), img.config_digest);
        }
        e => panic!("expected a config digest mismatch, got {e}"),
    }
    assert!(err.to_string().contains(&img.config_digest), "{err}");
    assert_store_clean_then_usable(&store, &img, 0);
}

#[test]
fn corrupt_manifest_is_refused_before_any_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::Gzip);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    let p = layout.join("blobs/sha256").join(hex(&img.manifest_digest));
    let s = fs::read_to_string(&p)
        .unwrap()
        .replacen("\"size\"", "\"Size\"", 1);
    fs::write(&p, s).unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    assert!(
        matches!(&err, ImportError::DigestMismatch { what, expected, .. }
            if what == "manifest" && expected.as_str() == img.manifest_digest),
        "{err}"
    );
    assert_store_clean_then_usable(&store, &img, 0);
}

#[test]
fn wrong_descriptor_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::Gzip);
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, None)]);
    // Append to the layer blob: size and digest both wrong; size is checked before reading.
    let p = layout.join("blobs/sha256").join(hex(&img.layers[1].digest));
    let mut data = fs::read(&p).unwrap();
    data.extend_from_slice(b"trailing");
    fs::write(&p, data).unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import_err(&store, &layout);
    assert!(matches!(&err, ImportError::SizeMismatch { .. }), "{err}");
    assert_store_clean_then_usable(&store, &img, 1);
}

#[test]
fn docker_archive_bad_config_and_bad_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let img = good_image(Comp::None);
    let store = Store::open(tmp.path().join("store")).unwrap();

    // Config file named by a digest it does not have.
    let archive = tmp.path().join("a.tar");
    let mut bad_cfg = img.clone();
    let cfg = String::from_utf8(img.config.clone())
        .unwrap()
        .replace("/bin/true", "/bin/trUe");
    bad_cfg.config = cfg.into_bytes();
    write_docker_archive(&archive, &[(&bad_cfg, vec!["x:1"])], false);
    let err = import_err(&store, &archive);
    assert!(
        matches!(&err, ImportError::DigestMismatch { what, .. } if what.starts_with("config")),
        "{err}"
    );
    assert!(store.layers().unwrap().is_empty());

    // Classic layer.tar files carry no digest: the diffID check catches a changed layer.
    let mut bad_layer = img.clone();
    let mut t = bad_layer.layers[1].tar.clone();
    let n = t.len() / 2;
    t[n] ^= 1;
    bad_layer.layers[1].tar = t;
    let archive = tmp.path().join("b.tar");
    write_docker_archive(&archive, &[(&bad_layer, vec!["x:1"])], false);
    let err = import_err(&store, &archive);
    assert!(
        matches!(&err, ImportError::DiffIdMismatch { index: 1, blob, .. } if blob.ends_with("/layer.tar")),
        "{err}"
    );
    assert_store_clean_then_usable(&store, &img, 1);
}
