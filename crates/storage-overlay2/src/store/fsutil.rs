//! Small filesystem helpers for the store: atomic record writes, durable directories, disk
//! usage, random ids.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Random id like Docker's overlay2 link names: 26 characters of base32 (A-Z, 2-7), so lower
/// dir options stay short and need no escaping.
pub(crate) fn random_id() -> io::Result<String> {
    let mut buf = [0u8; 17];
    rustix::rand::getrandom(&mut buf[..], rustix::rand::GetRandomFlags::empty())?;
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // 26 characters need 130 bits; take 5 bits at a time from the 136 we have.
    let mut acc: u64 = 0;
    let mut bits = 0;
    let mut out = String::with_capacity(26);
    for b in buf {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            let ix = ((acc >> bits) & 31) as usize;
            out.push(char::from(ALPHABET[ix]));
        }
    }
    Ok(out)
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to `dir/name` so readers see the old or the new content, never a torn file:
/// temp file in the same directory, (fsync,) rename, (fsync the directory). Without `durable`
/// the two fsyncs are skipped: still atomic, only not guaranteed across a power loss.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        random_id()?
    ));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(name))?;
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Bytes allocated on disk under `path` (st_blocks, each inode counted once), what removing it
/// gives back. Missing paths count 0.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total = total.saturating_add(md.blocks().saturating_mul(512));
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// `remove_dir_all` that treats a missing path as done.
pub(crate) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Ok(_) => match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
    }
}
