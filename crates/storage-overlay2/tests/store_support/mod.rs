//! Shared helpers for the store/import/mount tests: layer tars built with the `tar` crate,
//! gzip/zstd/uncompressed blobs, and the three image formats (OCI layout, oci-archive,
//! docker-archive in the classic and the Docker 25+ form), written exactly as the tools do.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_storage_overlay2::import::{import, ImportOptions, ImportReport, Progress};
use rcrun_storage_overlay2::store::Store;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub fn sha(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// The OCI chain ids, computed here independently of the library.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => sha(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One tar member.
#[derive(Clone, Debug)]
pub enum E {
    File(String, Vec<u8>),
    Dir(String),
    /// `.wh.<name>` in the file's directory.
    Whiteout(String),
    /// `<dir>/.wh..wh..opq`.
    Opaque(String),
    Symlink(String, String),
}

pub fn file(p: &str, data: impl AsRef<[u8]>) -> E {
    E::File(p.to_string(), data.as_ref().to_vec())
}

pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Whiteout(p) => {
                let (dir, name) = match p.rsplit_once('/') {
                    Some((d, n)) => (format!("{d}/"), n.to_string()),
                    None => (String::new(), p.clone()),
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, format!("{dir}.wh.{name}"), &[][..])
                    .unwrap();
            }
            E::Opaque(dir) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, format!("{dir}/.wh..wh..opq"), &[][..])
                    .unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

impl Comp {
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub comp: Comp,
    pub diff_id: String,
    pub digest: String,
    /// The descriptor media type (`None`: omit it, the importer must sniff).
    pub media_type: Option<String>,
}

impl TestLayer {
    pub fn new(entries: &[E], comp: Comp) -> Self {
        Self::from_tar(layer_tar(entries), comp)
    }

    pub fn from_tar(tar: Vec<u8>, comp: Comp) -> Self {
        let blob = compress(&tar, comp);
        TestLayer {
            diff_id: sha(&tar),
            digest: sha(&blob),
            tar,
            blob,
            comp,
            media_type: Some(comp.media_type().to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl TestImage {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }
}

/// An image config + OCI manifest over `layers`; `process` is the config's `config` object.
pub fn image(layers: Vec<TestLayer>, process: Value) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    image_with_diff_ids(layers, process, diff_ids)
}

/// Like [`image`] but the config claims `diff_ids` (to test a lying config).
pub fn image_with_diff_ids(
    layers: Vec<TestLayer>,
    process: Value,
    diff_ids: Vec<String>,
) -> TestImage {
    let config = json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha(&config);
    let manifest = manifest_for(&layers, &config_digest, config.len());
    TestImage {
        manifest_digest: sha(&manifest),
        manifest,
        config_digest,
        config,
        layers,
    }
}

pub fn manifest_for(layers: &[TestLayer], config_digest: &str, config_len: usize) -> Vec<u8> {
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut d = json!({"digest": l.digest, "size": l.blob.len()});
            if let Some(mt) = &l.media_type {
                d["mediaType"] = json!(mt);
            }
            d
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_len},
        "layers": layer_descs,
    }))
    .unwrap()
}

pub fn write_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex(&d)), data).unwrap();
    d
}

pub fn write_image_blobs(layout: &Path, img: &TestImage) {
    for l in &img.layers {
        write_blob(layout, &l.blob);
    }
    write_blob(layout, &img.config);
    write_blob(layout, &img.manifest);
}

/// An OCI image layout holding `images`, each with an optional ref.name annotation.
pub fn write_oci_layout(layout: &Path, images: &[(&TestImage, Option<&str>)]) {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut manifests = Vec::new();
    for (img, name) in images {
        write_image_blobs(layout, img);
        let mut d = json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
        });
        if let Some(n) = name {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": n});
        }
        manifests.push(d);
    }
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A tar of a directory tree (an oci-archive from a layout, or a docker-archive dir).
pub fn tar_dir(dir: &Path, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().sync_all().unwrap();
}

/// `docker save` output. Classic (`modern == false`): `<hex>.json` config, `<id>/layer.tar`
/// uncompressed (a repeated layer is a symlink to the first copy, as Docker writes it), no
/// digests on layers. Docker 25+: everything under `blobs/sha256/`, plus index.json.
pub fn write_docker_archive(out: &Path, images: &[(&TestImage, Vec<&str>)], modern: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut manifest = Vec::new();
    for (img, tags) in images {
        let config_path = if modern {
            write_blob(root, &img.config);
            format!("blobs/sha256/{}", hex(&img.config_digest))
        } else {
            let p = format!("{}.json", hex(&img.config_digest));
            std::fs::write(root.join(&p), &img.config).unwrap();
            p
        };
        let mut layer_paths: Vec<String> = Vec::new();
        for (i, l) in img.layers.iter().enumerate() {
            if modern {
                write_blob(root, &l.blob);
                layer_paths.push(format!("blobs/sha256/{}", hex(&l.digest)));
            } else {
                // Docker's v1 ids are arbitrary; make them unique per position.
                let id = hex(&sha(format!("{}{i}", img.config_digest).as_bytes())).to_string();
                std::fs::create_dir_all(root.join(&id)).unwrap();
                let first = img.layers[..i].iter().position(|x| x.diff_id == l.diff_id);
                match first {
                    Some(j) => {
                        let prev = std::path::Path::new(&layer_paths[j])
                            .parent()
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .to_string();
                        std::os::unix::fs::symlink(
                            format!("../{prev}/layer.tar"),
                            root.join(&id).join("layer.tar"),
                        )
                        .unwrap();
                    }
                    None => std::fs::write(root.join(&id).join("layer.tar"), &l.tar).unwrap(),
                }
                std::fs::write(root.join(&id).join("VERSION"), b"1.0").unwrap();
                layer_paths.push(format!("{id}/layer.tar"));
            }
        }
        manifest.push(json!({"Config": config_path, "RepoTags": tags, "Layers": layer_paths}));
    }
    std::fs::write(
        root.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    if modern {
        // Docker 25 also writes an OCI index; the importer must prefer manifest.json.
        std::fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let ms: Vec<Value> = images
            .iter()
            .map(|(img, _)| {
                write_blob(root, &img.manifest);
                json!({"mediaType": MEDIA_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len()})
            })
            .collect();
        std::fs::write(
            root.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": ms})).unwrap(),
        )
        .unwrap();
    }
    tar_dir(root, out);
}

pub fn import_opts(name: Option<&str>) -> ImportOptions {
    ImportOptions {
        name: name.map(str::to_string),
        ..ImportOptions::default()
    }
}

pub fn do_import(store: &Store, path: &Path, name: Option<&str>) -> ImportReport {
    import(store, path, &import_opts(name), &mut |_p: Progress| {}).unwrap()
}

/// Deterministic bytes that do not compress to nothing.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Layer directories in the store (64-hex names), committed or not.
pub fn layer_dirs(store: &Store) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.root())
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

pub fn links(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.root().join("l"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every `l/` link resolves to a committed layer's diff, and every committed layer has one.
pub fn assert_links_consistent(store: &Store) {
    let layers = store.layers().unwrap();
    let ls = links(store);
    assert_eq!(
        ls.len(),
        layers.len(),
        "links {ls:?} vs {} committed layers",
        layers.len()
    );
    for l in &layers {
        let target = std::fs::read_link(store.root().join("l").join(&l.link)).unwrap();
        assert_eq!(
            target,
            PathBuf::from(format!("../{}/diff", l.chain_id.hex()))
        );
    }
}
