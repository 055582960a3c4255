//! Every file type and attribute a layer carries is reproduced on disk; replacement rules
//! within one layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply_support;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use apply_support::*;
use rcrun_storage_overlay2::apply::{apply_layer, ApplyOptions, ApplyStats};

fn apply(tar: &[u8], diff: &Path) -> ApplyStats {
    apply_layer(tar, diff, &opts()).unwrap()
}

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A version-2 file capability: cap_dac_override|cap_fowner|cap_net_bind_service permitted,
/// effective. The first mask byte is 0x0a (`\n`), which broke line-split PAX parsers.
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    v.extend(0x0000_040au32.to_le_bytes()); // permitted, low word
    v.extend(0u32.to_le_bytes()); // inheritable, low word
    v.extend(0u32.to_le_bytes()); // permitted, high word
    v.extend(0u32.to_le_bytes()); // inheritable, high word
    v
}

#[test]
fn all_file_types_and_attributes_are_preserved() {
    if !require_root() {
        return;
    }
    let s = Scratch::new();
    let binary = b"bin\nary=\0value".to_vec();
    let stats = apply(
        &layer([
            E::dir("d/")
                .mode(0o1777)
                .owner(10, 20)
                .pax("mtime", "1500000000.987654321")
                .pax("atime", "1500000001.5"),
            E::file("d/exe", "#!/bin/sh\necho hi\n")
                .mode(0o4755)
                .owner(1000, 1001)
                .pax("mtime", "1600000000.123456789")
                .pax("atime", "1600000100.000000001")
                .xattr("user.binary", &binary)
                .xattr("security.capability", capability()),
            E::file("d/sgid", "x").mode(0o2711).owner(5, 6),
            E::hardlink("d/link", "d/exe"),
            E::symlink("d/sym", "../../target/../verbatim")
                .owner(1002, 1003)
                .pax("mtime", "1400000000.25"),
            E::char_dev("d/null", 1, 3).owner(0, 5),
            E::block_dev("d/loop9", 7, 9).mode(0o640),
            E::fifo("d/pipe").mode(0o620).owner(7, 8),
            E::dir("d/sub/").mtime(1_300_000_000),
            // Written after `d/sub/` was created: its mtime must still be the entry's.
            E::file("d/sub/late", "late"),
        ]),
        &s.diff,
    );
    let d = s.diff.join("d");

    let exe = meta(&d.join("exe"));
    assert!(exe.is_file());
    assert_eq!(exe.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((exe.uid(), exe.gid()), (1000, 1001));
    assert_eq!(
        (exe.mtime(), exe.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!((exe.atime(), exe.atime_nsec()), (1_600_000_100, 1));
    assert_eq!(
        std::fs::read(d.join("exe")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    if user_xattrs_supported() {
        assert_eq!(xattr(&d.join("exe"), "user.binary").unwrap(), binary);
    }
    assert_eq!(
        xattr(&d.join("exe"), "security.capability").unwrap(),
        capability(),
        "file capability survives chown and the data write"
    );

    let sgid = meta(&d.join("sgid"));
    assert_eq!(sgid.mode() & 0o7777, 0o2711);
    assert_eq!((sgid.uid(), sgid.gid()), (5, 6));

    let link = meta(&d.join("link"));
    assert_eq!(link.ino(), exe.ino(), "hardlink shares the inode");
    assert_eq!(link.nlink(), 2);

    let sym = meta(&d.join("sym"));
    assert!(sym.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(d.join("sym")).unwrap().as_os_str(),
        "../../target/../verbatim"
    );
    assert_eq!((sym.uid(), sym.gid()), (1002, 1003));
    assert_eq!(
        (sym.mtime(), sym.mtime_nsec()),
        (1_400_000_000, 250_000_000)
    );

    let null = meta(&d.join("null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(
        null.mode() & 0o7777,
        0o666,
        "umask does not strip device modes"
    );
    assert_eq!(null.gid(), 5);

    let blk = meta(&d.join("loop9"));
    assert!(blk.file_type().is_block_device());
    assert_eq!(blk.rdev(), libc::makedev(7, 9));
    assert_eq!(blk.mode() & 0o7777, 0o640);

    let pipe = meta(&d.join("pipe"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o620);
    assert_eq!((pipe.uid(), pipe.gid()), (7, 8));

    let dm = meta(&d);
    assert_eq!(dm.mode() & 0o7777, 0o1777, "sticky directory");
    assert_eq!((dm.uid(), dm.gid()), (10, 20));
    assert_eq!(
        (dm.mtime(), dm.mtime_nsec()),
        (1_500_000_000, 987_654_321),
        "directory mtime set after its children were written"
    );
    assert_eq!((dm.atime(), dm.atime_nsec()), (1_500_000_001, 500_000_000));
    let sub = meta(&d.join("sub"));
    assert_eq!((sub.mtime(), sub.mtime_nsec()), (1_300_000_000, 0));

    assert_eq!(stats.entries, 10);
    assert_eq!(stats.bytes, 18 + 1 + 4);
    assert_eq!(stats.whiteouts, 0);
    s.assert_untouched();
}

#[test]
fn without_preserve_owner_files_belong_to_the_caller() {
    let s = Scratch::new();
    apply_layer(
        layer([E::file("f", "x").owner(4321, 8765).mode(0o4755)]).as_slice(),
        &s.diff,
        &ApplyOptions {
            preserve_owner: false,
        },
    )
    .unwrap();
    let m = meta(&s.diff.join("f"));
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(m.mode() & 0o7777, 0o4755);
}

#[test]
fn repeated_directory_keeps_children_and_takes_the_later_attributes() {
    let s = Scratch::new();
    let root = nix::unistd::geteuid().is_root();
    apply(
        &layer([
            E::dir("d/")
                .mode(0o700)
                .owner(1, 1)
                .mtime(1_000_000_000)
                .xattr("user.first", "1"),
            E::file("d/child", "c"),
            E::dir("d/sub/"),
            E::file("d/sub/x", "x"),
            E::dir("d/")
                .mode(0o750)
                .owner(2, 3)
                .pax("mtime", "1200000000.5")
                .xattr("user.second", "2"),
        ]),
        &s.diff,
    );
    let d = s.diff.join("d");
    assert_eq!(names(&d), ["child", "sub"]);
    assert_eq!(std::fs::read(d.join("sub/x")).unwrap(), b"x");
    let m = meta(&d);
    assert_eq!(m.mode() & 0o7777, 0o750);
    if root {
        assert_eq!((m.uid(), m.gid()), (2, 3));
    }
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_200_000_000, 500_000_000));
    if user_xattrs_supported() {
        assert_eq!(xattr(&d, "user.second").as_deref(), Some(&b"2"[..]));
        assert_eq!(
            xattr(&d, "user.first"),
            None,
            "xattrs are replaced, not merged"
        );
    }
}

#[test]
fn directory_entry_after_its_children() {
    let s = Scratch::new();
    apply(
        &layer([
            E::file("a/b/c/f", "deep"),
            E::dir("a/b/c/").mode(0o711).mtime(1_100_000_000),
            E::dir("a/b/").mode(0o705).mtime(1_100_000_001),
            E::dir("a/").mode(0o750).mtime(1_100_000_002),
        ]),
        &s.diff,
    );
    assert_eq!(std::fs::read(s.diff.join("a/b/c/f")).unwrap(), b"deep");
    for (p, mode, t) in [
        ("a/b/c", 0o711, 1_100_000_000),
        ("a/b", 0o705, 1_100_000_001),
        ("a", 0o750, 1_100_000_002),
    ] {
        let m = meta(&s.diff.join(p));
        assert_eq!((m.mode() & 0o7777, m.mtime()), (mode, t), "{p}");
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new();
    let outside = s.sentinel.join("keep");
    apply(
        &layer([
            // A directory tree replaced by a file.
            E::dir("x/"),
            E::dir("x/y/"),
            E::file("x/y/z", "z"),
            E::file("x", "now a file"),
            // A symlink (pointing outside) replaced by a file: written in place, not through.
            E::symlink("s", outside.to_str().unwrap()),
            E::file("s", "replaced"),
            // A file replaced by a symlink, a symlink by a directory.
            E::file("f", "file"),
            E::symlink("f", "elsewhere"),
            E::symlink("l", "/"),
            E::dir("l/"),
            E::file("l/inside", "i"),
            // A file replaced by a hardlink to another file.
            E::file("h", "old h"),
            E::file("src", "src data"),
            E::hardlink("h", "src"),
            // A file replaced by a file.
            E::file("twice", "first"),
            E::file("twice", "second"),
        ]),
        &s.diff,
    );
    assert_eq!(std::fs::read(s.diff.join("x")).unwrap(), b"now a file");
    assert!(meta(&s.diff.join("s")).is_file());
    assert_eq!(std::fs::read(s.diff.join("s")).unwrap(), b"replaced");
    assert_eq!(
        std::fs::read_link(s.diff.join("f")).unwrap().as_os_str(),
        "elsewhere"
    );
    assert!(meta(&s.diff.join("l")).is_dir());
    assert_eq!(names(&s.diff.join("l")), ["inside"]);
    assert_eq!(
        meta(&s.diff.join("h")).ino(),
        meta(&s.diff.join("src")).ino()
    );
    assert_eq!(std::fs::read(s.diff.join("twice")).unwrap(), b"second");
    s.assert_untouched();
}

#[test]
fn long_names_pax_and_gnu() {
    let s = Scratch::new();
    let long_dir = "d".repeat(200);
    let long = format!("{long_dir}/{}/file", "e".repeat(250));
    // GNU long names, as the tar crate's builder writes them for GNU headers.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    h.set_entry_type(tar::EntryType::Regular);
    let gnu_name = format!("{}/gnu", "g".repeat(150));
    b.append_data(&mut h, &gnu_name, &b"gnu"[..]).unwrap();
    let mut gnu = b.into_inner().unwrap();
    gnu.truncate(gnu.len() - 1024); // drop the end marker to concatenate

    let mut pax = Layer::new();
    pax.add(E::file(&long, "pax"));
    pax.add(E::symlink("sym", "t".repeat(300)));
    gnu.extend(pax.build());

    apply(&gnu, &s.diff);
    assert_eq!(std::fs::read(s.diff.join(&long)).unwrap(), b"pax");
    assert_eq!(std::fs::read(s.diff.join(&gnu_name)).unwrap(), b"gnu");
    assert_eq!(
        std::fs::read_link(s.diff.join("sym"))
            .unwrap()
            .as_os_str()
            .len(),
        300
    );
}

#[test]
fn deep_tree_beyond_the_fd_cache() {
    let s = Scratch::new();
    // 120 levels: deeper than the cached fd chain, so the tail is walked per entry.
    let mut p = String::new();
    let mut entries = Vec::new();
    for i in 0..120 {
        p.push_str(&format!("l{i}/"));
        entries.push(E::dir(&p).mtime(1_000_000_000 + i));
        entries.push(E::file(format!("{p}f"), format!("{i}")));
    }
    apply(&layer(entries), &s.diff);
    assert_eq!(std::fs::read(s.diff.join(&p).join("f")).unwrap(), b"119");
    let mut q = s.diff.clone();
    for i in 0..120u64 {
        q.push(format!("l{i}"));
        assert_eq!(meta(&q).mtime() as u64, 1_000_000_000 + i);
    }
}

#[test]
fn large_file_content_and_the_stream_is_read_to_its_end() {
    let s = Scratch::new();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut tar = layer([E::file("big", &big), E::file("empty", "")]);
    // Writers pad past the end marker (GNU tar to 10 KiB records).
    tar.extend(vec![0u8; 8192]);
    let total = tar.len();
    let mut counted = Counting {
        inner: tar.as_slice(),
        n: 0,
    };
    let stats = apply_layer(&mut counted, &s.diff, &opts()).unwrap();
    assert_eq!(counted.n, total, "the whole stream was consumed");
    assert_eq!(std::fs::read(s.diff.join("big")).unwrap(), big);
    assert_eq!(meta(&s.diff.join("empty")).len(), 0);
    assert_eq!(stats.bytes, big.len() as u64);
}

struct Counting<'a> {
    inner: &'a [u8],
    n: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Short reads, to exercise refills mid-header and mid-data.
        let k = buf.len().min(700);
        let n = self.inner.read(&mut buf[..k])?;
        self.n += n;
        Ok(n)
    }
}

#[test]
fn pax_uid_gid_and_base256_numbers() {
    if !require_root() {
        return;
    }
    let s = Scratch::new();
    let mut l = Layer::new();
    l.add(
        E::file("paxid", "p")
            .pax("uid", "3000000")
            .pax("gid", "3000001"),
    );
    // GNU base-256 uid, as Go writes ids that do not fit the octal field.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("b256").unwrap();
    h.set_mode(0o600);
    h.set_size(0);
    h.set_uid(5_000_000);
    h.set_gid(5_000_001);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    tar.truncate(tar.len() - 1024);
    tar.extend(l.build());
    apply(&tar, &s.diff);
    let m = meta(&s.diff.join("paxid"));
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
    let m = meta(&s.diff.join("b256"));
    assert_eq!((m.uid(), m.gid()), (5_000_000, 5_000_001));
}

#[test]
fn setgid_parent_does_not_leak_its_group_or_bit() {
    if !require_root() {
        return;
    }
    let s = Scratch::new();
    // Files and directories created in a setgid directory take its group (and directories its
    // S_ISGID bit) unless set explicitly: the layer's owner and mode must win.
    apply(
        &layer([
            E::dir("g/").mode(0o2775).owner(0, 50),
            E::file("g/f", "f").owner(0, 0),
            E::dir("g/sub/").mode(0o755).owner(0, 0),
            E::file("g/sub/x", "x").owner(0, 0),
            E::symlink("g/l", "f").owner(0, 0),
            E::fifo("g/p").owner(0, 0),
            E::file("g/mine", "m").owner(0, 50),
        ]),
        &s.diff,
    );
    let g = s.diff.join("g");
    assert_eq!(meta(&g).mode() & 0o7777, 0o2775);
    assert_eq!(meta(&g).gid(), 50);
    for p in ["f", "sub", "sub/x", "l", "p"] {
        assert_eq!(meta(&g.join(p)).gid(), 0, "{p}");
    }
    assert_eq!(meta(&g.join("sub")).mode() & 0o7777, 0o755);
    assert_eq!(meta(&g.join("mine")).gid(), 50);
}

#[test]
fn read_only_directories_still_take_their_children() {
    let s = Scratch::new();
    // Without CAP_DAC_OVERRIDE a 0555 directory refuses new entries, so its mode must be
    // applied after its children (as root this passes either way).
    apply(
        &layer([
            E::dir("ro/").mode(0o555),
            E::file("ro/f", "f").mode(0o444),
            E::dir("ro/sub/").mode(0o500),
            E::file("ro/sub/x", "x"),
        ]),
        &s.diff,
    );
    assert_eq!(std::fs::read(s.diff.join("ro/sub/x")).unwrap(), b"x");
    assert_eq!(meta(&s.diff.join("ro")).mode() & 0o7777, 0o555);
    assert_eq!(meta(&s.diff.join("ro/sub")).mode() & 0o7777, 0o500);
    assert_eq!(meta(&s.diff.join("ro/f")).mode() & 0o7777, 0o444);
    // Let the temp dir be removed when not root.
    use std::os::unix::fs::PermissionsExt;
    for p in ["ro", "ro/sub"] {
        std::fs::set_permissions(s.diff.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
