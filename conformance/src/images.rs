//! Test images for the layer store, built on the spot from tar layers: a busybox base layer
//! (see [`populate_rootfs`]), layers of given files (whiteouts `.wh.NAME` and opaque markers
//! `.wh..wh..opq` are ordinary empty files in a layer tar), gzip or not; written out as an OCI
//! image layout directory, an oci-archive (optionally gzip'ed) or a docker-archive.

use crate::bundle::populate_rootfs;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const MEDIA_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of a file (sha256sum: the suite has no hashing crate).
pub fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap_or_else(|e| panic!("spawn sha256sum: {e}"));
    assert!(o.status.success(), "sha256sum {} failed", p.display());
    let hex = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    format!("sha256:{hex}")
}

fn run(cmd: &mut Command) {
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed: {st}");
}

/// `tar -C dir -cf out .` with numeric owners (root, as the suite runs).
pub fn tar_dir(dir: &Path, out: &Path) {
    run(Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--numeric-owner", "-cf"])
        .arg(out)
        .arg("."));
}

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[derive(Clone)]
struct Layer {
    /// The blob as stored (gzip'ed or not).
    blob: PathBuf,
    blob_digest: String,
    diff_id: String,
    media_type: &'static str,
}

/// Layers plus an image config, written out in any of the three formats.
pub struct ImageBuilder {
    work: PathBuf,
    layers: Vec<Layer>,
    config: Value,
}

impl ImageBuilder {
    /// Scratch files go under `work` (created). Config: `Cmd ["sh"]`, the usual PATH.
    pub fn new(work: &Path) -> ImageBuilder {
        std::fs::create_dir_all(work).unwrap_or_else(|e| panic!("mkdir {}: {e}", work.display()));
        ImageBuilder {
            work: work.to_path_buf(),
            layers: Vec::new(),
            config: json!({
                "Cmd": ["sh"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            }),
        }
    }

    /// A copy with the same layers (the very same blobs, so the same digests) and config,
    /// whose further layers go under `work`.
    pub fn fork(&self, work: &Path) -> ImageBuilder {
        std::fs::create_dir_all(work).unwrap_or_else(|e| panic!("mkdir {}: {e}", work.display()));
        ImageBuilder {
            work: work.to_path_buf(),
            layers: self.layers.clone(),
            config: self.config.clone(),
        }
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn next_path(&self, what: &str) -> PathBuf {
        self.work.join(format!("{what}-{}", self.layers.len()))
    }

    /// Add an uncompressed layer tar (gzip'ed into the image if `gzip`).
    pub fn layer_tar(&mut self, tar: &Path, gzip: bool) -> &mut Self {
        let diff_id = sha256_file(tar);
        let (blob, media_type) = if gzip {
            let gz = self.next_path("layer").with_extension("tar.gz");
            let out = std::fs::File::create(&gz).unwrap_or_else(|e| panic!("{e}"));
            run(Command::new("gzip")
                .args(["-n", "-1", "-c"])
                .arg(tar)
                .stdout(out));
            (gz, MEDIA_TAR_GZ)
        } else {
            (tar.to_path_buf(), MEDIA_TAR)
        };
        let blob_digest = if gzip {
            sha256_file(&blob)
        } else {
            diff_id.clone()
        };
        self.layers.push(Layer {
            blob,
            blob_digest,
            diff_id,
            media_type,
        });
        self
    }

    /// A layer of a directory's contents.
    pub fn layer_dir(&mut self, dir: &Path, gzip: bool) -> &mut Self {
        let tar = self.next_path("layer").with_extension("tar");
        tar_dir(dir, &tar);
        self.layer_tar(&tar, gzip)
    }

    /// The busybox rootfs of the suite (bin/busybox, applet links, etc/passwd, etc/group, tmp).
    pub fn busybox_layer(&mut self, gzip: bool) -> &mut Self {
        let stage = self.next_path("stage");
        populate_rootfs(&stage);
        self.layer_dir(&stage, gzip)
    }

    /// A layer of `(path, content)`: a path ending in `/` is a directory; `.wh.NAME` files
    /// are whiteouts, `.wh..wh..opq` opaque markers (their content is ignored).
    pub fn layer_files(&mut self, files: &[(&str, &str)], gzip: bool) -> &mut Self {
        let stage = self.next_path("stage");
        std::fs::create_dir_all(&stage).unwrap_or_else(|e| panic!("{e}"));
        for (p, content) in files {
            let full = stage.join(p.trim_start_matches('/'));
            if p.ends_with('/') {
                std::fs::create_dir_all(&full).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&full, content)
                .unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
        }
        self.layer_dir(&stage, gzip)
    }

    /// Set a key of the image config's `config` object (`Env`, `Cmd`, `User`, ...).
    pub fn config(&mut self, key: &str, v: Value) -> &mut Self {
        self.config[key] = v;
        self
    }

    fn config_blob(&self) -> Vec<u8> {
        let cfg = json!({
            "architecture": arch(),
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": self.config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        });
        cfg.to_string().into_bytes()
    }

    /// An OCI image layout directory at `out`, the image named `name` in index.json (the
    /// `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations).
    pub fn oci_layout(&self, out: &Path, name: &str) -> PathBuf {
        let blobs = out.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
        let put_file = |src: &Path, digest: &str| {
            let dst = blobs.join(digest.trim_start_matches("sha256:"));
            // A hard link when possible: big layers are not copied.
            if std::fs::hard_link(src, &dst).is_err() && !dst.exists() {
                std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy blob: {e}"));
            }
        };
        let put_bytes = |data: &[u8]| -> (String, usize) {
            let tmp = out.join("blob.tmp");
            std::fs::write(&tmp, data).unwrap_or_else(|e| panic!("{e}"));
            let d = sha256_file(&tmp);
            std::fs::rename(&tmp, blobs.join(d.trim_start_matches("sha256:")))
                .unwrap_or_else(|e| panic!("{e}"));
            (d, data.len())
        };
        let mut descs = Vec::new();
        for l in &self.layers {
            put_file(&l.blob, &l.blob_digest);
            let size = std::fs::metadata(&l.blob).map(|m| m.len()).unwrap_or(0);
            descs.push(json!({"mediaType": l.media_type, "digest": l.blob_digest, "size": size}));
        }
        let (cfg_d, cfg_s) = put_bytes(&self.config_blob());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_s},
            "layers": descs,
        });
        let (man_d, man_s) = put_bytes(manifest.to_string().as_bytes());
        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_d, "size": man_s,
                "platform": {"architecture": arch(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        std::fs::write(out.join("index.json"), index.to_string()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        out.to_path_buf()
    }

    /// A tar of [`ImageBuilder::oci_layout`] at `out`, gzip'ed as a whole if `gzip`.
    pub fn oci_archive(&self, out: &Path, name: &str, gzip: bool) -> PathBuf {
        let layout = out.with_extension("layout");
        self.oci_layout(&layout, name);
        let tar = out.with_extension("tar");
        tar_dir(&layout, &tar);
        if !gzip {
            return tar;
        }
        run(Command::new("gzip").args(["-n", "-1", "-f"]).arg(&tar));
        out.with_extension("tar.gz")
    }

    /// A `docker save` tar at `out`: manifest.json, `<config hex>.json`, `<n>/layer.tar`.
    pub fn docker_archive(&self, out: &Path, name: &str) -> PathBuf {
        let stage = out.with_extension("stage");
        std::fs::create_dir_all(&stage).unwrap_or_else(|e| panic!("{e}"));
        let cfg = self.config_blob();
        let cfg_tmp = stage.join("config.tmp");
        std::fs::write(&cfg_tmp, &cfg).unwrap_or_else(|e| panic!("{e}"));
        let cfg_name = format!(
            "{}.json",
            sha256_file(&cfg_tmp).trim_start_matches("sha256:")
        );
        std::fs::rename(&cfg_tmp, stage.join(&cfg_name)).unwrap_or_else(|e| panic!("{e}"));
        let mut layers = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let d = stage.join(i.to_string());
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
            let dst = d.join("layer.tar");
            if std::fs::hard_link(&l.blob, &dst).is_err() {
                std::fs::copy(&l.blob, &dst).unwrap_or_else(|e| panic!("copy layer: {e}"));
            }
            layers.push(format!("{i}/layer.tar"));
        }
        let manifest = json!([{"Config": cfg_name, "RepoTags": [name], "Layers": layers}]);
        std::fs::write(stage.join("manifest.json"), manifest.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let tar = out.with_extension("tar");
        tar_dir(&stage, &tar);
        tar
    }
}
