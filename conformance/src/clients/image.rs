//! Local images (no registry): a busybox rootfs as a layer tar, and an OCI
//! image archive (image layout: oci-layout, index.json, blobs/sha256/...) for
//! `ctr image import`.

use crate::bundle::populate_rootfs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Tar (uncompressed) of a busybox rootfs (see [`populate_rootfs`]), plus
/// `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` placeholders (docker bind
/// mounts over them) and a non-executable `/etc/motd`.
pub fn rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    populate_rootfs(&rootfs);
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        std::fs::write(rootfs.join(f), "").unwrap_or_else(|e| panic!("write {f}: {e}"));
    }
    std::fs::write(rootfs.join("etc/motd"), "not a program\n").unwrap_or_else(|e| panic!("{e}"));
    // a tiny program ignoring SIGTERM (for docker stop -t 1)
    std::fs::write(
        rootfs.join("bin/ignore-term"),
        "#!/bin/sh\ntrap '' TERM\necho ready\nwhile :; do sleep 1; done\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rootfs.join("bin/ignore-term"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap_or_else(|e| panic!("spawn tar: {e}"));
    assert!(st.success(), "tar of the rootfs failed");
    tar
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap_or_else(|e| panic!("spawn sha256sum: {e}"));
    assert!(o.status.success(), "sha256sum {} failed", p.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Put a file into blobs/sha256 under its digest; returns (digest, size).
fn add_blob(layout: &Path, src: &Path) -> (String, u64) {
    let d = sha256(src);
    let size = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
    std::fs::copy(src, layout.join("blobs/sha256").join(&d))
        .unwrap_or_else(|e| panic!("copy blob: {e}"));
    (format!("sha256:{d}"), size)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image archive (tar of an image layout) with one layer, named
/// `name` (e.g. `docker.io/library/rcrun-busybox:latest`) through the
/// `io.containerd.image.name` annotation.
pub fn oci_archive(dir: &Path, layer_tar: &Path, name: &str) -> PathBuf {
    oci_archive_with(
        dir,
        layer_tar,
        name,
        serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/"}),
    )
}

/// As [`oci_archive`], with the image config's `config` object (`Entrypoint`, `Cmd`, ...);
/// `Env` is always the usual PATH.
pub fn oci_archive_with(
    dir: &Path,
    layer_tar: &Path,
    name: &str,
    mut image_config: serde_json::Value,
) -> PathBuf {
    image_config["Env"] =
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    let layout = dir.join("oci-layout-dir");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap_or_else(|e| panic!("{e}"));
    let (layer_d, layer_s) = add_blob(&layout, layer_tar);
    let config = serde_json::json!({
        "architecture": arch(),
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer_d]},
        "history": [{"created_by": "rcrun conformance suite"}]
    });
    let cfg_p = dir.join("config.json");
    std::fs::write(&cfg_p, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (cfg_d, cfg_s) = add_blob(&layout, &cfg_p);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_s},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer_s}]
    });
    let man_p = dir.join("manifest.json");
    std::fs::write(&man_p, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (man_d, man_s) = add_blob(&layout, &man_p);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": man_d, "size": man_s,
            "platform": {"architecture": arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag
            }
        }]
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let archive = dir.join("image-oci.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap_or_else(|e| panic!("spawn tar: {e}"));
    assert!(st.success(), "tar of the OCI layout failed");
    archive
}

/// Build the busybox layer in `dir` and `import` it as `name` with a client whose `import`
/// takes `-c 'CMD ["sh"]' TAR NAME` (docker, podman); `owner` gets the files first (a rootless
/// client reads them as that user).
pub fn import_busybox(
    dir: &Path,
    name: &str,
    owner: Option<(u32, u32)>,
    client: impl Fn(&[&str]) -> super::Out,
) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let layer = rootfs_tar(dir);
    if let Some((uid, gid)) = owner {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(dir)
            .status()
            .unwrap_or_else(|e| panic!("spawn chown: {e}"));
        assert!(st.success(), "chown -R {} failed", dir.display());
    }
    client(&[
        "import",
        "-c",
        "CMD [\"sh\"]",
        &layer.display().to_string(),
        name,
    ])
    .assert_ok();
}
