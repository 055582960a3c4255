//! Shared-memory channels asked for by the `org.rcrun.shm.channels` annotation (docs/shm.md):
//! at `create`, make or join each channel's region on the host, bind-mount it into the
//! container, and (with `pin`) place the container on the region's NUMA node; at `delete`,
//! leave the channels and remove a region with no users left.
//!
//! On the host, under the shm root (`$RCRUN_SHM_ROOT`, default `/dev/shm/rcrun-shm`, tmpfs):
//!
//! ```text
//! .lock                       flock: joins and releases are serialised
//! <channel>/meta.json         size, node, hugepages, region path (what joiners must match)
//! <channel>/region            the region (or $RCRUN_SHM_HUGETLB_ROOT/<channel> on hugetlbfs)
//! <channel>/users/<id>        one file per container using the channel (content: its role)
//! ```
//!
//! The container's state directory holds `shm-channels.json` (root + channel names), written
//! before any users entry: a `create` killed half-way leaves nothing `delete --force` misses.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rcrun_ipc_shm::{self as shm, RegionSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const ANNOTATION: &str = "org.rcrun.shm.channels";
pub const ROOT_ENV: &str = "RCRUN_SHM_ROOT";
pub const DEFAULT_ROOT: &str = "/dev/shm/rcrun-shm";
pub const HUGETLB_ROOT_ENV: &str = "RCRUN_SHM_HUGETLB_ROOT";
pub const DEFAULT_HUGETLB_ROOT: &str = "/dev/hugepages/rcrun-shm";
/// In the container's state directory.
pub const RECORD_FILE: &str = "shm-channels.json";
const NODE_SYSFS: &str = "/sys/devices/system/node";
/// statfs f_type of tmpfs and hugetlbfs (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// `at` is the field path, e.g. `[0].size`.
    #[error("annotation {ANNOTATION}{at}: {msg}")]
    Annotation { at: String, msg: String },
    #[error("shm channel {name:?}: {msg}")]
    Channel { name: String, msg: String },
    #[error("shm {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shm channel {name:?}: {source}")]
    Region {
        name: String,
        source: shm::RegionError,
    },
}

impl From<ShmError> for crate::container::Error {
    fn from(e: ShmError) -> Self {
        crate::container::Error::Child(e.to_string())
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Listen,
    Connect,
}

/// One entry of the annotation, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub name: String,
    pub role: Role,
    /// Capacity of each direction's ring.
    pub size: u64,
    pub numa_node: Option<u32>,
    pub pin: bool,
    /// Container uid:gid (mapped to host ids when the container has a user namespace).
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
    pub hugepages: bool,
    /// Where the region appears in the container.
    pub path: String,
}

const DEFAULT_SIZE: u64 = 1 << 20;
const FIELDS: [&str; 9] = [
    "name",
    "role",
    "size",
    "numaNode",
    "pin",
    "owner",
    "mode",
    "hugepages",
    "path",
];

/// Parse and validate the annotation's value (host-independent checks only).
pub fn parse(text: &str) -> Result<Vec<ChannelSpec>, ShmError> {
    let err = |at: String, msg: String| ShmError::Annotation { at, msg };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err(String::new(), format!("not valid JSON: {e}")))?;
    let list = v.as_array().ok_or_else(|| {
        err(
            String::new(),
            "must be a JSON list of channel objects".into(),
        )
    })?;
    let mut out: Vec<ChannelSpec> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = |f: &str| {
            if f.is_empty() {
                format!("[{i}]")
            } else {
                format!("[{i}].{f}")
            }
        };
        let obj = item
            .as_object()
            .ok_or_else(|| err(at(""), format!("{item} is not an object")))?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(err(
                at(""),
                format!("unknown field {k:?} (known: {})", FIELDS.join(", ")),
            ));
        }
        let string = |f: &str| -> Result<Option<String>, ShmError> {
            match obj.get(f) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(err(at(f), format!("{other} is not a string"))),
            }
        };
        let boolean = |f: &str| -> Result<bool, ShmError> {
            match obj.get(f) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(err(at(f), format!("{other} is not true or false"))),
            }
        };
        let name = string("name")?.ok_or_else(|| err(at("name"), "is required".into()))?;
        if !shm::valid_name(&name) {
            return Err(err(
                at("name"),
                format!("{name:?} is not a channel name (1-64 of letters, digits, '-', '_', '.', not starting with '.')"),
            ));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(err(at("name"), format!("{name:?} is listed twice")));
        }
        let role = match string("role")?.as_deref() {
            Some("listen") => Role::Listen,
            Some("connect") => Role::Connect,
            Some(other) => {
                return Err(err(
                    at("role"),
                    format!("{other:?} is not \"listen\" or \"connect\""),
                ))
            }
            None => return Err(err(at("role"), "is required".into())),
        };
        let size = match obj.get("size") {
            None => DEFAULT_SIZE,
            Some(Value::String(s)) => {
                shm::size::parse(s).map_err(|_| err(at("size"), format!("{s:?} is not a size")))?
            }
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| err(at("size"), format!("{n} is not a size")))?,
            Some(other) => return Err(err(at("size"), format!("{other} is not a size"))),
        };
        if !shm::region::valid_ring_cap(size) {
            return Err(err(
                at("size"),
                format!("{size} bytes: the ring size must be a power of two between 4KiB and 1GiB"),
            ));
        }
        let numa_node = match obj.get("numaNode") {
            None => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n < 1024)
                    .ok_or_else(|| err(at("numaNode"), format!("{n} is not a node number")))?,
            ),
            Some(other) => {
                return Err(err(at("numaNode"), format!("{other} is not a node number")))
            }
        };
        let pin = boolean("pin")?;
        if pin && numa_node.is_none() {
            return Err(err(at("pin"), "needs numaNode".into()));
        }
        let owner = match string("owner")? {
            None => None,
            Some(s) => {
                let parsed = s
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                Some(parsed.ok_or_else(|| err(at("owner"), format!("{s:?} is not \"uid:gid\"")))?)
            }
        };
        let mode = match string("mode")? {
            None => None,
            Some(s) => Some(
                u32::from_str_radix(&s, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        err(
                            at("mode"),
                            format!("{s:?} is not an octal mode like \"0660\""),
                        )
                    })?,
            ),
        };
        let hugepages = boolean("hugepages")?;
        let path = string("path")?.unwrap_or_else(|| format!("{}/{name}", shm::DEFAULT_DIR));
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(err(
                at("path"),
                format!("{path:?} must be absolute, without \"..\""),
            ));
        }
        out.push(ChannelSpec {
            name,
            role,
            size,
            numa_node,
            pin,
            owner,
            mode,
            hugepages,
            path,
        });
    }
    Ok(out)
}

/// What joiners must agree on, kept next to the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    size: u64,
    #[serde(rename = "numaNode")]
    numa_node: Option<u32>,
    hugepages: bool,
    region: PathBuf,
}

/// The container's list of joined channels (in its state directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    root: PathBuf,
    channels: Vec<String>,
}

fn root_from_env(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn fs_type(path: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; c is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64)
}

fn mkdir(path: &Path, mode: u32) -> Result<(), ShmError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io("mkdir", path)(e)),
    }
}

/// The shm root, made if missing; it must be on tmpfs (regions are memory, not disk files).
fn open_root(root: &Path, want: i64, env: &str) -> Result<(), ShmError> {
    mkdir(root, 0o711)?;
    match fs_type(root) {
        Some(t) if t == want => Ok(()),
        _ => Err(ShmError::Channel {
            name: String::new(),
            msg: format!(
                "{} is not on {} (set {env})",
                root.display(),
                if want == TMPFS_MAGIC {
                    "tmpfs"
                } else {
                    "hugetlbfs"
                }
            ),
        }),
    }
}

/// flock on `<root>/.lock` for the duration of a join or release.
fn lock(root: &Path) -> Result<File, ShmError> {
    let p = root.join(".lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io("open lock", &p))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io("flock", &p)(std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// Channels a container joined; dropped without [`Joined::keep`] (a failed create) it leaves
/// them again.
#[derive(Debug)]
pub struct Joined {
    root: PathBuf,
    id: String,
    names: Vec<String>,
    armed: bool,
}

impl Joined {
    /// The container was created: the channels stay until `delete`.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        if self.armed {
            leave(&self.root, &self.id, &self.names);
        }
    }
}

/// Join the channels of `spec`'s annotation, if any: regions made or joined, mounts added,
/// placement set. `state_dir` receives the record `delete` works from.
pub fn join(spec: &mut Spec, id: &str, state_dir: &Path) -> Result<Option<Joined>, ShmError> {
    let Some(text) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .cloned()
    else {
        return Ok(None);
    };
    let _span = tracing::debug_span!("shm_channels", id).entered();
    let chans = parse(&text)?;
    if chans.is_empty() {
        return Ok(None);
    }
    let mut doc = serde_json::to_value(&*spec).map_err(|e| ShmError::Annotation {
        at: String::new(),
        msg: format!("spec: {e}"),
    })?;
    // Host-dependent checks and spec edits first: nothing is made on a bad annotation.
    for (i, c) in chans.iter().enumerate() {
        if let Some(n) = c.numa_node {
            check_node(i, n)?;
        }
        edit_spec(&mut doc, i, c)?;
    }
    let owners = chans
        .iter()
        .enumerate()
        .map(|(i, c)| host_owner(&doc, i, c))
        .collect::<Result<Vec<_>, _>>()?;
    let root = root_from_env(ROOT_ENV, DEFAULT_ROOT);
    open_root(&root, TMPFS_MAGIC, ROOT_ENV)?;
    let rec = Record {
        root: root.clone(),
        channels: chans.iter().map(|c| c.name.clone()).collect(),
    };
    let rec_path = state_dir.join(RECORD_FILE);
    let data = serde_json::to_vec(&rec).unwrap_or_default();
    std::fs::write(&rec_path, data).map_err(io("write", &rec_path))?;
    let mut joined = Joined {
        root: root.clone(),
        id: id.to_string(),
        names: Vec::new(),
        armed: true,
    };
    let _lock = lock(&root)?;
    let mut mounts = Vec::new();
    for (i, c) in chans.iter().enumerate() {
        let region = join_one(&root, id, c, owners[i], &mut joined)?;
        mounts.push(json!({
            "destination": c.path,
            "type": "bind",
            "source": region,
            "options": ["bind", "nosuid", "nodev", "noexec"],
        }));
    }
    match doc.get_mut("mounts").and_then(Value::as_array_mut) {
        Some(m) => m.extend(mounts),
        None => doc["mounts"] = Value::Array(mounts),
    }
    *spec = serde_json::from_value(doc).map_err(|e| ShmError::Annotation {
        at: String::new(),
        msg: format!("spec after adding the channels: {e}"),
    })?;
    Ok(Some(joined))
}

fn check_node(i: usize, n: u32) -> Result<(), ShmError> {
    if Path::new(NODE_SYSFS).join(format!("node{n}")).is_dir() {
        return Ok(());
    }
    let have: Vec<String> = std::fs::read_dir(NODE_SYSFS)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_prefix("node")
                        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    Err(ShmError::Annotation {
        at: format!("[{i}].numaNode"),
        msg: format!(
            "{n}: no such NUMA node (this host has node(s) {})",
            have.join(", ")
        ),
    })
}

/// With `pin`: cpus and mems of the node in linux.resources.cpu, MPOL_BIND to it in
/// linux.memoryPolicy. Values the spec already sets must agree.
fn edit_spec(doc: &mut Value, i: usize, c: &ChannelSpec) -> Result<(), ShmError> {
    let (true, Some(node)) = (c.pin, c.numa_node) else {
        return Ok(());
    };
    let cpulist_path = Path::new(NODE_SYSFS).join(format!("node{node}/cpulist"));
    let cpus = std::fs::read_to_string(&cpulist_path)
        .map_err(io("read", &cpulist_path))?
        .trim()
        .to_string();
    if cpus.is_empty() {
        return Err(ShmError::Annotation {
            at: format!("[{i}].pin"),
            msg: format!("NUMA node {node} has no CPUs to pin to"),
        });
    }
    let mems = node.to_string();
    let want = [
        ("/linux/resources/cpu/cpus", json!(cpus)),
        ("/linux/resources/cpu/mems", json!(mems)),
        (
            "/linux/memoryPolicy",
            json!({"mode": "MPOL_BIND", "nodes": mems}),
        ),
    ];
    for (ptr, v) in want {
        match doc.pointer(ptr) {
            None | Some(Value::Null) => set_pointer(doc, ptr, v),
            Some(have) if *have == v => {}
            Some(have) => {
                return Err(ShmError::Annotation {
                    at: format!("[{i}].pin"),
                    msg: format!(
                        "NUMA node {node} needs {} = {v}, but the spec sets {have}",
                        ptr.trim_start_matches('/').replace('/', ".")
                    ),
                })
            }
        }
    }
    Ok(())
}

fn set_pointer(doc: &mut Value, ptr: &str, v: Value) {
    let mut cur = doc;
    let parts: Vec<&str> = ptr.split('/').skip(1).collect();
    for (k, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        if k + 1 == parts.len() {
            obj.insert((*p).to_string(), v);
            return;
        }
        cur = obj.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// The owner on the host: the channel's `owner`, else the process user, through the
/// container's id mappings when it has a user namespace.
fn host_owner(doc: &Value, i: usize, c: &ChannelSpec) -> Result<Option<(u32, u32)>, ShmError> {
    let (uid, gid) = match c.owner {
        Some(o) => o,
        None => {
            let u = &doc["process"]["user"];
            (
                u["uid"].as_u64().unwrap_or(0) as u32,
                u["gid"].as_u64().unwrap_or(0) as u32,
            )
        }
    };
    let map = |key: &str, id: u32| -> Option<u32> {
        let Some(list) = doc["linux"][key].as_array().filter(|l| !l.is_empty()) else {
            return Some(id);
        };
        list.iter().find_map(|m| {
            let (c, h, s) = (
                m["containerID"].as_u64()?,
                m["hostID"].as_u64()?,
                m["size"].as_u64()?,
            );
            let id = id as u64;
            (id >= c && id < c + s).then(|| (h + id - c) as u32)
        })
    };
    match (map("uidMappings", uid), map("gidMappings", gid)) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => Err(ShmError::Annotation {
            at: format!("[{i}].owner"),
            msg: format!("{uid}:{gid} is not mapped by the container's uidMappings/gidMappings"),
        }),
    }
}

/// Make or join one channel (root locked); returns the region's host path.
fn join_one(
    root: &Path,
    id: &str,
    c: &ChannelSpec,
    owner: Option<(u32, u32)>,
    joined: &mut Joined,
) -> Result<PathBuf, ShmError> {
    let chan_err = |msg: String| ShmError::Channel {
        name: c.name.clone(),
        msg,
    };
    let dir = root.join(&c.name);
    let users = dir.join("users");
    let meta_path = dir.join("meta.json");
    let region = if c.hugepages {
        let hroot = root_from_env(HUGETLB_ROOT_ENV, DEFAULT_HUGETLB_ROOT);
        hroot.join(&c.name)
    } else {
        dir.join("region")
    };
    let want = Meta {
        size: c.size,
        numa_node: c.numa_node,
        hugepages: c.hugepages,
        region: region.clone(),
    };
    let existing = match std::fs::read(&meta_path) {
        Ok(d) => Some(
            serde_json::from_slice::<Meta>(&d)
                .map_err(|e| chan_err(format!("{} is damaged: {e}", meta_path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read", &meta_path)(e)),
    };
    if let Some(m) = &existing {
        if m.size != want.size || m.numa_node != want.numa_node || m.hugepages != want.hugepages {
            return Err(chan_err(format!(
                "exists with size {} numaNode {:?} hugepages {}; this container asks for size {} numaNode {:?} hugepages {}",
                m.size, m.numa_node, m.hugepages, c.size, c.numa_node, c.hugepages
            )));
        }
        let role = match c.role {
            Role::Listen => "listen",
            Role::Connect => "connect",
        };
        let others = match std::fs::read_dir(&users) {
            Ok(rd) => rd.flatten().collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &users)(e)),
        };
        for e in others {
            if std::fs::read_to_string(e.path()).is_ok_and(|r| r.trim() == role) {
                return Err(chan_err(format!(
                    "container {} already has the {role} role",
                    e.file_name().to_string_lossy()
                )));
            }
        }
    }
    // From here on this container is a user: a failure below leaves through `joined`.
    mkdir(&users, 0o700)?;
    let entry = users.join(id);
    let role = match c.role {
        Role::Listen => "listen\n",
        Role::Connect => "connect\n",
    };
    std::fs::write(&entry, role).map_err(io("write", &entry))?;
    joined.names.push(c.name.clone());
    if existing.is_none() {
        // No meta.json, so no user: a region file here is a leftover of a killed create.
        let _ = std::fs::remove_file(&region);
        // meta.json first: it names the region, so a release after a failure below finds it.
        let data = serde_json::to_vec(&want).unwrap_or_default();
        std::fs::write(&meta_path, data).map_err(io("write", &meta_path))?;
    }
    if !region.exists() {
        if c.hugepages {
            let hroot = region.parent().unwrap_or(Path::new("/"));
            open_root(hroot, HUGETLBFS_MAGIC, HUGETLB_ROOT_ENV)?;
            check_hugepages(c)?;
        }
        shm::create_region(
            &region,
            &RegionSpec {
                ring_cap: c.size,
                numa_node: c.numa_node,
                owner,
                mode: c.mode.unwrap_or(0o660),
            },
        )
        .map_err(|source| ShmError::Region {
            name: c.name.clone(),
            source,
        })?;
        tracing::debug!(channel = %c.name, region = %region.display(), "region created");
    }
    Ok(region)
}

/// hugetlbfs: the node's pool must hold the region (2 rings + header) in free huge pages.
fn check_hugepages(c: &ChannelSpec) -> Result<(), ShmError> {
    let err = |msg: String| ShmError::Channel {
        name: c.name.clone(),
        msg,
    };
    let hp = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| err("no huge pages on this host (Hugepagesize in /proc/meminfo)".into()))?;
    if !c.size.is_multiple_of(hp) {
        return Err(err(format!(
            "size {} is not a multiple of the huge page size {hp}",
            c.size
        )));
    }
    let pages = (2 * c.size + hp) / hp;
    if let Some(n) = c.numa_node {
        let f = Path::new(NODE_SYSFS).join(format!(
            "node{n}/hugepages/hugepages-{}kB/free_hugepages",
            hp / 1024
        ));
        let free: u64 = std::fs::read_to_string(&f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if free < pages {
            return Err(err(format!(
                "needs {pages} free huge pages on node {n}, {} has {free}",
                f.display()
            )));
        }
    }
    Ok(())
}

/// Leave channels (root locked): remove our users entries, and each region nobody uses.
fn leave(root: &Path, id: &str, names: &[String]) {
    let _lock = match lock(root) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    for name in names {
        let dir = root.join(name);
        let users = dir.join("users");
        match std::fs::remove_file(users.join(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("shm channel {name:?}: remove users entry {id}: {e}"),
        }
        let empty = match std::fs::read_dir(&users) {
            Ok(mut rd) => rd.next().is_none(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if !empty {
            continue;
        }
        let meta_path = dir.join("meta.json");
        let region = std::fs::read(&meta_path)
            .ok()
            .and_then(|d| serde_json::from_slice::<Meta>(&d).ok())
            .map(|m| m.region);
        for p in region.iter().chain([dir.join("region")].iter()) {
            if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("shm channel {name:?}: remove {}: {e}", p.display());
                }
            }
        }
        let _ = std::fs::remove_file(&meta_path);
        let _ = std::fs::remove_dir(&users);
        if let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("shm channel {name:?}: remove {}: {e}", dir.display());
            }
        }
    }
}

/// `delete` (normal, `--force` and recovery): leave every channel the container's record
/// names. Problems are logged, not fatal: the container is going away regardless.
pub fn release(state_dir: &Path, id: &str) {
    let p = state_dir.join(RECORD_FILE);
    let rec: Record = match std::fs::read(&p) {
        Ok(d) => match serde_json::from_slice(&d) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{}: {e}; shm channels not released", p.display());
                return;
            }
        },
        Err(_) => return,
    };
    leave(&rec.root, id, &rec.channels);
    let _ = std::fs::remove_file(&p);
}

/// Channel name -> users, for tests and diagnostics.
pub fn users(root: &Path, name: &str) -> HashMap<String, String> {
    std::fs::read_dir(root.join(name).join("users"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().to_string(),
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<ChannelSpec, String> {
        parse(text)
            .map_err(|e| e.to_string())
            .and_then(|v| v.into_iter().next().ok_or_else(|| "empty".to_string()))
    }

    #[test]
    fn parses_a_full_entry() {
        let c = one(
            r#"[{"name":"c1","role":"listen","size":"64KiB","numaNode":0,"pin":true,"owner":"1000:1000","mode":"0640","hugepages":false,"path":"/run/x"}]"#,
        );
        assert_eq!(
            c,
            Ok(ChannelSpec {
                name: "c1".into(),
                role: Role::Listen,
                size: 65536,
                numa_node: Some(0),
                pin: true,
                owner: Some((1000, 1000)),
                mode: Some(0o640),
                hugepages: false,
                path: "/run/x".into(),
            })
        );
        let d = one(r#"[{"name":"c2","role":"connect"}]"#);
        assert_eq!(
            d.map(|c| (c.size, c.path)),
            Ok((1 << 20, "/dev/rcrun-shm/c2".into()))
        );
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases = [
            (
                r#"[{"name":"c1","role":"listen","size":"64XB"}]"#,
                r#"org.rcrun.shm.channels[0].size: "64XB" is not a size"#,
            ),
            (
                r#"[{"name":"c1","role":"listen","size":"3MiB"}]"#,
                "[0].size: 3145728 bytes",
            ),
            (
                r#"[{"name":"c1","role":"server"}]"#,
                r#"[0].role: "server" is not"#,
            ),
            (
                r#"[{"name":"../x","role":"listen"}]"#,
                r#"[0].name: "../x""#,
            ),
            (
                r#"[{"name":"c1","role":"listen","sise":1}]"#,
                r#"[0]: unknown field "sise""#,
            ),
            (
                r#"[{"name":"c1","role":"listen","pin":true}]"#,
                "[0].pin: needs numaNode",
            ),
            (
                r#"[{"name":"c1","role":"listen","owner":"root"}]"#,
                r#"[0].owner: "root""#,
            ),
            (
                r#"[{"name":"c1","role":"listen","mode":"999"}]"#,
                r#"[0].mode: "999""#,
            ),
            (
                r#"[{"name":"c1","role":"listen"},{"name":"c1","role":"connect"}]"#,
                "[1].name: \"c1\" is listed twice",
            ),
            (r#"{"name":"c1"}"#, "must be a JSON list"),
            (r#"[{"name":"c1""#, "not valid JSON"),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|_| ()).map_err(|e| e.to_string());
            assert!(
                matches!(&got, Err(e) if e.contains(want)),
                "{text}: got {got:?}, want {want:?}"
            );
        }
    }
}
