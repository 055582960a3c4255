//! Whiteouts and opaque directories: converted to overlayfs form on disk, and checked through
//! real read-only overlay mounts of the unpacked layers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use apply_support::*;
use rcrun_storage_overlay2::apply::{apply_layer, ApplyStats};

fn apply(tar: &[u8], diff: &Path) -> ApplyStats {
    apply_layer(tar, diff, &opts()).unwrap()
}

/// Unpacks each layer (bottom first) into `<tmp>/l<i>` and returns the diff dirs.
fn layers(tmp: &Path, tars: &[Vec<u8>]) -> Vec<std::path::PathBuf> {
    tars.iter()
        .enumerate()
        .map(|(i, t)| {
            let d = tmp.join(format!("l{}", i + 1));
            std::fs::create_dir(&d).unwrap();
            apply(t, &d);
            d
        })
        .collect()
}

#[test]
fn whiteout_of_a_file_and_of_a_directory_hides_them_in_the_overlay() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer([
        E::dir("a/"),
        E::file("a/f", "lower file"),
        E::file("a/keep", "kept"),
        E::dir("d/"),
        E::file("d/x", "inside"),
        E::dir("d/sub/"),
    ]);
    let l2 = layer([E::whiteout("a/.wh.f"), E::whiteout(".wh.d")]);
    let diffs = layers(tmp.path(), &[l1, l2]);

    // On disk: 0/0 character devices with the hidden names, no `.wh.` files.
    assert!(is_whiteout(&diffs[1].join("a/f")));
    assert!(is_whiteout(&diffs[1].join("d")));
    assert_eq!(names(&diffs[1]), ["a", "d"]);
    assert_eq!(names(&diffs[1].join("a")), ["f"]);

    let mnt = Overlay::mount(&[&diffs[1], &diffs[0]], &tmp.path().join("mnt"));
    assert_eq!(names(&mnt.target), ["a"]);
    assert_eq!(names(&mnt.target.join("a")), ["keep"]);
    assert!(!mnt.target.join("d").exists());
}

#[test]
fn whiteout_then_recreated_in_a_later_layer_shows_the_new_entry() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Two layers, as the image spec allows: the lower one whites `etc/conf` out (of whatever
    // was under it), the upper one creates it again.
    let l1 = layer([
        E::dir("etc/"),
        E::whiteout("etc/.wh.conf"),
        E::whiteout("etc/.wh.conf.d"),
    ]);
    let l2 = layer([
        E::dir("etc/"),
        E::file("etc/conf", "new content"),
        E::dir("etc/conf.d/"),
        E::file("etc/conf.d/10-new", "ten"),
    ]);
    let diffs = layers(tmp.path(), &[l1, l2]);
    assert!(is_whiteout(&diffs[0].join("etc/conf")));
    let mnt = Overlay::mount(&[&diffs[1], &diffs[0]], &tmp.path().join("mnt"));
    assert_eq!(
        std::fs::read(mnt.target.join("etc/conf")).unwrap(),
        b"new content"
    );
    assert_eq!(names(&mnt.target.join("etc/conf.d")), ["10-new"]);
}

#[test]
fn whiteout_between_two_layers_hides_then_a_third_recreates() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = layer([
        E::file("x", "old"),
        E::dir("y/"),
        E::file("y/old1", "1"),
        E::file("y/old2", "2"),
    ]);
    let hide = layer([E::whiteout(".wh.x"), E::whiteout(".wh.y")]);
    let again = layer([E::file("x", "new"), E::dir("y/"), E::file("y/new", "n")]);
    let diffs = layers(tmp.path(), &[base, hide, again]);

    let hidden = Overlay::mount(&[&diffs[1], &diffs[0]], &tmp.path().join("m2"));
    assert!(names(&hidden.target).is_empty());
    drop(hidden);

    let mnt = Overlay::mount(&[&diffs[2], &diffs[1], &diffs[0]], &tmp.path().join("m3"));
    assert_eq!(std::fs::read(mnt.target.join("x")).unwrap(), b"new");
    // y was whited out below, so the re-created y shows only its new content.
    assert_eq!(names(&mnt.target.join("y")), ["new"]);
}

#[test]
fn whiteout_replaces_an_earlier_entry_of_the_same_layer() {
    let s = Scratch::new();
    let stats = apply(
        &layer([
            E::dir("d/"),
            E::file("d/f", "data"),
            E::dir("tree/"),
            E::dir("tree/sub/"),
            E::file("tree/sub/deep", "deep"),
            E::whiteout("d/.wh.f"),
            E::whiteout(".wh.tree"),
        ]),
        &s.diff,
    );
    assert!(is_whiteout(&s.diff.join("d/f")));
    assert!(is_whiteout(&s.diff.join("tree")));
    assert_eq!(stats.whiteouts, 2);
    assert_eq!(stats.entries, 7);
}

#[test]
fn whiteout_keeps_owner_and_mode_of_its_entry() {
    if !require_root() {
        return;
    }
    let s = Scratch::new();
    apply(
        &layer([E::whiteout("dir/.wh.gone").owner(1234, 5678).mode(0o600)]),
        &s.diff,
    );
    let m = std::fs::symlink_metadata(s.diff.join("dir/gone")).unwrap();
    assert!(is_whiteout(&s.diff.join("dir/gone")));
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mode() & 0o7777, 0o600);
    // The parent was implied: a plain 0755 directory.
    let d = std::fs::metadata(s.diff.join("dir")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o755);
}

#[test]
fn opaque_marker_after_siblings_keeps_them_and_hides_lower_content() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer([
        E::dir("dir/"),
        E::file("dir/old", "lower"),
        E::dir("dir/oldsub/"),
        E::file("dir/oldsub/x", "lower"),
        E::file("other", "untouched"),
    ]);
    // The marker comes after some of this layer's entries of `dir` and before others.
    let l2 = layer([
        E::dir("dir/"),
        E::file("dir/new1", "one"),
        E::dir("dir/sub/"),
        E::file("dir/sub/new2", "two"),
        E::whiteout("dir/.wh..wh..opq"),
        E::file("dir/new3", "three"),
    ]);
    let diffs = layers(tmp.path(), &[l1, l2]);
    let dir = diffs[1].join("dir");
    assert_eq!(
        xattr(&dir, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(names(&dir), ["new1", "new3", "sub"]);

    let mnt = Overlay::mount(&[&diffs[1], &diffs[0]], &tmp.path().join("mnt"));
    assert_eq!(names(&mnt.target.join("dir")), ["new1", "new3", "sub"]);
    assert_eq!(names(&mnt.target.join("dir/sub")), ["new2"]);
    assert_eq!(
        std::fs::read(mnt.target.join("other")).unwrap(),
        b"untouched"
    );
}

#[test]
fn opaque_marker_before_its_directory_entry_survives_the_entry() {
    // trusted.* xattrs need CAP_SYS_ADMIN.
    if !require_root() {
        return;
    }
    let s = Scratch::new();
    let stats = apply(
        &layer([
            E::whiteout("x/.wh..wh..opq"),
            E::dir("x/").mode(0o700).xattr("user.note", "n"),
        ]),
        &s.diff,
    );
    let x = s.diff.join("x");
    assert_eq!(
        xattr(&x, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    if user_xattrs_supported() {
        assert_eq!(xattr(&x, "user.note").as_deref(), Some(&b"n"[..]));
    }
    assert_eq!(std::fs::metadata(&x).unwrap().mode() & 0o7777, 0o700);
    assert!(names(&x).is_empty());
    assert_eq!(stats.whiteouts, 1);
}

#[test]
fn aufs_metadata_is_skipped() {
    let s = Scratch::new();
    let stats = apply(
        &layer([
            E::dir(".wh..wh.plnk/"),
            E::file(".wh..wh.plnk/1234.5678", "aufs hardlink store"),
            E::whiteout(".wh..wh.aufs"),
            E::whiteout(".wh..wh.orph/.wh..wh..opq"),
            E::file("real", "r"),
        ]),
        &s.diff,
    );
    assert_eq!(names(&s.diff), ["real"]);
    assert_eq!(stats.entries, 1);
}

#[test]
fn invalid_whiteout_names_are_refused() {
    for name in ["a/.wh..", "a/.wh...", "a/.wh."] {
        let s = Scratch::new();
        let err = apply_layer(layer([E::whiteout(name)]).as_slice(), &s.diff, &opts())
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        s.assert_untouched();
    }
}

#[test]
fn whiteout_and_new_content_of_the_same_directory_in_one_layer_make_it_opaque() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer([
        E::dir("d/"),
        E::file("d/lower", "l"),
        E::dir("e/"),
        E::file("e/lower", "l"),
    ]);
    // The whiteouts hide the lower d and e; the same layer then has new content under both
    // names (implied parent for d, an explicit entry for e). The spec says a whiteout applies
    // to lower layers only, so the new content shows and the lower does not.
    let l2 = layer([
        E::whiteout(".wh.d"),
        E::file("d/new", "n"),
        E::whiteout(".wh.e"),
        E::dir("e/").mode(0o750),
        E::file("e/new", "n"),
    ]);
    let diffs = layers(tmp.path(), &[l1, l2]);
    for d in ["d", "e"] {
        assert_eq!(
            xattr(&diffs[1].join(d), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    let mnt = Overlay::mount(&[&diffs[1], &diffs[0]], &tmp.path().join("mnt"));
    assert_eq!(names(&mnt.target.join("d")), ["new"]);
    assert_eq!(names(&mnt.target.join("e")), ["new"]);
    assert_eq!(
        std::fs::metadata(mnt.target.join("e")).unwrap().mode() & 0o7777,
        0o750
    );
}
