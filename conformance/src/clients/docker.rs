//! A private dockerd (own data-root, exec-root, pidfile, socket; it starts and
//! manages its own containerd under the exec-root) with the runtime under test
//! registered as `rcrun` (`--add-runtime`), optionally the default runtime.

use super::{ensure, image, ClientDir, Cmd, Daemon, Out};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE: &str = "rcrun-busybox:latest";
/// Runtime name under which the subject is registered.
pub const RUNTIME: &str = "rcrun";
/// Cgroup parent of the test containers (per test process; removed at the end).
pub fn cgroup_parent() -> String {
    format!("/rcrun-clients-docker-{}", std::process::id())
}

pub struct Docker {
    pub daemon: Option<Daemon>,
    pub sock: PathBuf,
    pub docker_bin: PathBuf,
    pub dockerd_bin: PathBuf,
    pub runtime: PathBuf,
    pub io: PathBuf,
    pub default_runtime: bool,
    pub dir: ClientDir,
}

impl Docker {
    /// Install docker.io if needed, start a private dockerd, import the busybox image.
    pub fn start(runtime: &Path) -> Docker {
        let dockerd_bin = ensure("dockerd", "docker.io");
        ensure("containerd", "containerd");
        // the Debian client matching the daemon (another `docker` may come first on PATH)
        let docker_bin = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            ensure("docker", "docker.io")
        };
        let dir = ClientDir::new("dockerd");
        let mut d = Docker {
            daemon: None,
            sock: dir.join("docker.sock"),
            docker_bin,
            dockerd_bin,
            runtime: runtime.to_path_buf(),
            io: dir.join("io"),
            default_runtime: false,
            dir,
        };
        d.launch(false);
        image::import_busybox(&d.dir.join("image"), IMAGE, None, |a| d.docker(a));
        d
    }

    /// The dockerd command line (also documented in docs/guide-docker.md).
    pub fn dockerd_args(&self, default_runtime: bool) -> Vec<String> {
        let cfg = self.dir.join("daemon.json");
        let mut a = vec![
            format!("--config-file={}", cfg.display()),
            format!("--data-root={}", self.dir.join("data").display()),
            format!("--exec-root={}", self.dir.join("exec").display()),
            format!("--pidfile={}", self.dir.join("docker.pid").display()),
            format!("--host=unix://{}", self.sock.display()),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--ip-masq=false".into(),
            "--bridge=none".into(),
            "--exec-opt=native.cgroupdriver=cgroupfs".into(),
            format!("--cgroup-parent={}", cgroup_parent()),
            "--userland-proxy=false".into(),
            format!("--add-runtime={RUNTIME}={}", self.runtime.display()),
        ];
        if default_runtime {
            a.push(format!("--default-runtime={RUNTIME}"));
        }
        a
    }

    /// (Re)start dockerd; waits until `docker version` answers.
    pub fn launch(&mut self, default_runtime: bool) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        std::fs::write(self.dir.join("daemon.json"), "{}\n").unwrap_or_else(|e| panic!("{e}"));
        let args = self.dockerd_args(default_runtime);
        let log = self.dir.join(if default_runtime {
            "dockerd-default.log"
        } else {
            "dockerd.log"
        });
        let mut daemon = Daemon::start("dockerd", &self.dockerd_bin, &args, &[], &log);
        let sock = self.sock.clone();
        daemon.wait_ready(Duration::from_secs(60), || sock.exists());
        self.daemon = Some(daemon);
        self.default_runtime = default_runtime;
        let mut ok = false;
        for _ in 0..100 {
            if self.docker(&["version"]).ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "dockerd does not answer; log:\n{}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_tail(25))
            .unwrap_or_default()
    }

    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec![
            self.docker_bin.display().to_string(),
            "--host".into(),
            format!("unix://{}", self.sock.display()),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let a = self.argv(args);
        let refs: Vec<&str> = a[1..].iter().map(String::as_str).collect();
        Cmd::new(&self.io, &self.docker_bin, &refs).timeout(90)
    }
    pub fn docker(&self, args: &[&str]) -> Out {
        self.cmd(args).run()
    }
    /// `docker run --runtime rcrun --network none [opts] IMAGE args...`
    pub fn run_args(&self, opts: &[&str], args: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--network".into(), "none".into()];
        if !self.default_runtime {
            a.push("--runtime".into());
            a.push(RUNTIME.into());
        }
        a.extend(opts.iter().map(|s| s.to_string()));
        a.push(IMAGE.into());
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }
    pub fn run(&self, opts: &[&str], args: &[&str]) -> Out {
        let a = self.run_args(opts, args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        self.docker(&refs)
    }
    /// `docker inspect -f FORMAT name`
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, name]).text()
    }
}

/// `docker rm -f` of every container, while the daemon is up (stops them through the runtime).
pub(crate) fn remove_all_containers(docker: impl Fn(&[&str]) -> Out) {
    let ids = docker(&["ps", "-aq"]).stdout;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut a = vec!["rm", "-f"];
        a.extend(ids);
        let _ = docker(&a);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            remove_all_containers(|a| self.docker(a));
        }
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        super::sweep(self.dir.path());
        super::remove_cgroup_tree(&cgroup_parent());
    }
}
