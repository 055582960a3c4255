//! Unpack one layer tar into its overlay `diff` directory, converting OCI whiteouts into
//! overlayfs form the way Docker's overlay2 driver does.
//!
//! # Rules
//! - `.wh.<name>` becomes a whiteout at `<dir>/<name>`: a 0/0 character device with the entry's
//!   owner and permission bits. An earlier entry of that name in this layer is removed first.
//! - `.wh..wh..opq` makes its directory opaque (`trusted.overlay.opaque=y`) wherever it comes in
//!   the stream: it hides lower layers only, so this layer's entries of that directory stay.
//!   Other `.wh..wh.*` names (AUFS metadata such as `.wh..wh.plnk`) are skipped with their
//!   contents.
//! - A whiteout followed, in the same layer, by content under the same name (a directory
//!   entry, or entries below it) becomes an opaque directory: the whiteout still hides the
//!   lower layers' entry, and this layer's content shows (the spec applies a whiteout to lower
//!   layers only).
//! - A directory entry whose directory exists keeps it and takes the entry's attributes; any
//!   other entry replaces what is there (a directory tree is removed first).
//! - Regular files, hardlinks (to entries earlier in this layer), symlinks (target verbatim),
//!   char/block devices, fifos, `SCHILY.xattr.*` xattrs, owner (if `preserve_owner`), mode
//!   incl. setuid/setgid/sticky, atime/mtime with nanoseconds are kept. Order per object:
//!   data, owner, mode (chown clears setuid), xattrs (chown and writes clear
//!   `security.capability`), times. Directory times (and, when not root, modes) are set in a
//!   final pass, children before parents, after all contents are written.
//! - xattrs in the `trusted.overlay.` / `user.overlay.` namespaces are dropped: a layer must
//!   not forge overlay opaque/redirect/metacopy attributes. `ENOTSUP`/`EPERM` from other
//!   xattrs are logged and skipped, as Docker does.
//! - A `./` (root) entry is skipped, as Docker does: the store owns the diff dir's attributes.
//!
//! # Safety
//! Every path stays inside `diff`: leading `/` and `./` are stripped, and an entry (or hardlink
//! target) with a `..` component fails the whole layer, as do over-long names (> 4096 bytes or
//! a component > 255). Paths are never resolved by the kernel as a whole: parents are opened one
//! component at a time from an fd of `diff` with `O_NOFOLLOW|O_DIRECTORY` (see `dirs`), so a
//! symlink anywhere in a parent chain fails the entry, whatever order the layer uses (`evil ->
//! /` then `evil/etc/passwd`, or a directory replaced by a symlink mid-layer). The last
//! component is only ever created (`O_CREAT|O_EXCL`, `mkdirat`, `symlinkat`, `mknodat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`) after unlinking what was there, and metadata calls
//! use the new fd or `AT_SYMLINK_NOFOLLOW`. A hardlink target is walked the same way from the
//! layer root, so it can only name an object of this layer. Hostile entries fail the whole
//! layer with an error naming the entry: a layer is rejected rather than half-trusted.
//!
//! # Format
//! The tar is read by `tar_reader` (ustar, GNU long names, PAX incl. binary xattr values and
//! fractional times), parsed the way Go's `archive/tar` does where readers differ. GNU sparse
//! files are refused. Per file: `openat`, `write`, `fchown` (skipped when it would change
//! nothing), `futimens`, `close`; directory fds are cached along the current path.

mod dirs;
mod path;
mod tar_reader;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{
    chmodat, chownat, fchmod, fchown, flistxattr, fremovexattr, fsetxattr, futimens, linkat,
    lsetxattr, makedev, mkdirat, mknodat, openat, statat, symlinkat, unlinkat, utimensat, AtFlags,
    Dir, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use dirs::{is_whiteout, open_dir, DirCache, WalkError};
use path::{show, PathProblem};
use tar_reader::{CopyError, Entry, Kind, TarError, TarReader, Time};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Read-ahead on the (decompressed) layer stream: large enough that headers and small files
/// are served from memory and file data is written in big chunks.
const READ_BUFFER: usize = 256 << 10;

/// How to unpack a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Give files the uid/gid recorded in the tar (needs `CAP_CHOWN`); otherwise they belong
    /// to the calling user.
    pub preserve_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            preserve_owner: true,
        }
    }
}

/// What a layer held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar members unpacked (incl. whiteouts and opaque markers; skipped AUFS metadata and the
    /// root entry are not counted).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Whiteouts created plus directories made opaque.
    pub whiteouts: u64,
}

/// Why a layer could not be unpacked. Entry names are quoted, escaped, and past 200 bytes cut
/// in the middle.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open layer diff directory {}: {source}", path.display())]
    DiffDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading layer tar at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed layer tar at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("layer entry {entry}: path escapes the layer ({reason}); refusing the layer")]
    PathEscape { entry: String, reason: &'static str },
    #[error("layer entry {entry}: name too long: {reason}")]
    NameTooLong { entry: String, reason: String },
    #[error(
        "layer entry {entry}: parent {parent} is a symlink or not a directory; refusing to follow it"
    )]
    NotADirectory { entry: String, parent: String },
    #[error("layer entry {entry}: hardlink target {target}: {reason}")]
    LinkTarget {
        entry: String,
        target: String,
        reason: String,
    },
    #[error("layer entry {entry}: unsupported entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry}: {reason}")]
    Invalid { entry: String, reason: String },
    #[error("layer entry {entry}: {op}: {source}")]
    Io {
        entry: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
}

/// Unpacks the (decompressed) layer tar `tar` into `diff`, an existing empty directory that
/// becomes this layer's overlay diff dir. Reads `tar` to its end, including the padding after
/// the end-of-archive marker (up to 16 MiB of it), so a digest computed over the stream covers
/// all of it.
///
/// On error, `diff` holds whatever was unpacked so far: the caller discards it.
pub fn apply_layer<R: Read>(
    tar: R,
    diff: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let span = tracing::info_span!("apply_layer", diff = %diff.display());
    let _guard = span.enter();
    let started = Instant::now();

    let root = rustix::fs::open(
        diff,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::DiffDir {
        path: diff.to_path_buf(),
        source: e.into(),
    })?;
    let umask = current_umask();
    let cache = DirCache::new(root, umask).map_err(|e| ApplyError::DiffDir {
        path: diff.to_path_buf(),
        source: e.into(),
    })?;
    let mut applier = Applier {
        cache,
        opts,
        umask,
        ids: Ids {
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
        },
        // Without CAP_DAC_OVERRIDE a 0555 directory could not take its own children, so
        // directories stay owner-writable until the final pass.
        defer_dir_modes: !nix::unistd::geteuid().is_root(),
        stats: ApplyStats::default(),
        dirs: BTreeMap::new(),
    };
    let mut reader = TarReader::new(BufReader::with_capacity(READ_BUFFER, tar));
    while let Some(entry) = reader.next_entry().map_err(tar_error)? {
        applier.apply(&entry, &mut reader)?;
    }
    reader.drain().map_err(tar_error)?;
    applier.finish_dirs()?;

    let secs = started.elapsed().as_secs_f64();
    tracing::debug!(
        entries = applier.stats.entries,
        bytes = applier.stats.bytes,
        whiteouts = applier.stats.whiteouts,
        secs,
        "layer applied"
    );
    Ok(applier.stats)
}

/// Attributes a directory gets in the final pass.
struct DirMeta {
    times: (Time, Time),
    /// Final mode when it was deferred (not root).
    mode: Option<u32>,
}

struct Applier<'o> {
    cache: DirCache,
    opts: &'o ApplyOptions,
    umask: u32,
    ids: Ids,
    defer_dir_modes: bool,
    stats: ApplyStats,
    /// Directories unpacked, keyed by normalised path; sorted so that in reverse every child
    /// comes before its parent.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
}

type Owner = Option<(Uid, Gid)>;

/// Who new files belong to before any chown.
#[derive(Clone, Copy)]
struct Ids {
    euid: u32,
    egid: u32,
}

/// The chown to do for a new object in a directory with group `parent_gid`, if any: none when
/// the object is already ours and its group is ours whichever rule the filesystem uses (our
/// egid, or the directory's for setgid dirs and `grpid` mounts). Saves a syscall per file on
/// typical root-owned layers unpacked as root.
fn chown_for(owner: Owner, ids: Ids, parent_gid: u32) -> Owner {
    let (uid, gid) = owner?;
    let noop = uid.as_raw() == ids.euid && gid.as_raw() == ids.egid && parent_gid == ids.egid;
    (!noop).then_some((uid, gid))
}

impl Applier<'_> {
    fn apply<R: std::io::BufRead>(
        &mut self,
        e: &Entry,
        rd: &mut TarReader<R>,
    ) -> Result<(), ApplyError> {
        // Fields are only evaluated when trace is enabled.
        tracing::trace!(entry = %show(&e.path), kind = ?e.kind, size = e.size, "entry");
        let comps = path::components(&e.path).map_err(|p| path_error(&e.path, p))?;
        let Some((name, parents)) = comps.split_last() else {
            if e.kind != Kind::Dir {
                return Err(invalid(e, "names the layer root but is not a directory"));
            }
            tracing::debug!("skipping the layer root entry");
            return Ok(());
        };
        // AUFS metadata (`.wh..wh.plnk/...`) is skipped with everything below it.
        if parents.iter().any(|c| c.starts_with(AUFS_META_PREFIX)) {
            tracing::debug!(entry = %show(&e.path), "skipping AUFS metadata");
            return Ok(());
        }
        if *name == OPAQUE_MARKER {
            let dir = self
                .cache
                .resolve(parents, true)
                .map_err(|w| walk_error(e, parents, w))?;
            fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(io_err(e, "marking the directory opaque"))?;
            self.stats.entries += 1;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if name.starts_with(AUFS_META_PREFIX) {
            tracing::debug!(entry = %show(&e.path), "skipping AUFS metadata");
            return Ok(());
        }
        if e.sparse {
            return Err(unsupported(e, "GNU sparse file (PAX)".into()));
        }
        let owner = self.owner(e)?;
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            self.whiteout(e, parents, hidden, owner)?;
        } else {
            match e.kind {
                Kind::File => self.file(e, parents, name, owner, rd)?,
                Kind::Dir => self.dir(e, &comps, owner)?,
                Kind::Symlink => self.symlink(e, parents, name, owner)?,
                Kind::Hardlink => self.hardlink(e, &comps)?,
                Kind::Char | Kind::Block | Kind::Fifo => self.node(e, parents, name, owner)?,
                Kind::Other(flag) => {
                    let kind = if flag.is_ascii_graphic() {
                        format!("'{}'", char::from(flag))
                    } else {
                        format!("{flag:#04x}")
                    };
                    return Err(unsupported(e, kind));
                }
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn owner(&self, e: &Entry) -> Result<Owner, ApplyError> {
        if !self.opts.preserve_owner {
            return Ok(None);
        }
        // u32::MAX is -1, "leave unchanged", to chown.
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| invalid(e, &format!("{what} {v} out of range")))
        };
        Ok(Some((
            Uid::from_raw(id(e.uid, "uid")?),
            Gid::from_raw(id(e.gid, "gid")?),
        )))
    }

    /// chmod is needed when the umask took bits off or for setuid/setgid/sticky (which chown
    /// clears and open/mkdir may not set).
    fn needs_chmod(&self, mode: u32) -> bool {
        mode & 0o7000 != 0 || mode & 0o777 & self.umask != 0
    }

    fn file<R: std::io::BufRead>(
        &mut self,
        e: &Entry,
        parents: &[&[u8]],
        name: &[u8],
        owner: Owner,
        rd: &mut TarReader<R>,
    ) -> Result<(), ApplyError> {
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        let create = || {
            openat(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from(e.mode & 0o777),
            )
        };
        let fd = match create() {
            Err(Errno::EXIST) => {
                remove_existing(parent.as_fd(), parents, name, &mut self.dirs)
                    .map_err(io_err(e, "removing the existing entry"))?;
                create()
            }
            r => r,
        }
        .map_err(io_err(e, "creating the file"))?;
        let chown = chown_for(owner, self.ids, parent.gid);
        drop(parent);
        let mut file = File::from(fd);
        let written = rd.copy_data(&mut file).map_err(|err| match err {
            CopyError::Read(t) => tar_error(t),
            CopyError::Write(source) => ApplyError::Io {
                entry: show(&e.path),
                op: "writing file data".into(),
                source,
            },
        })?;
        self.stats.bytes += written;
        if let Some((uid, gid)) = chown {
            fchown(&file, Some(uid), Some(gid)).map_err(io_err(e, "chown"))?;
        }
        if self.needs_chmod(e.mode) {
            fchmod(&file, Mode::from(e.mode)).map_err(io_err(e, "chmod"))?;
        }
        set_xattrs_fd(e, file.as_fd())?;
        futimens(&file, &timestamps(e)).map_err(io_err(e, "setting times"))?;
        Ok(())
    }

    fn dir(&mut self, e: &Entry, comps: &[&[u8]], owner: Owner) -> Result<(), ApplyError> {
        let (name, parents) = match comps.split_last() {
            Some((n, p)) => (*n, p),
            None => return Ok(()),
        };
        let create_mode = if self.defer_dir_modes {
            (e.mode & 0o777) | 0o700
        } else {
            e.mode & 0o777
        };
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        let mkdir = || mkdirat(&parent, name, Mode::from(create_mode));
        let mut opaque = false;
        let existed = match mkdir() {
            Ok(()) => false,
            Err(Errno::EXIST) => {
                let st = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(e, "inspecting the existing entry"))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    true
                } else {
                    // Replacing this layer's whiteout of the same name: the directory must
                    // still hide the lower one, so it becomes opaque.
                    opaque = is_whiteout(&st);
                    remove_existing(parent.as_fd(), parents, name, &mut self.dirs)
                        .map_err(io_err(e, "removing the existing entry"))?;
                    mkdir().map_err(io_err(e, "creating the directory"))?;
                    false
                }
            }
            Err(err) => return Err(io_err(e, "creating the directory")(err)),
        };
        let fd = open_dir(parent.as_fd(), name).map_err(io_err(e, "opening the directory"))?;
        // An existing directory keeps its owner: chown whenever an owner is wanted.
        let chown = if existed {
            owner
        } else {
            chown_for(owner, self.ids, parent.gid)
        };
        drop(parent);
        if let Some((uid, gid)) = chown {
            fchown(&fd, Some(uid), Some(gid)).map_err(io_err(e, "chown"))?;
        }
        // Always: besides umask and special bits, mkdir in a setgid directory sets S_ISGID.
        let mode = if self.defer_dir_modes {
            create_mode
        } else {
            e.mode
        };
        fchmod(&fd, Mode::from(mode)).map_err(io_err(e, "chmod"))?;
        if existed {
            drop_stale_xattrs(e, fd.as_fd())?;
        }
        set_xattrs_fd(e, fd.as_fd())?;
        if opaque {
            fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(io_err(e, "marking the directory opaque"))?;
        }
        self.dirs.insert(
            path::join(comps),
            DirMeta {
                times: (atime(e), e.mtime),
                mode: self.defer_dir_modes.then_some(e.mode),
            },
        );
        // Unknown group (not preserving owners): never matches, so chowns are not skipped.
        let gid = owner.map_or(u32::MAX, |(_, g)| g.as_raw());
        self.cache.push_child(parents.len(), name, fd, gid);
        Ok(())
    }

    fn symlink(
        &mut self,
        e: &Entry,
        parents: &[&[u8]],
        name: &[u8],
        owner: Owner,
    ) -> Result<(), ApplyError> {
        if e.link.is_empty() {
            return Err(invalid(e, "symlink with an empty target"));
        }
        if e.link.contains(&0) {
            return Err(invalid(e, "symlink target contains a NUL byte"));
        }
        if e.link.len() >= path::PATH_MAX {
            return Err(ApplyError::NameTooLong {
                entry: show(&e.path),
                reason: format!("symlink target of {} bytes", e.link.len()),
            });
        }
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        let link = || symlinkat(e.link.as_slice(), &parent, name);
        match link() {
            Err(Errno::EXIST) => {
                remove_existing(parent.as_fd(), parents, name, &mut self.dirs)
                    .map_err(io_err(e, "removing the existing entry"))?;
                link()
            }
            r => r,
        }
        .map_err(io_err(e, "creating the symlink"))?;
        let chown = chown_for(owner, self.ids, parent.gid);
        finish_node(e, parent.as_fd(), name, chown, None)
    }

    fn node(
        &mut self,
        e: &Entry,
        parents: &[&[u8]],
        name: &[u8],
        owner: Owner,
    ) -> Result<(), ApplyError> {
        let (ft, dev) = match e.kind {
            Kind::Char => (FileType::CharacterDevice, makedev(e.dev_major, e.dev_minor)),
            Kind::Block => (FileType::BlockDevice, makedev(e.dev_major, e.dev_minor)),
            _ => (FileType::Fifo, 0),
        };
        let chmod = self.needs_chmod(e.mode).then_some(e.mode);
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        let mknod = || mknodat(&parent, name, ft, Mode::from(e.mode & 0o777), dev);
        let made = match mknod() {
            Err(Errno::EXIST) => {
                remove_existing(parent.as_fd(), parents, name, &mut self.dirs)
                    .map_err(io_err(e, "removing the existing entry"))?;
                mknod()
            }
            r => r,
        };
        match made {
            Ok(()) => {}
            // No CAP_MKNOD (user namespace): Docker skips devices there too.
            Err(Errno::PERM) if ft != FileType::Fifo => {
                tracing::warn!(entry = %show(&e.path), "no permission to create a device node; skipped");
                return Ok(());
            }
            Err(err) => return Err(io_err(e, "creating the node")(err)),
        }
        let chown = chown_for(owner, self.ids, parent.gid);
        finish_node(e, parent.as_fd(), name, chown, chmod)
    }

    fn hardlink(&mut self, e: &Entry, comps: &[&[u8]]) -> Result<(), ApplyError> {
        let (name, parents) = match comps.split_last() {
            Some((n, p)) => (*n, p),
            None => return Ok(()),
        };
        let target_err = |reason: String| ApplyError::LinkTarget {
            entry: show(&e.path),
            target: show(&e.link),
            reason,
        };
        let tcomps = path::components(&e.link).map_err(|p| match p {
            PathProblem::DotDot => target_err("escapes the layer (`..` component)".into()),
            PathProblem::Nul => target_err("contains a NUL byte".into()),
            PathProblem::TooLong(n) => target_err(format!("{n} bytes, over {}", path::PATH_MAX)),
            PathProblem::ComponentTooLong(n) => {
                target_err(format!("component of {n} bytes, over {}", path::NAME_MAX))
            }
        })?;
        let Some((tname, tparents)) = tcomps.split_last() else {
            return Err(target_err("is the layer root".into()));
        };
        if tcomps == comps {
            tracing::debug!(entry = %show(&e.path), "hardlink to itself; nothing to do");
            return Ok(());
        }
        let tdir = self.cache.walk(tparents).map_err(|w| match w {
            WalkError::NotDir { depth } => target_err(format!(
                "{} is a symlink or not a directory; refusing to follow it",
                show(&path::join(&tparents[..=depth]))
            )),
            WalkError::Missing { .. } => target_err("not found in this layer".into()),
            WalkError::Io { source, .. } => target_err(std::io::Error::from(source).to_string()),
        })?;
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never dereferenced.
        let link = || linkat(&tdir, *tname, &parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                remove_existing(parent.as_fd(), parents, name, &mut self.dirs)
                    .map_err(io_err(e, "removing the existing entry"))?;
                link()
            }
            r => r,
        }
        .map_err(|err| match err {
            Errno::NOENT => target_err("not found in this layer".into()),
            Errno::PERM => target_err("cannot be hardlinked (a directory?)".into()),
            err => target_err(std::io::Error::from(err).to_string()),
        })
    }

    fn whiteout(
        &mut self,
        e: &Entry,
        parents: &[&[u8]],
        hidden: &[u8],
        owner: Owner,
    ) -> Result<(), ApplyError> {
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(invalid(e, "whiteout of an empty, `.` or `..` name"));
        }
        let chmod = self.needs_chmod(e.mode);
        let parent = self
            .cache
            .resolve(parents, true)
            .map_err(|w| walk_error(e, parents, w))?;
        let mknod = || {
            mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::from(e.mode & 0o777),
                makedev(0, 0),
            )
        };
        match mknod() {
            Err(Errno::EXIST) => {
                remove_existing(parent.as_fd(), parents, hidden, &mut self.dirs)
                    .map_err(io_err(e, "removing the whited-out entry"))?;
                mknod()
            }
            r => r,
        }
        .map_err(io_err(e, "creating the whiteout"))?;
        if let Some((uid, gid)) = chown_for(owner, self.ids, parent.gid) {
            chownat(
                &parent,
                hidden,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err(e, "chown"))?;
        }
        if chmod {
            chmodat(
                &parent,
                hidden,
                Mode::from(e.mode & 0o777),
                AtFlags::empty(),
            )
            .map_err(io_err(e, "chmod"))?;
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Directory times (and deferred modes), after every entry is written; children first.
    fn finish_dirs(&mut self) -> Result<(), ApplyError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (key, meta) in dirs.iter().rev() {
            let comps: Vec<&[u8]> = key.split(|&c| c == b'/').collect();
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let err = |op: &'static str| {
                let entry = show(key);
                move |source: Errno| ApplyError::Io {
                    entry,
                    op: op.to_string(),
                    source: source.into(),
                }
            };
            let parent = match self.cache.resolve(parents, false) {
                Ok(p) => p,
                // Removed since (only possible via a later entry, which then purged the key).
                Err(w) => {
                    tracing::debug!(dir = %show(key), ?w, "directory gone before the final pass");
                    continue;
                }
            };
            if let Some(mode) = meta.mode {
                chmodat(&parent, *name, Mode::from(mode), AtFlags::empty())
                    .map_err(err("chmod"))?;
            }
            let times = Timestamps {
                last_access: timespec(meta.times.0),
                last_modification: timespec(meta.times.1),
            };
            utimensat(&parent, *name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(err("setting directory times"))?;
        }
        Ok(())
    }
}

/// Owner, mode, xattrs and times of an object we hold no fd for (symlink, device, fifo).
fn finish_node(
    e: &Entry,
    parent: BorrowedFd<'_>,
    name: &[u8],
    owner: Owner,
    chmod: Option<u32>,
) -> Result<(), ApplyError> {
    if let Some((uid, gid)) = owner {
        chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err(e, "chown"))?;
    }
    if let Some(mode) = chmod {
        // Only for device nodes and fifos we just created (never a symlink), so following is
        // not a concern; fchmodat has no working NOFOLLOW before fchmodat2.
        chmodat(parent, name, Mode::from(mode), AtFlags::empty()).map_err(io_err(e, "chmod"))?;
    }
    if !e.xattrs.is_empty() {
        // No fd to use (opening a device would open the device), so name the object through
        // our parent fd; lsetxattr does not follow `name` itself.
        let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        let p = OsString::from_vec(p);
        for (key, value) in &e.xattrs {
            if forbidden_xattr(e, key) {
                continue;
            }
            xattr_result(
                e,
                key,
                lsetxattr(&p, key.as_slice(), value, XattrFlags::empty()),
            )?;
        }
    }
    utimensat(parent, name, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io_err(e, "setting times"))
}

fn set_xattrs_fd(e: &Entry, fd: BorrowedFd<'_>) -> Result<(), ApplyError> {
    for (key, value) in &e.xattrs {
        if forbidden_xattr(e, key) {
            continue;
        }
        xattr_result(
            e,
            key,
            fsetxattr(fd, key.as_slice(), value, XattrFlags::empty()),
        )?;
    }
    Ok(())
}

/// Overlay's own attributes: a layer setting them could hide or redirect lower content.
fn forbidden_xattr(e: &Entry, key: &[u8]) -> bool {
    let bad = key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.");
    if bad {
        tracing::warn!(entry = %show(&e.path), xattr = %show(key), "dropping overlay xattr from the layer");
    }
    bad
}

fn xattr_result(e: &Entry, key: &[u8], r: Result<(), Errno>) -> Result<(), ApplyError> {
    match r {
        Ok(()) => Ok(()),
        // As Docker: not every filesystem (or namespace) takes every xattr.
        Err(err @ (Errno::NOTSUP | Errno::PERM)) => {
            tracing::warn!(entry = %show(&e.path), xattr = %show(key), error = %err, "xattr not set");
            Ok(())
        }
        Err(err) => Err(ApplyError::Io {
            entry: show(&e.path),
            op: format!("setting xattr {}", show(key)),
            source: err.into(),
        }),
    }
}

/// A repeated directory entry replaces the directory's xattrs: drop those the new entry does
/// not carry, except overlay's (our opaque marker) and the LSM label (not layer content).
fn drop_stale_xattrs(e: &Entry, fd: BorrowedFd<'_>) -> Result<(), ApplyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = match flistxattr(fd, &mut buf[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(err) => return Err(io_err(e, "listing xattrs")(err)),
    };
    for key in buf[..n].split(|&c| c == 0).filter(|k| !k.is_empty()) {
        let keep = key.starts_with(b"trusted.overlay.")
            || key.starts_with(b"user.overlay.")
            || key == b"security.selinux"
            || e.xattrs.iter().any(|(k, _)| k == key);
        if !keep {
            match fremovexattr(fd, key) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(err) => {
                    return Err(ApplyError::Io {
                        entry: show(&e.path),
                        op: format!("removing stale xattr {}", show(key)),
                        source: err.into(),
                    })
                }
            }
        }
    }
    Ok(())
}

/// Makes room for a new object `name` in `dir`: unlinks a non-directory, or removes a
/// directory tree (and forgets its directories' pending attributes).
fn remove_existing(
    dir: BorrowedFd<'_>,
    parents: &[&[u8]],
    name: &[u8],
    dirs: &mut BTreeMap<Vec<u8>, DirMeta>,
) -> Result<(), Errno> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        // Linux says EISDIR for a directory (POSIX allows EPERM).
        Err(Errno::ISDIR | Errno::PERM) => {
            let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(Errno::PERM);
            }
            remove_tree(dir, name)?;
            let mut key = path::join(parents);
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            purge_dirs(dirs, key);
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Forgets `key` and every directory below it.
fn purge_dirs(dirs: &mut BTreeMap<Vec<u8>, DirMeta>, mut key: Vec<u8>) {
    dirs.remove(&key);
    key.push(b'/');
    let mut end = key.clone();
    // Keys under `key/` sort between `key/` and `key0` ('0' follows '/').
    if let Some(last) = end.last_mut() {
        *last = b'0';
    }
    let doomed: Vec<Vec<u8>> = dirs.range(key..end).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        dirs.remove(&k);
    }
}

/// `rm -r` of `name` in `parent`, through fds only (never following symlinks).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let fd: OwnedFd = open_dir(parent, name)?;
    let mut dir = Dir::new(fd)?;
    let mut children = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((n.to_vec(), ent.file_type() == FileType::Directory));
        }
    }
    let dfd = dir.fd()?;
    for (child, is_dir) in children {
        if is_dir {
            remove_tree(dfd, &child)?;
        } else {
            match unlinkat(dfd, child.as_slice(), AtFlags::empty()) {
                // d_type unknown on this filesystem: it was a directory after all.
                Err(Errno::ISDIR) => remove_tree(dfd, &child)?,
                r => r?,
            }
        }
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR)
}

fn atime(e: &Entry) -> Time {
    e.atime.unwrap_or(e.mtime)
}

fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    }
}

fn timestamps(e: &Entry) -> Timestamps {
    Timestamps {
        last_access: timespec(atime(e)),
        last_modification: timespec(e.mtime),
    }
}

/// The process umask, read without changing it (umask(2) only sets, and is process-wide).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        // Unknown: assume everything is masked, so every mode is set explicitly.
        .unwrap_or(0o777)
}

fn tar_error(t: TarError) -> ApplyError {
    match t {
        TarError::Io { offset, source } => ApplyError::Read { offset, source },
        TarError::Malformed { offset, reason } => ApplyError::Malformed { offset, reason },
    }
}

fn path_error(raw: &[u8], p: PathProblem) -> ApplyError {
    let entry = show(raw);
    match p {
        PathProblem::DotDot => ApplyError::PathEscape {
            entry,
            reason: "`..` component",
        },
        PathProblem::Nul => ApplyError::Invalid {
            entry,
            reason: "name contains a NUL byte".into(),
        },
        PathProblem::TooLong(n) => ApplyError::NameTooLong {
            entry,
            reason: format!("path of {n} bytes, over {}", path::PATH_MAX),
        },
        PathProblem::ComponentTooLong(n) => ApplyError::NameTooLong {
            entry,
            reason: format!("component of {n} bytes, over {}", path::NAME_MAX),
        },
    }
}

fn walk_error(e: &Entry, parents: &[&[u8]], w: WalkError) -> ApplyError {
    let upto = |depth: usize| show(&path::join(parents.get(..=depth).unwrap_or(parents)));
    match w {
        WalkError::NotDir { depth } => ApplyError::NotADirectory {
            entry: show(&e.path),
            parent: upto(depth),
        },
        WalkError::Missing { depth } => ApplyError::Io {
            entry: show(&e.path),
            op: format!("opening parent {}", upto(depth)),
            source: Errno::NOENT.into(),
        },
        WalkError::Io { depth, source } => ApplyError::Io {
            entry: show(&e.path),
            op: format!("opening parent {}", upto(depth)),
            source: source.into(),
        },
    }
}

fn io_err<'a>(e: &'a Entry, op: &'a str) -> impl FnOnce(Errno) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        entry: show(&e.path),
        op: op.to_string(),
        source: source.into(),
    }
}

fn invalid(e: &Entry, reason: &str) -> ApplyError {
    ApplyError::Invalid {
        entry: show(&e.path),
        reason: reason.to_string(),
    }
}

fn unsupported(e: &Entry, kind: String) -> ApplyError {
    ApplyError::Unsupported {
        entry: show(&e.path),
        kind,
    }
}
