//! Import an image into the store from an OCI image layout directory, an oci-archive (a tar of
//! such a layout) or a docker-archive (`docker save`: `manifest.json` with Config, RepoTags and
//! Layers as `<id>/layer.tar` or `blobs/sha256/<hex>`). Gzip/zstd-compressed archives are
//! decompressed into the store's tmp dir first.
//!
//! Every blob is verified while it is read: index, manifest and config before any layer is
//! touched; a layer's compressed digest and its diffID (sha256 of the uncompressed tar, checked
//! against the config's `rootfs.diff_ids`) while it is decompressed and unpacked in one pass.
//! A mismatch fails the import naming the blob, and the layer being written is removed before
//! its committed marker could exist. Layers already committed are not read at all; a layer
//! another import is unpacking is waited for (per-layer lock) and then reused.

mod zstd_frames;

use crate::apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats};
use crate::image::ImageConfigFile;
use crate::store::{
    chain_ids, normalize_name, Digest, DigestError, ImageRecord, LayerMeta, Store, StoreError,
};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// index.json, manifests and configs are small; the limit stops a hostile archive from making
/// us buffer gigabytes.
const JSON_LIMIT: u64 = 16 << 20;
/// Nested indexes deeper than this are refused (cycles cannot exist with digests, depth can).
const MAX_INDEX_DEPTH: usize = 8;
/// Progress callback granularity.
const PROGRESS_STEP: u64 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory with `oci-layout`, `index.json`, `blobs/`.
    OciLayout,
    /// A tar of an OCI layout.
    OciArchive,
    /// A `docker save` tar (`manifest.json`).
    DockerArchive,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The name to record (e.g. `busybox:latest`), also used to pick the image when the
    /// source holds several. Default: the source's own names (`io.containerd.image.name` or
    /// `org.opencontainers.image.ref.name` annotation; docker RepoTags).
    pub name: Option<String>,
    /// Skip detection.
    pub kind: Option<SourceKind>,
    /// Keep the uids/gids of the layer tars (false: files owned by the importing user).
    pub preserve_owner: bool,
    /// syncfs each layer before its committed marker is written (and fsync the marker). Off
    /// only for scratch stores: after a power loss a committed layer could be incomplete.
    pub sync: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            name: None,
            kind: None,
            preserve_owner: true,
            sync: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Already in the store: not read.
    Reused,
    /// Being read and unpacked; `bytes_done` counts bytes of the (compressed) blob.
    Applying,
    /// Unpacked, verified and committed.
    Applied,
}

/// Reported to the caller's callback for each layer (several times while applying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0-based, bottom layer first.
    pub layer: usize,
    pub layers: usize,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub bytes_done: u64,
    /// Size of the blob as stored in the source (compressed); 0 when unknown.
    pub bytes_total: u64,
    pub state: LayerState,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub image: ImageRecord,
    pub kind: SourceKind,
    /// Chain ids unpacked by this import.
    pub applied: Vec<Digest>,
    /// Chain ids that were already committed (possibly by a concurrent import).
    pub reused: Vec<Digest>,
    /// Blob bytes read for the applied layers.
    pub bytes_read: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not an OCI image layout, oci-archive or docker-archive (found neither index.json nor manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: read tar archive: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: {file} not found")]
    Missing { origin: PathBuf, file: String },
    #[error("{origin}: {file}: path leaves the image directory")]
    BadPath { origin: PathBuf, file: String },
    #[error("{origin}: parse {what}: {source}")]
    Json {
        origin: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: {what}: {source}")]
    BadDigest {
        origin: PathBuf,
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("{what} {expected}: digest mismatch, the content hashes to {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {digest}: size mismatch, the descriptor says {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        what: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("layer {index} ({blob}): the uncompressed tar hashes to {actual}, but the config's rootfs.diff_ids[{index}] is {expected}")]
    DiffIdMismatch {
        index: usize,
        blob: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {file} is larger than {limit} bytes")]
    TooLarge {
        what: String,
        file: String,
        limit: u64,
    },
    #[error("layer {index} ({blob}): unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        index: usize,
        blob: String,
        media_type: String,
    },
    #[error("layer {index} ({blob}): {format}-compressed layers are not supported (gzip, zstd or uncompressed tar only)")]
    UnsupportedCompression {
        index: usize,
        blob: String,
        format: &'static str,
    },
    #[error("layer {index} ({blob}): read/decompress: {source}")]
    ReadLayer {
        index: usize,
        blob: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {index} ({blob}): unpack into {diff}: {source}")]
    Apply {
        index: usize,
        blob: String,
        diff: PathBuf,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("config {config}: rootfs.diff_ids has {diff_ids} entries but the manifest lists {layers} layers")]
    LayerCount {
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("config {config}: rootfs.type is {kind:?}, expected \"layers\"")]
    RootfsType { config: Digest, kind: String },
    #[error("manifest {manifest}: has no config descriptor (not an image manifest)")]
    NoConfig { manifest: Digest },
    #[error("manifest {manifest}: config media type {media_type:?} is not an image config")]
    NotAnImage {
        manifest: Digest,
        media_type: String,
    },
    #[error("{origin}: no image named {name:?}; it holds {available:?}")]
    NoMatch {
        origin: PathBuf,
        name: String,
        available: Vec<String>,
    },
    #[error("{origin}: holds {} images ({available:?}); name the one to import", available.len())]
    Ambiguous {
        origin: PathBuf,
        available: Vec<String>,
    },
    #[error("{origin}: no image for linux/{arch} (skipped platforms: {skipped:?})")]
    NoImage {
        origin: PathBuf,
        arch: &'static str,
        skipped: Vec<String>,
    },
    #[error("{origin}: image indexes nest deeper than {MAX_INDEX_DEPTH} levels")]
    TooDeep { origin: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImportError + 'a {
    move |source| ImportError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Import the image at `path` (layout directory or archive file) into `store`.
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport, ImportError> {
    let _span = tracing::info_span!("import", source = %path.display()).entered();
    // Before any work: a bad name would otherwise only fail once every layer is unpacked.
    if let Some(n) = &opts.name {
        crate::store::validate_name(n)?;
    }
    let source = open_source(store, path, opts.kind)?;
    let plan = match source.kind {
        SourceKind::OciLayout | SourceKind::OciArchive => plan_oci(&*source.blobs, opts)?,
        SourceKind::DockerArchive => plan_docker(&*source.blobs, opts)?,
    };
    let report = apply_plan(store, &*source.blobs, plan, source.kind, opts, progress)?;
    tracing::info!(image = %report.image.id, names = ?report.image.names,
        applied = report.applied.len(), reused = report.reused.len(), "image imported");
    Ok(report)
}

/// What `path` holds, without importing it.
pub fn detect(path: &Path) -> Result<SourceKind, ImportError> {
    let md = fs::metadata(path).map_err(io_err("stat", path))?;
    if md.is_dir() {
        return detect_dir(path);
    }
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let head = read_head(&mut f).map_err(io_err("read", path))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    let archive_err = |source: io::Error| ImportError::Archive {
        path: path.to_path_buf(),
        source,
    };
    let reader: Box<dyn Read> = match sniff_compression(&head) {
        None | Some(Compression::None) => Box::new(f),
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Some(Compression::Zstd) => {
            Box::new(zstd_frames::ZstdFrames::new(io::BufReader::new(f)).map_err(archive_err)?)
        }
    };
    let mut names = std::collections::HashSet::new();
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(archive_err)? {
        let entry = entry.map_err(archive_err)?;
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .into_owned();
        if let Some(key) = normalize_rel(&name) {
            if key == "manifest.json" || key == "index.json" {
                names.insert(key);
            }
        }
    }
    detect_tar(path, |n| names.contains(n))
}

fn detect_dir(path: &Path) -> Result<SourceKind, ImportError> {
    if path.join("index.json").is_file() {
        Ok(SourceKind::OciLayout)
    } else if path.join("manifest.json").is_file() {
        Ok(SourceKind::DockerArchive)
    } else {
        Err(ImportError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

fn detect_tar(path: &Path, has: impl Fn(&str) -> bool) -> Result<SourceKind, ImportError> {
    // Docker >= 25 writes both; manifest.json carries the full RepoTags.
    if has("manifest.json") {
        Ok(SourceKind::DockerArchive)
    } else if has("index.json") {
        Ok(SourceKind::OciArchive)
    } else {
        Err(ImportError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

// ---- sources ----

/// An open file of the image and its size; `None` when it does not exist.
type OpenBlob<'a> = Option<(Box<dyn Read + 'a>, u64)>;

/// Files of an image by their path inside the layout or archive.
trait Blobs {
    fn origin(&self) -> &Path;
    /// `None` when the file does not exist.
    fn open(&self, file: &str) -> Result<OpenBlob<'_>, ImportError>;
}

struct DirBlobs {
    root: PathBuf,
}

impl Blobs for DirBlobs {
    fn origin(&self) -> &Path {
        &self.root
    }

    fn open(&self, file: &str) -> Result<OpenBlob<'_>, ImportError> {
        let Some(rel) = normalize_rel(file) else {
            return Err(ImportError::BadPath {
                origin: self.root.clone(),
                file: file.to_string(),
            });
        };
        let p = self.root.join(rel);
        let f = match File::open(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r.map_err(io_err("open", &p))?,
        };
        let len = f.metadata().map_err(io_err("stat", &p))?.len();
        Ok(Some((Box::new(f), len)))
    }
}

#[derive(Debug, Clone)]
enum TarItem {
    Data {
        offset: u64,
        size: u64,
    },
    /// Symlink or hard link, already resolved to an archive path.
    Link(String),
}

struct TarBlobs {
    /// The (possibly decompressed) tar file.
    file: PathBuf,
    /// The path the user gave, for messages.
    origin: PathBuf,
    index: HashMap<String, TarItem>,
}

impl Blobs for TarBlobs {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn open(&self, file: &str) -> Result<OpenBlob<'_>, ImportError> {
        let Some(mut key) = normalize_rel(file) else {
            return Err(ImportError::BadPath {
                origin: self.origin.clone(),
                file: file.to_string(),
            });
        };
        // Old `docker save` links duplicate layer.tar files to one copy.
        for _ in 0..16 {
            match self.index.get(&key) {
                None => return Ok(None),
                Some(TarItem::Link(target)) => key = target.clone(),
                Some(TarItem::Data { offset, size }) => {
                    let mut f = File::open(&self.file).map_err(io_err("open", &self.file))?;
                    f.seek(SeekFrom::Start(*offset))
                        .map_err(io_err("seek", &self.file))?;
                    return Ok(Some((Box::new(f.take(*size)), *size)));
                }
            }
        }
        Err(ImportError::BadPath {
            origin: self.origin.clone(),
            file: format!("{file} (too many links)"),
        })
    }
}

/// An archive decompressed into the store's tmp dir, removed when the import ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

struct Source {
    kind: SourceKind,
    blobs: Box<dyn Blobs>,
    _temp: Option<TempFile>,
}

fn open_source(
    store: &Store,
    path: &Path,
    kind: Option<SourceKind>,
) -> Result<Source, ImportError> {
    let md = fs::metadata(path).map_err(io_err("stat", path))?;
    if md.is_dir() {
        let kind = match kind {
            Some(k) => k,
            None => detect_dir(path)?,
        };
        return Ok(Source {
            kind,
            blobs: Box::new(DirBlobs {
                root: path.to_path_buf(),
            }),
            _temp: None,
        });
    }
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let head = read_head(&mut f).map_err(io_err("read", path))?;
    let (file, temp) = match sniff_compression(&head) {
        None => (path.to_path_buf(), None),
        Some(format) => {
            let tmp = store.tmp_dir().join(format!(
                "archive-{}.tar",
                crate::store::fsutil::random_id().map_err(io_err("getrandom for", path))?
            ));
            let guard = TempFile(tmp.clone());
            f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
            let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
            let res = match format {
                Compression::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(f), &mut out),
                Compression::Zstd => zstd_frames::ZstdFrames::new(io::BufReader::new(f))
                    .and_then(|mut d| io::copy(&mut d, &mut out)),
                Compression::None => Ok(0),
            };
            res.map_err(io_err("decompress", path))?;
            tracing::debug!(archive = %path.display(), tmp = %tmp.display(), "archive decompressed");
            (tmp, Some(guard))
        }
    };
    let index = index_tar(&file).map_err(|e| match e {
        ImportError::Archive { source, .. } => ImportError::Archive {
            path: path.to_path_buf(),
            source,
        },
        e => e,
    })?;
    let kind = match kind {
        Some(k) => k,
        None => detect_tar(path, |n| index.contains_key(n))?,
    };
    Ok(Source {
        kind,
        blobs: Box::new(TarBlobs {
            file,
            origin: path.to_path_buf(),
            index,
        }),
        _temp: temp,
    })
}

fn index_tar(path: &Path) -> Result<HashMap<String, TarItem>, ImportError> {
    let archive_err = |source: io::Error| ImportError::Archive {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut ar = tar::Archive::new(f);
    let mut index = HashMap::new();
    for entry in ar.entries_with_seek().map_err(archive_err)? {
        let entry = entry.map_err(archive_err)?;
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .into_owned();
        let Some(key) = normalize_rel(&name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let item = if kind.is_file() {
            TarItem::Data {
                offset: entry.raw_file_position(),
                size: entry.size(),
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(archive_err)? else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            // Symlinks are relative to their directory, hard links to the archive root.
            let joined = match (kind.is_symlink(), key.rsplit_once('/')) {
                (true, Some((dir, _))) if !target.starts_with('/') => format!("{dir}/{target}"),
                _ => target,
            };
            match normalize_rel(&joined) {
                Some(t) => TarItem::Link(t),
                None => continue,
            }
        } else {
            continue;
        };
        index.insert(key, item);
    }
    Ok(index)
}

/// `./a//b/../c` -> `a/c`; `None` when it is empty or climbs above the root.
fn normalize_rel(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

// ---- planning: which blobs make the image ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
struct LayerSource {
    /// Path in the layout/archive.
    path: String,
    /// For messages: the digest (OCI) or the archive path (docker).
    label: String,
    /// Verified against the compressed bytes when known.
    blob_digest: Option<Digest>,
    size: Option<u64>,
    /// `None`: sniff the magic bytes.
    compression: Option<Compression>,
}

struct Plan {
    config: ImageConfigFile,
    config_digest: Digest,
    manifest_digest: Option<Digest>,
    layers: Vec<LayerSource>,
    names: Vec<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// An index or a manifest: told apart by which fields are there when the media type is absent.
#[derive(Debug, Clone, serde::Deserialize)]
struct ManifestOrIndex {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

struct Candidate {
    digest: Digest,
    desc: Descriptor,
    names: Vec<String>,
    parsed: Option<ManifestOrIndex>,
}

fn read_limited(blobs: &dyn Blobs, file: &str, what: &str) -> Result<(Vec<u8>, u64), ImportError> {
    let Some((r, size)) = blobs.open(file)? else {
        return Err(ImportError::Missing {
            origin: blobs.origin().to_path_buf(),
            file: file.to_string(),
        });
    };
    if size > JSON_LIMIT {
        return Err(ImportError::TooLarge {
            what: what.to_string(),
            file: file.to_string(),
            limit: JSON_LIMIT,
        });
    }
    let mut data = Vec::new();
    r.take(JSON_LIMIT + 1)
        .read_to_end(&mut data)
        .map_err(|source| ImportError::Io {
            op: "read",
            path: blobs.origin().join(file),
            source,
        })?;
    Ok((data, size))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn parse_digest(blobs: &dyn Blobs, what: &str, s: &str) -> Result<Digest, ImportError> {
    Digest::parse(s).map_err(|source| ImportError::BadDigest {
        origin: blobs.origin().to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// Read a small blob by its descriptor, checking digest and size.
fn read_verified(
    blobs: &dyn Blobs,
    what: &str,
    desc: &Descriptor,
) -> Result<(Digest, Vec<u8>), ImportError> {
    let digest = parse_digest(blobs, what, &desc.digest)?;
    if let Some(size) = desc.size {
        if size > JSON_LIMIT {
            return Err(ImportError::TooLarge {
                what: what.to_string(),
                file: digest.to_string(),
                limit: JSON_LIMIT,
            });
        }
    }
    let (data, _) = read_limited(blobs, &blob_path(&digest), what)?;
    let actual = Digest::of_bytes(&data);
    if actual != digest {
        return Err(ImportError::DigestMismatch {
            what: what.to_string(),
            expected: digest,
            actual,
        });
    }
    if let Some(size) = desc.size {
        if data.len() as u64 != size {
            return Err(ImportError::SizeMismatch {
                what: what.to_string(),
                digest,
                expected: size,
                actual: data.len() as u64,
            });
        }
    }
    Ok((digest, data))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    blobs: &dyn Blobs,
    what: &str,
    data: &[u8],
) -> Result<T, ImportError> {
    serde_json::from_slice(data).map_err(|source| ImportError::Json {
        origin: blobs.origin().to_path_buf(),
        what: what.to_string(),
        source,
    })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

fn annotated_names(desc: &Descriptor) -> Vec<String> {
    let Some(a) = &desc.annotations else {
        return Vec::new();
    };
    // containerd's annotation has the full name; ref.name may be only a tag.
    a.get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| a.get(ANNOTATION_REF_NAME))
        .map(|n| vec![n.clone()])
        .unwrap_or_default()
}

fn collect_manifests(
    blobs: &dyn Blobs,
    list: &[Descriptor],
    inherited: &[String],
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), ImportError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImportError::TooDeep {
            origin: blobs.origin().to_path_buf(),
        });
    }
    for desc in list {
        let mut names = annotated_names(desc);
        if names.is_empty() {
            names = inherited.to_vec();
        }
        match desc.media_type.as_deref() {
            Some(MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST) => {
                let (digest, data) = read_verified(blobs, "index", desc)?;
                let idx: ManifestOrIndex = parse_json(blobs, &format!("index {digest}"), &data)?;
                let sub = idx.manifests.unwrap_or_default();
                collect_manifests(blobs, &sub, &names, depth + 1, out)?;
            }
            Some(MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST) => out.push(Candidate {
                digest: parse_digest(blobs, "manifest descriptor", &desc.digest)?,
                desc: desc.clone(),
                names,
                parsed: None,
            }),
            None => {
                let (digest, data) = read_verified(blobs, "manifest", desc)?;
                let m: ManifestOrIndex = parse_json(blobs, &format!("manifest {digest}"), &data)?;
                if let Some(sub) = &m.manifests {
                    collect_manifests(blobs, sub, &names, depth + 1, out)?;
                } else {
                    out.push(Candidate {
                        digest,
                        desc: desc.clone(),
                        names,
                        parsed: Some(m),
                    });
                }
            }
            Some(other) => {
                tracing::debug!(media_type = other, digest = %desc.digest, "skipping non-image descriptor");
            }
        }
    }
    Ok(())
}

fn name_matches(candidate: &str, wanted: &str) -> bool {
    if normalize_name(candidate) == normalize_name(wanted) {
        return true;
    }
    // An OCI ref.name may be just the tag part of the name.
    let tag = wanted
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t);
    tag == Some(candidate)
}

fn plan_oci(blobs: &dyn Blobs, opts: &ImportOptions) -> Result<Plan, ImportError> {
    let origin = blobs.origin().to_path_buf();
    let (data, _) = read_limited(blobs, "index.json", "index.json")?;
    let index: ManifestOrIndex = parse_json(blobs, "index.json", &data)?;
    let mut all = Vec::new();
    collect_manifests(
        blobs,
        &index.manifests.unwrap_or_default(),
        &[],
        0,
        &mut all,
    )?;
    let arch = host_arch();
    let mut skipped = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for c in all {
        let attestation = c
            .desc
            .annotations
            .as_ref()
            .and_then(|a| a.get("vnd.docker.reference.type"))
            .is_some_and(|t| t == "attestation-manifest");
        if attestation {
            continue;
        }
        if let Some(p) = &c.desc.platform {
            if p.os != "linux" || p.architecture != arch {
                let variant = p
                    .variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default();
                skipped.push(format!("{}/{}{variant}", p.os, p.architecture));
                continue;
            }
        }
        match candidates.iter_mut().find(|x| x.digest == c.digest) {
            Some(x) => x.names.extend(c.names),
            None => candidates.push(c),
        }
    }
    let available = || -> Vec<String> {
        candidates
            .iter()
            .map(|c| match c.names.first() {
                Some(n) => n.clone(),
                None => c.digest.to_string(),
            })
            .collect()
    };
    let chosen = match &opts.name {
        Some(want) => {
            let matching: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].names.iter().any(|n| name_matches(n, want)))
                .collect();
            match (matching.as_slice(), candidates.len()) {
                ([i], _) => *i,
                ([], 1) => 0,
                ([], 0) => {
                    return Err(ImportError::NoImage {
                        origin,
                        arch,
                        skipped,
                    })
                }
                ([], _) => {
                    return Err(ImportError::NoMatch {
                        origin,
                        name: want.clone(),
                        available: available(),
                    })
                }
                (_, _) => {
                    return Err(ImportError::Ambiguous {
                        origin,
                        available: available(),
                    })
                }
            }
        }
        None => match candidates.len() {
            1 => 0,
            0 => {
                return Err(ImportError::NoImage {
                    origin,
                    arch,
                    skipped,
                })
            }
            _ => {
                return Err(ImportError::Ambiguous {
                    origin,
                    available: available(),
                })
            }
        },
    };
    let c = candidates.swap_remove(chosen);
    let manifest = match c.parsed {
        Some(m) => m,
        None => {
            let (digest, data) = read_verified(blobs, "manifest", &c.desc)?;
            parse_json(blobs, &format!("manifest {digest}"), &data)?
        }
    };
    tracing::debug!(manifest = %c.digest, media_type = ?manifest.media_type, "manifest chosen");
    let Some(config_desc) = manifest.config else {
        return Err(ImportError::NoConfig { manifest: c.digest });
    };
    if let Some(mt) = config_desc.media_type.as_deref() {
        if mt != "application/vnd.oci.image.config.v1+json"
            && mt != "application/vnd.docker.container.image.v1+json"
        {
            return Err(ImportError::NotAnImage {
                manifest: c.digest,
                media_type: mt.to_string(),
            });
        }
    }
    let (config_digest, data) = read_verified(blobs, "config", &config_desc)?;
    let config: ImageConfigFile = parse_json(blobs, &format!("config {config_digest}"), &data)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (index, l) in manifest.layers.iter().enumerate() {
        let digest = parse_digest(blobs, &format!("layer {index} descriptor"), &l.digest)?;
        let compression = match l.media_type.as_deref() {
            None => None,
            Some(mt) => compression_for(mt).map_err(|()| ImportError::UnsupportedMediaType {
                index,
                blob: digest.to_string(),
                media_type: mt.to_string(),
            })?,
        };
        layers.push(LayerSource {
            path: blob_path(&digest),
            label: digest.to_string(),
            blob_digest: Some(digest),
            size: l.size,
            compression,
        });
    }
    let names = match &opts.name {
        Some(n) => vec![n.clone()],
        None => c.names,
    };
    Ok(Plan {
        config,
        config_digest,
        manifest_digest: Some(c.digest),
        layers,
        names,
    })
}

/// Layer media type -> compression; `Ok(None)` = not said, sniff; `Err` = refuse.
fn compression_for(media_type: &str) -> Result<Option<Compression>, ()> {
    if media_type.contains("+encrypted") {
        return Err(());
    }
    let known_layer = media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.");
    if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Ok(Some(Compression::Gzip))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
        Ok(Some(Compression::Zstd))
    } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
        Ok(Some(Compression::None))
    } else if known_layer {
        Err(())
    } else {
        // Some tools write their own media types for plain layers; the bytes will tell.
        Ok(None)
    }
}

fn plan_docker(blobs: &dyn Blobs, opts: &ImportOptions) -> Result<Plan, ImportError> {
    let origin = blobs.origin().to_path_buf();
    let (data, _) = read_limited(blobs, "manifest.json", "manifest.json")?;
    let entries: Vec<DockerManifestEntry> = parse_json(blobs, "manifest.json", &data)?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let available: Vec<String> = entries
        .iter()
        .map(|e| tags(e).first().cloned().unwrap_or_else(|| e.config.clone()))
        .collect();
    let chosen = match &opts.name {
        Some(want) => {
            let matching: Vec<usize> = (0..entries.len())
                .filter(|&i| tags(&entries[i]).iter().any(|t| name_matches(t, want)))
                .collect();
            match (matching.as_slice(), entries.len()) {
                ([i], _) => *i,
                ([], 1) => 0,
                ([], _) => {
                    return Err(ImportError::NoMatch {
                        origin,
                        name: want.clone(),
                        available,
                    })
                }
                (_, _) => return Err(ImportError::Ambiguous { origin, available }),
            }
        }
        None => match entries.len() {
            1 => 0,
            0 => {
                return Err(ImportError::NoImage {
                    origin,
                    arch: host_arch(),
                    skipped: Vec::new(),
                })
            }
            _ => return Err(ImportError::Ambiguous { origin, available }),
        },
    };
    let entry = &entries[chosen];
    let (data, _) = read_limited(blobs, &entry.config, "config")?;
    let config_digest = Digest::of_bytes(&data);
    // The file name is the digest: `<hex>.json` (classic) or `blobs/sha256/<hex>` (Docker 25+).
    if let Some(expected) = digest_from_path(&entry.config) {
        if expected != config_digest {
            return Err(ImportError::DigestMismatch {
                what: format!("config {}", entry.config),
                expected,
                actual: config_digest,
            });
        }
    }
    let config: ImageConfigFile = parse_json(blobs, &format!("config {}", entry.config), &data)?;
    let layers = entry
        .layers
        .iter()
        .map(|p| LayerSource {
            path: p.clone(),
            label: p.clone(),
            // `blobs/sha256/<hex>` names the blob as stored (maybe compressed); `<id>/layer.tar`
            // names nothing we can check beyond the diffID.
            blob_digest: p
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::from_hex(h).ok()),
            size: None,
            compression: None,
        })
        .collect();
    let names = match &opts.name {
        Some(n) => vec![n.clone()],
        None => tags(entry),
    };
    Ok(Plan {
        config,
        config_digest,
        manifest_digest: None,
        layers,
        names,
    })
}

fn digest_from_path(p: &str) -> Option<Digest> {
    let p = normalize_rel(p)?;
    if let Some(hex) = p.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    let hex = p.strip_suffix(".json")?;
    Digest::from_hex(hex).ok()
}

// ---- applying ----

fn apply_plan(
    store: &Store,
    blobs: &dyn Blobs,
    plan: Plan,
    kind: SourceKind,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport, ImportError> {
    let cfg = &plan.config;
    if cfg.rootfs.kind != "layers" {
        return Err(ImportError::RootfsType {
            config: plan.config_digest,
            kind: cfg.rootfs.kind.clone(),
        });
    }
    let diff_ids = &cfg.rootfs.diff_ids;
    if diff_ids.len() != plan.layers.len() {
        return Err(ImportError::LayerCount {
            config: plan.config_digest,
            diff_ids: diff_ids.len(),
            layers: plan.layers.len(),
        });
    }
    let chains = chain_ids(diff_ids);
    // Shared: other imports run alongside; rm/prune (exclusive) wait until the image record
    // is written, so they never see our committed-but-unreferenced layers as garbage.
    let held = store.lock_shared()?;
    let count = plan.layers.len();
    let mut applied = Vec::new();
    let mut reused = Vec::new();
    let mut bytes_read = 0;
    for (index, layer) in plan.layers.iter().enumerate() {
        let chain_id = &chains[index];
        let diff_id = &diff_ids[index];
        let mut report = |bytes_done: u64, bytes_total: u64, state: LayerState| {
            progress(Progress {
                layer: index,
                layers: count,
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                bytes_done,
                bytes_total,
                state,
            })
        };
        let parent = index.checked_sub(1).map(|p| &chains[p]);
        let new = if store.is_committed(chain_id) {
            None
        } else {
            store.begin_layer(&held, chain_id, parent)?
        };
        let Some(new) = new else {
            let size = layer.size.unwrap_or(0);
            report(size, size, LayerState::Reused);
            reused.push(chain_id.clone());
            continue;
        };
        let _span = tracing::debug_span!("layer", index, blob = %layer.label).entered();
        let diff = new.diff();
        let (stats, total) = unpack_layer(blobs, index, layer, diff_id, &diff, opts, &mut report)?;
        new.commit(
            &LayerMeta {
                chain_id: chain_id.clone(),
                diff_id: diff_id.clone(),
                parent: parent.cloned(),
                blob: layer.blob_digest.clone(),
                entries: stats.entries,
                bytes: stats.bytes,
                whiteouts: stats.whiteouts,
            },
            opts.sync,
        )?;
        report(total, total, LayerState::Applied);
        bytes_read += total;
        applied.push(chain_id.clone());
    }
    let config = plan.config;
    let rec = ImageRecord {
        id: plan.config_digest,
        names: plan.names,
        layers: chains,
        diff_ids: config.rootfs.diff_ids,
        manifest: plan.manifest_digest,
        os: config.os,
        architecture: config.architecture,
        created: config.created,
        config: config.config.unwrap_or_default(),
    };
    let image = store.record_image(&held, rec)?;
    Ok(ImportReport {
        image,
        kind,
        applied,
        reused,
        bytes_read,
    })
}

/// sha256 and byte count of everything read through it; reports progress every step.
struct HashingReader<'p, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    reported: u64,
    progress: Option<&'p mut dyn FnMut(u64)>,
}

impl<'p, R: Read> HashingReader<'p, R> {
    fn new(inner: R, progress: Option<&'p mut dyn FnMut(u64)>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            reported: 0,
            progress,
        }
    }

    fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = buf.get(..n).unwrap_or_default();
        self.hasher.update(chunk);
        self.count += n as u64;
        if let Some(p) = self.progress.as_mut() {
            if n == 0 || self.count - self.reported >= PROGRESS_STEP {
                self.reported = self.count;
                p(self.count);
            }
        }
        Ok(n)
    }
}

/// Bytes handed from the decoding thread to the unpacking thread per message, and how many
/// messages may wait: ~2 MiB in flight, enough to ride out a burst of small-file syscalls.
const PIPE_CHUNK: usize = 256 << 10;
const PIPE_DEPTH: usize = 8;

/// Reads, decompresses and hashes `tar` on this thread while another unpacks it into `diff`.
/// Inflate and SHA-256 cost about as much CPU as the file system calls of a layer of small
/// files; `tar -xzf` gets the same overlap by running gzip as a second process. Returns the
/// apply result and whether this side read the whole stream.
fn pipelined_apply<R: Read>(
    tar: &mut R,
    diff: &Path,
    apply_opts: &ApplyOptions,
) -> (Result<ApplyStats, ApplyError>, io::Result<()>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
    let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH + 2);
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let mut chunks = ChunkReader {
                rx,
                spent: spent_tx,
                cur: Vec::new(),
                pos: 0,
            };
            // Returning drops the receiver: the decoding side then only drains and hashes.
            apply_layer(&mut chunks, diff, apply_opts)
        });
        let mut unpacker_gone = false;
        let mut drained = Ok(());
        loop {
            let mut buf = spent_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(PIPE_CHUNK));
            buf.resize(PIPE_CHUNK, 0);
            match fill(tar, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if !unpacker_gone && tx.send(Ok(buf)).is_err() {
                        unpacker_gone = true;
                    }
                }
                Err(e) => {
                    if !unpacker_gone {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    drained = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let applied = worker.join().unwrap_or_else(|_| {
            Err(ApplyError::Read {
                offset: 0,
                source: io::Error::other("the unpacking thread panicked"),
            })
        });
        (applied, drained)
    })
}

/// Reads until `buf` is full or the stream ends; decoders return short reads.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The unpacking thread's end of the pipe: a `Read` over chunks sent by the decoding thread.
/// Used buffers go back for reuse; a decoding error arrives in-band and ends the stream.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(rest) = self.cur.get(self.pos..).filter(|r| !r.is_empty()) {
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                return Ok(n);
            }
            let spent = std::mem::take(&mut self.cur);
            if spent.capacity() > 0 {
                let _ = self.spent.try_send(spent);
            }
            self.pos = 0;
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.cur = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
    }
}

fn read_head<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 6];
    let n = fill(r, &mut buf)?;
    Ok(buf[..n].to_vec())
}

fn sniff_compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

fn unsupported_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// Stream one blob: hash the compressed bytes, decompress, hash the tar, unpack it. Returns the
/// apply stats and the blob size once every digest checked out.
fn unpack_layer(
    blobs: &dyn Blobs,
    index: usize,
    layer: &LayerSource,
    diff_id: &Digest,
    diff: &Path,
    opts: &ImportOptions,
    report: &mut dyn FnMut(u64, u64, LayerState),
) -> Result<(ApplyStats, u64), ImportError> {
    let read_err = |source: io::Error| ImportError::ReadLayer {
        index,
        blob: layer.label.clone(),
        source,
    };
    let Some((raw, size)) = blobs.open(&layer.path)? else {
        return Err(ImportError::Missing {
            origin: blobs.origin().to_path_buf(),
            file: format!("{} (layer {index})", layer.path),
        });
    };
    if let (Some(expected), Some(digest)) = (layer.size, &layer.blob_digest) {
        if expected != size {
            return Err(ImportError::SizeMismatch {
                what: format!("layer {index} blob"),
                digest: digest.clone(),
                expected,
                actual: size,
            });
        }
    }
    report(0, size, LayerState::Applying);
    let mut on_bytes = |done: u64| report(done, size, LayerState::Applying);
    let mut blob = HashingReader::new(raw, Some(&mut on_bytes));
    let head = read_head(&mut blob).map_err(read_err)?;
    if let Some(format) = unsupported_magic(&head) {
        return Err(ImportError::UnsupportedCompression {
            index,
            blob: layer.label.clone(),
            format,
        });
    }
    let compression = layer
        .compression
        .or_else(|| sniff_compression(&head))
        .unwrap_or(Compression::None);
    let stream = io::Cursor::new(head).chain(&mut blob);
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(stream),
        // Multi-member gzip (pigz, concatenated streams) is valid and Go's reader accepts it.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => {
            Box::new(zstd_frames::ZstdFrames::new(io::BufReader::new(stream)).map_err(read_err)?)
        }
    };
    let mut tar = HashingReader::new(decoded, None);
    let apply_opts = ApplyOptions {
        preserve_owner: opts.preserve_owner,
    };
    // apply may stop at the end-of-archive blocks: the digests cover the whole stream, so the
    // decoding side reads it all. After a failed apply this is only to tell a bad blob from a
    // bad tar.
    let (applied, drained) = pipelined_apply(&mut tar, diff, &apply_opts);
    let diff_actual = tar.digest();
    drop(tar);
    let blob_drained = io::copy(&mut blob, &mut io::sink());
    let check_blob = |blob: &HashingReader<'_, _>| -> Result<(), ImportError> {
        if let Some(expected) = &layer.blob_digest {
            let actual = blob.digest();
            if &actual != expected {
                return Err(ImportError::DigestMismatch {
                    what: format!("layer {index} blob"),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    };
    let check_diff = || -> Result<(), ImportError> {
        if &diff_actual != diff_id {
            return Err(ImportError::DiffIdMismatch {
                index,
                blob: layer.label.clone(),
                expected: diff_id.clone(),
                actual: diff_actual.clone(),
            });
        }
        Ok(())
    };
    match applied {
        Ok(stats) => {
            blob_drained.map_err(read_err)?;
            check_blob(&blob)?;
            drained.map_err(read_err)?;
            check_diff()?;
            if let (Some(expected), Some(digest)) = (layer.size, &layer.blob_digest) {
                if blob.count != expected {
                    return Err(ImportError::SizeMismatch {
                        what: format!("layer {index} blob"),
                        digest: digest.clone(),
                        expected,
                        actual: blob.count,
                    });
                }
            }
            Ok((stats, blob.count))
        }
        Err(source) => {
            if blob_drained.is_ok() {
                check_blob(&blob)?;
                if drained.is_ok() {
                    check_diff()?;
                }
            }
            Err(ImportError::Apply {
                index,
                blob: layer.label.clone(),
                diff: diff.to_path_buf(),
                source: Box::new(source),
            })
        }
    }
}
