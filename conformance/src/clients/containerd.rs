//! A private containerd 1.6 (own root/state/socket/config) and `ctr`.

use super::{ensure, image, ClientDir, Cmd, Daemon, Out};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Image name imported into the private containerd.
pub const IMAGE: &str = "docker.io/library/rcrun-busybox:latest";
/// containerd namespace used by the tests: `rcrun-clients-<test pid>` (ctr also
/// makes it the cgroup parent, so concurrent runs never share one).
pub fn ns() -> String {
    format!("rcrun-clients-{}", std::process::id())
}
/// Name of the CRI runtime handler configured in config.toml.
pub const CRI_HANDLER: &str = "rcrun";
/// The CRI sandbox ("pause") image: the busybox layer with `sleep` as entrypoint, imported
/// locally so that containerd never pulls `registry.k8s.io/pause`.
pub const PAUSE_IMAGE: &str = "docker.io/library/rcrun-pause:latest";
/// The containerd namespace of the CRI plugin.
pub const CRI_NS: &str = "k8s.io";
/// CNI plugins from Debian's `containernetworking-plugins`.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The containerd config.toml for `runtime` (also used verbatim in docs/guide-containerd.md):
/// the CRI runtime `rcrun` = shim io.containerd.runc.v2 with `BinaryName`.
pub fn config_toml(dir: &Path, runtime: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  sandbox_image = "{pause}"
  # CAP_SYS_RESOURCE is not in this host's bounding set: the pause container's -998 would fail
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]
        BinaryName = "{bin}"
        Root = "{cri_root}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni}/conf"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = dir.join("containerd.sock").display(),
        handler = CRI_HANDLER,
        bin = runtime.display(),
        cni = dir.join("cni").display(),
        cni_bin = CNI_BIN_DIR,
        cri_root = dir.join("cri-root").display(),
        pause = PAUSE_IMAGE,
    )
}

pub struct Containerd {
    pub daemon: Daemon,
    pub sock: PathBuf,
    pub ctr_bin: PathBuf,
    pub runtime: PathBuf,
    pub io: PathBuf,
    // last: removed after the daemon has stopped
    pub dir: ClientDir,
}

impl Containerd {
    /// Install (apt) if needed, start a private containerd, import the busybox image.
    pub fn start(runtime: &Path) -> Containerd {
        let bin = ensure("containerd", "containerd");
        let ctr_bin = ensure("ctr", "containerd");
        ensure("containerd-shim-runc-v2", "containerd");
        let dir = ClientDir::new("ctd");
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config_toml(dir.path(), runtime)).unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.join("containerd.sock");
        let mut daemon = Daemon::start(
            "containerd",
            &bin,
            &["--config".into(), cfg.display().to_string()],
            &[],
            &dir.join("containerd.log"),
        );
        let io = dir.join("io");
        let ctd = {
            let s = sock.clone();
            daemon.wait_ready(Duration::from_secs(30), || s.exists());
            Containerd {
                daemon,
                sock,
                ctr_bin,
                runtime: runtime.to_path_buf(),
                io,
                dir,
            }
        };
        let mut ok = false;
        for _ in 0..50 {
            if ctd.ctr(&["version"]).ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            ok,
            "containerd does not answer; log:\n{}",
            ctd.daemon.log_tail(30)
        );
        let imgdir = ctd.dir.join("image");
        std::fs::create_dir_all(&imgdir).unwrap_or_else(|e| panic!("{e}"));
        let layer = image::rootfs_tar(&imgdir);
        let archive = image::oci_archive(&imgdir, &layer, IMAGE);
        ctd.ctr(&["image", "import", &archive.display().to_string()])
            .assert_ok();
        ctd
    }

    /// Make the CRI plugin usable: the busybox and pause images in its `k8s.io` namespace and a
    /// CNI bridge network (`subnet`, bridge `bridge`) in the conf dir it watches.
    pub fn prepare_cri(&self, bridge: &str, subnet: &str) {
        if !Path::new(CNI_BIN_DIR).join("bridge").exists() {
            crate::env::apt_install("containernetworking-plugins");
        }
        let imgdir = self.dir.join("image");
        let layer = imgdir.join("layer.tar");
        let pause_dir = self.dir.join("pause-image");
        std::fs::create_dir_all(&pause_dir).unwrap_or_else(|e| panic!("{e}"));
        let pause = image::oci_archive_with(
            &pause_dir,
            &layer,
            PAUSE_IMAGE,
            serde_json::json!({"Entrypoint": ["/bin/sleep"], "Cmd": ["2147483647"], "WorkingDir": "/"}),
        );
        for archive in [imgdir.join("image-oci.tar"), pause] {
            self.ctr_ns(CRI_NS, &["image", "import", &archive.display().to_string()])
                .assert_ok();
        }
        let conf = self.dir.join("cni/conf");
        std::fs::create_dir_all(&conf).unwrap_or_else(|e| panic!("{e}"));
        let net = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": bridge,
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                          "dataDir": self.dir.join("cni/ipam").display().to_string()}},
                {"type": "loopback"}
            ]
        });
        std::fs::write(conf.join("10-rcrun-test.conflist"), net.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The runtime's `--root` for CRI containers (the handler's `Root` option + namespace).
    pub fn cri_root(&self) -> PathBuf {
        self.dir.join("cri-root").join(CRI_NS)
    }

    /// `ctr --namespace NS args...`
    pub fn ctr_ns(&self, namespace: &str, args: &[&str]) -> Out {
        let mut a: Vec<&str> = vec!["--address", self.sock.to_str().unwrap_or_default()];
        a.extend(["--namespace", namespace]);
        a.extend(args);
        Cmd::new(&self.io, &self.ctr_bin, &a).timeout(60).run()
    }

    /// `ctr --address S --namespace NS args...`
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let mut a: Vec<String> = vec![
            "--address".into(),
            self.sock.display().to_string(),
            "--namespace".into(),
            ns(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Cmd::new(&self.io, &self.ctr_bin, &refs).timeout(60)
    }
    pub fn ctr(&self, args: &[&str]) -> Out {
        self.cmd(args).run()
    }
    /// The ctr argv (for wrapping in a pty).
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec![
            self.ctr_bin.display().to_string(),
            "--address".into(),
            self.sock.display().to_string(),
            "--namespace".into(),
            ns(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    /// `ctr run --runc-binary RUNTIME [opts] IMAGE id args...`
    pub fn run_args(&self, opts: &[&str], id: &str, args: &[&str]) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            // private runtime state (the shim's default is /run/containerd/runc)
            "--runc-root".into(),
            self.runc_root().display().to_string(),
        ];
        a.extend(opts.iter().map(|s| s.to_string()));
        a.push(IMAGE.into());
        a.push(id.into());
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    pub fn run(&self, opts: &[&str], id: &str, args: &[&str]) -> Out {
        let a = self.run_args(opts, id, args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }
    /// The `--runc-root` given to the shim; the runtime's `--root` is `<it>/<namespace>`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc-root")
    }
    /// Best-effort removal of task + container `id`.
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "--all", "-s", "SIGKILL", id]);
        let _ = self.ctr(&["task", "delete", "--force", id]);
        let _ = self.ctr(&["container", "delete", id]);
    }
    /// The status column of `ctr task ls` for `id`.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let o = self.ctr(&["task", "ls"]);
        o.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(String::from))
    }
    /// The shim's log entries written by the runtime (`<bundle>/log.json`)
    /// are not kept by containerd; the daemon log carries the shim errors.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail(25)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.daemon.stop();
        super::sweep(self.dir.path());
        // ctr puts containers under /<namespace>/<id>
        super::remove_cgroup_tree(&ns());
    }
}
