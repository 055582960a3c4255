//! The state directory: `<root>/<id>/` holds `state.json` (written atomically) and, between
//! `create` and `start`, `exec.fifo`, on which the container's first process waits.
//!
//! Every command that changes a container holds an exclusive `flock` on its directory, so
//! concurrent commands on one id are serialised; `mkdir` of the directory is what makes a second
//! `create` of the same id fail.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Hook;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// The [`CleanupRecord`], written by `create` before it makes anything outside the directory.
pub const CLEANUP_FILE: &str = "cleanup.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid id format: {0:?}")]
    InvalidId(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("container does not exist: {0}")]
    NotExist(String),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: state file {path} is corrupt: {msg}")]
    Corrupt {
        id: String,
        path: PathBuf,
        msg: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What rcrun remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's first process; 0 before it exists.
    pub pid: i32,
    /// Start time (clock ticks since boot, /proc/PID/stat field 22): tells a recycled pid apart.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Opaque cgroup locator from [`crate::cgroups::Cgroup::state_path`].
    pub cgroup: Option<String>,
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// The file holding the cgroup's frozen state, so `state`/`list` read one file per container.
    #[serde(default)]
    pub freezer: Option<PathBuf>,
    #[serde(default)]
    pub rootless: bool,
    /// Whether the container has its own pid namespace (then killing its init kills everything).
    pub own_pid_ns: bool,
    #[serde(default)]
    pub poststart: Vec<Hook>,
    #[serde(default)]
    pub poststop: Vec<Hook>,
}

/// What `delete --force` needs to undo a container whose state.json is missing (a `create` killed
/// before it saved it) or unreadable (a damaged file). `create` writes it before it makes the
/// cgroup, so nothing exists on the host that neither state.json nor this record names: the
/// container's processes are found through the cgroup (a process outside it still has
/// `PR_SET_PDEATHSIG` and dies with `create`), its mounts live in its own mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRecord {
    /// The cgroup locator as planned before creation ([`crate::cgroups::Planned::state_path`]).
    #[serde(default)]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub systemd_cgroup: bool,
}

/// Lifecycle status as the runtime-spec and runc name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// runc's rule for ids: `^[\w+\-.]+$`, and not `.` or `..` (ids become directory names).
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

/// A container's state directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    pub dir: PathBuf,
    pub id: String,
    _lock: File,
}

impl StateDir {
    /// Make `<root>/<id>` for a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        let mut b = std::fs::DirBuilder::new();
        b.mode(0o711);
        if let Err(e) = b.create(root) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                b.recursive(true);
                b.create(root).map_err(io(root))?;
            }
        }
        let dir = root.join(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(e) => return Err(io(&dir)(e)),
        }
        let lock = lock_dir(&dir)?;
        Ok(StateDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    /// Lock an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        let dir = root.join(id);
        let lock = match lock_dir(&dir) {
            Ok(l) => l,
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotExist(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        // A create that failed removes the directory while we waited for its lock.
        if !dir.exists() {
            return Err(StateError::NotExist(id.to_string()));
        }
        Ok(StateDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    /// The lock's descriptor: a forked child must close it, or it would keep the lock.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self._lock.as_raw_fd()
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Write state.json atomically: a reader sees the old or the new file, never a torn one.
    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let tmp = self.dir.join(".state.json.tmp");
        let path = self.dir.join(STATE_FILE);
        let data = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            id: self.id.clone(),
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&data).map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn load(&self) -> Result<ContainerState, StateError> {
        load_state(&self.dir, &self.id)
    }

    /// Write the [`CleanupRecord`]. A plain write, not temp file + rename: it is written before
    /// the things it names exist, so a torn record (a `create` killed mid-write) names nothing.
    pub fn save_cleanup(&self, rec: &CleanupRecord) -> Result<(), StateError> {
        let path = self.dir.join(CLEANUP_FILE);
        let data = serde_json::to_vec(rec).map_err(|e| StateError::Corrupt {
            id: self.id.clone(),
            path: path.clone(),
            msg: e.to_string(),
        })?;
        std::fs::write(&path, data).map_err(io(&path))
    }

    /// The [`CleanupRecord`], `None` if `create` never wrote one (it made nothing yet).
    pub fn load_cleanup(&self) -> Result<Option<CleanupRecord>, StateError> {
        let path = self.dir.join(CLEANUP_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                id: self.id.clone(),
                path,
                msg: e.to_string(),
            })
    }

    /// Remove the directory and everything in it (the lock goes with it).
    pub fn remove(self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.dir)(e)),
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, StateError> {
    let f = File::open(dir).map_err(io(dir))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(io(dir)(std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// Read a container's state.json without taking the lock (for `state` and `list`).
pub fn load_state(dir: &Path, id: &str) -> Result<ContainerState, StateError> {
    let path = dir.join(STATE_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.exists() {
                return Err(StateError::Corrupt {
                    id: id.to_string(),
                    path,
                    msg: "missing (the container is being created, or its create was killed)"
                        .into(),
                });
            }
            return Err(StateError::NotExist(id.to_string()));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    parse_state(id, &path, &data)
}

/// Parse the bytes of a state.json (`path` only names the file in the error). This is the entry
/// point of the `state_json` fuzz target: any input gives a state or a `Corrupt` error.
pub fn parse_state(id: &str, path: &Path, data: &[u8]) -> Result<ContainerState, StateError> {
    serde_json::from_slice(data).map_err(|e| StateError::Corrupt {
        id: id.to_string(),
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// One parse of /proc/PID/stat: the state letter and the start time.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let data = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &data[data.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ContainerState {
    /// Whether the recorded process still exists (and is not a zombie or a recycled pid).
    pub fn is_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some((st, start)) => st != 'Z' && st != 'X' && start == self.pid_start,
            None => false,
        }
    }

    /// Status computed from the process, the cgroup freezer and the files present, as runc does.
    ///
    /// `paused` comes from the freezer itself (v1 `freezer.self_freezing`, v2 `cgroup.freeze`),
    /// not from a marker file: the kernel's state cannot disagree with itself, whereas a marker
    /// can be left stale by a `pause` killed between the freeze and the write, or by anything
    /// that thaws the cgroup behind our back (`kill KILL`, `delete --force`, an operator). Like
    /// runc, a frozen created container is `paused` (and `created` again after `resume`).
    pub fn status(&self, dir: &Path) -> Status {
        if !self.is_alive() {
            return Status::Stopped;
        }
        let frozen = match (&self.freezer, self.cgroup.as_deref()) {
            (Some(f), _) => crate::cgroups::frozen_file(f),
            (None, Some(c)) => crate::cgroups::is_frozen(c),
            (None, None) => false,
        };
        if frozen {
            return Status::Paused;
        }
        if dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// runc's `state` JSON (two-space indented, annotations omitted when empty).
    pub fn to_oci_json(&self, status: Status) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.annotations);
        }
        v
    }

    /// The state object given to hooks on stdin (runtime-spec `state` schema).
    pub fn hook_state(&self, status: Status) -> String {
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status.as_str(),
            "bundle": self.bundle,
        });
        if status != Status::Stopped && self.pid > 0 {
            v["pid"] = serde_json::json!(self.pid);
        }
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.annotations);
        }
        v.to_string()
    }
}

/// The container directories under `root` with their ids (nothing parsed yet).
pub fn list_dirs(root: &Path) -> Result<Vec<(PathBuf, String)>, StateError> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(root)(e)),
    };
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(|id| (e.path(), id.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    #[allow(clippy::panic)]
    fn damaged_state_is_a_one_line_corrupt_error() {
        let p = Path::new("/run/rcrun/x/state.json");
        for bad in [&b""[..], b"{", b"garbage\xff", br#"{"id": 7}"#, b"\n\n{\n"] {
            match parse_state("x", p, bad) {
                Err(e @ StateError::Corrupt { .. }) => {
                    assert!(!e.to_string().contains('\n'), "{e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn cleanup_record_round_trip() {
        let root = std::env::temp_dir().join(format!("rcrun-state-test-{}", std::process::id()));
        let dir = StateDir::create(&root, "c1").unwrap();
        assert_eq!(dir.load_cleanup().unwrap(), None);
        let rec = CleanupRecord {
            cgroup: Some("{\"version\":1}".into()),
            systemd_cgroup: true,
        };
        dir.save_cleanup(&rec).unwrap();
        assert_eq!(dir.load_cleanup().unwrap(), Some(rec));
        std::fs::write(dir.dir.join(CLEANUP_FILE), "{\"cgro").unwrap();
        assert!(matches!(
            dir.load_cleanup(),
            Err(StateError::Corrupt { .. })
        ));
        dir.remove().unwrap();
        let _ = std::fs::remove_dir(&root);
    }

    #[test]
    fn own_stat_parses() {
        let pid = std::process::id() as i32;
        let (st, start) = proc_stat(pid).unwrap_or(('?', 0));
        assert!(st == 'R' || st == 'S', "state {st}");
        assert!(start > 0);
    }
}
