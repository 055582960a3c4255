//! CRIU's own figures of an action (`stats-dump`, `stats-restore` in the images directory), and
//! the bytes a dump wrote.
//!
//! The stats image is a protobuf message after CRIU's magic numbers; its few integer fields are
//! decoded here by hand rather than pulling in a protobuf toolchain for them.

use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("stats image {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("stats image {path}: not a CRIU stats image ({why})")]
    Format {
        path: std::path::PathBuf,
        why: &'static str,
    },
}

/// `DumpStatsEntry` (times in microseconds in the image).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub freezing_time: Duration,
    /// How long the tasks stayed frozen: the source-side downtime of a final dump.
    pub frozen_time: Duration,
    pub memdump_time: Duration,
    pub memwrite_time: Duration,
    pub pages_scanned: u64,
    pub pages_skipped_parent: u64,
    pub pages_written: u64,
    pub pages_lazy: u64,
}

/// `RestoreStatsEntry`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub pages_compared: u64,
    pub pages_skipped_cow: u64,
    pub forking_time: Duration,
    pub restore_time: Duration,
    pub pages_restored: u64,
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `(field number, varint value)` of one message, and its length-delimited fields.
type Fields<'a> = (Vec<(u64, u64)>, Vec<(u64, &'a [u8])>);

fn fields(b: &[u8]) -> Option<Fields<'_>> {
    let (mut ints, mut subs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        match key & 7 {
            0 => ints.push((key >> 3, varint(b, &mut i)?)),
            2 => {
                let n = usize::try_from(varint(b, &mut i)?).ok()?;
                subs.push((key >> 3, b.get(i..i.checked_add(n)?)?));
                i += n;
            }
            5 => i += 4,
            1 => i += 8,
            _ => return None,
        }
    }
    Some((ints, subs))
}

/// The protobuf payload of a stats image: after one or two 32-bit magics, a 32-bit length.
fn payload(data: &[u8]) -> Option<&[u8]> {
    for skip in [8usize, 4] {
        let len = data.get(skip..skip + 4)?;
        let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if skip + 4 + n == data.len() {
            return data.get(skip + 4..);
        }
    }
    None
}

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

fn read_entry(path: &Path, field: u64) -> Result<Option<Vec<(u64, u64)>>, StatsError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatsError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let bad = |why| StatsError::Format {
        path: path.to_path_buf(),
        why,
    };
    let body = payload(&data).ok_or(bad("no length-prefixed entry after the magic"))?;
    let (_, subs) = fields(body).ok_or(bad("bad protobuf"))?;
    let Some((_, sub)) = subs.into_iter().find(|(f, _)| *f == field) else {
        return Ok(None);
    };
    let (ints, _) = fields(sub).ok_or(bad("bad protobuf in the entry"))?;
    Ok(Some(ints))
}

fn get(ints: &[(u64, u64)], f: u64) -> u64 {
    ints.iter()
        .find(|(n, _)| *n == f)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// `stats-dump` of an images directory (`None` if CRIU wrote none).
pub fn dump_stats(image_dir: &Path) -> Result<Option<DumpStats>, StatsError> {
    Ok(
        read_entry(&image_dir.join("stats-dump"), 1)?.map(|i| DumpStats {
            freezing_time: us(get(&i, 1)),
            frozen_time: us(get(&i, 2)),
            memdump_time: us(get(&i, 3)),
            memwrite_time: us(get(&i, 4)),
            pages_scanned: get(&i, 5),
            pages_skipped_parent: get(&i, 6),
            pages_written: get(&i, 7),
            pages_lazy: get(&i, 9),
        }),
    )
}

/// `stats-restore` of an images directory (CRIU writes it into the work dir).
pub fn restore_stats(dir: &Path) -> Result<Option<RestoreStats>, StatsError> {
    Ok(
        read_entry(&dir.join("stats-restore"), 2)?.map(|i| RestoreStats {
            pages_compared: get(&i, 1),
            pages_skipped_cow: get(&i, 2),
            forking_time: us(get(&i, 3)),
            restore_time: us(get(&i, 4)),
            pages_restored: get(&i, 5),
        }),
    )
}

/// Bytes of a dump in `dir` (not following `parent`): `(memory pages, everything)`.
pub fn image_bytes(dir: &Path) -> (u64, u64) {
    let (mut pages, mut all) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            all += md.len();
            if e.file_name().to_string_lossy().starts_with("pages-") {
                pages += md.len();
            }
        }
    }
    (pages, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn decodes_a_dump_stats_image() -> Result<(), Box<dyn std::error::Error>> {
        let mut inner = Vec::new();
        for (f, v) in [
            (1u64, 10u64),
            (2, 250_000),
            (3, 5),
            (4, 6),
            (5, 1000),
            (6, 900),
            (7, 100),
        ] {
            enc(f << 3, &mut inner);
            enc(v, &mut inner);
        }
        let mut outer = vec![(1 << 3) | 2];
        enc(inner.len() as u64, &mut outer);
        outer.extend(&inner);
        let mut img = Vec::new();
        img.extend(0x5454_1234u32.to_le_bytes());
        img.extend(0x5757_1234u32.to_le_bytes());
        img.extend((outer.len() as u32).to_le_bytes());
        img.extend(&outer);
        let dir = std::env::temp_dir().join(format!("rcrun-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("stats-dump"), &img)?;
        let s = dump_stats(&dir)?;
        std::fs::remove_dir_all(&dir)?;
        let s = s.ok_or("no stats")?;
        assert_eq!(s.frozen_time, Duration::from_millis(250));
        assert_eq!(s.pages_written, 100);
        assert_eq!(s.pages_skipped_parent, 900);
        assert_eq!(dump_stats(Path::new("/nonexistent"))?, None);
        Ok(())
    }
}
