//! On-disk state files shared by the config store, IPAM and device pools: an exclusive `flock`
//! on a sidecar lock file, and atomic replacement (temp file + fsync + rename + directory
//! fsync), so parallel OCI hooks never see a half-written file and a writer killed at any point
//! leaves either the old or the new contents.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of state-file I/O; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path:?} is corrupt ({source}); it was left untouched: inspect or remove it"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path:?}: cannot encode: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// An exclusive lock held until dropped. The lock lives on a separate `.lock` file because the
/// data file's inode is replaced on every write (a lock on it would protect nothing).
pub(crate) struct Lock {
    _flock: Flock<File>,
}

pub(crate) fn lock(path: &Path) -> Result<Lock, StateError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path, "open lock file"))?;
    let flock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io(path, "flock")(std::io::Error::from(errno)))?;
    Ok(Lock { _flock: flock })
}

/// Reads and decodes `path`; `Ok(None)` when it does not exist.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "read")(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// Atomically replaces `path` with the JSON encoding of `value`.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Per-process temp name: concurrent writers are serialised by the lock anyway, but a temp
    // file left by a killed writer must not be mistaken for ours.
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io(&tmp, "create temp file"))?;
        f.write_all(&bytes).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "fsync"))?;
        fs::rename(&tmp, path).map_err(io(path, "rename temp file into place"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir, "fsync directory"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `path`; a missing file is not an error.
pub(crate) fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "remove")(e)),
    }
}
