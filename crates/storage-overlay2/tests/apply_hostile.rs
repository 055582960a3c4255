//! Hostile layers: nothing may be written outside `diff` (a sentinel directory beside it and
//! named host paths are checked), and the error names the offending entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use apply_support::*;
use rcrun_storage_overlay2::apply::{apply_layer, ApplyError};

fn apply_err(entries: Vec<E>, s: &Scratch) -> ApplyError {
    match apply_layer(layer(entries).as_slice(), &s.diff, &opts()) {
        Ok(stats) => panic!("hostile layer was accepted: {stats:?}"),
        Err(e) => e,
    }
}

fn assert_names(err: &ApplyError, entry: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`{entry}`")),
        "error should name {entry}: {msg}"
    );
}

#[test]
fn dotdot_entries_fail_the_layer() {
    for name in [
        "../escape",
        "a/../../escape",
        "./../escape",
        "a/b/../../../escape",
    ] {
        let s = Scratch::new();
        let err = apply_err(vec![E::dir("a/"), E::file(name, "pwned")], &s);
        assert!(
            matches!(err, ApplyError::PathEscape { .. }),
            "{name}: {err}"
        );
        assert_names(&err, name);
        s.assert_untouched();
        assert!(!s.tmp.path().join("escape").exists());
    }
}

#[test]
fn absolute_names_land_inside_the_layer() {
    let s = Scratch::new();
    let unique = format!("rcrun-apply-test-{}", std::process::id());
    let abs = format!("/etc/{unique}");
    apply_layer(
        layer([E::file(&abs, "inside"), E::file("/", "")]).as_slice(),
        &s.diff,
        &opts(),
    )
    .expect_err("a file named / cannot replace the layer root");
    assert!(!Path::new(&abs).exists(), "{abs} written on the host");
    assert_eq!(
        std::fs::read(s.diff.join("etc").join(&unique)).unwrap(),
        b"inside"
    );
    s.assert_untouched();
}

#[test]
fn symlink_to_root_then_a_path_through_it() {
    let s = Scratch::new();
    // If the walk followed `evil`, this would land in our sentinel dir via the host's `/`.
    let through = format!(
        "evil{}/pwned",
        s.sentinel.to_str().unwrap() // absolute, so "evil" + "/tmp/.../sentinel"
    );
    let err = apply_err(
        vec![E::symlink("evil", "/"), E::file(&through, "pwned")],
        &s,
    );
    assert!(matches!(err, ApplyError::NotADirectory { .. }), "{err}");
    assert_names(&err, &through);
    assert!(err.to_string().contains("`evil`"), "{err}");
    s.assert_untouched();

    // /etc/passwd named through `evil`: refused before anything is opened.
    let s = Scratch::new();
    let err = apply_err(
        vec![
            E::symlink("evil", "/"),
            E::file("evil/etc/passwd", "root::0:0::/:"),
        ],
        &s,
    );
    assert_names(&err, "evil/etc/passwd");
    s.assert_untouched();
}

#[test]
fn relative_symlink_out_of_the_layer_then_a_path_through_it() {
    for target in ["../sentinel", "../../../../../../..", "../.."] {
        let s = Scratch::new();
        let err = apply_err(
            vec![
                E::symlink("up", target),
                E::dir("up/newdir/"),
                E::file("up/pwned", "x"),
            ],
            &s,
        );
        assert!(matches!(err, ApplyError::NotADirectory { .. }), "{err}");
        assert_names(&err, "up/newdir/");
        s.assert_untouched();
    }
}

#[test]
fn directory_swapped_for_a_symlink_by_a_later_entry() {
    let s = Scratch::new();
    let outside = s.sentinel.to_str().unwrap().to_string();
    let err = apply_err(
        vec![
            E::dir("d/"),
            E::file("d/a", "a"),
            E::dir("d/e/"),
            E::file("d/e/f", "f"),
            // Same layer: the directory (whose fd a naive cache would still hold) becomes a
            // symlink out of the layer, then entries go "into" it again.
            E::symlink("d", &outside),
            E::file("d/b", "pwned"),
        ],
        &s,
    );
    assert_names(&err, "d/b");
    s.assert_untouched();
    assert!(std::fs::symlink_metadata(s.diff.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Deeper: an intermediate component swapped, the entry's parent chain reaching through it.
    let s = Scratch::new();
    let err = apply_err(
        vec![
            E::dir("a/b/c/"),
            E::file("a/b/c/x", "x"),
            E::symlink("a/b", "../../sentinel"),
            E::file("a/b/keep", "pwned"),
        ],
        &s,
    );
    assert_names(&err, "a/b/keep");
    s.assert_untouched();
}

#[test]
fn symlink_swapped_deep_in_a_tree_beyond_the_fd_cache() {
    let s = Scratch::new();
    let deep: String = (0..90).map(|i| format!("p{i}/")).collect();
    let victim = format!("{deep}q/");
    let err = apply_err(
        vec![
            E::dir(&victim),
            E::file(format!("{victim}x"), "x"),
            E::symlink(victim.trim_end_matches('/'), s.sentinel.to_str().unwrap()),
            E::file(format!("{victim}pwned"), "pwned"),
        ],
        &s,
    );
    // The name is cut in the middle; its tail identifies it.
    let msg = err.to_string();
    assert!(msg.contains("/p89/q/pwned` ("), "{msg}");
    assert!(matches!(err, ApplyError::NotADirectory { .. }), "{msg}");
    s.assert_untouched();
}

#[test]
fn file_written_where_a_symlink_points_outside_replaces_the_symlink() {
    let s = Scratch::new();
    let keep = s.sentinel.join("keep");
    apply_layer(
        layer([
            E::symlink("f", keep.to_str().unwrap()),
            E::file("f", "replaced"),
            E::symlink("g", "../sentinel/keep"),
            E::fifo("g"),
            E::symlink("h", "../sentinel/new"),
            E::file("h", "h"),
        ])
        .as_slice(),
        &s.diff,
        &opts(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.diff.join("f")).unwrap(), b"replaced");
    s.assert_untouched();
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let cases: Vec<(Vec<E>, &str)> = vec![
        (
            vec![E::hardlink("h", "/etc/passwd")],
            "not found in this layer",
        ),
        (vec![E::hardlink("h", "../outside")], "escapes the layer"),
        (
            vec![E::hardlink("h", "a/../../sentinel/keep")],
            "escapes the layer",
        ),
        (
            vec![E::symlink("s", "/etc"), E::hardlink("h", "s/passwd")],
            "symlink",
        ),
        (
            vec![E::symlink("s", "../sentinel"), E::hardlink("h", "s/keep")],
            "symlink",
        ),
        (
            vec![E::dir("d/"), E::hardlink("h", "d")],
            "cannot be hardlinked",
        ),
        (vec![E::hardlink("h", "")], "layer root"),
    ];
    for (entries, why) in cases {
        let s = Scratch::new();
        let err = apply_err(entries, &s);
        let msg = err.to_string();
        assert!(matches!(err, ApplyError::LinkTarget { .. }), "{msg}");
        assert!(msg.contains("`h`") && msg.contains(why), "{msg}");
        assert!(!s.diff.join("h").exists());
        s.assert_untouched();
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
        passwd_links
    );
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let s = Scratch::new();
    let keep = s.sentinel.join("keep");
    apply_layer(
        layer([
            E::symlink("s", keep.to_str().unwrap()),
            E::hardlink("h", "s"),
        ])
        .as_slice(),
        &s.diff,
        &opts(),
    )
    .unwrap();
    let h = std::fs::symlink_metadata(s.diff.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(
        h.ino(),
        std::fs::symlink_metadata(s.diff.join("s")).unwrap().ino()
    );
    s.assert_untouched();
}

#[test]
fn overlay_xattrs_in_the_tar_are_dropped() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    std::fs::create_dir(&l1).unwrap();
    std::fs::create_dir(&l2).unwrap();
    apply_layer(
        layer([E::dir("dir/"), E::file("dir/lower", "l")]).as_slice(),
        &l1,
        &opts(),
    )
    .unwrap();
    apply_layer(
        layer([
            E::dir("dir/")
                .xattr("trusted.overlay.opaque", "y")
                .xattr("user.overlay.opaque", "y")
                .xattr("user.ok", "kept"),
            E::file("dir/upper", "u")
                .xattr("trusted.overlay.redirect", "/elsewhere")
                .xattr("trusted.overlay.metacopy", ""),
        ])
        .as_slice(),
        &l2,
        &opts(),
    )
    .unwrap();
    let dir = l2.join("dir");
    assert_eq!(xattr(&dir, "trusted.overlay.opaque"), None);
    if user_xattrs_supported() {
        assert_eq!(xattr(&dir, "user.overlay.opaque"), None);
        assert_eq!(xattr(&dir, "user.ok").as_deref(), Some(&b"kept"[..]));
    }
    assert_eq!(xattr(&dir.join("upper"), "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&dir.join("upper"), "trusted.overlay.metacopy"), None);
    // The forged opaque marker would hide `lower`; it must still show.
    let mnt = Overlay::mount(&[&l2, &l1], &tmp.path().join("mnt"));
    assert_eq!(names(&mnt.target.join("dir")), ["lower", "upper"]);
}

#[test]
fn huge_names_fail_cleanly() {
    // A 5000-byte PAX path.
    let s = Scratch::new();
    let huge = "a/".repeat(2500);
    let err = apply_err(vec![E::file(&huge, "x")], &s);
    let msg = err.to_string();
    assert!(matches!(err, ApplyError::NameTooLong { .. }), "{msg}");
    assert!(
        msg.contains("(5000 bytes)") && msg.contains("`a/a/a/"),
        "{msg}"
    );
    assert!(msg.len() < 400, "the name is cut in the message: {msg}");
    s.assert_untouched();

    // A 300-byte component.
    let s = Scratch::new();
    let comp = format!("dir/{}", "c".repeat(300));
    let err = apply_err(vec![E::file(&comp, "x")], &s);
    assert!(matches!(err, ApplyError::NameTooLong { .. }), "{err}");
    assert!(err.to_string().contains("300 bytes"), "{err}");
    s.assert_untouched();

    // A PAX header too large to be metadata (2 MiB).
    let s = Scratch::new();
    let mut l = Layer::new();
    l.add(E::file("f", "x").pax("comment", vec![b'z'; 2 << 20]));
    let err = apply_layer(l.build().as_slice(), &s.diff, &opts()).unwrap_err();
    assert!(matches!(err, ApplyError::Malformed { .. }), "{err}");
    s.assert_untouched();

    // A long symlink target.
    let s = Scratch::new();
    let err = apply_err(vec![E::symlink("l", "t".repeat(5000))], &s);
    assert_names(&err, "l");
}

#[test]
fn malformed_streams_fail_without_panicking() {
    let good = layer([E::file("f", "0123456789"), E::file("g", "x")]);
    // Truncated in the middle of data, and in a header.
    for cut in [600, 1100, 1536 + 100] {
        let s = Scratch::new();
        let err = apply_layer(&good[..cut], &s.diff, &opts()).unwrap_err();
        assert!(matches!(err, ApplyError::Malformed { .. }), "{cut}: {err}");
    }
    // A corrupted checksum.
    let mut bad = good.clone();
    bad[10] ^= 0x55;
    let s = Scratch::new();
    let err = apply_layer(bad.as_slice(), &s.diff, &opts()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // A PAX record whose length lies.
    let s = Scratch::new();
    let mut l = Layer::new();
    l.ext(tar::EntryType::XHeader, b"99 path=x\n");
    l.add(E::file("f", "x"));
    let err = apply_layer(l.build().as_slice(), &s.diff, &opts()).unwrap_err();
    assert!(matches!(err, ApplyError::Malformed { .. }), "{err}");
    // An unknown entry type names the entry.
    let s = Scratch::new();
    let mut e = E::file("weird", "");
    e.kind = tar::EntryType::new(b'Z');
    let err = apply_err(vec![e], &s);
    assert!(matches!(err, ApplyError::Unsupported { .. }), "{err}");
    assert_names(&err, "weird");
    // NUL inside a PAX path.
    let s = Scratch::new();
    let err = apply_err(vec![E::file("f", "x").pax("path", "a\0b")], &s);
    assert!(err.to_string().contains("NUL"), "{err}");
    s.assert_untouched();
}

#[test]
fn endless_zeros_after_the_end_marker_end_in_an_error() {
    let s = Scratch::new();
    let tar = layer([E::file("f", "x")]);
    let endless = std::io::Read::chain(tar.as_slice(), std::io::repeat(0));
    let err = apply_layer(endless, &s.diff, &opts()).unwrap_err();
    assert!(matches!(err, ApplyError::Malformed { .. }), "{err}");
    assert!(
        err.to_string().contains("after the end-of-archive marker"),
        "{err}"
    );
}
