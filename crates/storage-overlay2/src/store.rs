//! The store directory (default [`DEFAULT_ROOT`]), laid out like Docker's overlay2 driver:
//!
//! ```text
//! <root>/<chain-id hex>/diff        unpacked layer (overlay whiteouts)
//!                      /link        26-char id; <root>/l/<id> -> ../<chain-id hex>/diff
//!                      /lower       l/<id>:l/<id>:... of the layers below, top first
//!                      /committed   JSON LayerMeta, written last; no marker = incomplete
//! <root>/l/<id>                     short links keep overlay mount options small
//! <root>/images/<image-id hex>.json ImageRecord (id = config digest, names, chain ids, config)
//! <root>/containers/<id>/{upper,work,merged,container.json}
//! <root>/lock                       flock: shared by imports/creates, exclusive by rm/prune
//! <root>/locks/<chain-id hex>.lock  flock per layer: one process unpacks, the others wait
//! <root>/locks/records              flock around image-record updates (name moves)
//! <root>/tmp/                       scratch (decompressed archives), emptied by prune
//! ```
//!
//! A layer counts only once `committed` exists; it is written after the diff is synced, so a
//! crash mid-import leaves a directory without it, which the next import of that layer (under
//! the per-layer lock) or `prune` removes. Reference counts are not stored: a layer is in use
//! while an image or container record lists it, computed under the exclusive store lock.

mod digest;
pub(crate) mod fsutil;

pub use digest::{chain_ids, Digest, DigestError};

use crate::image::ImageConfig;
use fsutil::{disk_usage, fsync_dir, random_id, remove_all, write_atomic};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where the store lives unless the caller says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/rcrun/overlay2";

const LINK_DIR: &str = "l";
const IMAGES_DIR: &str = "images";
const CONTAINERS_DIR: &str = "containers";
const LOCKS_DIR: &str = "locks";
const TMP_DIR: &str = "tmp";
const STORE_LOCK: &str = "lock";
const RECORDS_LOCK: &str = "records";
const COMMITTED: &str = "committed";
const CONTAINER_RECORD: &str = "container.json";
/// Written by mount.rs next to a container's dirs: where its rootfs is mounted.
pub(crate) const MOUNTPOINT_FILE: &str = "mountpoint";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("flock {path}: {source}")]
    Lock { path: PathBuf, source: Errno },
    #[error("record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {0:?} not found in the store")]
    ImageNotFound(String),
    #[error("image reference {reference:?} is ambiguous: it matches {matches:?}")]
    AmbiguousImage {
        reference: String,
        matches: Vec<String>,
    },
    #[error("image {image} is used by container(s) {containers:?}: remove them first or force")]
    ImageInUse {
        image: String,
        containers: Vec<String>,
    },
    #[error("invalid image name {0:?}")]
    InvalidName(String),
    #[error("container {0:?} not found in the store")]
    ContainerNotFound(String),
    #[error("container {0:?} already exists in the store")]
    ContainerExists(String),
    #[error(
        "container id {0:?}: use 1-128 characters of [A-Za-z0-9_.-] starting with a letter or digit"
    )]
    InvalidContainerId(String),
    #[error("container {id:?} is still mounted at {path}: unmount it first")]
    ContainerMounted { id: String, path: PathBuf },
    #[error("layer {chain_id} is not in the store (no committed marker)")]
    LayerNotFound { chain_id: Digest },
    #[error("layer {chain_id} (layer {index} of image {image}) is not committed in the store")]
    LayerMissing {
        image: String,
        index: usize,
        chain_id: Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What `committed` holds: written once the diff is complete and synced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerMeta {
    pub chain_id: Digest,
    pub diff_id: Digest,
    #[serde(default)]
    pub parent: Option<Digest>,
    /// The blob it was unpacked from (compressed digest), when the source named one.
    #[serde(default)]
    pub blob: Option<Digest>,
    #[serde(default)]
    pub entries: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub whiteouts: u64,
}

/// A committed layer.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub chain_id: Digest,
    /// `<root>/<chain-id hex>`; the files are in `diff/`.
    pub dir: PathBuf,
    /// The short id: `<root>/l/<link>` points at `diff/`.
    pub link: String,
    pub meta: LayerMeta,
}

impl LayerInfo {
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }
}

/// `images/<id hex>.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// The config digest (Docker's image id).
    pub id: Digest,
    #[serde(default)]
    pub names: Vec<String>,
    /// Chain ids, bottom layer first.
    pub layers: Vec<Digest>,
    /// Uncompressed layer digests from the config's rootfs.diff_ids, bottom first.
    pub diff_ids: Vec<Digest>,
    /// The OCI manifest digest, when imported from an OCI layout.
    #[serde(default)]
    pub manifest: Option<Digest>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: ImageConfig,
}

/// `containers/<id>/container.json`. It lists the layers itself so a force-removed image does
/// not take the layers of its running containers with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub image: Digest,
    #[serde(default)]
    pub image_name: Option<String>,
    /// Chain ids, bottom layer first.
    pub layers: Vec<Digest>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveImageReport {
    /// Names removed from an image that keeps other names (the image itself stays).
    pub untagged: Vec<String>,
    pub removed_image: Option<Digest>,
    /// Layers (chain ids) deleted because nothing else used them.
    pub removed_layers: Vec<Digest>,
    pub reclaimed_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Committed layers no image or container used.
    pub removed_layers: Vec<Digest>,
    /// Layer directories without a committed marker (interrupted imports), by directory name.
    pub incomplete_layers: Vec<String>,
    /// Container directories without a record (interrupted creates).
    pub incomplete_containers: Vec<String>,
    /// `l/` links whose layer is gone.
    pub dangling_links: usize,
    pub reclaimed_bytes: u64,
}

/// A held flock on `<root>/lock`; released on drop.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _flock: Flock<File>,
}

/// A layer being written: its directory, `link`, `l/` symlink and `lower` exist, `committed`
/// does not. Dropped without [`NewLayer::commit`] it removes itself (still under its lock).
#[derive(Debug)]
pub(crate) struct NewLayer<'s> {
    store: &'s Store,
    chain_id: Digest,
    dir: PathBuf,
    committed: bool,
    _lock: Flock<File>,
}

impl NewLayer<'_> {
    pub(crate) fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }

    /// Make the layer visible: sync the unpacked files (`sync`), then write the marker.
    pub(crate) fn commit(mut self, meta: &LayerMeta, sync: bool) -> Result<(), StoreError> {
        let diff = self.diff();
        if sync {
            // apply writes without fsync; one syncfs covers every file of the layer, so the
            // marker can never be durable before the content it vouches for.
            let f = File::open(&diff).map_err(io_err("open", &diff))?;
            rustix::fs::syncfs(&f).map_err(|e| StoreError::Io {
                op: "syncfs",
                path: diff.clone(),
                source: e.into(),
            })?;
        }
        let data = serde_json::to_vec_pretty(meta).map_err(|source| StoreError::Record {
            path: self.dir.join(COMMITTED),
            source,
        })?;
        write_atomic(&self.dir, COMMITTED, &data, sync)
            .map_err(io_err("write", &self.dir.join(COMMITTED)))?;
        self.committed = true;
        tracing::debug!(chain_id = %self.chain_id, "layer committed");
        Ok(())
    }
}

impl Drop for NewLayer<'_> {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = self.store.remove_layer_files(self.chain_id.hex()) {
                tracing::warn!(chain_id = %self.chain_id, error = %e,
                    "could not remove incomplete layer; prune will retry");
            }
        }
    }
}

/// An overlay2 store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) a store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = root.as_ref();
        let mut b = DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(root).map_err(io_err("create", root))?;
        let root = fs::canonicalize(root).map_err(io_err("canonicalize", root))?;
        b.recursive(false);
        for sub in [LINK_DIR, IMAGES_DIR, CONTAINERS_DIR, LOCKS_DIR, TMP_DIR] {
            let p = root.join(sub);
            match b.create(&p) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("create", &p)(e))
                }
                _ => {}
            }
        }
        Ok(Self { root })
    }

    /// [`Store::open`] at [`DEFAULT_ROOT`].
    pub fn open_default() -> Result<Self, StoreError> {
        Self::open(DEFAULT_ROOT)
    }

    /// The canonical store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    fn flock(&self, path: PathBuf, arg: FlockArg) -> Result<Flock<File>, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(l) => return Ok(l),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, source)) => return Err(StoreError::Lock { path, source }),
            }
        }
    }

    pub(crate) fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock {
            _flock: self.flock(self.root.join(STORE_LOCK), FlockArg::LockShared)?,
        })
    }

    pub(crate) fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock {
            _flock: self.flock(self.root.join(STORE_LOCK), FlockArg::LockExclusive)?,
        })
    }

    fn lock_records(&self) -> Result<Flock<File>, StoreError> {
        self.flock(
            self.root.join(LOCKS_DIR).join(RECORDS_LOCK),
            FlockArg::LockExclusive,
        )
    }

    // ---- layers ----

    /// `<root>/<chain-id hex>`.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    pub fn is_committed(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).join(COMMITTED).exists()
    }

    /// A committed layer's paths and metadata.
    pub fn layer(&self, chain_id: &Digest) -> Result<LayerInfo, StoreError> {
        let dir = self.layer_dir(chain_id);
        let marker = dir.join(COMMITTED);
        let data = match fs::read(&marker) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::LayerNotFound {
                    chain_id: chain_id.clone(),
                })
            }
            r => r.map_err(io_err("read", &marker))?,
        };
        let meta: LayerMeta =
            serde_json::from_slice(&data).map_err(|source| StoreError::Record {
                path: marker.clone(),
                source,
            })?;
        let link = read_link_file(&dir)?;
        Ok(LayerInfo {
            chain_id: chain_id.clone(),
            dir,
            link,
            meta,
        })
    }

    /// All committed layers.
    pub fn layers(&self) -> Result<Vec<LayerInfo>, StoreError> {
        let mut out = Vec::new();
        for name in self.layer_dir_names()? {
            let Ok(d) = Digest::from_hex(&name) else {
                continue;
            };
            if self.is_committed(&d) {
                out.push(self.layer(&d)?);
            }
        }
        out.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(out)
    }

    fn layer_dir_names(&self) -> Result<Vec<String>, StoreError> {
        let rd = fs::read_dir(&self.root).map_err(io_err("read dir", &self.root))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err("read dir", &self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if digest::is_sha256_hex(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Claim a layer for writing. `None` when it is already committed (possibly by another
    /// process that held the per-layer lock while we waited). An incomplete directory left by
    /// an interrupted import is removed first. `parent` must be committed.
    #[tracing::instrument(level = "debug", skip_all, fields(chain_id = %chain_id))]
    pub(crate) fn begin_layer(
        &self,
        _held: &StoreLock,
        chain_id: &Digest,
        parent: Option<&Digest>,
    ) -> Result<Option<NewLayer<'_>>, StoreError> {
        let hex = chain_id.hex();
        let lock = self.flock(
            self.root.join(LOCKS_DIR).join(format!("{hex}.lock")),
            FlockArg::LockExclusive,
        )?;
        if self.is_committed(chain_id) {
            return Ok(None);
        }
        let dir = self.layer_dir(chain_id);
        if fs::symlink_metadata(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removing incomplete layer left by an interrupted import");
            self.remove_layer_files(hex)
                .map_err(io_err("remove incomplete layer", &dir))?;
        }
        let lower = match parent {
            None => None,
            Some(p) => {
                let pinfo = self.layer(p)?;
                let plower = fs::read_to_string(pinfo.dir.join("lower")).unwrap_or_default();
                let plower = plower.trim();
                Some(if plower.is_empty() {
                    format!("{LINK_DIR}/{}", pinfo.link)
                } else {
                    format!("{LINK_DIR}/{}:{plower}", pinfo.link)
                })
            }
        };
        // From here on, dropping `layer` undoes everything below.
        let layer = NewLayer {
            store: self,
            chain_id: chain_id.clone(),
            dir: dir.clone(),
            committed: false,
            _lock: lock,
        };
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        let diff = dir.join("diff");
        DirBuilder::new()
            .mode(0o755)
            .create(&diff)
            .map_err(io_err("create", &diff))?;
        // `link` before the symlink, so whoever cleans this directory up finds the symlink.
        let mut attempts = 0;
        loop {
            let id = random_id().map_err(io_err("getrandom for", &dir))?;
            fs::write(dir.join("link"), &id).map_err(io_err("write", &dir.join("link")))?;
            let l = self.root.join(LINK_DIR).join(&id);
            match std::os::unix::fs::symlink(format!("../{hex}/diff"), &l) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => return Err(io_err("symlink", &l)(e)),
            }
        }
        if let Some(lower) = lower {
            fs::write(dir.join("lower"), lower).map_err(io_err("write", &dir.join("lower")))?;
        }
        Ok(Some(layer))
    }

    /// Remove a layer directory and its `l/` link. The marker goes first so an interrupted
    /// removal leaves an incomplete layer, never a committed one with missing files.
    fn remove_layer_files(&self, hex: &str) -> io::Result<()> {
        let dir = self.root.join(hex);
        match fs::remove_file(dir.join(COMMITTED)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if let Ok(link) = fs::read_to_string(dir.join("link")) {
            let link = link.trim();
            if valid_link_id(link) {
                let l = self.root.join(LINK_DIR).join(link);
                if fs::read_link(&l).is_ok_and(|t| t == Path::new(&format!("../{hex}/diff"))) {
                    match fs::remove_file(&l) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
        }
        remove_all(&dir)
    }

    /// Remove a committed, unreferenced layer (exclusive lock held); returns the bytes freed.
    fn delete_layer(&self, hex: &str) -> Result<u64, StoreError> {
        let dir = self.root.join(hex);
        let bytes = disk_usage(&dir);
        self.remove_layer_files(hex)
            .map_err(io_err("remove layer", &dir))?;
        // Nobody holds a layer lock without the shared store lock, and we hold it exclusively.
        let _ = fs::remove_file(self.root.join(LOCKS_DIR).join(format!("{hex}.lock")));
        tracing::info!(layer = hex, bytes, "layer removed");
        Ok(bytes)
    }

    // ---- images ----

    fn image_path(&self, id: &Digest) -> PathBuf {
        self.root
            .join(IMAGES_DIR)
            .join(format!("{}.json", id.hex()))
    }

    /// All image records, sorted by id.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out: Vec<ImageRecord> = read_records(&self.root.join(IMAGES_DIR), |name| {
            name.strip_suffix(".json")
                .is_some_and(digest::is_sha256_hex)
        })?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Find an image by name (`busybox` means `busybox:latest`; `docker.io/library/` is
    /// implied), by id (`sha256:<hex>`, `<hex>`) or by an unambiguous id prefix (4+ hex).
    pub fn image(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        let all = self.images()?;
        let (rec, _) = resolve_image(&all, reference)?;
        Ok(rec.clone())
    }

    /// Write an image record (under the shared lock held by the import). Names it takes are
    /// moved off other images, as `docker load` re-tags.
    pub(crate) fn record_image(
        &self,
        _held: &StoreLock,
        rec: ImageRecord,
    ) -> Result<ImageRecord, StoreError> {
        for n in &rec.names {
            validate_name(n)?;
        }
        for (index, chain_id) in rec.layers.iter().enumerate() {
            if !self.is_committed(chain_id) {
                return Err(StoreError::LayerMissing {
                    image: rec.id.to_string(),
                    index,
                    chain_id: chain_id.clone(),
                });
            }
        }
        let _records = self.lock_records()?;
        let all = self.images()?;
        let mut merged = rec;
        if let Some(existing) = all.iter().find(|r| r.id == merged.id) {
            let mut names = existing.names.clone();
            for n in &merged.names {
                if !names.iter().any(|x| normalize_name(x) == normalize_name(n)) {
                    names.push(n.clone());
                }
            }
            merged.names = names;
        }
        for other in all.iter().filter(|r| r.id != merged.id) {
            let keep: Vec<String> = other
                .names
                .iter()
                .filter(|n| {
                    !merged
                        .names
                        .iter()
                        .any(|m| normalize_name(m) == normalize_name(n))
                })
                .cloned()
                .collect();
            if keep.len() != other.names.len() {
                let mut o = other.clone();
                o.names = keep;
                self.write_image(&o)?;
            }
        }
        self.write_image(&merged)?;
        Ok(merged)
    }

    fn write_image(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let path = self.image_path(&rec.id);
        let data = serde_json::to_vec_pretty(rec).map_err(|source| StoreError::Record {
            path: path.clone(),
            source,
        })?;
        write_atomic(
            &self.root.join(IMAGES_DIR),
            &format!("{}.json", rec.id.hex()),
            &data,
            true,
        )
        .map_err(io_err("write", &path))
    }

    /// Add a name to an image (moving it off any other image).
    pub fn tag(&self, reference: &str, name: &str) -> Result<ImageRecord, StoreError> {
        validate_name(name)?;
        let held = self.lock_shared()?;
        let mut rec = self.image(reference)?;
        rec.names = vec![name.to_string()];
        self.record_image(&held, rec)
    }

    /// `rmi`: a name of an image with several names only loses that name; otherwise the image
    /// record goes, then every layer of it that no other image or container lists. Refused
    /// while a container uses the image unless `force` (its layers then stay for the
    /// container, which lists them too).
    #[tracing::instrument(skip(self))]
    pub fn remove_image(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<RemoveImageReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let all = self.images()?;
        let (rec, by_name) = resolve_image(&all, reference)?;
        let mut report = RemoveImageReport::default();
        if let Some(name) = by_name {
            if rec.names.len() > 1 {
                let _records = self.lock_records()?;
                let mut r = rec.clone();
                r.names.retain(|n| n != &name);
                self.write_image(&r)?;
                report.untagged.push(name);
                return Ok(report);
            }
        }
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.image == rec.id)
            .map(|c| c.id)
            .collect();
        if !users.is_empty() && !force {
            return Err(StoreError::ImageInUse {
                image: image_label(rec),
                containers: users,
            });
        }
        let path = self.image_path(&rec.id);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        let images_dir = self.root.join(IMAGES_DIR);
        fsync_dir(&images_dir).map_err(io_err("fsync", &images_dir))?;
        report.untagged = rec.names.clone();
        report.removed_image = Some(rec.id.clone());
        let referenced = self.referenced_layers()?;
        // Top first: a crash midway leaves the bottom layers, which are still a valid stack.
        for chain_id in rec.layers.iter().rev() {
            if referenced.contains(chain_id) || !self.layer_dir(chain_id).exists() {
                continue;
            }
            report.reclaimed_bytes += self.delete_layer(chain_id.hex())?;
            report.removed_layers.push(chain_id.clone());
        }
        tracing::info!(image = %rec.id, layers = report.removed_layers.len(),
            bytes = report.reclaimed_bytes, "image removed");
        Ok(report)
    }

    fn referenced_layers(&self) -> Result<HashSet<Digest>, StoreError> {
        let mut set = HashSet::new();
        for i in self.images()? {
            set.extend(i.layers);
        }
        for c in self.containers()? {
            set.extend(c.layers);
        }
        Ok(set)
    }

    /// Remove layers no image or container lists, incomplete layer and container
    /// directories, dangling `l/` links, stale lock and temp files.
    #[tracing::instrument(skip(self))]
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        let referenced = self.referenced_layers()?;
        for name in self.layer_dir_names()? {
            let dir = self.root.join(&name);
            let committed = dir.join(COMMITTED).exists();
            let used = Digest::from_hex(&name).is_ok_and(|d| referenced.contains(&d));
            if !committed {
                report.reclaimed_bytes += self.delete_layer(&name)?;
                report.incomplete_layers.push(name);
            } else if !used {
                report.reclaimed_bytes += self.delete_layer(&name)?;
                if let Ok(d) = Digest::from_hex(&name) {
                    report.removed_layers.push(d);
                }
            }
        }
        let cdir = self.root.join(CONTAINERS_DIR);
        for e in fs::read_dir(&cdir).map_err(io_err("read dir", &cdir))? {
            let e = e.map_err(io_err("read dir", &cdir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = fs::remove_file(&p);
                continue;
            }
            if !e.file_type().is_ok_and(|t| t.is_dir()) || p.join(CONTAINER_RECORD).exists() {
                continue;
            }
            if let Some(m) = self.mounted_path(&name) {
                tracing::warn!(container = %name, mountpoint = %m.display(),
                    "incomplete container is mounted; not removing it");
                continue;
            }
            report.reclaimed_bytes += disk_usage(&p);
            remove_all(&p).map_err(io_err("remove", &p))?;
            report.incomplete_containers.push(name);
        }
        let ldir = self.root.join(LINK_DIR);
        for e in fs::read_dir(&ldir).map_err(io_err("read dir", &ldir))? {
            let e = e.map_err(io_err("read dir", &ldir))?;
            let p = e.path();
            let keep = fs::read_link(&p).ok().and_then(|t| {
                let t = t.to_str()?.to_string();
                let hex = t.strip_prefix("../")?.strip_suffix("/diff")?.to_string();
                digest::is_sha256_hex(&hex).then_some(hex)
            });
            let keep = keep.is_some_and(|hex| self.root.join(hex).join(COMMITTED).exists());
            if !keep {
                remove_all(&p).map_err(io_err("remove", &p))?;
                report.dangling_links += 1;
            }
        }
        let lkdir = self.root.join(LOCKS_DIR);
        for e in fs::read_dir(&lkdir).map_err(io_err("read dir", &lkdir))? {
            let e = e.map_err(io_err("read dir", &lkdir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".lock") {
                if digest::is_sha256_hex(hex) && !self.root.join(hex).exists() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for d in [self.tmp_dir(), self.root.join(IMAGES_DIR)] {
            for e in fs::read_dir(&d).map_err(io_err("read dir", &d))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if d.ends_with(TMP_DIR) || (name.starts_with('.') && name.contains(".tmp-")) {
                    report.reclaimed_bytes += disk_usage(&e.path());
                    remove_all(&e.path()).map_err(io_err("remove", &e.path()))?;
                }
            }
        }
        tracing::info!(
            layers = report.removed_layers.len(),
            incomplete = report.incomplete_layers.len(),
            bytes = report.reclaimed_bytes,
            "pruned"
        );
        Ok(report)
    }

    // ---- containers ----

    /// A container's directories (the id is validated, nothing is created).
    pub fn container_paths(&self, id: &str) -> Result<ContainerPaths, StoreError> {
        validate_container_id(id)?;
        let dir = self.root.join(CONTAINERS_DIR).join(id);
        Ok(ContainerPaths {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            dir,
        })
    }

    /// Create `containers/<id>/{upper,work,merged}` and its record for `image`.
    #[tracing::instrument(skip(self))]
    pub fn create_container(&self, id: &str, image: &str) -> Result<ContainerRecord, StoreError> {
        let paths = self.container_paths(id)?;
        let _held = self.lock_shared()?;
        let img = self.image(image)?;
        for (index, chain_id) in img.layers.iter().enumerate() {
            if !self.is_committed(chain_id) {
                return Err(StoreError::LayerMissing {
                    image: image_label(&img),
                    index,
                    chain_id: chain_id.clone(),
                });
            }
        }
        match DirBuilder::new().mode(0o700).create(&paths.dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::ContainerExists(id.to_string()))
            }
            r => r.map_err(io_err("create", &paths.dir))?,
        }
        for (p, mode) in [
            (&paths.upper, 0o755),
            (&paths.work, 0o700),
            (&paths.merged, 0o755),
        ] {
            DirBuilder::new()
                .mode(mode)
                .create(p)
                .map_err(io_err("create", p))?;
        }
        let rec = ContainerRecord {
            id: id.to_string(),
            image: img.id.clone(),
            image_name: img.names.first().cloned(),
            layers: img.layers.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let path = paths.dir.join(CONTAINER_RECORD);
        let data = serde_json::to_vec_pretty(&rec).map_err(|source| StoreError::Record {
            path: path.clone(),
            source,
        })?;
        // The record last: without it the directory is an interrupted create, pruned later.
        write_atomic(&paths.dir, CONTAINER_RECORD, &data, true).map_err(io_err("write", &path))?;
        Ok(rec)
    }

    pub fn container(&self, id: &str) -> Result<ContainerRecord, StoreError> {
        let paths = self.container_paths(id)?;
        let path = paths.dir.join(CONTAINER_RECORD);
        let data = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::ContainerNotFound(id.to_string()))
            }
            r => r.map_err(io_err("read", &path))?,
        };
        serde_json::from_slice(&data).map_err(|source| StoreError::Record { path, source })
    }

    /// All container records, sorted by id.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let cdir = self.root.join(CONTAINERS_DIR);
        let mut out = Vec::new();
        for e in fs::read_dir(&cdir).map_err(io_err("read dir", &cdir))? {
            let e = e.map_err(io_err("read dir", &cdir))?;
            let path = e.path().join(CONTAINER_RECORD);
            let data = match fs::read(&path) {
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    continue
                }
                r => r.map_err(io_err("read", &path))?,
            };
            out.push(
                serde_json::from_slice::<ContainerRecord>(&data)
                    .map_err(|source| StoreError::Record { path, source })?,
            );
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Where a container's rootfs is mounted, if it is.
    pub(crate) fn mounted_path(&self, id: &str) -> Option<PathBuf> {
        let paths = self.container_paths(id).ok()?;
        let mut candidates = vec![paths.merged.clone()];
        if let Ok(t) = fs::read(paths.dir.join(MOUNTPOINT_FILE)) {
            candidates.push(PathBuf::from(std::ffi::OsStr::from_bytes(&t)));
        }
        candidates
            .into_iter()
            .find(|p| crate::mount::is_mounted(p).unwrap_or(false))
    }

    /// Delete a container's record and directories (upper included); refused while its rootfs
    /// is mounted. Returns the bytes freed. Its layers may then be removed by `prune`/`rm`.
    #[tracing::instrument(skip(self))]
    pub fn remove_container(&self, id: &str) -> Result<u64, StoreError> {
        let paths = self.container_paths(id)?;
        let _lock = self.lock_exclusive()?;
        let record = paths.dir.join(CONTAINER_RECORD);
        if !record.exists() {
            return Err(StoreError::ContainerNotFound(id.to_string()));
        }
        if let Some(path) = self.mounted_path(id) {
            return Err(StoreError::ContainerMounted {
                id: id.to_string(),
                path,
            });
        }
        let bytes = disk_usage(&paths.dir);
        // Record first: a crash midway leaves an incomplete directory that prune removes.
        fs::remove_file(&record).map_err(io_err("remove", &record))?;
        remove_all(&paths.dir).map_err(io_err("remove", &paths.dir))?;
        Ok(bytes)
    }

    /// Empty a container's overlay work directory (keeping its upper), so the next mount
    /// starts clean. Refused while mounted.
    pub fn reset_work(&self, id: &str) -> Result<(), StoreError> {
        let paths = self.container_paths(id)?;
        let _held = self.lock_shared()?;
        if !paths.dir.join(CONTAINER_RECORD).exists() {
            return Err(StoreError::ContainerNotFound(id.to_string()));
        }
        if let Some(path) = self.mounted_path(id) {
            return Err(StoreError::ContainerMounted {
                id: id.to_string(),
                path,
            });
        }
        remove_all(&paths.work).map_err(io_err("remove", &paths.work))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&paths.work)
            .map_err(io_err("create", &paths.work))
    }
}

fn read_link_file(dir: &Path) -> Result<String, StoreError> {
    let p = dir.join("link");
    let s = fs::read_to_string(&p).map_err(io_err("read", &p))?;
    let s = s.trim().to_string();
    if !valid_link_id(&s) {
        return Err(StoreError::Io {
            op: "parse",
            path: p,
            source: io::Error::new(io::ErrorKind::InvalidData, "not a 26-character link id"),
        });
    }
    Ok(s)
}

fn valid_link_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

fn read_records<T: serde::de::DeserializeOwned>(
    dir: &Path,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let e = e.map_err(io_err("read dir", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !want(&name) {
            continue;
        }
        let path = e.path();
        let data = match fs::read(&path) {
            // Removed by a concurrent rm between readdir and read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => r.map_err(io_err("read", &path))?,
        };
        out.push(
            serde_json::from_slice(&data).map_err(|source| StoreError::Record { path, source })?,
        );
    }
    Ok(out)
}

fn image_label(rec: &ImageRecord) -> String {
    match rec.names.first() {
        Some(n) => format!("{n} ({})", rec.id.short()),
        None => rec.id.to_string(),
    }
}

pub(crate) fn validate_name(n: &str) -> Result<(), StoreError> {
    if n.is_empty() || n.len() > 255 || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::InvalidName(n.to_string()));
    }
    Ok(())
}

fn validate_container_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidContainerId(id.to_string()))
    }
}

/// Docker's short forms: `busybox` = `busybox:latest` = `docker.io/library/busybox:latest`.
pub fn normalize_name(name: &str) -> String {
    let mut s = name;
    for prefix in ["docker.io/", "index.docker.io/"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
            break;
        }
    }
    let s = s.strip_prefix("library/").unwrap_or(s);
    let last = s.rsplit('/').next().unwrap_or(s);
    if last.contains(':') || s.contains('@') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

/// The image a reference means, and the name it matched (None when matched by id).
fn resolve_image<'a>(
    all: &'a [ImageRecord],
    reference: &str,
) -> Result<(&'a ImageRecord, Option<String>), StoreError> {
    let want = normalize_name(reference);
    let by_name: Vec<(&ImageRecord, &String)> = all
        .iter()
        .filter_map(|r| {
            r.names
                .iter()
                .find(|n| normalize_name(n) == want)
                .map(|n| (r, n))
        })
        .collect();
    match by_name.as_slice() {
        [(r, n)] => return Ok((r, Some((*n).clone()))),
        [] => {}
        many => {
            return Err(StoreError::AmbiguousImage {
                reference: reference.to_string(),
                matches: many.iter().map(|(r, _)| r.id.to_string()).collect(),
            })
        }
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        let by_id: Vec<&ImageRecord> = all.iter().filter(|r| r.id.hex().starts_with(hex)).collect();
        match by_id.as_slice() {
            [r] => return Ok((r, None)),
            [] => {}
            many => {
                return Err(StoreError::AmbiguousImage {
                    reference: reference.to_string(),
                    matches: many.iter().map(|r| r.id.to_string()).collect(),
                })
            }
        }
    }
    Err(StoreError::ImageNotFound(reference.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        assert_eq!(normalize_name("busybox"), "busybox:latest");
        assert_eq!(normalize_name("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(normalize_name("library/busybox"), "busybox:latest");
        assert_eq!(
            normalize_name("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        assert_eq!(normalize_name("x@sha256:ab"), "x@sha256:ab");
    }

    #[test]
    fn link_ids_are_docker_shaped() {
        let a = random_id().unwrap();
        assert!(valid_link_id(&a), "{a}");
        assert_ne!(a, random_id().unwrap());
    }
}
