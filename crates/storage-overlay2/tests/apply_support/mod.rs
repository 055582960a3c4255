//! Shared helpers for the `apply_*` tests: building layer tars (incl. raw, hostile headers and
//! PAX records the `tar` crate's builder would refuse), and real overlayfs mounts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// One tar member, described field by field so tests can write anything (`..`, absolute
/// names, huge names via PAX, binary xattrs).
#[derive(Clone)]
pub struct E {
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: impl AsRef<[u8]>, kind: EntryType, mode: u32) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: Vec::new(),
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Regular, 0o644);
        e.data = data.as_ref().to_vec();
        e
    }
    pub fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Directory, 0o755)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Symlink, 0o777);
        e.link = target.as_ref().to_vec();
        e
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, EntryType::Link, 0o644);
        e.link = target.as_ref().to_vec();
        e
    }
    pub fn char_dev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, EntryType::Char, 0o666);
        e.dev = (major, minor);
        e
    }
    pub fn block_dev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, EntryType::Block, 0o660);
        e.dev = (major, minor);
        e
    }
    pub fn fifo(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Fifo, 0o644)
    }
    /// A whiteout entry as image builders write it: an empty regular file.
    pub fn whiteout(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Regular, 0o644)
    }
    pub fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: u64) -> E {
        self.mtime = secs;
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax.push((key.to_string(), value.as_ref().to_vec()));
        self
    }
    pub fn xattr(self, name: &str, value: impl AsRef<[u8]>) -> E {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }
}

/// `"<len> <key>=<value>\n"`, where len counts itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

#[derive(Default)]
pub struct Layer {
    b: Option<tar::Builder<Vec<u8>>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn builder(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.b.as_mut().unwrap()
    }

    /// Appends a raw extension header ('x' PAX, 'L' GNU long name, ...).
    pub fn ext(&mut self, kind: EntryType, data: &[u8]) -> &mut Layer {
        let mut h = Header::new_ustar();
        let name = b"././@PaxHeader";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_cksum();
        self.builder().append(&h, data).unwrap();
        self
    }

    pub fn add(&mut self, e: E) -> &mut Layer {
        let mut pax = Vec::new();
        for (k, v) in &e.pax {
            pax.extend(pax_record(k, v));
        }
        // Names over the ustar field go through PAX, as Go's writer does.
        if e.name.len() > 100 {
            pax.extend(pax_record("path", &e.name));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record("linkpath", &e.link));
        }
        if !pax.is_empty() {
            self.ext(EntryType::XHeader, &pax);
        }
        let mut h = Header::new_ustar();
        {
            let old = h.as_old_mut();
            let n = e.name.len().min(100);
            old.name[..n].copy_from_slice(&e.name[..n]);
            let l = e.link.len().min(100);
            old.linkname[..l].copy_from_slice(&e.link[..l]);
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        h.set_entry_type(e.kind);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.builder().append(&h, e.data.as_slice()).unwrap();
        self
    }

    pub fn build(&mut self) -> Vec<u8> {
        self.b.take().unwrap().into_inner().unwrap()
    }
}

pub fn layer(entries: impl IntoIterator<Item = E>) -> Vec<u8> {
    let mut l = Layer::new();
    for e in entries {
        l.add(e);
    }
    l.build()
}

/// A scratch area: `diff/` to unpack into and `sentinel/` beside it that nothing may touch.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
    pub diff: PathBuf,
    pub sentinel: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let diff = tmp.path().join("diff");
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&diff).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), b"original").unwrap();
        Scratch {
            tmp,
            diff,
            sentinel,
        }
    }

    /// Nothing was created, removed or changed outside `diff`.
    pub fn assert_untouched(&self) {
        let mut top: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["diff", "sentinel"],
            "something escaped into the temp dir"
        );
        let inside: Vec<_> = std::fs::read_dir(&self.sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            inside,
            ["keep"],
            "something was written into the sentinel dir"
        );
        let keep = self.sentinel.join("keep");
        assert_eq!(std::fs::read(&keep).unwrap(), b"original");
        assert_eq!(std::fs::metadata(&keep).unwrap().nlink(), 1);
    }
}

/// A read-only overlay of `lowers` (top first), unmounted on drop.
pub struct Overlay {
    pub target: PathBuf,
}

impl Overlay {
    pub fn mount(lowers: &[&Path], target: &Path) -> Overlay {
        std::fs::create_dir_all(target).unwrap();
        let lowerdir = lowers
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lowerdir}").as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting overlay lowerdir={lowerdir}: {e}"));
        Overlay {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Overlay tests need CAP_SYS_ADMIN; say so instead of failing obscurely elsewhere.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: overlay mounts and chown need root");
        false
    }
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Whether the filesystem of the temp dirs stores `user.*` xattrs (tmpfs does only since Linux
/// 6.6: the 6.1 test guest runs from one). Where it does not, the unpacker skips them as Docker
/// does and the tests cannot see them. The probe is a file of its own: writing into a layer
/// directory would change the mtimes under test.
pub fn user_xattrs_supported() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    let ok = rustix::fs::lsetxattr(
        probe.path(),
        "user.probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    if !ok {
        eprintln!("note: no user.* xattrs in the temp dir's filesystem: those checks are left out");
    }
    ok
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {} {name}: {e}", path.display()),
    }
}

/// A whiteout as overlayfs wants it: a character device 0/0.
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

/// Keep owners when we can (root); otherwise the tests still exercise everything else.
pub fn opts() -> rcrun_storage_overlay2::apply::ApplyOptions {
    rcrun_storage_overlay2::apply::ApplyOptions {
        preserve_owner: nix::unistd::geteuid().is_root(),
    }
}
