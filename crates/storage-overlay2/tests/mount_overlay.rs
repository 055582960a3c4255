//! Real overlay mounts of imported images: 130 layers of files, whiteouts, opaque dirs and
//! re-created files read back through the mount exactly as a model of the layer rules says;
//! writes land in the container's upper (copy-up, whiteout on delete) and never in a layer;
//! mount(2) is used only while its options fit in 4095 bytes (150 layers do not: a clear
//! error, nothing mounted; the new API mounts them); two containers of one image share the
//! layer inodes with separate uppers; teardown keeps or removes the upper.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::import::{import, ImportOptions};
use rcrun_storage_overlay2::mount::{
    is_mounted, legacy_options_max, mount, teardown, unmount_container, MountError, MountMethod,
    MountOptions,
};
use rcrun_storage_overlay2::store::{Store, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use store_support::*;

/// Detaches on drop, so a failing assertion does not leave mounts behind.
struct Mnt(PathBuf);

impl Drop for Mnt {
    fn drop(&mut self) {
        let _ = rcrun_storage_overlay2::mount::unmount(&self.0);
    }
}

/// overlayfs took `lowerdir+` in Linux 6.8.
fn kernel_has_lowerdir_plus() -> bool {
    let u = nix::sys::utsname::uname().unwrap();
    let r = u.release().to_string_lossy().into_owned();
    let mut it = r
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (6, 8)
}

/// Layer `i` adds `f{i}` and rewrites `shared`; every third layer whites out `f{i-3}`; layer
/// 20k creates `d{20k}/{a,b}`, layer 20k+7 makes `d{20k}` opaque and adds `c`; layer 10k+9
/// re-creates `f{10k}` (whited out earlier when 10k is a multiple of 3).
fn layer_entries(i: usize) -> Vec<E> {
    let mut e = vec![
        file(&format!("f{i}"), format!("layer {i}")),
        file("shared", format!("{i}")),
    ];
    if i >= 3 && i.is_multiple_of(3) {
        e.push(E::Whiteout(format!("f{}", i - 3)));
    }
    if i.is_multiple_of(20) {
        e.push(E::Dir(format!("d{i}")));
        e.push(file(&format!("d{i}/a"), "a"));
        e.push(file(&format!("d{i}/b"), "b"));
    }
    if i % 20 == 7 && i >= 7 {
        let d = format!("d{}", i - 7);
        e.push(E::Dir(d.clone()));
        e.push(E::Opaque(d.clone()));
        e.push(file(&format!("{d}/c"), format!("c{i}")));
    }
    if i % 10 == 9 {
        e.push(file(&format!("f{}", i - 9), format!("again {i}")));
    }
    e
}

/// What the merged tree must hold: path -> content (dirs as "<dir>").
fn model(n: usize) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..n {
        for e in layer_entries(i) {
            match e {
                E::File(p, data) => {
                    m.insert(p, String::from_utf8(data).unwrap());
                }
                E::Dir(p) => {
                    m.insert(p, "<dir>".into());
                }
                E::Whiteout(p) => {
                    let prefix = format!("{p}/");
                    m.retain(|k, _| k != &p && !k.starts_with(&prefix));
                }
                E::Opaque(d) => {
                    // Hides the lower layers' children; this layer's (added after) stay.
                    let prefix = format!("{d}/");
                    m.retain(|k, _| !k.starts_with(&prefix));
                }
                E::Symlink(..) => unreachable!(),
            }
        }
    }
    m
}

fn many_layer_image(n: usize) -> TestImage {
    let layers = (0..n)
        .map(|i| {
            let c = if i.is_multiple_of(2) {
                Comp::None
            } else {
                Comp::Gzip
            };
            TestLayer::new(&layer_entries(i), c)
        })
        .collect();
    image(layers, json!({"Cmd": ["/bin/sh"]}))
}

/// Everything the model says, read through the mount; and nothing more at the top level.
fn check_tree(mnt: &Path, n: usize) {
    let m = model(n);
    for (p, content) in &m {
        let full = mnt.join(p);
        if content == "<dir>" {
            assert!(full.is_dir(), "{p} should be a directory");
        } else {
            assert_eq!(
                &fs::read_to_string(&full).unwrap_or_else(|e| panic!("{p}: {e}")),
                content,
                "{p}"
            );
        }
    }
    let top: BTreeSet<String> = fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = m.keys().filter(|k| !k.contains('/')).cloned().collect();
    assert_eq!(top, want, "top-level listing");
    for i in 0..n {
        let p = format!("f{i}");
        assert_eq!(
            mnt.join(&p).exists(),
            m.contains_key(&p),
            "{p} visible as the model says"
        );
    }
    assert_eq!(m["shared"], format!("{}", n - 1));
    if n >= 40 {
        // The model is not trivial: some files are hidden, some came back, opaque dirs cut.
        assert!(!m.contains_key("f3") && m.contains_key("f1") && m.contains_key("f30"));
        assert_eq!(m["f30"], "again 39");
        assert_eq!(m["d0/c"], "c7");
        assert!(!m.contains_key("d0/a"));
    }
}

fn import_layout(store: &Store, dir: &Path, img: &TestImage, name: &str) {
    write_oci_layout(dir, &[(img, Some(name))]);
    // These layers are tiny and many: the per-layer syncfs is covered by the other tests.
    let opts = ImportOptions {
        sync: false,
        ..import_opts(None)
    };
    import(store, dir, &opts, &mut |_| {}).unwrap();
}

#[test]
fn many_layers_with_whiteouts_mount_and_writes_land_in_the_upper() {
    const N: usize = 130;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let img = many_layer_image(N);
    import_layout(&store, &tmp.path().join("layout"), &img, "many:130");
    assert_eq!(store.image("many:130").unwrap().layers.len(), N);

    // Default method on this kernel: the new API (or mount(2) where it lacks lowerdir+).
    store.create_container("c1", "many:130").unwrap();
    let m1 = mount(&store, "c1", &MountOptions::default()).unwrap();
    let _g1 = Mnt(m1.target.clone());
    assert_eq!(m1.layers, N);
    let expected = if kernel_has_lowerdir_plus() {
        MountMethod::NewApi
    } else {
        MountMethod::Legacy
    };
    assert_eq!(m1.method, expected);
    assert!(is_mounted(&m1.target).unwrap());
    assert_eq!(
        m1.index_off,
        Path::new("/sys/module/overlay/parameters/index").exists()
    );
    check_tree(&m1.target, N);

    // Writes: new file, modified lower file (copy-up), deleted lower file (whiteout).
    let paths = store.container_paths("c1").unwrap();
    fs::write(m1.target.join("new.txt"), "new").unwrap();
    fs::write(m1.target.join("f1"), "changed").unwrap();
    fs::remove_file(m1.target.join("f2")).unwrap();
    fs::create_dir(m1.target.join("newdir")).unwrap();
    assert_eq!(
        fs::read_to_string(paths.upper.join("new.txt")).unwrap(),
        "new"
    );
    assert_eq!(
        fs::read_to_string(paths.upper.join("f1")).unwrap(),
        "changed"
    );
    let wh = fs::symlink_metadata(paths.upper.join("f2")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "delete leaves a whiteout in upper"
    );
    assert!(paths.upper.join("newdir").is_dir());
    let chains = img.chain_ids();
    let layer1 = store.root().join(hex(&chains[1])).join("diff");
    assert_eq!(
        fs::read_to_string(layer1.join("f1")).unwrap(),
        "layer 1",
        "the layer is untouched"
    );
    assert!(store.root().join(hex(&chains[2])).join("diff/f2").exists());
    assert!(!m1.target.join("f2").exists());

    // Busy: the container cannot be removed while mounted.
    assert!(matches!(
        store.remove_container("c1"),
        Err(StoreError::ContainerMounted { .. })
    ));

    // Second container: same lower inodes, its own (empty) upper.
    store.create_container("c2", "many:130").unwrap();
    let m2 = mount(&store, "c2", &MountOptions::default()).unwrap();
    let _g2 = Mnt(m2.target.clone());
    for f in ["f4", "f5", "shared", "d0/c"] {
        let via1 = fs::metadata(m1.target.join(f)).unwrap().ino();
        let via2 = fs::metadata(m2.target.join(f)).unwrap().ino();
        assert_eq!(via1, via2, "{f}: both containers see the same layer file");
    }
    let f4_layer = fs::metadata(store.root().join(hex(&chains[4])).join("diff/f4")).unwrap();
    assert_eq!(
        fs::metadata(m2.target.join("f4")).unwrap().ino(),
        f4_layer.ino()
    );
    assert!(!m2.target.join("new.txt").exists(), "separate uppers");
    assert_eq!(fs::read_to_string(m2.target.join("f1")).unwrap(), "layer 1");
    assert!(m2.target.join("f2").exists());
    check_tree(&m2.target, N);

    // Teardown keeping the upper: unmounted, work emptied, writes back on the next mount.
    teardown(&store, "c1", true).unwrap();
    assert!(!is_mounted(&m1.target).unwrap());
    assert_eq!(fs::read_dir(&paths.work).unwrap().count(), 0);
    let again = mount(&store, "c1", &MountOptions::default()).unwrap();
    let _g3 = Mnt(again.target.clone());
    assert_eq!(
        fs::read_to_string(again.target.join("f1")).unwrap(),
        "changed"
    );
    assert!(!again.target.join("f2").exists());
    // Teardown removing: everything of c1 goes, c2 is unaffected.
    teardown(&store, "c1", false).unwrap();
    assert!(!paths.dir.exists());
    assert!(!unmount_container(&store, "c2").unwrap() || !is_mounted(&m2.target).unwrap());
    teardown(&store, "c2", false).unwrap();
    assert!(store.containers().unwrap().is_empty());
}

#[test]
fn mount2_only_while_the_options_fit_in_a_page() {
    const N: usize = 150;
    const FITS: usize = 130;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let big = many_layer_image(N);
    let small = image(big.layers[..FITS].to_vec(), json!({"Cmd": ["x"]}));
    import_layout(&store, &tmp.path().join("small"), &small, "many:130");
    import_layout(&store, &tmp.path().join("big"), &big, "many:150");
    assert_eq!(
        store.layers().unwrap().len(),
        N,
        "the 130 shared layers were stored once"
    );
    assert_eq!(legacy_options_max(), 4095);

    // 130 layers of 26-char links fit: mount(2) mounts them all, correctly.
    store.create_container("legacy", "many:130").unwrap();
    let m = mount(
        &store,
        "legacy",
        &MountOptions {
            method: MountMethod::Legacy,
            target: None,
        },
    )
    .unwrap();
    let _g = Mnt(m.target.clone());
    assert_eq!(m.method, MountMethod::Legacy);
    check_tree(&m.target, FITS);
    fs::write(m.target.join("w"), "upper").unwrap();
    let upper = store.container_paths("legacy").unwrap().upper;
    assert_eq!(fs::read_to_string(upper.join("w")).unwrap(), "upper");

    // 150 do not: refused before mount(2) sees a truncated string.
    store.create_container("toolong", "many:150").unwrap();
    let target = store.container_paths("toolong").unwrap().merged;
    let err = mount(
        &store,
        "toolong",
        &MountOptions {
            method: MountMethod::Legacy,
            target: None,
        },
    )
    .unwrap_err();
    match &err {
        MountError::OptionsTooLong {
            layers, len, max, ..
        } => {
            assert_eq!(*layers, N);
            assert_eq!(*max, 4095);
            assert!(*len > 4095);
        }
        e => panic!("expected OptionsTooLong, got {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("150 layers") && msg.contains("4095"), "{msg}");
    assert!(!is_mounted(&target).unwrap(), "nothing was mounted");

    // The new API has no such limit.
    if kernel_has_lowerdir_plus() {
        let m = mount(&store, "toolong", &MountOptions::default()).unwrap();
        let _g = Mnt(m.target.clone());
        assert_eq!(m.method, MountMethod::NewApi);
        check_tree(&m.target, N);
        assert_eq!(
            fs::read_to_string(m.target.join("f149")).unwrap(),
            "layer 149"
        );
        let forced = MountOptions {
            method: MountMethod::NewApi,
            target: Some(tmp.path().join("elsewhere")),
        };
        fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        store.create_container("other", "many:150").unwrap();
        let m2 = mount(&store, "other", &forced).unwrap();
        let _g2 = Mnt(m2.target.clone());
        assert_eq!(
            m2.target,
            fs::canonicalize(tmp.path().join("elsewhere")).unwrap()
        );
        assert_eq!(fs::read_to_string(m2.target.join("shared")).unwrap(), "149");
        // unmount_container finds the custom target through the recorded mountpoint.
        assert!(unmount_container(&store, "other").unwrap());
        assert!(!is_mounted(&m2.target).unwrap());
    } else {
        let err = mount(&store, "toolong", &MountOptions::default()).unwrap_err();
        assert!(
            matches!(err, MountError::OptionsTooLong { layers: N, .. }),
            "{err}"
        );
    }
}

#[test]
fn mounting_twice_and_unknown_containers_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let img = many_layer_image(3);
    import_layout(&store, &tmp.path().join("l"), &img, "three:1");
    assert!(matches!(
        mount(&store, "ghost", &MountOptions::default()),
        Err(MountError::Store(StoreError::ContainerNotFound(_)))
    ));
    store.create_container("c", "three:1").unwrap();
    let m = mount(&store, "c", &MountOptions::default()).unwrap();
    let _g = Mnt(m.target.clone());
    check_tree(&m.target, 3);
    assert!(matches!(
        mount(&store, "c", &MountOptions::default()),
        Err(MountError::AlreadyMounted { .. })
    ));
    // A removed image's layers stay while the container lists them.
    store.remove_image("three:1", true).unwrap();
    assert!(store.prune().unwrap().removed_layers.is_empty());
    teardown(&store, "c", false).unwrap();
    assert_eq!(store.prune().unwrap().removed_layers.len(), 3);
}
