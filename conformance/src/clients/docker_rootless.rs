//! Rootless Docker: `dockerd-rootless.sh` (Debian's docker.io contrib script + rootlesskit) run
//! by the unprivileged test user, with the runtime under test added as `rcrun`. dockerd and its
//! containerd run in rootlesskit's user namespace, so the shim starts the runtime as root of
//! that namespace. rootlesskit uses the host network (`DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host`):
//! this host's /dev/net/tun is not open to users, and the tests run with `--network none`.

use super::docker::{IMAGE, RUNTIME};
use super::podman::{rootless_user, RootlessUser};
use super::{ensure, image, ClientDir, Cmd, Daemon, Out};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Debian's rootless launcher for dockerd.
pub const LAUNCHER: &str = "/usr/share/docker.io/contrib/dockerd-rootless.sh";

pub struct RootlessDocker {
    pub daemon: Option<Daemon>,
    pub sock: PathBuf,
    pub docker_bin: PathBuf,
    pub user: RootlessUser,
    pub io: PathBuf,
    /// Short base dir (`$XDG_RUNTIME_DIR`, exec-root: unix socket paths must stay short).
    pub short: PathBuf,
    pub dir: ClientDir,
}

impl RootlessDocker {
    pub fn start(runtime: &Path) -> RootlessDocker {
        ensure("dockerd", "docker.io");
        ensure("containerd", "containerd");
        ensure("rootlesskit", "rootlesskit");
        assert!(
            Path::new(LAUNCHER).exists(),
            "{LAUNCHER} missing (docker.io package)"
        );
        let docker_bin = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            ensure("docker", "docker.io")
        };
        let setpriv = ensure("setpriv", "util-linux");
        let dir = ClientDir::new("dockerd-rl");
        let short = PathBuf::from(format!("/tmp/rcdr-{}", std::process::id()));
        let user = rootless_user(&short.join("xdg"));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        for p in [dir.path(), data.as_path()] {
            std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
        let sock = user.runtime_dir.join("docker.sock");
        let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
        let args: Vec<String> = [
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
            "--",
            LAUNCHER,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("--data-root={}", data.display()),
            format!("--exec-root={}", user.runtime_dir.join("dexec").display()),
            format!(
                "--pidfile={}",
                user.runtime_dir.join("docker.pid").display()
            ),
            format!("--host=unix://{}", sock.display()),
            "--iptables=false".into(),
            "--bridge=none".into(),
            format!("--add-runtime={RUNTIME}={}", runtime.display()),
        ])
        .collect();
        let xdg = user.runtime_dir.display().to_string();
        let home = user.home.display().to_string();
        let mut daemon = Daemon::start(
            "dockerd-rootless",
            &setpriv,
            &args,
            &[
                ("XDG_RUNTIME_DIR", xdg.as_str()),
                ("HOME", home.as_str()),
                ("USER", user.name.as_str()),
                ("PATH", "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"),
                ("DOCKERD_ROOTLESS_ROOTLESSKIT_NET", "host"),
                ("DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER", "none"),
            ],
            &dir.join("dockerd.log"),
        );
        {
            let s = sock.clone();
            daemon.wait_ready(Duration::from_secs(60), || s.exists());
        }
        let d = RootlessDocker {
            daemon: Some(daemon),
            sock,
            docker_bin,
            user,
            io: dir.join("io"),
            short,
            dir,
        };
        let mut ok = false;
        for _ in 0..100 {
            if d.docker(&["version"]).ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            ok,
            "rootless dockerd does not answer; log:\n{}",
            d.log_tail()
        );
        image::import_busybox(&d.dir.join("image"), IMAGE, None, |a| d.docker(a));
        d
    }

    pub fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_tail(25))
            .unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Out {
        let host = format!("unix://{}", self.sock.display());
        let mut a = vec!["--host", host.as_str()];
        a.extend(args);
        Cmd::new(&self.io, &self.docker_bin, &a).timeout(90).run()
    }

    /// `docker run --runtime rcrun --network none [opts] IMAGE args...`
    pub fn run(&self, opts: &[&str], args: &[&str]) -> Out {
        let mut a = vec!["run", "--runtime", RUNTIME, "--network", "none"];
        a.extend(opts);
        a.push(IMAGE);
        a.extend(args);
        self.docker(&a)
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, name]).text()
    }
}

impl Drop for RootlessDocker {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            super::docker::remove_all_containers(|a| self.docker(a));
        }
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        super::sweep(&self.short);
        super::sweep(self.dir.path());
        let _ = std::fs::remove_dir_all(&self.short);
    }
}
