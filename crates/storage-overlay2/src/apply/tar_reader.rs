//! A streaming reader of layer tars: ustar, GNU (long names/links) and PAX headers.
//!
//! Our own rather than the `tar` crate's because its PAX parser splits records on `\n`, so a
//! binary xattr value holding a 0x0a byte (e.g. a `security.capability` mask) fails the whole
//! entry, and it does not expose PAX `mtime`/`atime` (nanoseconds). Records here are read by
//! their length prefix, as POSIX specifies. Data is handed out of the `BufReader`'s buffer
//! directly, so file contents are copied once (buffer -> file).
//!
//! Parsing follows Go's `archive/tar` where readers disagree, because Docker and containerd
//! (which produce and verify most layers) use it: header-only types (links, devices, dirs,
//! fifos) carry no data whatever their size field says, a `\0` type with a trailing `/` is a
//! directory, global PAX headers are ignored.

use std::io::{self, BufRead, Write};

const BLOCK: usize = 512;
/// Cap on one GNU long name/link or PAX header, as Go's reader does (`maxSpecialFileSize`):
/// keeps a hostile layer from making us buffer gigabytes of "metadata".
const MAX_META: u64 = 1 << 20;
/// Padding after the end-of-archive marker we read through (GNU tar pads to its record size,
/// 10 KiB by default, 10 MiB at most with `-b 20480`).
const MAX_TRAILING: u64 = 16 << 20;

/// Why the tar stream could not be read.
#[derive(Debug)]
pub(crate) enum TarError {
    /// The underlying reader failed.
    Io { offset: u64, source: io::Error },
    /// The stream is not a well-formed tar.
    Malformed { offset: u64, reason: String },
}

/// Error while copying an entry's data: reading the tar, or writing the file.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(TarError),
    Write(io::Error),
}

/// The type of an entry, after resolving GNU/PAX extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// Anything we do not unpack (GNU sparse, multi-volume, ...): the raw type flag.
    Other(u8),
}

/// A point in time as tar stores it (seconds may be negative, before 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// One member of the archive with every extension header folded in.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records in archive order (a later duplicate wins when applied).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The entry uses GNU sparse PAX records, which we do not expand.
    pub sparse: bool,
}

/// Extension records that apply to the next real entry.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
}

#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Time>,
    atime: Option<Time>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

pub(crate) struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner` so far.
    pos: u64,
    /// Unread data bytes of the current entry, then its padding to the block size.
    remaining: u64,
    padding: u64,
    ended: bool,
}

impl<R: BufRead> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            ended: false,
        }
    }

    fn malformed(&self, offset: u64, reason: impl Into<String>) -> TarError {
        TarError::Malformed {
            offset,
            reason: reason.into(),
        }
    }

    fn io_err(&self, source: io::Error) -> TarError {
        TarError::Io {
            offset: self.pos,
            source,
        }
    }

    /// Reads exactly one block; `Ok(false)` on a clean EOF before its first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            };
            if buf.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(self.malformed(self.pos, "truncated header block"));
            }
            let n = buf.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.pos += n as u64;
            filled += n;
        }
        Ok(true)
    }

    /// Discards `n` bytes of the stream.
    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        while n > 0 {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            };
            if buf.is_empty() {
                return Err(self.malformed(self.pos, "unexpected end of archive inside an entry"));
            }
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
            self.inner.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Skips whatever is left of the current entry's data and padding.
    fn finish_entry(&mut self) -> Result<(), TarError> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    fn start_data(&mut self, size: u64) {
        self.remaining = size;
        self.padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    }

    /// Reads the data of an extension header (bounded by [`MAX_META`]).
    fn read_meta(&mut self, size: u64, offset: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(self.malformed(
                offset,
                format!("{what} header of {size} bytes exceeds the {MAX_META}-byte limit"),
            ));
        }
        self.start_data(size);
        // `size <= MAX_META`, so this fits in memory and in usize.
        let mut out = Vec::with_capacity(size as usize);
        while self.remaining > 0 {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            };
            if buf.is_empty() {
                return Err(self.malformed(self.pos, format!("truncated {what} header")));
            }
            let k = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            out.extend_from_slice(&buf[..k]);
            self.inner.consume(k);
            self.pos += k as u64;
            self.remaining -= k as u64;
        }
        self.finish_entry()?;
        Ok(out)
    }

    /// Copies the current entry's data into `out`, straight from the read buffer.
    pub(crate) fn copy_data<W: Write>(&mut self, out: &mut W) -> Result<u64, CopyError> {
        let mut written = 0u64;
        while self.remaining > 0 {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(self.io_err(e))),
            };
            if buf.is_empty() {
                return Err(CopyError::Read(
                    self.malformed(self.pos, "unexpected end of archive inside file data"),
                ));
            }
            let k = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            out.write_all(&buf[..k]).map_err(CopyError::Write)?;
            self.inner.consume(k);
            self.pos += k as u64;
            self.remaining -= k as u64;
            written += k as u64;
        }
        Ok(written)
    }

    /// Reads the rest of the stream after the end-of-archive marker, so a caller hashing the
    /// stream it gave us sees every byte (tars are padded past the marker). Bounded, so a
    /// stream of endless zeros (a decompression bomb) ends in an error rather than a hang.
    pub(crate) fn drain(&mut self) -> Result<(), TarError> {
        let end = self.pos;
        loop {
            if self.pos - end > MAX_TRAILING {
                return Err(self.malformed(
                    end,
                    format!("more than {MAX_TRAILING} bytes after the end-of-archive marker"),
                ));
            }
            let n = match self.inner.fill_buf() {
                Ok(b) => b.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            };
            if n == 0 {
                return Ok(());
            }
            self.inner.consume(n);
            self.pos += n as u64;
        }
    }

    /// The next entry, or `None` at the end of the archive. Unread data of the previous entry
    /// is skipped.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.ended {
            return Ok(None);
        }
        self.finish_entry()?;
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK];
        loop {
            let offset = self.pos;
            if !self.read_block(&mut block)? || block.iter().all(|&b| b == 0) {
                self.ended = true;
                if pending.long_name.is_some()
                    || pending.long_link.is_some()
                    || pending.pax.is_some()
                {
                    return Err(self.malformed(offset, "extension header not followed by an entry"));
                }
                return Ok(None);
            }
            verify_checksum(&block).map_err(|r| self.malformed(offset, r))?;
            let flag = block[156];
            let size = parse_num(&block[124..136])
                .and_then(|v| u64::try_from(v).map_err(|_| "negative"))
                .map_err(|r| self.malformed(offset, format!("size field: {r}")))?;
            match flag {
                b'L' => {
                    let mut v = self.read_meta(size, offset, "GNU long name")?;
                    trim_nuls(&mut v);
                    pending.long_name = Some(v);
                }
                b'K' => {
                    let mut v = self.read_meta(size, offset, "GNU long link")?;
                    trim_nuls(&mut v);
                    pending.long_link = Some(v);
                }
                b'x' | b'X' => {
                    let data = self.read_meta(size, offset, "PAX")?;
                    let pax = parse_pax(&data).map_err(|r| self.malformed(offset, r))?;
                    pending.pax = Some(pax);
                }
                // Global PAX headers and GNU volume labels describe the archive, not a file;
                // Docker (Go) ignores them too.
                b'g' | b'V' => {
                    self.start_data(size);
                    self.finish_entry()?;
                }
                _ => {
                    let entry = self
                        .build_entry(&block, flag, size, pending)
                        .map_err(|r| self.malformed(offset, r))?;
                    let data = if matches!(entry.kind, Kind::File | Kind::Other(_)) {
                        entry.size
                    } else {
                        0
                    };
                    self.start_data(data);
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn build_entry(
        &self,
        b: &[u8; BLOCK],
        flag: u8,
        header_size: u64,
        pending: Pending,
    ) -> Result<Entry, String> {
        let magic = &b[257..265];
        let ustar = &magic[..6] == b"ustar\0";
        let gnu = magic == b"ustar  \0";
        let pax = pending.pax.unwrap_or_default();

        let path = match (pax.path, pending.long_name) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => {
                let name = cstr_field(&b[0..100]);
                // star keeps atime/ctime where ustar's prefix ends; it marks itself at 508.
                let prefix = if !ustar {
                    &[][..]
                } else if &b[508..512] == b"tar\0" {
                    cstr_field(&b[345..476])
                } else {
                    cstr_field(&b[345..500])
                };
                let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
                if !prefix.is_empty() {
                    p.extend_from_slice(prefix);
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            }
        };
        let link = match (pax.link, pending.long_link) {
            (Some(l), _) => l,
            (None, Some(l)) => l,
            (None, None) => cstr_field(&b[157..257]).to_vec(),
        };
        let kind = match flag {
            b'0' | b'7' => Kind::File,
            // Pre-POSIX tars mark directories only by a trailing slash.
            0 if path.ends_with(b"/") => Kind::Dir,
            0 => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => Kind::Other(other),
        };
        let field = |r: &[u8], name: &str| parse_num(r).map_err(|e| format!("{name} field: {e}"));
        let mode = field(&b[100..108], "mode")?;
        let uid = match pax.uid {
            Some(u) => u,
            None => u64::try_from(field(&b[108..116], "uid")?).map_err(|_| "negative uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => u64::try_from(field(&b[116..124], "gid")?).map_err(|_| "negative gid")?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Time {
                secs: field(&b[136..148], "mtime")?,
                nanos: 0,
            },
        };
        let atime = match pax.atime {
            Some(t) => Some(t),
            None if gnu => match field(&b[345..357], "atime")? {
                0 => None,
                secs => Some(Time { secs, nanos: 0 }),
            },
            None => None,
        };
        let (dev_major, dev_minor) = if (ustar || gnu) && matches!(kind, Kind::Char | Kind::Block) {
            let maj = field(&b[329..337], "devmajor")?;
            let min = field(&b[337..345], "devminor")?;
            (
                u32::try_from(maj).map_err(|_| format!("devmajor {maj} out of range"))?,
                u32::try_from(min).map_err(|_| format!("devminor {min} out of range"))?,
            )
        } else {
            (0, 0)
        };
        Ok(Entry {
            path,
            link,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            size: pax.size.unwrap_or(header_size),
            mtime,
            atime,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            sparse: pax.sparse,
        })
    }
}

fn trim_nuls(v: &mut Vec<u8>) {
    while v.last() == Some(&0) {
        v.pop();
    }
}

/// A NUL-terminated (or full-width) string field.
fn cstr_field(f: &[u8]) -> &[u8] {
    match f.iter().position(|&c| c == 0) {
        Some(i) => &f[..i],
        None => f,
    }
}

fn verify_checksum(b: &[u8; BLOCK]) -> Result<(), String> {
    let stored = parse_num(&b[148..156]).map_err(|e| format!("checksum field: {e}"))?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    // Some old tars summed signed chars; accept either, as GNU tar and Go do.
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err(format!(
            "header checksum mismatch (stored {stored}, computed {unsigned})"
        ))
    }
}

/// A numeric header field: octal text, or GNU base-256 (two's complement) when the high bit
/// of the first byte is set.
fn parse_num(f: &[u8]) -> Result<i64, &'static str> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in f.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 != 0 {
                    return Err("base-256 number overflows");
                }
                x = (x << 8) | u64::from(c);
            }
            if x >> 63 != 0 {
                return Err("base-256 number overflows");
            }
            // x < 2^63, so it fits; negatives use -a-1 == !a.
            let v = x as i64;
            return Ok(if inv == 0xff { !v } else { v });
        }
    }
    let start = f
        .iter()
        .position(|&c| c != b' ' && c != 0)
        .unwrap_or(f.len());
    let end = f
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(start, |i| i + 1);
    let mut v: i64 = 0;
    for &c in &f[start..end.max(start)] {
        if !(b'0'..=b'7').contains(&c) {
            return Err("invalid octal number");
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(c - b'0')))
            .ok_or("octal number overflows")?;
    }
    Ok(v)
}

fn parse_decimal(v: &[u8], key: &str) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("PAX {key} is not a decimal number"))
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8], key: &str) -> Result<Time, String> {
    let bad = || format!("PAX {key} is not a valid time");
    let s = std::str::from_utf8(v).map_err(|_| bad())?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let secs: i64 = if whole.is_empty() {
        0
    } else {
        if !whole.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        whole.parse().map_err(|_| bad())?
    };
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    // Digits past nanoseconds are truncated.
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |c| u32::from(c - b'0'));
        nanos = nanos * 10 + d;
    }
    if !neg {
        return Ok(Time { secs, nanos });
    }
    // -1.25 is 1.25 s before the epoch: secs -2, nanos 0.75e9.
    if nanos == 0 {
        Ok(Time { secs: -secs, nanos })
    } else {
        Ok(Time {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

/// Parses PAX records `"<len> <key>=<value>\n"` by their length, so values may hold any byte.
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        // Some writers pad the header's data with NULs.
        if data.iter().all(|&c| c == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&c| c == b' ')
            .ok_or("malformed PAX record (no length)")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record (bad length)".into());
        }
        let kv = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = kv
            .iter()
            .position(|&c| c == b'=')
            .ok_or("malformed PAX record (no '=')")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        // An empty value unsets the keyword: fall back to the header field.
        match key {
            b"path" => pax.path = (!value.is_empty()).then(|| value.to_vec()),
            b"linkpath" => pax.link = (!value.is_empty()).then(|| value.to_vec()),
            b"size" if !value.is_empty() => pax.size = Some(parse_decimal(value, "size")?),
            b"uid" if !value.is_empty() => pax.uid = Some(parse_decimal(value, "uid")?),
            b"gid" if !value.is_empty() => pax.gid = Some(parse_decimal(value, "gid")?),
            b"mtime" if !value.is_empty() => pax.mtime = Some(parse_pax_time(value, "mtime")?),
            b"atime" if !value.is_empty() => pax.atime = Some(parse_pax_time(value, "atime")?),
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                } else if key.starts_with(b"GNU.sparse.") {
                    pax.sparse = true;
                }
                // uname/gname/comment/charset/ctime/LIBARCHIVE.*: not needed to unpack.
            }
        }
    }
    Ok(pax)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn octal_and_base256() {
        assert_eq!(parse_num(b"0000755\0").unwrap(), 0o755);
        assert_eq!(parse_num(b"  755 \0").unwrap(), 0o755);
        assert_eq!(parse_num(b"\0\0\0\0").unwrap(), 0);
        assert!(parse_num(b"0009\0").is_err());
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x2a;
        f[10] = 0x01;
        assert_eq!(parse_num(&f).unwrap(), 0x12a);
        // -1 in base-256
        assert_eq!(parse_num(&[0xff; 12]).unwrap(), -1);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[1] = 0x01;
        assert!(parse_num(&big).is_err());
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.123456789", "mtime").unwrap();
        assert_eq!((t.secs, t.nanos), (1_700_000_000, 123_456_789));
        let t = parse_pax_time(b"5.5", "mtime").unwrap();
        assert_eq!((t.secs, t.nanos), (5, 500_000_000));
        let t = parse_pax_time(b"-1.25", "mtime").unwrap();
        assert_eq!((t.secs, t.nanos), (-2, 750_000_000));
        let t = parse_pax_time(b"12.1234567891234", "mtime").unwrap();
        assert_eq!(t.nanos, 123_456_789);
        assert!(parse_pax_time(b"1e5", "mtime").is_err());
        assert!(parse_pax_time(b"", "mtime").is_err());
    }

    #[test]
    fn pax_records_are_length_prefixed() {
        // A binary value with '\n' and '=' inside must survive.
        let value = b"a\nb=c\0d";
        let body = [b"SCHILY.xattr.user.x=".as_slice(), value.as_slice(), b"\n"].concat();
        let mut len = body.len() + 3;
        let rec = loop {
            let r = [format!("{len} ").as_bytes(), body.as_slice()].concat();
            if r.len() == len {
                break r;
            }
            len = r.len();
        };
        let pax = parse_pax(&[rec.as_slice(), b"12 path=a/b\n"].concat()).unwrap();
        assert_eq!(pax.xattrs, vec![(b"user.x".to_vec(), value.to_vec())]);
        assert_eq!(pax.path.as_deref(), Some(&b"a/b"[..]));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x path=x\n").is_err());
    }
}
