//! Container cgroups: path resolution (runc rules), creation, joining, resource limits,
//! freezing, listing and removal.
//!
//! Layouts handled:
//! * **cgroup v1 / legacy** (`/sys/fs/cgroup` is a tmpfs with one mount per hierarchy),
//! * **hybrid** (legacy plus a cgroup2 mount, usually `/sys/fs/cgroup/unified`). The process is
//!   also placed into the unified hierarchy (as runc does), and controllers that are only
//!   attached to the unified hierarchy (e.g. `hugetlb` on some hosts) are configured there,
//! * **unified / pure cgroup v2** (libcgroups' v2 manager does the resource writes),
//! * **systemd** (`--systemd-cgroup`, cgroup v2 only; libcgroups' systemd manager).
//!
//! Speed matters (container start-up): `create` reads `/proc/self/mountinfo` at most once (not at
//! all on pure v2), `/proc/self/cgroup` only for relative paths, creates one directory per
//! hierarchy (plus missing parents) and never walks the hierarchy. `open` reads nothing: the
//! state string carries the resolved directories.
//!
//! On cgroup v1 the resource writes are done here rather than through libcgroups' v1 manager:
//! constructing that manager costs ~1 ms (it re-parses mountinfo and /proc/self/cgroup once
//! per controller, 24 procfs reads), cannot place a process in the unified hierarchy, fails when a
//! controller is only available on the unified hierarchy, resolves relative paths against the
//! hierarchy root instead of the runtime's cgroup, and always adds youki's own default device
//! rules (including tun/tap) after the user's rules. On cgroup v2 libcgroups' v2 manager applies
//! the limits; this module adds what it lacks in rcrun's build: the eBPF device filter (libcgroups
//! needs its `cgroupsv2_devices` feature / libbpf for that), rdma, enabling controllers in the
//! parents' `cgroup.subtree_control` when the directory already exists, clear errors for
//! controllers that are not enabled, and cgroup.kill-based removal.
//!
//! Typical use: `create` → `apply` → `add_task` (or `clone_into_fd` on v2) → … →
//! `open(state_path)` → `freeze`/`thaw`/`pids` → `remove`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{CgroupManager, ControllerOpt, FreezerState, WrappedIoError};
use nix::errno::Errno;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

/// Where the cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_PROCS: &str = "cgroup.procs";
const STATE_VERSION: u32 = 1;

/// Errors of the cgroups module. Messages name the path, field and value involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `linux.cgroupsPath` (or the container id used to derive it) is unusable.
    #[error("invalid linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// `--systemd-cgroup` was given but systemd is not the init system.
    #[error(
        "--systemd-cgroup was requested (cgroupsPath {cgroups_path:?}) but systemd is not running \
         on this host (/run/systemd/system does not exist); run without --systemd-cgroup and use a \
         cgroupfs path such as \"/{container_id}\" instead"
    )]
    SystemdNotRunning {
        cgroups_path: String,
        container_id: String,
    },

    /// The systemd driver is not supported in this configuration.
    #[error("--systemd-cgroup: {0}")]
    SystemdUnsupported(String),

    /// No usable cgroup filesystem was found.
    #[error("no usable cgroup filesystem: {0}")]
    NoCgroupFs(String),

    /// A limit was requested for a controller that is not available on this host.
    #[error("cannot apply {field}: cgroup controller {controller:?} is not available: {detail}")]
    ControllerUnavailable {
        field: &'static str,
        controller: &'static str,
        detail: String,
    },

    /// A value in linux.resources is invalid before even trying to write it.
    #[error("invalid {field} value {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: String,
    },

    /// Writing a cgroup file failed.
    #[error("cgroup {file}: cannot set to {value} ({reason}) in {dir}")]
    Write {
        file: String,
        value: String,
        reason: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other I/O failure on a cgroup path.
    #[error("cgroup: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The cgroup could not be removed.
    #[error("cgroup: cannot remove {path}: {reason}")]
    Remove { path: PathBuf, reason: String },

    /// Freezing did not complete.
    #[error("cgroup: cannot freeze {path}: {reason}")]
    Freeze { path: PathBuf, reason: String },

    /// The string saved by `state_path()` could not be used.
    #[error("invalid cgroup state {state:?}: {reason}")]
    BadState { state: String, reason: String },

    /// An error reported by libcgroups' v2 or systemd manager.
    #[error("cgroup {op} failed for {path}: {message}")]
    Manager {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// Options for [`Cgroup::create`].
pub struct CgroupOptions<'a> {
    pub container_id: &'a str,
    /// `linux.cgroupsPath` from config.json.
    pub cgroups_path: Option<&'a Path>,
    /// `--systemd-cgroup`.
    pub systemd: bool,
    pub rootless: bool,
}

/// Which cgroup layout a [`Cgroup`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// cgroup v1 plus a cgroup2 hierarchy.
    Hybrid,
    /// Pure cgroup v2.
    Unified,
    /// cgroup v2 driven by systemd (transient scope unit).
    Systemd,
}

/// One hierarchy the container's cgroup lives in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hierarchy {
    /// Comma separated controllers (`"cpu,cpuacct"`, `"name=systemd"`); empty for cgroup2.
    name: String,
    /// Absolute directory of the container's cgroup in this hierarchy.
    dir: PathBuf,
    /// Mount point of the hierarchy.
    mount: PathBuf,
}

impl Hierarchy {
    fn is_unified(&self) -> bool {
        self.name.is_empty()
    }
    fn has(&self, controller: &str) -> bool {
        !self.is_unified() && self.name.split(',').any(|c| c == controller)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SystemdState {
    /// "slice:prefix:name"
    cgroups_path: String,
    container_id: String,
    use_system: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    version: u32,
    mode: CgroupMode,
    /// The cgroup path as seen from /proc/<pid>/cgroup (unified hierarchy, or the first v1 one).
    path: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// Directories created by `create`, parents before children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    created: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rootless: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    systemd: Option<SystemdState>,
}

/// A cgroup resolved by [`Cgroup::plan`] but not created yet.
pub struct Planned(PlannedKind);

enum PlannedKind {
    Fs { plan: Plan, rootless: bool },
    Systemd(Box<Cgroup>),
}

impl Planned {
    /// The locator the cgroup will have once created, for [`Cgroup::open`]: enough for
    /// [`Cgroup::remove`] to undo a creation that was interrupted at any point. It names every
    /// planned directory and, as created, the missing parents creation will make (one `stat`
    /// per hierarchy when the parent exists, the usual case).
    pub fn state_path(&self) -> String {
        match &self.0 {
            PlannedKind::Systemd(cg) => cg.state_path(),
            PlannedKind::Fs { plan, rootless } => {
                let mut created = Vec::new();
                for h in &plan.hierarchies {
                    let mut missing = Vec::new();
                    let mut dir = h.dir.parent();
                    while let Some(d) = dir {
                        if !d.starts_with(&h.mount) || d == h.mount || d.exists() {
                            break;
                        }
                        missing.push(d.to_path_buf());
                        dir = d.parent();
                    }
                    created.extend(missing.into_iter().rev());
                }
                let state = State {
                    version: STATE_VERSION,
                    mode: plan.mode,
                    path: plan.path.clone(),
                    hierarchies: plan.hierarchies.clone(),
                    created,
                    rootless: *rootless,
                    systemd: None,
                };
                serde_json::to_string(&state).unwrap_or_else(|_| plan.path.display().to_string())
            }
        }
    }
}

/// A container's cgroup, created on the host before the container process is added to it.
pub struct Cgroup {
    state: State,
    /// libcgroups v2 manager for the unified hierarchy (unified mode, and hybrid mode).
    v2: Option<libcgroups::v2::manager::Manager>,
    systemd: Option<Box<libcgroups::systemd::manager::Manager>>,
    /// True until a device program was attached to a cgroup2 directory this object created
    /// (then there is nothing to replace and the BPF_PROG_QUERY can be skipped).
    fresh_bpf: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("state", &self.state)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// public API
// ---------------------------------------------------------------------------------------------

impl Cgroup {
    /// Resolve the cgroup path and create its directories (nothing is left behind on error).
    ///
    /// Path rules (runc's): an absolute `cgroupsPath` is used as-is under every hierarchy; a
    /// relative one is relative to the runtime's own cgroup in each v1 hierarchy, and to the
    /// parent of the runtime's own cgroup on cgroup v2 (like runc's fs2 driver); none gives
    /// `/<container_id>`. With `systemd`, `cgroupsPath` must be `slice:prefix:name` and defaults
    /// to `system.slice:rcrun:<id>`.
    ///
    /// `resources` (optional) is used to seed `cpuset.cpus`/`cpuset.mems` on cgroup v1 before any
    /// task joins; limits are applied by [`Cgroup::apply`].
    pub fn create(
        opts: &CgroupOptions,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        Self::create_planned(Self::plan(opts)?, resources)
    }

    /// The first half of [`Cgroup::create`]: resolve the path and the hierarchies, create
    /// nothing. The caller can record [`Planned::state_path`] before anything exists.
    pub fn plan(opts: &CgroupOptions) -> Result<Planned, CgroupError> {
        if opts.systemd {
            // The systemd driver makes nothing before `add_task` (the scope unit).
            return Ok(Planned(PlannedKind::Systemd(Box::new(
                Self::create_systemd(opts)?,
            ))));
        }
        let spec_path = resolve_spec_path(opts)?;
        let plan = if is_cgroup2(Path::new(CGROUP_ROOT)) {
            plan_unified(&spec_path, opts.rootless)?
        } else {
            plan_v1(&spec_path, opts.rootless)?
        };
        Ok(Planned(PlannedKind::Fs {
            plan,
            rootless: opts.rootless,
        }))
    }

    /// The second half of [`Cgroup::create`]: create the planned directories.
    pub fn create_planned(
        planned: Planned,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        match planned.0 {
            PlannedKind::Systemd(cg) => Ok(*cg),
            PlannedKind::Fs { plan, rootless } => Self::create_from_plan(plan, rootless, resources),
        }
    }

    fn create_from_plan(
        plan: Plan,
        rootless: bool,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup {
            v2: None,
            systemd: None,
            fresh_bpf: Default::default(),
            state: State {
                version: STATE_VERSION,
                mode: plan.mode,
                path: plan.path,
                hierarchies: Vec::new(),
                created: Vec::new(),
                rootless,
                systemd: None,
            },
        };
        if let Err(e) = cg.make_dirs(plan.hierarchies, resources) {
            if let Err(re) = cg.remove() {
                tracing::warn!("cleanup after failed cgroup creation: {re}");
            }
            return Err(e);
        }
        cg.v2 = cg.make_v2_manager();
        let fresh = cg
            .unified_dir()
            .is_some_and(|h| cg.state.created.iter().any(|c| c == &h.dir));
        cg.fresh_bpf = std::sync::atomic::AtomicBool::new(fresh);
        tracing::debug!(path = %cg.state.path.display(), mode = ?cg.state.mode, "cgroup created");
        Ok(cg)
    }

    /// Move a process into the cgroup (every hierarchy, including the unified one in hybrid mode).
    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        if let Some(m) = &self.systemd {
            return m
                .add_task(pid)
                .map_err(|e| manager_err("add_task", &self.state.path, e));
        }
        for h in &self.state.hierarchies {
            if h.is_unified() {
                if let Some(m) = &self.v2 {
                    m.add_task(pid).map_err(|e| v2_err("add_task", &h.dir, e))?;
                    continue;
                }
            }
            let pid_s = pid.as_raw().to_string();
            match write_raw(&h.dir.join(CGROUP_PROCS), &pid_s) {
                Ok(()) => {}
                Err(e) if self.state.rootless && is_perm_error(&e) => {
                    tracing::debug!("rootless: cannot join {}: {e}", h.dir.display());
                }
                Err(e) => return Err(write_err(&h.dir, CGROUP_PROCS, &pid_s, e)),
            }
        }
        Ok(())
    }

    /// On pure cgroup v2: the container cgroup's directory, opened `O_PATH|O_DIRECTORY`, to
    /// start the container process directly inside it with `clone3(CLONE_INTO_CGROUP)` (as
    /// crun does), which makes `add_task` unnecessary and avoids a migration. `None` on
    /// cgroup v1/hybrid (several hierarchies) and with systemd (the scope is created by
    /// `add_task`).
    pub fn clone_into_fd(&self) -> Option<std::os::fd::OwnedFd> {
        if self.state.mode != CgroupMode::Unified {
            return None;
        }
        let h = self.unified_dir()?;
        nix::fcntl::open(
            &h.dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| {
            // SAFETY: `open` just returned this descriptor; we are its only owner.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
    }

    /// Apply `linux.resources`: memory, cpu, cpuset, pids, blkio/io, hugetlb, devices, network
    /// (classid/priorities), rdma and unified. Can be called before or after `add_task`, and
    /// again for `update`.
    ///
    /// Devices (runc semantics): when `resources.devices` is `Some` (even empty) the cgroup
    /// becomes deny-all, then the given rules apply in order, then runc's default allowed
    /// devices (null, zero, full, tty, random, urandom, pts, ptmx; `mknod` of any). On cgroup v2
    /// this is an eBPF program that replaces the previous one. `None` leaves device rules alone.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match self.state.mode {
            CgroupMode::Systemd => self.apply_systemd(resources),
            CgroupMode::Unified => self.apply_unified(resources),
            CgroupMode::Legacy | CgroupMode::Hybrid => self.apply_v1(resources),
        }
    }

    /// An opaque string to keep in the container's state.json; see [`Cgroup::open`].
    pub fn state_path(&self) -> String {
        serde_json::to_string(&self.state).unwrap_or_else(|_| self.state.path.display().to_string())
    }

    /// Reopen a cgroup from [`Cgroup::state_path`]. Reads no files (except for systemd, which
    /// reconnects to the bus). A plain absolute cgroup path is accepted as well.
    pub fn open(state_path: &str, systemd: bool) -> Result<Cgroup, CgroupError> {
        let state: State = if state_path.trim_start().starts_with('{') {
            serde_json::from_str(state_path).map_err(|e| CgroupError::BadState {
                state: state_path.to_string(),
                reason: e.to_string(),
            })?
        } else {
            Self::state_from_plain_path(state_path, systemd)?
        };
        if state.version != STATE_VERSION {
            return Err(CgroupError::BadState {
                state: state_path.to_string(),
                reason: format!("unsupported version {}", state.version),
            });
        }
        if let Some(sd) = &state.systemd {
            let m = systemd_manager(sd)?;
            return Ok(Cgroup {
                state,
                v2: None,
                systemd: Some(m),
                fresh_bpf: Default::default(),
            });
        }
        if systemd {
            tracing::debug!("open: state was created without systemd; using cgroupfs");
        }
        let mut cg = Cgroup {
            state,
            v2: None,
            systemd: None,
            fresh_bpf: Default::default(),
        };
        cg.v2 = cg.make_v2_manager();
        Ok(cg)
    }

    /// Processes in the cgroup, including its sub-cgroups (for `kill --all`, `ps`).
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        if let Some(m) = &self.systemd {
            return m
                .get_all_pids()
                .map_err(|e| manager_err("get_all_pids", &self.state.path, e));
        }
        let Some(dir) = self.pids_dir() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        collect_pids(dir, &mut out)?;
        Ok(out)
    }

    /// Freeze every process of the cgroup (cgroup v1 freezer, or cgroup.freeze on v2).
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaw the cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// Remove every directory `create` made (sub-cgroups first, retrying on EBUSY like runc);
    /// processes still inside are thawed and SIGKILLed. Ok if already gone.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if let Some(m) = &self.systemd {
            return m
                .remove()
                .map_err(|e| manager_err("remove", &self.state.path, e));
        }
        let mut errors = Vec::new();
        let mut pending: Vec<&Hierarchy> = self.state.hierarchies.iter().collect();
        let mut delay = Duration::from_millis(10);
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            errors.clear();
            pending.retain(|h| match remove_tree(&h.dir) {
                Ok(()) => false,
                Err(e) => {
                    errors.push((h.dir.clone(), e));
                    true
                }
            });
            if pending.is_empty() {
                break;
            }
            // Something is still inside: make sure nothing keeps it alive.
            self.kill_leftovers(&pending);
        }
        // Parents that create() made, deepest first, only if now empty.
        for dir in self.state.created.iter().rev() {
            if self.state.hierarchies.iter().any(|h| &h.dir == dir) {
                continue;
            }
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => tracing::debug!("keeping parent cgroup {}: {e}", dir.display()),
            }
        }
        if let Some((path, e)) = errors.into_iter().next() {
            let pids = collect_pids_quiet(&path);
            return Err(CgroupError::Remove {
                path,
                reason: if pids.is_empty() {
                    e.to_string()
                } else {
                    format!("{e}; processes still inside: {pids:?}")
                },
            });
        }
        Ok(())
    }

    /// The container's cgroup path as seen in the container's `/proc/self/cgroup` (the unified
    /// hierarchy's path on v2/hybrid; the first v1 hierarchy's otherwise).
    pub fn path(&self) -> &Path {
        &self.state.path
    }

    /// Every hierarchy the cgroup lives in: (controllers — comma separated, e.g. `"cpu,cpuacct"`
    /// or `"name=systemd"`, empty for cgroup2 —, mount point, the cgroup's absolute directory).
    /// Useful to bind-mount the container's own cgroups into its rootfs.
    pub fn hierarchies(&self) -> impl Iterator<Item = (&str, &Path, &Path)> + '_ {
        self.state
            .hierarchies
            .iter()
            .map(|h| (h.name.as_str(), h.mount.as_path(), h.dir.as_path()))
    }

    /// The layout this cgroup lives in.
    pub fn mode(&self) -> CgroupMode {
        self.state.mode
    }

    /// Absolute directory of this cgroup for a controller (`"memory"`, `"cpu"`...), or the
    /// unified hierarchy's directory for `""`.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.state
            .hierarchies
            .iter()
            .find(|h| {
                if controller.is_empty() || self.state.mode == CgroupMode::Unified {
                    h.is_unified()
                } else {
                    h.has(controller)
                }
            })
            .map(|h| h.dir.as_path())
    }
}

// ---------------------------------------------------------------------------------------------
// path resolution
// ---------------------------------------------------------------------------------------------

/// runc's CleanPath: lexical clean; a relative path stays relative but cannot climb out.
fn clean_path(p: &Path) -> PathBuf {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let mut out = if p.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    out.extend(parts);
    out
}

fn resolve_spec_path(opts: &CgroupOptions) -> Result<PathBuf, CgroupError> {
    match opts.cgroups_path {
        Some(p) if !p.as_os_str().is_empty() => {
            let cleaned = clean_path(p);
            if cleaned.as_os_str().is_empty() || cleaned == Path::new("/") {
                return Err(CgroupError::InvalidPath {
                    path: p.display().to_string(),
                    reason: "it resolves to the root of the cgroup hierarchy".into(),
                });
            }
            Ok(cleaned)
        }
        _ => {
            let id = opts.container_id;
            if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                return Err(CgroupError::InvalidPath {
                    path: String::new(),
                    reason: format!("no cgroupsPath and container id {id:?} is not a valid name"),
                });
            }
            Ok(PathBuf::from("/").join(id))
        }
    }
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Join an absolute or relative cgroup path under a directory.
fn join_under(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

struct Mount {
    fstype: String,
    root: PathBuf,
    point: PathBuf,
    /// For v1: sorted controller names (incl. "name=..."); empty for cgroup2.
    controllers: Vec<String>,
}

fn unescape_mount(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0');
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Read a procfs file with a large first buffer (procfs reports size 0, so read_to_string
/// would otherwise probe with many small reads).
fn read_proc(path: &Path) -> Result<String, CgroupError> {
    let io = |source| CgroupError::Io {
        op: "read",
        path: path.into(),
        source,
    };
    let mut f = fs::File::open(path).map_err(io)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    f.read_to_end(&mut buf).map_err(io)?;
    String::from_utf8(buf).map_err(|e| io(std::io::Error::new(ErrorKind::InvalidData, e)))
}

/// Parse the cgroup mounts of /proc/self/mountinfo (one read).
fn cgroup_mounts() -> Result<Vec<Mount>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = read_proc(path)?;
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post_it = post.split(' ');
        let fstype = post_it.next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let _source = post_it.next();
        let super_opts = post_it.next().unwrap_or_default();
        let pre: Vec<&str> = pre.split(' ').collect();
        if pre.len() < 5 {
            continue;
        }
        let mut controllers: Vec<String> = if fstype == "cgroup" {
            super_opts
                .split(',')
                .filter(|o| KNOWN_V1.contains(o) || o.starts_with("name="))
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        controllers.sort();
        let m = Mount {
            fstype: fstype.to_string(),
            root: unescape_mount(pre[3]),
            point: unescape_mount(pre[4]),
            controllers,
        };
        // The same hierarchy may be mounted several times (bind mounts): keep the first.
        if out
            .iter()
            .any(|o| o.fstype == m.fstype && o.controllers == m.controllers)
        {
            continue;
        }
        out.push(m);
    }
    Ok(out)
}

/// /proc/self/cgroup: hierarchy (sorted controller list, "" for v2) -> path.
fn own_cgroups() -> Result<HashMap<Vec<String>, PathBuf>, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    let text = read_proc(path)?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(p)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let mut c: Vec<String> = ctrls
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        c.sort();
        out.insert(c, PathBuf::from(p));
    }
    Ok(out)
}

/// The directory of the container cgroup in one hierarchy.
fn hierarchy_dir(
    m: &Mount,
    spec: &Path,
    own: &mut Option<HashMap<Vec<String>, PathBuf>>,
) -> Result<PathBuf, CgroupError> {
    if spec.is_absolute() {
        return Ok(join_under(&m.point, spec));
    }
    if own.is_none() {
        *own = Some(own_cgroups()?);
    }
    let mine = own
        .as_ref()
        .and_then(|o| o.get(&m.controllers))
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/"));
    // On cgroup2 the runtime's own cgroup has processes, so (like runc's fs2) use its parent.
    let base = if m.fstype == "cgroup2" {
        mine.parent().map(Path::to_path_buf).unwrap_or(mine)
    } else {
        mine
    };
    let rel_to_mount = base.strip_prefix(&m.root).unwrap_or(&base).to_path_buf();
    Ok(join_under(&join_under(&m.point, &rel_to_mount), spec))
}

struct Plan {
    mode: CgroupMode,
    path: PathBuf,
    hierarchies: Vec<Hierarchy>,
}

fn plan_unified(spec: &Path, _rootless: bool) -> Result<Plan, CgroupError> {
    plan_unified_at(Path::new(CGROUP_ROOT), spec)
}

/// Pure cgroup v2 layout with the cgroup2 filesystem mounted at `mount`.
fn plan_unified_at(mount: &Path, spec: &Path) -> Result<Plan, CgroupError> {
    let m = Mount {
        fstype: "cgroup2".into(),
        root: PathBuf::from("/"),
        point: mount.to_path_buf(),
        controllers: Vec::new(),
    };
    let mut own = None;
    let dir = hierarchy_dir(&m, spec, &mut own)?;
    if dir == m.point {
        return Err(CgroupError::InvalidPath {
            path: spec.display().to_string(),
            reason: format!("it resolves to the hierarchy root {}", m.point.display()),
        });
    }
    let path = Path::new("/").join(dir.strip_prefix(mount).unwrap_or(&dir));
    Ok(Plan {
        mode: CgroupMode::Unified,
        path,
        hierarchies: vec![Hierarchy {
            name: String::new(),
            dir,
            mount: m.point,
        }],
    })
}

fn plan_v1(spec: &Path, _rootless: bool) -> Result<Plan, CgroupError> {
    let mounts = cgroup_mounts()?;
    if mounts.is_empty() {
        return Err(CgroupError::NoCgroupFs(format!(
            "{CGROUP_ROOT} is not cgroup2 and /proc/self/mountinfo lists no cgroup mounts"
        )));
    }
    let mut own = None;
    let mut hierarchies = Vec::new();
    let mut hybrid = false;
    for m in &mounts {
        if m.fstype == "cgroup2" {
            hybrid = true;
        } else if m.controllers.is_empty() {
            continue;
        }
        let dir = hierarchy_dir(m, spec, &mut own)?;
        if dir == m.point {
            return Err(CgroupError::InvalidPath {
                path: spec.display().to_string(),
                reason: format!("it resolves to the hierarchy root {}", m.point.display()),
            });
        }
        hierarchies.push(Hierarchy {
            name: m.controllers.join(","),
            dir,
            mount: m.point.clone(),
        });
    }
    // path(): unified hierarchy if present, else the first v1 one.
    let pick = hierarchies
        .iter()
        .find(|h| h.is_unified())
        .or_else(|| hierarchies.iter().find(|h| h.has("memory")))
        .or_else(|| hierarchies.first());
    let path = pick
        .map(|h| Path::new("/").join(h.dir.strip_prefix(&h.mount).unwrap_or(&h.dir)))
        .unwrap_or_else(|| spec.to_path_buf());
    Ok(Plan {
        mode: if hybrid {
            CgroupMode::Hybrid
        } else {
            CgroupMode::Legacy
        },
        path,
        hierarchies,
    })
}

// ---------------------------------------------------------------------------------------------
// creation
// ---------------------------------------------------------------------------------------------

fn is_perm_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EACCES) | Some(Errno::EPERM) | Some(Errno::EROFS)
    )
}

impl Cgroup {
    /// mkdir `dir` and missing parents (never above `mount`); records what it created.
    fn mkdir_p(&mut self, dir: &Path, mount: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
        let mut made = Vec::new();
        match fs::create_dir(dir) {
            Ok(()) => {
                made.push(dir.to_path_buf());
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Create parents top-down.
                let rel = dir.strip_prefix(mount).unwrap_or(dir);
                let mut cur = mount.to_path_buf();
                for c in rel.components() {
                    cur.push(c);
                    match fs::create_dir(&cur) {
                        Ok(()) => made.push(cur.clone()),
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            self.state.created.extend(made);
                            return Err(e);
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
        self.state.created.extend(made.iter().cloned());
        Ok(made)
    }

    fn make_dirs(
        &mut self,
        planned: Vec<Hierarchy>,
        resources: Option<&LinuxResources>,
    ) -> Result<(), CgroupError> {
        let rootless = self.state.rootless;
        let mut unified_controllers: Option<String> = None;
        let mut unified_failed = false;
        for h in planned {
            let made = match self.mkdir_p(&h.dir, &h.mount) {
                Ok(m) => m,
                Err(e) if rootless && is_perm_error(&e) => {
                    tracing::debug!("rootless: skipping cgroup {}: {e}", h.dir.display());
                    continue;
                }
                // Hybrid: the cgroup2 side is a bonus (it only matters for controllers attached
                // there, which apply() reports if they are needed); do not fail the container.
                Err(e) if h.is_unified() && self.state.mode == CgroupMode::Hybrid => {
                    tracing::warn!("hybrid: not using cgroup2 {}: {e}", h.dir.display());
                    unified_failed = true;
                    continue;
                }
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "create directory",
                        path: h.dir.clone(),
                        source,
                    })
                }
            };
            // Record the hierarchy as soon as its directory exists, so remove() cleans it.
            self.state.hierarchies.push(h.clone());
            if h.has("cpuset") {
                init_cpuset(&h, &made, resources)?;
            }
            if h.is_unified() {
                let avail = match &unified_controllers {
                    Some(a) => a.clone(),
                    None => {
                        let a = fs::read_to_string(h.mount.join("cgroup.controllers"))
                            .unwrap_or_default();
                        unified_controllers = Some(a.clone());
                        a
                    }
                };
                enable_unified_controllers(&h, &avail);
            }
        }
        if unified_failed {
            // path() was the cgroup2 path; use the memory (or first) v1 hierarchy's instead.
            let hs = &self.state.hierarchies;
            if let Some(h) = hs.iter().find(|h| h.has("memory")).or_else(|| hs.first()) {
                self.state.path =
                    Path::new("/").join(h.dir.strip_prefix(&h.mount).unwrap_or(&h.dir));
            }
        }
        if self.state.hierarchies.is_empty() && !rootless {
            return Err(CgroupError::NoCgroupFs(
                "no cgroup hierarchy could be used".into(),
            ));
        }
        Ok(())
    }

    fn make_v2_manager(&self) -> Option<libcgroups::v2::manager::Manager> {
        let h = self.state.hierarchies.iter().find(|h| h.is_unified())?;
        let rel = h.dir.strip_prefix(&h.mount).ok()?;
        libcgroups::v2::manager::Manager::new(h.mount.clone(), rel.to_path_buf())
            .ok()
            .map(|m| m.with_rootless(self.state.rootless))
    }

    fn create_systemd(opts: &CgroupOptions) -> Result<Cgroup, CgroupError> {
        let cgroups_path = match opts.cgroups_path {
            Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
            _ => format!("system.slice:rcrun:{}", opts.container_id),
        };
        let parts: Vec<&str> = cgroups_path.split(':').collect();
        if parts.len() != 3 || parts[2].is_empty() {
            return Err(CgroupError::InvalidPath {
                path: cgroups_path,
                reason: "with --systemd-cgroup it must be of the form \"slice:prefix:name\" \
                         (e.g. \"system.slice:rcrun:mycontainer\")"
                    .into(),
            });
        }
        if parts[0].contains('/') || parts[2].contains('/') {
            return Err(CgroupError::InvalidPath {
                path: cgroups_path,
                reason: "systemd slice and unit names cannot contain '/'".into(),
            });
        }
        if !libcgroups::systemd::booted() {
            return Err(CgroupError::SystemdNotRunning {
                cgroups_path,
                container_id: opts.container_id.to_string(),
            });
        }
        if !is_cgroup2(Path::new(CGROUP_ROOT)) {
            return Err(CgroupError::SystemdUnsupported(format!(
                "rcrun drives systemd only on cgroup v2, but {CGROUP_ROOT} is cgroup v1/hybrid; \
                 run without --systemd-cgroup"
            )));
        }
        let sd = SystemdState {
            cgroups_path: cgroups_path.clone(),
            container_id: opts.container_id.to_string(),
            use_system: !opts.rootless && nix::unistd::geteuid().is_root(),
        };
        let m = systemd_manager(&sd)?;
        let path = systemd_cgroup_path(parts[0], parts[1], parts[2], sd.use_system);
        Ok(Cgroup {
            state: State {
                version: STATE_VERSION,
                mode: CgroupMode::Systemd,
                hierarchies: vec![Hierarchy {
                    name: String::new(),
                    dir: join_under(Path::new(CGROUP_ROOT), &path),
                    mount: PathBuf::from(CGROUP_ROOT),
                }],
                path,
                created: Vec::new(),
                rootless: opts.rootless,
                systemd: Some(sd),
            },
            v2: None,
            systemd: Some(m),
            fresh_bpf: Default::default(),
        })
    }

    fn state_from_plain_path(p: &str, systemd: bool) -> Result<State, CgroupError> {
        if systemd {
            return Err(CgroupError::BadState {
                state: p.into(),
                reason: "a systemd cgroup must be reopened from the state string".into(),
            });
        }
        let spec = clean_path(Path::new(p));
        if !spec.is_absolute() || spec == Path::new("/") {
            return Err(CgroupError::BadState {
                state: p.into(),
                reason: "expected the JSON state string or an absolute cgroup path".into(),
            });
        }
        let plan = if is_cgroup2(Path::new(CGROUP_ROOT)) {
            plan_unified(&spec, false)?
        } else {
            plan_v1(&spec, false)?
        };
        Ok(State {
            version: STATE_VERSION,
            mode: plan.mode,
            path: plan.path,
            hierarchies: plan.hierarchies,
            created: Vec::new(),
            rootless: false,
            systemd: None,
        })
    }
}

fn systemd_manager(
    sd: &SystemdState,
) -> Result<Box<libcgroups::systemd::manager::Manager>, CgroupError> {
    if !libcgroups::systemd::booted() {
        return Err(CgroupError::SystemdNotRunning {
            cgroups_path: sd.cgroups_path.clone(),
            container_id: sd.container_id.clone(),
        });
    }
    libcgroups::systemd::manager::Manager::new(
        PathBuf::from(CGROUP_ROOT),
        PathBuf::from(&sd.cgroups_path),
        sd.container_id.clone(),
        sd.use_system,
        libcgroups::systemd::manager::PROCESS_IN_CGROUP_TIMEOUT_DURATION,
    )
    .map(Box::new)
    .map_err(|e| CgroupError::Manager {
        op: "systemd connect",
        path: PathBuf::from(&sd.cgroups_path),
        message: e.to_string(),
    })
}

/// "/system.slice/rcrun-<id>.scope" for "system.slice:rcrun:<id>" (systemd's slice expansion).
fn systemd_cgroup_path(slice: &str, prefix: &str, name: &str, use_system: bool) -> PathBuf {
    let slice = if slice.is_empty() {
        if use_system {
            "system.slice"
        } else {
            "user.slice"
        }
    } else {
        slice
    };
    let mut p = PathBuf::from("/");
    if slice != "-.slice" {
        let base = slice.strip_suffix(".slice").unwrap_or(slice);
        let mut acc = String::new();
        for part in base.split('-') {
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            p.push(format!("{acc}.slice"));
        }
    }
    if name.ends_with(".slice") {
        p.push(name);
    } else {
        p.push(format!("{prefix}-{name}.scope"));
    }
    p
}

/// cgroup v1 cpuset: a task cannot join a cpuset with empty cpus/mems (ENOSPC). Seed every
/// directory we created from its parent (or from linux.resources.cpu for the leaf).
fn init_cpuset(
    h: &Hierarchy,
    made: &[PathBuf],
    resources: Option<&LinuxResources>,
) -> Result<(), CgroupError> {
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let mut dirs: Vec<&Path> = made.iter().map(PathBuf::as_path).collect();
    if !made.iter().any(|d| d == &h.dir) {
        dirs.push(&h.dir); // pre-existing leaf: still make sure it is usable
    }
    for dir in dirs {
        for (file, want) in [
            ("cpuset.cpus", cpu.and_then(|c| c.cpus().as_deref())),
            ("cpuset.mems", cpu.and_then(|c| c.mems().as_deref())),
        ] {
            if dir == h.dir {
                if let Some(v) = want {
                    write_cpuset(dir, file, v)?;
                    continue;
                }
            }
            // A directory we just made is empty (or a copy of the parent with clone_children).
            if !made.iter().any(|m| m == dir) {
                let cur = read_trim(&dir.join(file)).unwrap_or_default();
                if !cur.is_empty() {
                    continue;
                }
            }
            let Some(parent) = dir.parent() else { continue };
            let pv = read_trim(&parent.join(file)).unwrap_or_default();
            if !pv.is_empty() {
                write_file(dir, file, &pv)?;
            }
        }
    }
    Ok(())
}

/// Best effort: enable every controller available on the unified hierarchy in the
/// subtree_control of each ancestor of the container's cgroup (never the leaf itself).
fn enable_unified_controllers(h: &Hierarchy, available: &str) {
    let ctrls: Vec<&str> = available.split_whitespace().collect();
    if ctrls.is_empty() {
        return;
    }
    let all = ctrls
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rel = h.dir.strip_prefix(&h.mount).unwrap_or(&h.dir);
    let mut cur = h.mount.clone();
    let comps: Vec<Component> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let file = cur.join("cgroup.subtree_control");
        match write_raw(&file, &all) {
            Ok(()) => {}
            // Not ours to change (rootless / delegated subtree): go on with the next level.
            Err(e) if is_perm_error(&e) => {
                tracing::debug!("cannot enable controllers in {}: {e}", file.display());
            }
            Err(_) => {
                for c in &ctrls {
                    if let Err(e) = write_raw(&file, &format!("+{c}")) {
                        tracing::debug!("cannot enable {c} in {}: {e}", file.display());
                    }
                }
            }
        }
        if i + 1 == comps.len() {
            break;
        }
        cur.push(c);
    }
}

// ---------------------------------------------------------------------------------------------
// file helpers
// ---------------------------------------------------------------------------------------------

fn write_raw(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn reason_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let d = Errno::from_raw(code).desc();
            let mut s = d.to_string();
            if let Some(first) = s.get(0..1) {
                s.replace_range(0..1, &first.to_lowercase());
            }
            s
        }
        None => e.to_string(),
    }
}

fn write_err(dir: &Path, file: &str, value: &str, source: std::io::Error) -> CgroupError {
    let mut reason = reason_of(&source);
    if source.kind() == ErrorKind::NotFound {
        let ctrl = file.split_once('.').map(|(c, _)| c).unwrap_or(file);
        match fs::read_to_string(dir.join("cgroup.controllers")) {
            // cgroup2: usually a controller that is not enabled for this cgroup.
            Ok(avail) if !avail.split_whitespace().any(|c| c == ctrl) => reason.push_str(&format!(
                ": controller {ctrl:?} is not enabled for this cgroup (its cgroup.controllers \
                     has {:?}; check cgroup.subtree_control of the parents)",
                avail.trim()
            )),
            _ => reason.push_str(": the kernel does not provide this file"),
        }
    } else if file.starts_with("cpuset.") && matches!(file, "cpuset.cpus" | "cpuset.mems") {
        reason.push_str(&format!("; available: {}", cpuset_hint(dir, file)));
    }
    CgroupError::Write {
        file: file.to_string(),
        value: value.to_string(),
        reason,
        dir: dir.to_path_buf(),
        source,
    }
}

fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    write_raw(&dir.join(file), value).map_err(|e| write_err(dir, file, value, e))
}

/// cpuset writes (the hint about available CPUs/nodes is added by `write_err`).
fn write_cpuset(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    write_file(dir, file, value)
}

/// Which CPUs / memory nodes a cpuset write could have used.
fn cpuset_hint(dir: &Path, file: &str) -> String {
    let parent = dir.parent();
    parent
        .and_then(|p| read_trim(&p.join(format!("{file}.effective"))).ok())
        .filter(|v| !v.is_empty())
        .or_else(|| parent.and_then(|p| read_trim(&p.join(file)).ok()))
        .filter(|v| !v.is_empty())
        .or_else(|| {
            let what = if file.ends_with("cpus") {
                "cpu"
            } else {
                "node"
            };
            read_trim(&Path::new("/sys/devices/system").join(what).join("online")).ok()
        })
        .unwrap_or_else(|| "?".into())
}

fn read_trim(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    fs::File::open(path)?.read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}

fn wrapped_to_cgroup(e: &WrappedIoError, fallback_dir: &Path) -> Option<CgroupError> {
    let copy = |err: &std::io::Error| {
        std::io::Error::from_raw_os_error(err.raw_os_error().unwrap_or(libc::EIO))
    };
    match e {
        WrappedIoError::Open { err, path } => {
            return Some(CgroupError::Io {
                op: "open",
                path: path.clone(),
                source: copy(err),
            })
        }
        WrappedIoError::Read { err, path } => {
            return Some(CgroupError::Io {
                op: "read",
                path: path.clone(),
                source: copy(err),
            })
        }
        _ => {}
    }
    if let WrappedIoError::Write { err, path, data } = e {
        let dir = path.parent().unwrap_or(fallback_dir);
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Some(write_err(
            dir,
            &file,
            data,
            std::io::Error::from_raw_os_error(err.raw_os_error().unwrap_or(libc::EIO)),
        ));
    }
    None
}

/// runc 1.1's cpu.shares (2..262144) to cpu.weight (1..10000) conversion.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn v2_err(op: &'static str, dir: &Path, e: libcgroups::v2::manager::V2ManagerError) -> CgroupError {
    use libcgroups::v2::manager::V2ManagerError as E;
    // Find a WrappedIoError (file write) anywhere in the chain; the controller error types of
    // libcgroups are private, so walk `source()`.
    let direct = match &e {
        E::WrappedIo(w) | E::CpuSetController(w) | E::PidsController(w) => Some(w),
        _ => None,
    };
    let mut found = direct.and_then(|w| wrapped_to_cgroup(w, dir));
    if found.is_none() {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cur {
            if let Some(w) = c.downcast_ref::<WrappedIoError>() {
                found = wrapped_to_cgroup(w, dir);
                break;
            }
            cur = c.source();
        }
    }
    found.unwrap_or_else(|| CgroupError::Manager {
        op,
        path: dir.to_path_buf(),
        message: e.to_string(),
    })
}

fn manager_err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Manager {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// apply
// ---------------------------------------------------------------------------------------------

/// runc's default allowed devices (libcontainer/specconv AllowedDevices, runc >= 1.2).
fn default_device_rules() -> Vec<String> {
    [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",   // /dev/null
        "c 1:8 rwm",   // /dev/random
        "c 1:7 rwm",   // /dev/full
        "c 5:0 rwm",   // /dev/tty
        "c 1:5 rwm",   // /dev/zero
        "c 1:9 rwm",   // /dev/urandom
        "c 136:* rwm", // /dev/pts/*
        "c 5:2 rwm",   // /dev/ptmx
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn device_rule_string(d: &LinuxDeviceCgroup) -> Result<String, CgroupError> {
    let typ = d.typ().unwrap_or(LinuxDeviceType::A);
    let t = match typ {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            return Err(CgroupError::InvalidValue {
                field: "linux.resources.devices[].type",
                value: "p".into(),
                reason: "fifo devices cannot be used in device cgroup rules".into(),
            })
        }
    };
    let num = |v: Option<i64>| match v {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = d.access().as_deref().unwrap_or("rwm");
    let access = if access.is_empty() { "rwm" } else { access };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidValue {
            field: "linux.resources.devices[].access",
            value: access.into(),
            reason: "only the letters r, w and m are allowed".into(),
        });
    }
    if typ == LinuxDeviceType::A {
        return Ok(format!("a *:* {access}"));
    }
    Ok(format!(
        "{t} {}:{} {access}",
        num(d.major()),
        num(d.minor())
    ))
}

/// runc semantics: start from deny-all, apply the user's rules in order, then the defaults.
fn device_writes(resources: &LinuxResources) -> Result<Vec<(&'static str, String)>, CgroupError> {
    let mut out = vec![("devices.deny", "a *:* rwm".to_string())];
    if let Some(rules) = resources.devices() {
        for d in rules {
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            out.push((file, device_rule_string(d)?));
        }
    }
    for r in default_device_rules() {
        out.push(("devices.allow", r));
    }
    // Drop a rule when an identical one comes later: the result is the same under both the
    // kernel's v1 semantics and the eBPF program's last-match-wins, and the spec's own device
    // list usually repeats runc's defaults (fewer writes, smaller program).
    let mut keep = vec![true; out.len()];
    for i in 0..out.len() {
        if out[i + 1..].iter().any(|later| *later == out[i]) {
            keep[i] = false;
        }
    }
    let mut k = keep.into_iter();
    out.retain(|_| k.next().unwrap_or(true));
    // A leading explicit "deny all" is already covered.
    if out.len() > 1 && out[1].0 == "devices.deny" && out[1].1 == "a *:* rwm" {
        out.remove(1);
    }
    if out.first().map(|r| r.0) != Some("devices.deny") || out[0].1 != "a *:* rwm" {
        out.insert(0, ("devices.deny", "a *:* rwm".to_string()));
    }
    Ok(out)
}

fn hugetlb_sizes() -> Vec<String> {
    // /sys/kernel/mm/hugepages/hugepages-2048kB -> "2MB"
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in rd.flatten() {
            let n = e.file_name();
            let Some(kb) = n
                .to_str()
                .and_then(|s| s.strip_prefix("hugepages-"))
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(page_size_name(kb * 1024));
        }
    }
    out
}

fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024 && v.is_multiple_of(1024) && i + 1 < UNITS.len() {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", UNITS[i])
}

impl Cgroup {
    fn dir_for(&self, controller: &'static str, field: &'static str) -> Result<&Path, CgroupError> {
        if let Some(h) = self.state.hierarchies.iter().find(|h| h.has(controller)) {
            return Ok(&h.dir);
        }
        Err(CgroupError::ControllerUnavailable {
            field,
            controller,
            detail: if self.state.rootless {
                "rootless container could not create or join that cgroup".into()
            } else {
                "no cgroup v1 hierarchy on this host has it mounted".into()
            },
        })
    }

    fn unified_dir(&self) -> Option<&Hierarchy> {
        self.state.hierarchies.iter().find(|h| h.is_unified())
    }

    fn unified_available(&self) -> Vec<String> {
        self.unified_dir()
            .and_then(|h| fs::read_to_string(h.dir.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn apply_v1(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        // Order follows runc's subsystem list.
        if let Some(cpu) = r.cpu() {
            if cpu.cpus().is_some() || cpu.mems().is_some() {
                let dir = self.dir_for("cpuset", "linux.resources.cpu.cpus/mems")?;
                if let Some(m) = cpu.mems() {
                    write_cpuset(dir, "cpuset.mems", m)?;
                }
                if let Some(c) = cpu.cpus() {
                    write_cpuset(dir, "cpuset.cpus", c)?;
                }
            }
        }
        self.apply_v1_devices(r)?;
        if let Some(mem) = r.memory() {
            self.apply_v1_memory(mem)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_v1_cpu(cpu)?;
        }
        if let Some(p) = r.pids() {
            // runc (v1): 0 leaves pids.max untouched, negative means unlimited.
            let limit = p.limit();
            if limit != 0 {
                let dir = self.dir_for("pids", "linux.resources.pids.limit")?;
                let v = if limit > 0 {
                    limit.to_string()
                } else {
                    "max".to_string()
                };
                write_file(dir, "pids.max", &v)?;
            }
        }
        if let Some(b) = r.block_io() {
            self.apply_v1_blkio(b)?;
        }
        if let Some(h) = r.hugepage_limits() {
            if !h.is_empty() {
                self.apply_hugetlb(h)?;
            }
        }
        if let Some(net) = r.network() {
            if let Some(id) = net.class_id() {
                let dir = self.dir_for("net_cls", "linux.resources.network.classID")?;
                write_file(dir, "net_cls.classid", &id.to_string())?;
            }
            if let Some(prios) = net.priorities() {
                if !prios.is_empty() {
                    let dir = self.dir_for("net_prio", "linux.resources.network.priorities")?;
                    for p in prios {
                        write_file(
                            dir,
                            "net_prio.ifpriomap",
                            &format!("{} {}", p.name(), p.priority()),
                        )?;
                    }
                }
            }
        }
        if let Some(rdma) = r.rdma() {
            if !rdma.is_empty() {
                let dir = self.dir_for("rdma", "linux.resources.rdma")?;
                write_rdma(dir, rdma)?;
            }
        }
        if let Some(u) = r.unified() {
            if !u.is_empty() {
                self.apply_unified_map_hybrid(u)?;
            }
        }
        Ok(())
    }

    fn apply_v1_devices(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if r.devices().is_none() {
            return Ok(()); // e.g. `update` without device rules: leave them alone
        }
        let dir = match self.dir_for("devices", "linux.resources.devices") {
            Ok(d) => d,
            Err(e) => {
                if self.state.rootless {
                    return Ok(()); // as runc: device rules are not expected to work rootless
                }
                return Err(e);
            }
        };
        for (file, rule) in device_writes(r)? {
            if let Err(e) = write_file(dir, file, &rule) {
                if self.state.rootless {
                    tracing::debug!("rootless: ignoring device rule: {e}");
                    return Ok(());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply_v1_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
        let field = "linux.resources.memory";
        let any = m.limit().is_some()
            || m.swap().is_some()
            || m.reservation().is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer().is_some()
            || m.kernel_tcp().is_some()
            || m.kernel().is_some();
        if !any {
            return Ok(());
        }
        let dir = self.dir_for("memory", field)?;
        let limit = m.limit().unwrap_or(0);
        let mut swap = m.swap().unwrap_or(0);
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if limit == -1 && swap == 0 && memsw.exists() {
            swap = -1;
        }
        let set_mem = |v: i64| -> Result<(), CgroupError> {
            if v == 0 {
                return Ok(());
            }
            let s = v.to_string();
            match write_raw(&dir.join("memory.limit_in_bytes"), &s) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let mut err = write_err(dir, "memory.limit_in_bytes", &s, e);
                    if let CgroupError::Write { reason, source, .. } = &mut err {
                        if source.raw_os_error() == Some(libc::EBUSY) {
                            let usage = read_trim(&dir.join("memory.usage_in_bytes"))
                                .unwrap_or_else(|_| "?".into());
                            reason.push_str(&format!(
                                "; the limit is below the current usage of {usage} bytes"
                            ));
                        }
                    }
                    Err(err)
                }
            }
        };
        let set_swap = |v: i64| -> Result<(), CgroupError> {
            if v == 0 {
                return Ok(());
            }
            if !memsw.exists() {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.memory.swap",
                    value: v.to_string(),
                    reason: format!(
                        "swap accounting is not enabled on this host ({} does not exist)",
                        memsw.display()
                    ),
                });
            }
            write_file(dir, "memory.memsw.limit_in_bytes", &v.to_string())
        };
        let mut done = false;
        if limit != 0 && swap != 0 {
            let cur: i64 = read_trim(&dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                .unwrap_or(i64::MAX);
            if swap == -1 || cur < swap {
                set_swap(swap)?;
                set_mem(limit)?;
                done = true;
            }
        }
        if !done {
            set_mem(limit)?;
            set_swap(swap)?;
        }
        if let Some(res) = m.reservation() {
            if res != 0 {
                write_file(dir, "memory.soft_limit_in_bytes", &res.to_string())?;
            }
        }
        if m.disable_oom_killer() == Some(true) {
            write_file(dir, "memory.oom_control", "1")?;
        }
        if let Some(sw) = m.swappiness() {
            if sw > 100 {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.memory.swappiness",
                    value: sw.to_string(),
                    reason: "must be between 0 and 100".into(),
                });
            }
            write_file(dir, "memory.swappiness", &sw.to_string())?;
        }
        if let Some(k) = m.kernel() {
            tracing::warn!(
                "linux.resources.memory.kernel ({k}) is deprecated and ignored (as runc does)"
            );
        }
        if let Some(t) = m.kernel_tcp() {
            if t != 0 {
                write_file(dir, "memory.kmem.tcp.limit_in_bytes", &t.to_string())?;
            }
        }
        Ok(())
    }

    fn apply_v1_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<(), CgroupError> {
        let any = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some()
            || c.idle().is_some();
        if !any {
            return Ok(());
        }
        let dir = self.dir_for("cpu", "linux.resources.cpu")?;
        // Realtime first (runc sets rt before cfs); period/runtime order matters when lowering.
        let rt_period = c.realtime_period().filter(|v| *v != 0);
        let rt_runtime = c.realtime_runtime().filter(|v| *v != 0);
        if let Some(p) = rt_period {
            let r = write_file(dir, "cpu.rt_period_us", &p.to_string());
            if r.is_err() && rt_runtime.is_some() {
                // Try the other order (runtime first), then period again.
                if let Some(rt) = rt_runtime {
                    write_file(dir, "cpu.rt_runtime_us", &rt.to_string())?;
                }
                write_file(dir, "cpu.rt_period_us", &p.to_string())?;
            } else {
                r?;
            }
        }
        if let Some(rt) = rt_runtime {
            write_file(dir, "cpu.rt_runtime_us", &rt.to_string())?;
        }
        if let Some(shares) = c.shares().filter(|v| *v != 0) {
            write_file(dir, "cpu.shares", &shares.to_string())?;
            // The kernel clamps silently; tell the user like runc does.
            if let Ok(got) = read_trim(&dir.join("cpu.shares")) {
                if let Ok(got) = got.parse::<u64>() {
                    if got != shares {
                        let which = if shares > got { "maximum" } else { "minimum" };
                        return Err(CgroupError::InvalidValue {
                            field: "linux.resources.cpu.shares",
                            value: shares.to_string(),
                            reason: format!("the {which} allowed cpu.shares is {got}"),
                        });
                    }
                }
            }
        }
        let period = c.period().filter(|v| *v != 0);
        let quota = c.quota().filter(|v| *v != 0);
        if let Some(p) = period {
            let ps = p.to_string();
            if let Err(e) = write_file(dir, "cpu.cfs_period_us", &ps) {
                // EINVAL when the current quota does not fit the new period: quota first.
                match quota {
                    Some(q) => {
                        write_file(dir, "cpu.cfs_quota_us", &q.to_string())?;
                        write_file(dir, "cpu.cfs_period_us", &ps)?;
                    }
                    None => return Err(e),
                }
            }
        }
        if let Some(q) = quota {
            write_file(dir, "cpu.cfs_quota_us", &q.to_string())?;
        }
        if let Some(b) = c.burst() {
            write_file(dir, "cpu.cfs_burst_us", &b.to_string())?;
        }
        if let Some(idle) = c.idle() {
            write_file(dir, "cpu.idle", &idle.to_string())?;
        }
        Ok(())
    }

    fn apply_v1_blkio(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
        let has_any = b.weight().is_some()
            || b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || b.throttle_read_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_read_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty());
        if !has_any {
            return Ok(());
        }
        let dir = self.dir_for("blkio", "linux.resources.blockIO")?;
        // Modern kernels only have the BFQ files.
        let (wfile, wdfile) = if dir.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            write_file(dir, wfile, &w.to_string())?;
        }
        if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
            write_file(dir, "blkio.leaf_weight", &w.to_string())?;
        }
        if let Some(wd) = b.weight_device() {
            for d in wd {
                if let Some(w) = d.weight() {
                    write_file(dir, wdfile, &format!("{}:{} {}", d.major(), d.minor(), w))?;
                }
                if let Some(w) = d.leaf_weight() {
                    write_file(
                        dir,
                        "blkio.leaf_weight_device",
                        &format!("{}:{} {}", d.major(), d.minor(), w),
                    )?;
                }
            }
        }
        for (list, file) in [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
            ),
        ] {
            for d in list.iter().flatten() {
                write_file(
                    dir,
                    file,
                    &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                )?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(
        &self,
        limits: &[oci_spec::runtime::LinuxHugepageLimit],
    ) -> Result<(), CgroupError> {
        let sizes = hugetlb_sizes();
        for l in limits {
            if !sizes.iter().any(|s| s == l.page_size()) {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.hugepageLimits[].pageSize",
                    value: l.page_size().clone(),
                    reason: format!("this host supports {sizes:?}"),
                });
            }
        }
        // v1 hugetlb hierarchy if mounted...
        if let Some(h) = self.state.hierarchies.iter().find(|h| h.has("hugetlb")) {
            for l in limits {
                let v = l.limit().to_string();
                write_file(
                    &h.dir,
                    &format!("hugetlb.{}.limit_in_bytes", l.page_size()),
                    &v,
                )?;
                let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", l.page_size());
                if h.dir.join(&rsvd).exists() {
                    write_file(&h.dir, &rsvd, &v)?;
                }
            }
            return Ok(());
        }
        // ...otherwise the unified hierarchy (hybrid hosts where hugetlb is attached to cgroup2).
        let Some(u) = self.unified_dir() else {
            return Err(CgroupError::ControllerUnavailable {
                field: "linux.resources.hugepageLimits",
                controller: "hugetlb",
                detail: "it is neither mounted as cgroup v1 nor attached to cgroup2".into(),
            });
        };
        if !self.unified_available().iter().any(|c| c == "hugetlb") {
            return Err(CgroupError::ControllerUnavailable {
                field: "linux.resources.hugepageLimits",
                controller: "hugetlb",
                detail: format!(
                    "not mounted as cgroup v1 and not enabled for {} (see cgroup.controllers)",
                    u.dir.display()
                ),
            });
        }
        let mut only = LinuxResources::default();
        only.set_hugepage_limits(Some(limits.to_vec()));
        self.v2_apply(&only, &u.dir)
    }

    fn v2_apply(&self, r: &LinuxResources, dir: &Path) -> Result<(), CgroupError> {
        let Some(m) = &self.v2 else {
            return Err(CgroupError::NoCgroupFs(format!(
                "no cgroup2 manager for {}",
                dir.display()
            )));
        };
        let opt = ControllerOpt {
            resources: r,
            disable_oom_killer: r
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        m.apply(&opt).map_err(|e| v2_err("apply", dir, e))
    }

    /// Hybrid: unified keys go to the cgroup2 hierarchy if their controller lives there.
    fn apply_unified_map_hybrid(&self, u: &HashMap<String, String>) -> Result<(), CgroupError> {
        let Some(h) = self.unified_dir() else {
            return Err(CgroupError::ControllerUnavailable {
                field: "linux.resources.unified",
                controller: "cgroup2",
                detail: "this host runs cgroup v1 only".into(),
            });
        };
        let avail = self.unified_available();
        for (k, v) in u {
            if k.contains('/') || k.starts_with('.') {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.unified",
                    value: k.clone(),
                    reason: "keys must be plain cgroup file names".into(),
                });
            }
            let ctrl = k.split_once('.').map(|(c, _)| c).unwrap_or(k);
            if ctrl != "cgroup" && !avail.iter().any(|a| a == ctrl) {
                return Err(CgroupError::ControllerUnavailable {
                    field: "linux.resources.unified",
                    controller: "cgroup2",
                    detail: format!(
                        "key {k:?}: controller {ctrl:?} is not attached to the cgroup2 hierarchy \
                         of this hybrid host (available: {avail:?}); use the v1 fields instead"
                    ),
                });
            }
            write_file(&h.dir, k, v)?;
        }
        Ok(())
    }

    fn apply_unified(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(h) = self.unified_dir() else {
            return Err(CgroupError::NoCgroupFs("no cgroup2 directory".into()));
        };
        let dir = h.dir.clone();
        if let Some(u) = r.unified() {
            for k in u.keys() {
                if k.is_empty() || k.contains('/') || k.starts_with('.') {
                    return Err(CgroupError::InvalidValue {
                        field: "linux.resources.unified",
                        value: k.clone(),
                        reason: "keys must be plain cgroup file names".into(),
                    });
                }
            }
        }
        if let Some(hl) = r.hugepage_limits() {
            let sizes = hugetlb_sizes();
            for l in hl {
                if !sizes.iter().any(|s| s == l.page_size()) {
                    return Err(CgroupError::InvalidValue {
                        field: "linux.resources.hugepageLimits[].pageSize",
                        value: l.page_size().clone(),
                        reason: format!("this host supports {sizes:?}"),
                    });
                }
            }
        }
        self.check_v2_controllers(r, &dir)?;
        if let Some(sw) = r.memory().as_ref().and_then(|m| m.swappiness()) {
            // cgroup v2 has no per-cgroup swappiness; runc ignores it too (with a warning).
            tracing::warn!("linux.resources.memory.swappiness ({sw}) is ignored on cgroup v2");
        }
        if r.pids().as_ref().is_some_and(|p| p.limit() == 0) {
            // runc (fs2 and v1 alike): a pids limit of 0 leaves pids.max untouched; libcgroups
            // would write "1" (its systemd workaround), so drop it here.
            let mut r2 = r.clone();
            r2.set_pids(None);
            self.v2_apply(&r2, &dir)?;
        } else {
            self.v2_apply(r, &dir)?;
        }
        // Gaps in libcgroups' v2 manager:
        // cpu.shares → cpu.weight with runc's linear mapping (libcgroups uses the newer
        // quadratic one): the same weight for the same spec as runc on this host. An explicit
        // unified "cpu.weight" still wins.
        if let Some(shares) = r
            .cpu()
            .as_ref()
            .and_then(|c| c.shares())
            .filter(|s| *s != 0)
        {
            if !r
                .unified()
                .as_ref()
                .is_some_and(|u| u.contains_key("cpu.weight"))
            {
                write_file(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
        }
        if let Some(rdma) = r.rdma() {
            if !rdma.is_empty() {
                write_rdma(&dir, rdma)?;
            }
        }
        if let Some(net) = r.network() {
            if net.class_id().is_some() || net.priorities().as_ref().is_some_and(|p| !p.is_empty())
            {
                tracing::warn!(
                    "linux.resources.network is not supported on cgroup v2 and is ignored (as runc)"
                );
            }
        }
        if r.memory().as_ref().and_then(|m| m.disable_oom_killer()) == Some(true) {
            tracing::warn!("linux.resources.memory.disableOOMKiller is not supported on cgroup v2");
        }
        // Device rules: eBPF program (libcgroups' v2 manager is built without it).
        // `devices: None` (e.g. `update`) leaves the current program in place.
        if r.devices().is_none() {
            return Ok(());
        }
        match self.apply_bpf(&dir, r) {
            Ok(()) => {}
            Err(e) if self.state.rootless => {
                tracing::debug!("rootless: device filter not applied: {e}")
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// libcgroups writes blindly; say which controller is missing before it fails with ENOENT.
    fn check_v2_controllers(&self, r: &LinuxResources, dir: &Path) -> Result<(), CgroupError> {
        let mut need: Vec<(&'static str, &'static str)> = Vec::new();
        if let Some(m) = r.memory() {
            if m.limit().is_some() || m.swap().is_some() || m.reservation().is_some() {
                need.push(("linux.resources.memory", "memory"));
            }
        }
        if let Some(c) = r.cpu() {
            if c.shares().is_some_and(|v| v != 0)
                || c.quota().is_some()
                || c.period().is_some()
                || c.burst().is_some()
                || c.idle().is_some()
            {
                need.push(("linux.resources.cpu", "cpu"));
            }
            if c.cpus().is_some() || c.mems().is_some() {
                need.push(("linux.resources.cpu.cpus/mems", "cpuset"));
            }
        }
        if r.pids().as_ref().is_some_and(|p| p.limit() != 0) {
            need.push(("linux.resources.pids", "pids"));
        }
        if let Some(b) = r.block_io() {
            if b.weight().is_some()
                || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_read_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_write_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_read_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_write_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
            {
                need.push(("linux.resources.blockIO", "io"));
            }
        }
        if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
            need.push(("linux.resources.hugepageLimits", "hugetlb"));
        }
        if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
            need.push(("linux.resources.rdma", "rdma"));
        }
        if need.is_empty() {
            return Ok(());
        }
        let avail = fs::read_to_string(dir.join("cgroup.controllers")).map_err(|source| {
            CgroupError::Io {
                op: "read",
                path: dir.join("cgroup.controllers"),
                source,
            }
        })?;
        for (field, ctrl) in need {
            if !avail.split_whitespace().any(|c| c == ctrl) {
                return Err(CgroupError::ControllerUnavailable {
                    field,
                    controller: ctrl,
                    detail: format!(
                        "it is not enabled for {} (cgroup.controllers: {:?}; the parent's \
                         cgroup.subtree_control must include it)",
                        dir.display(),
                        avail.trim()
                    ),
                });
            }
        }
        Ok(())
    }

    fn apply_bpf(&self, dir: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
        use std::sync::atomic::Ordering;
        let replace = !self.fresh_bpf.load(Ordering::Acquire);
        apply_bpf_devices(dir, r, replace)?;
        self.fresh_bpf.store(false, Ordering::Release);
        Ok(())
    }

    fn apply_systemd(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(m) = &self.systemd else {
            return Err(CgroupError::SystemdUnsupported(
                "no systemd connection".into(),
            ));
        };
        let opt = ControllerOpt {
            resources: r,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        m.apply(&opt)
            .map_err(|e| manager_err("apply", &self.state.path, e))?;
        // libcgroups' systemd manager sets no device policy; like runc, also install the
        // eBPF device filter on the unit's cgroup.
        if r.devices().is_some() {
            if let Some(h) = self.unified_dir() {
                match self.apply_bpf(&h.dir, r) {
                    Ok(()) => {}
                    Err(e) if self.state.rootless => {
                        tracing::debug!("rootless: device filter not applied: {e}")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

fn write_rdma(
    dir: &Path,
    rdma: &HashMap<String, oci_spec::runtime::LinuxRdma>,
) -> Result<(), CgroupError> {
    for (dev, l) in rdma {
        let mut v = dev.clone();
        if let Some(h) = l.hca_handles() {
            v.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = l.hca_objects() {
            v.push_str(&format!(" hca_object={o}"));
        }
        if v != *dev {
            write_file(dir, "rdma.max", &v)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cgroup v2 device filter (eBPF)
// ---------------------------------------------------------------------------------------------

mod devfilter;

/// The device rules of `resources` (runc semantics: deny-all first, then the user's rules,
/// then runc's default allowed devices) as eBPF rules.
fn bpf_device_rules(resources: &LinuxResources) -> Result<Vec<devfilter::Rule>, CgroupError> {
    let mut out = Vec::new();
    for (file, rule) in device_writes(resources)? {
        let mut it = rule.split(' ');
        let (Some(t), Some(mm), Some(acc)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (maj, min) = mm.split_once(':').unwrap_or(("*", "*"));
        let num = |s: &str| s.parse::<i64>().ok();
        let mut access = 0;
        for c in acc.chars() {
            access |= match c {
                'r' => devfilter::ACC_READ,
                'w' => devfilter::ACC_WRITE,
                'm' => devfilter::ACC_MKNOD,
                _ => 0,
            };
        }
        out.push(devfilter::Rule {
            allow: file == "devices.allow",
            typ: match t {
                "b" => Some(devfilter::DEV_BLOCK),
                "c" => Some(devfilter::DEV_CHAR),
                _ => None,
            },
            major: num(maj),
            minor: num(min),
            access,
        });
    }
    Ok(out)
}

fn apply_bpf_devices(
    dir: &Path,
    resources: &LinuxResources,
    replace: bool,
) -> Result<(), CgroupError> {
    let rules = bpf_device_rules(resources)?;
    let prog = devfilter::program(&rules);
    devfilter::attach(dir, &prog, replace).map_err(|reason| CgroupError::Manager {
        op: "device filter (eBPF)",
        path: dir.to_path_buf(),
        message: reason,
    })
}

// ---------------------------------------------------------------------------------------------
// freeze, pids, remove
// ---------------------------------------------------------------------------------------------

fn collect_pids(dir: &Path, out: &mut Vec<Pid>) -> Result<(), CgroupError> {
    let procs = dir.join(CGROUP_PROCS);
    let text = match fs::read_to_string(&procs) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Io {
                op: "read",
                path: procs,
                source,
            })
        }
    };
    out.extend(
        text.lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .map(Pid::from_raw),
    );
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Io {
                op: "list",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_pids(&e.path(), out)?;
        }
    }
    Ok(())
}

fn collect_pids_quiet(dir: &Path) -> Vec<Pid> {
    let mut v = Vec::new();
    let _ = collect_pids(dir, &mut v);
    v
}

/// rmdir `dir` and its sub-cgroups (children first). Ok if already gone.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Cgroup {
    fn pids_dir(&self) -> Option<&Path> {
        let hs = &self.state.hierarchies;
        hs.iter()
            .find(|h| h.is_unified())
            .or_else(|| {
                ["pids", "freezer", "devices", "memory", "cpu"]
                    .iter()
                    .find_map(|c| hs.iter().find(|h| h.has(c)))
            })
            .or_else(|| hs.first())
            .map(|h| h.dir.as_path())
    }

    fn kill_leftovers(&self, pending: &[&Hierarchy]) {
        let mut pids = Vec::new();
        for h in pending {
            if h.is_unified() {
                // cgroup.kill (Linux 5.14+) kills the whole subtree, frozen or not.
                if write_raw(&h.dir.join("cgroup.kill"), "1").is_ok() {
                    continue;
                }
            }
            pids.extend(collect_pids_quiet(&h.dir));
        }
        if pids.is_empty() {
            return;
        }
        // Frozen tasks cannot die: thaw first.
        if let Some(f) = self.state.hierarchies.iter().find(|h| h.has("freezer")) {
            let _ = write_raw(&f.dir.join("freezer.state"), "THAWED");
        }
        if let Some(u) = self.unified_dir() {
            let _ = write_raw(&u.dir.join("cgroup.freeze"), "0");
        }
        pids.sort();
        pids.dedup();
        for p in pids {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::SIGKILL);
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        if let Some(m) = &self.systemd {
            return m
                .freeze(state)
                .map_err(|e| manager_err("freeze", &self.state.path, e));
        }
        if let Some(h) = self.state.hierarchies.iter().find(|h| h.has("freezer")) {
            return freeze_v1(&h.dir, frozen);
        }
        // cgroup v2, or a hybrid host without a v1 freezer: cgroup.freeze.
        if let (Some(m), Some(h)) = (&self.v2, self.unified_dir()) {
            return m.freeze(state).map_err(|e| v2_err("freeze", &h.dir, e));
        }
        Err(CgroupError::ControllerUnavailable {
            field: "pause/resume",
            controller: "freezer",
            detail: "no v1 freezer hierarchy and no cgroup2 hierarchy".into(),
        })
    }
}

/// runc's v1 freeze loop (retries while FREEZING, occasional thaw+sleep).
fn freeze_v1(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let file = "freezer.state";
    if !frozen {
        write_file(dir, file, "THAWED")?;
        return Ok(());
    }
    for i in 0..1000u32 {
        if i % 50 == 49 {
            let _ = write_raw(&dir.join(file), "THAWED");
            std::thread::sleep(Duration::from_millis(10));
        }
        write_file(dir, file, "FROZEN")?;
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_micros(10));
        }
        let st = read_trim(&dir.join(file)).map_err(|source| CgroupError::Io {
            op: "read",
            path: dir.join(file),
            source,
        })?;
        match st.as_str() {
            "FROZEN" => return Ok(()),
            "FREEZING" => continue,
            other => {
                return Err(CgroupError::Freeze {
                    path: dir.to_path_buf(),
                    reason: format!("unexpected freezer.state {other:?}"),
                })
            }
        }
    }
    let _ = write_raw(&dir.join(file), "THAWED");
    Err(CgroupError::Freeze {
        path: dir.to_path_buf(),
        reason: "still FREEZING after 1000 attempts; thawed again".into(),
    })
}

/// Whether the cgroup saved as `state_path` (see [`Cgroup::state_path`]) is frozen by `pause`:
/// the v1 freezer's `freezer.self_freezing` (a frozen *parent* does not count, as in runc), or
/// `cgroup.freeze` on cgroup v2. Reads one file and connects to nothing (also for systemd), so
/// `state` and `list` can call it for every container. Unreadable means not frozen.
/// The one file that tells whether this cgroup is frozen (see [`is_frozen`]), for callers
/// that keep it to skip parsing the locator on every `state`/`list`.
pub fn freezer_file(cg: &Cgroup) -> Option<PathBuf> {
    if let Some(dir) = cg
        .controller_dir("freezer")
        .filter(|_| cg.mode() != CgroupMode::Unified)
    {
        return Some(dir.join("freezer.self_freezing"));
    }
    cg.controller_dir("").map(|d| d.join("cgroup.freeze"))
}

/// Whether a freezer file from [`freezer_file`] says frozen.
pub fn frozen_file(file: &Path) -> bool {
    read_trim(file).is_ok_and(|v| v == "1")
}

pub fn is_frozen(state_path: &str) -> bool {
    let Ok(state) = serde_json::from_str::<State>(state_path) else {
        return false;
    };
    if let Some(h) = state.hierarchies.iter().find(|h| h.has("freezer")) {
        return match read_trim(&h.dir.join("freezer.self_freezing")) {
            Ok(v) => v == "1",
            Err(_) => read_trim(&h.dir.join("freezer.state")).is_ok_and(|v| v != "THAWED"),
        };
    }
    state
        .hierarchies
        .iter()
        .find(|h| h.is_unified())
        .is_some_and(|h| read_trim(&h.dir.join("cgroup.freeze")).is_ok_and(|v| v == "1"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
