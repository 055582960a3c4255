//! Import from the three source formats (OCI layout dir, oci-archive, docker-archive classic
//! and Docker 25+), with gzip, zstd, uncompressed and unlabelled layers: the recorded chain ids,
//! diff ids, names and config match what the test computed itself, and the store layout
//! (diff, link, l/ symlink, lower, committed) is Docker's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_support;

use rcrun_storage_overlay2::image::DEFAULT_PATH_ENV;
use rcrun_storage_overlay2::import::{
    detect, import, ImportError, LayerState, Progress, SourceKind,
};
use rcrun_storage_overlay2::store::{Digest, Store};
use serde_json::json;
use std::fs;
use std::path::Path;
use store_support::*;

fn three_layer_image() -> TestImage {
    let l0 = TestLayer::new(
        &[
            E::Dir("etc".into()),
            file("etc/os-release", "ID=test\n"),
            file("bin-placeholder", "x"),
        ],
        Comp::Gzip,
    );
    let l1 = TestLayer::new(
        &[
            E::Dir("app".into()),
            file("app/run.sh", "#!/bin/sh\necho hi\n"),
            E::Symlink("app/current".into(), "run.sh".into()),
        ],
        Comp::Zstd,
    );
    let l2 = TestLayer::new(
        &[
            E::Whiteout("bin-placeholder".into()),
            file("app/data", "v2"),
        ],
        Comp::None,
    );
    image(
        vec![l0, l1, l2],
        json!({
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Env": ["PATH=/usr/bin:/bin", "APP=1"],
            "Entrypoint": ["/app/run.sh"],
            "Cmd": ["--serve"],
            "Volumes": {"/data": {}},
            "WorkingDir": "/app",
            "Labels": {"org.example.a": "b"},
            "StopSignal": "SIGINT",
            "Healthcheck": {"Test": ["CMD", "true"]},
        }),
    )
}

/// Everything the store must hold after importing `img`.
fn check_imported(
    store: &Store,
    img: &TestImage,
    rec: &rcrun_storage_overlay2::store::ImageRecord,
) {
    let chains = img.chain_ids();
    assert_eq!(rec.id.as_str(), img.config_digest);
    let got_chains: Vec<&str> = rec.layers.iter().map(Digest::as_str).collect();
    assert_eq!(
        got_chains,
        chains.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let got_diffs: Vec<&str> = rec.diff_ids.iter().map(Digest::as_str).collect();
    assert_eq!(
        got_diffs,
        img.diff_ids()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(store.image(rec.id.as_str()).unwrap(), *rec);
    let mut links = Vec::new();
    for (i, c) in chains.iter().enumerate() {
        let dir = store.root().join(hex(c));
        assert!(dir.join("committed").is_file(), "layer {i} committed");
        assert!(dir.join("diff").is_dir());
        let link = fs::read_to_string(dir.join("link")).unwrap();
        assert_eq!(link.len(), 26, "link id {link:?}");
        assert!(link
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(
            fs::read_link(store.root().join("l").join(&link)).unwrap(),
            Path::new(&format!("../{}/diff", hex(c)))
        );
        // Docker's format: the links of the layers below, nearest first.
        let lower = fs::read_to_string(dir.join("lower")).ok();
        let expected: Option<String> = (i > 0).then(|| {
            links
                .iter()
                .rev()
                .map(|l: &String| format!("l/{l}"))
                .collect::<Vec<_>>()
                .join(":")
        });
        assert_eq!(lower, expected, "lower of layer {i}");
        let info = store.layer(&rec.layers[i]).unwrap();
        assert_eq!(info.meta.diff_id.as_str(), img.layers[i].diff_id);
        links.push(link);
    }
    // Content landed in the right diffs, whiteout in overlay form.
    let d0 = store.root().join(hex(&chains[0])).join("diff");
    assert_eq!(
        fs::read_to_string(d0.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    let d1 = store.root().join(hex(&chains[1])).join("diff");
    assert_eq!(
        fs::read_link(d1.join("app/current")).unwrap(),
        Path::new("run.sh")
    );
    let d2 = store.root().join(hex(&chains[2])).join("diff");
    let wh = fs::symlink_metadata(d2.join("bin-placeholder")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 char device"
    );
    assert_eq!(fs::read_to_string(d2.join("app/data")).unwrap(), "v2");
    assert_links_consistent(store);
}

fn check_config(rec: &rcrun_storage_overlay2::store::ImageRecord) {
    let c = &rec.config;
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        c.exposed_ports
            .as_ref()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["53/udp".to_string(), "8080/tcp".to_string()]
    );
    assert_eq!(
        c.entrypoint.as_deref(),
        Some(&["/app/run.sh".to_string()][..])
    );
    assert_eq!(c.cmd.as_deref(), Some(&["--serve".to_string()][..]));
    assert_eq!(c.volumes.as_ref().unwrap().iter().next().unwrap(), "/data");
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.labels.as_ref().unwrap()["org.example.a"], "b");
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert!(
        c.other.contains_key("Healthcheck"),
        "unknown fields are kept"
    );
    assert_eq!(rec.os, "linux");
    assert_eq!(rec.architecture, host_arch());
    assert_eq!(rec.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    // And it round-trips through the record file as the same JSON the image had.
    let v = serde_json::to_value(c).unwrap();
    assert_eq!(v["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
    let p = c.to_process(None).unwrap();
    assert_eq!(p.args, vec!["/app/run.sh", "--serve"]);
    assert_eq!(p.env, vec!["PATH=/usr/bin:/bin", "APP=1"]);
    assert_eq!(p.cwd, "/app");
    assert_eq!(p.user, "1000:1000");
}

#[test]
fn oci_layout_with_gzip_zstd_and_plain_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let img = three_layer_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, Some("example.com/app:1.0"))]);
    assert_eq!(detect(&layout).unwrap(), SourceKind::OciLayout);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let mut events: Vec<Progress> = Vec::new();
    let report = import(&store, &layout, &import_opts(None), &mut |p| events.push(p)).unwrap();
    assert_eq!(report.kind, SourceKind::OciLayout);
    assert_eq!(report.applied.len(), 3);
    assert!(report.reused.is_empty());
    assert_eq!(report.image.names, vec!["example.com/app:1.0"]);
    assert_eq!(
        report.image.manifest.as_ref().unwrap().as_str(),
        img.manifest_digest
    );
    check_imported(&store, &img, &report.image);
    check_config(&report.image);
    // Progress: every layer reported applying then applied, with its blob size as total.
    for (i, l) in img.layers.iter().enumerate() {
        let mine: Vec<&Progress> = events.iter().filter(|p| p.layer == i).collect();
        assert_eq!(mine.first().unwrap().state, LayerState::Applying);
        let last = mine.last().unwrap();
        assert_eq!(last.state, LayerState::Applied);
        assert_eq!(last.bytes_total, l.blob.len() as u64);
        assert_eq!(last.bytes_done, l.blob.len() as u64);
        assert!(mine.iter().all(|p| p.layers == 3));
    }
    // Name lookups: as given, and by id prefix.
    assert_eq!(
        store.image("example.com/app:1.0").unwrap().id,
        report.image.id
    );
    assert_eq!(
        store.image(&img.config_digest[7..19]).unwrap().id,
        report.image.id
    );
    assert!(store.image("example.com/app:2.0").is_err());
}

#[test]
fn oci_archive_plain_and_gzip_compressed() {
    let tmp = tempfile::tempdir().unwrap();
    let img = three_layer_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&img, Some("latest"))]);
    let archive = tmp.path().join("img.tar");
    tar_dir(&layout, &archive);
    assert_eq!(detect(&archive).unwrap(), SourceKind::OciArchive);

    let store = Store::open(tmp.path().join("store")).unwrap();
    let report = do_import(&store, &archive, Some("myapp:latest"));
    assert_eq!(report.kind, SourceKind::OciArchive);
    // The ref.name is only a tag: the given name selects it and is what gets recorded.
    assert_eq!(report.image.names, vec!["myapp:latest"]);
    check_imported(&store, &img, &report.image);
    check_config(&report.image);
    assert_eq!(store.image("myapp").unwrap().id, report.image.id);

    // The same archive gzip'ed, into a fresh store; the temp copy is cleaned up.
    let gz = tmp.path().join("img.tar.gz");
    fs::write(&gz, compress(&fs::read(&archive).unwrap(), Comp::Gzip)).unwrap();
    let store2 = Store::open(tmp.path().join("store2")).unwrap();
    let r2 = do_import(&store2, &gz, None);
    assert_eq!(r2.kind, SourceKind::OciArchive);
    assert_eq!(r2.image.names, vec!["latest"]);
    check_imported(&store2, &img, &r2.image);
    assert_eq!(fs::read_dir(store2.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn docker_archive_classic_with_linked_duplicate_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let base = three_layer_image();
    // Layer 3 repeats layer 0's tar: docker save stores it once and symlinks the second copy.
    let mut layers = base.layers.clone();
    layers.push(TestLayer::from_tar(layers[0].tar.clone(), Comp::None));
    let img = image(layers, json!({"Cmd": ["sh"]}));
    let archive = tmp.path().join("docker.tar");
    write_docker_archive(
        &archive,
        &[(&img, vec!["busybox:latest", "busybox:1.36"])],
        false,
    );
    assert_eq!(detect(&archive).unwrap(), SourceKind::DockerArchive);

    let store = Store::open(tmp.path().join("store")).unwrap();
    let report = do_import(&store, &archive, None);
    assert_eq!(report.kind, SourceKind::DockerArchive);
    assert_eq!(report.image.names, vec!["busybox:latest", "busybox:1.36"]);
    assert_eq!(report.image.id.as_str(), img.config_digest);
    assert_eq!(report.image.manifest, None);
    let chains = img.chain_ids();
    assert_eq!(
        report.applied.len(),
        4,
        "same diff, different chain: unpacked again"
    );
    let rec_chains: Vec<String> = report.image.layers.iter().map(|d| d.to_string()).collect();
    assert_eq!(rec_chains, chains);
    let d3 = store.root().join(hex(&chains[3])).join("diff");
    assert_eq!(
        fs::read_to_string(d3.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    assert_eq!(
        report.image.config.to_process(None).unwrap().args,
        vec!["sh"]
    );
    assert_eq!(
        store.image("docker.io/library/busybox:1.36").unwrap().id,
        report.image.id
    );
    assert_links_consistent(&store);
}

#[test]
fn docker_archive_modern_blobs_layout_with_compressed_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let img = three_layer_image();
    let archive = tmp.path().join("docker25.tar");
    write_docker_archive(&archive, &[(&img, vec!["example.com/app:1.0"])], true);
    // Both manifest.json and index.json: it is a docker-archive.
    assert_eq!(detect(&archive).unwrap(), SourceKind::DockerArchive);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let report = do_import(&store, &archive, None);
    assert_eq!(report.kind, SourceKind::DockerArchive);
    assert_eq!(report.image.names, vec!["example.com/app:1.0"]);
    check_imported(&store, &img, &report.image);
    check_config(&report.image);
    // Each layer remembers the blob it came from (checked while reading).
    for (i, c) in report.image.layers.iter().enumerate() {
        assert_eq!(
            store.layer(c).unwrap().meta.blob.unwrap().as_str(),
            img.layers[i].digest
        );
    }
}

#[test]
fn unlabelled_layers_are_sniffed_and_nested_index_picks_host_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = three_layer_image().layers;
    for l in &mut layers {
        l.media_type = None;
    }
    let host = image(layers, json!({"Cmd": ["host"]}));
    let other = image(
        vec![TestLayer::new(&[file("other", "x")], Comp::Gzip)],
        json!({"Cmd": ["other"]}),
    );
    let layout = tmp.path().join("layout");
    fs::create_dir_all(&layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    write_image_blobs(&layout, &host);
    write_image_blobs(&layout, &other);
    let other_arch = if host_arch() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {"mediaType": MEDIA_MANIFEST, "digest": other.manifest_digest, "size": other.manifest.len(),
             "platform": {"architecture": other_arch, "os": "linux"}},
            {"mediaType": MEDIA_MANIFEST, "digest": host.manifest_digest, "size": host.manifest.len(),
             "platform": {"architecture": host_arch(), "os": "linux"}},
        ],
    }))
    .unwrap();
    let nested_digest = write_blob(&layout, &nested);
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": MEDIA_INDEX, "digest": nested_digest, "size": nested.len(),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1",
                         "org.opencontainers.image.ref.name": "1"}},
    ]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let store = Store::open(tmp.path().join("store")).unwrap();
    let report = do_import(&store, &layout, None);
    assert_eq!(report.image.id.as_str(), host.config_digest);
    assert_eq!(report.image.names, vec!["docker.io/library/multi:1"]);
    assert_eq!(
        report.image.config.cmd.as_deref(),
        Some(&["host".to_string()][..])
    );
    check_imported(&store, &host, &report.image);
    assert_eq!(store.image("multi:1").unwrap().id, report.image.id);
}

#[test]
fn layout_with_several_images_needs_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let a = image(
        vec![TestLayer::new(&[file("a", "a")], Comp::Gzip)],
        json!({"Cmd": ["a"]}),
    );
    let b = image(
        vec![TestLayer::new(&[file("b", "b")], Comp::Gzip)],
        json!({"Cmd": ["b"]}),
    );
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, &[(&a, Some("img:a")), (&b, Some("img:b"))]);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let err = import(&store, &layout, &import_opts(None), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::Ambiguous { .. }), "{err}");
    assert!(
        err.to_string().contains("img:a") && err.to_string().contains("img:b"),
        "{err}"
    );
    let err = import(&store, &layout, &import_opts(Some("img:c")), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::NoMatch { .. }), "{err}");
    let r = do_import(&store, &layout, Some("img:b"));
    assert_eq!(r.image.id.as_str(), b.config_digest);
    assert_eq!(r.image.names, vec!["img:b"]);
    assert!(layer_dirs(&store).len() == 1, "only b's layer was unpacked");
}

#[test]
fn not_an_image_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let d = tmp.path().join("empty");
    fs::create_dir(&d).unwrap();
    let err = import(&store, &d, &import_opts(None), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::UnknownFormat { .. }), "{err}");
    let t = tmp.path().join("x.tar");
    fs::write(&t, layer_tar(&[file("hello", "x")])).unwrap();
    let err = import(&store, &t, &import_opts(None), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("x.tar"), "{err}");
}

#[test]
fn to_process_follows_docker() {
    let img = image(vec![], json!({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}));
    let cfg: rcrun_storage_overlay2::image::ImageConfigFile =
        serde_json::from_slice(&img.config).unwrap();
    let c = cfg.config.unwrap();
    let p = c.to_process(None).unwrap();
    assert_eq!(p.args, vec!["/ep", "a", "b"]);
    assert_eq!(p.env, vec![DEFAULT_PATH_ENV]);
    assert_eq!(p.cwd, "/");
    assert_eq!(p.user, "");
    let args = vec!["x".to_string()];
    assert_eq!(c.to_process(Some(&args)).unwrap().args, vec!["/ep", "x"]);
    assert_eq!(c.to_process(Some(&[])).unwrap().args, vec!["/ep", "a", "b"]);
    // --entrypoint drops the image Cmd.
    let ep = vec!["/other".to_string()];
    assert_eq!(
        c.to_process_with(Some(&ep), None).unwrap().args,
        vec!["/other"]
    );
    let empty = rcrun_storage_overlay2::image::ImageConfig::default();
    assert!(empty.to_process(None).is_err());
    let rel = rcrun_storage_overlay2::image::ImageConfig {
        working_dir: Some("srv".into()),
        cmd: Some(vec!["x".into()]),
        ..Default::default()
    };
    assert_eq!(rel.to_process(None).unwrap().cwd, "/srv");
}
