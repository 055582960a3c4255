//! podman (4.x, daemonless; conmon as the monitor) with `--runtime $RCRUN_BIN`,
//! private `--root/--runroot/--tmpdir`, cgroupfs, file events, and a private
//! containers.conf (`CONTAINERS_CONF`) so no host config changes the result.

use super::{ensure, hard_limit, image, ClientDir, Cmd, Out};
use std::path::{Path, PathBuf};

pub const IMAGE: &str = "localhost/rcrun-busybox:latest";
/// Cgroup parent of the test containers (per test process; removed at the end).
pub fn cgroup_parent() -> String {
    format!("/rcrun-clients-podman-{}", std::process::id())
}

pub struct Podman {
    pub bin: PathBuf,
    pub runtime: PathBuf,
    pub io: PathBuf,
    pub conf: PathBuf,
    pub dir: ClientDir,
}

/// containers.conf used by the tests (and shown in docs/guide-podman.md):
/// the subject registered under `[engine.runtimes]`, ulimits that do not
/// exceed the host's hard limits (podman's default nofile/nproc of 1048576
/// needs CAP_SYS_RESOURCE, absent here).
pub fn containers_conf(runtime: &Path) -> String {
    let nofile = hard_limit(libc::RLIMIT_NOFILE).min(1_048_576);
    format!(
        r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]
netns = "none"

[engine]
runtime = "rcrun"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
rcrun = ["{bin}"]
"#,
        bin = runtime.display()
    )
}

impl Podman {
    pub fn start(runtime: &Path) -> Podman {
        let bin = ensure("podman", "podman");
        ensure("conmon", "conmon");
        let dir = ClientDir::new("podman");
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, containers_conf(runtime)).unwrap_or_else(|e| panic!("{e}"));
        let p = Podman {
            bin,
            runtime: runtime.to_path_buf(),
            io: dir.join("io"),
            conf,
            dir,
        };
        let imgdir = p.dir.join("image");
        std::fs::create_dir_all(&imgdir).unwrap_or_else(|e| panic!("{e}"));
        let layer = image::rootfs_tar(&imgdir);
        p.podman(&[
            "import",
            "-c",
            "CMD [\"sh\"]",
            &layer.display().to_string(),
            IMAGE,
        ])
        .assert_ok();
        p
    }

    pub fn global_args(&self) -> Vec<String> {
        vec![
            format!("--root={}", self.dir.join("root").display()),
            format!("--runroot={}", self.dir.join("runroot").display()),
            format!("--tmpdir={}", self.dir.join("tmp").display()),
            format!("--runtime={}", self.runtime.display()),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
            "--storage-driver=overlay".into(),
        ]
    }
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec![self.bin.display().to_string()];
        a.extend(self.global_args());
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let a = self.argv(args);
        let refs: Vec<&str> = a[1..].iter().map(String::as_str).collect();
        Cmd::new(&self.io, &self.bin, &refs)
            .env("CONTAINERS_CONF", &self.conf.display().to_string())
            .timeout(90)
    }
    pub fn podman(&self, args: &[&str]) -> Out {
        self.cmd(args).run()
    }
    pub fn run_args(&self, opts: &[&str], args: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--network".into(),
            "none".into(),
            format!("--cgroup-parent={}", cgroup_parent()),
        ];
        a.extend(opts.iter().map(|s| s.to_string()));
        a.push(IMAGE.into());
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    pub fn run(&self, opts: &[&str], args: &[&str]) -> Out {
        let a = self.run_args(opts, args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        self.podman(&refs)
    }
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.podman(&["inspect", "-f", format, name]).text()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        // podman keeps the overlay storage mounted until `unmount`/system reset
        let _ = self.podman(&["unmount", "-a"]);
        super::sweep(self.dir.path());
        super::remove_cgroup_tree(&cgroup_parent());
    }
}
