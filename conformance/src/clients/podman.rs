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
    /// Rootless podman: every podman command runs as this user.
    pub user: Option<RootlessUser>,
    /// `--runroot` (rootless podman wants at most 50 characters: a short dir in /tmp then).
    pub runroot: PathBuf,
    pub dir: ClientDir,
}

/// The unprivileged user of the rootless client tests, with subordinate id ranges.
#[derive(Clone, Debug)]
pub struct RootlessUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// A private `$XDG_RUNTIME_DIR` (podman keeps its rootless pause process's pid there).
    pub runtime_dir: PathBuf,
}

/// Name of the user made for the rootless client tests.
pub const ROOTLESS_USER: &str = "rcrunrl";

/// Create [`ROOTLESS_USER`] if missing (useradd, and 65536 subordinate uids/gids if it has
/// none), as a rootless podman user on a fresh machine would have. `runtime_dir` becomes its
/// `$XDG_RUNTIME_DIR`.
pub fn rootless_user(runtime_dir: &Path) -> RootlessUser {
    let id = |flag: &str| -> Option<u32> {
        let o = std::process::Command::new("id")
            .args([flag, ROOTLESS_USER])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", ROOTLESS_USER])
            .status()
            .unwrap_or_else(|e| panic!("spawn useradd: {e}"));
        assert!(st.success(), "useradd {ROOTLESS_USER} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text
            .lines()
            .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
        {
            let flag = if file.ends_with("uid") {
                "--add-subuids"
            } else {
                "--add-subgids"
            };
            let st = std::process::Command::new("usermod")
                .args([flag, "300000-365535", ROOTLESS_USER])
                .status()
                .unwrap_or_else(|e| panic!("spawn usermod: {e}"));
            assert!(st.success(), "usermod {flag} {ROOTLESS_USER} failed");
        }
    }
    ensure("newuidmap", "uidmap");
    let (uid, gid) = (
        id("-u").unwrap_or_else(|| panic!("no uid for {ROOTLESS_USER}")),
        id("-g").unwrap_or_else(|| panic!("no gid for {ROOTLESS_USER}")),
    );
    std::fs::create_dir_all(runtime_dir).unwrap_or_else(|e| panic!("{e}"));
    chown_tree(runtime_dir, uid, gid);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(runtime_dir, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("{e}"));
    RootlessUser {
        name: ROOTLESS_USER.into(),
        uid,
        gid,
        home: PathBuf::from(format!("/home/{ROOTLESS_USER}")),
        runtime_dir: runtime_dir.to_path_buf(),
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(p, Some(uid), Some(gid));
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                chown_tree(&e.path(), uid, gid);
            } else {
                let _ = std::os::unix::fs::chown(e.path(), Some(uid), Some(gid));
            }
        }
    }
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
        Self::start_as(runtime, false)
    }

    /// Rootless podman: run by [`ROOTLESS_USER`] (created if needed) with a private
    /// `$XDG_RUNTIME_DIR`; podman runs the runtime as root of its own user namespace.
    pub fn start_rootless(runtime: &Path) -> Podman {
        Self::start_as(runtime, true)
    }

    fn start_as(runtime: &Path, rootless: bool) -> Podman {
        let bin = ensure("podman", "podman");
        ensure("conmon", "conmon");
        let dir = ClientDir::new(if rootless { "podman-rl" } else { "podman" });
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, containers_conf(runtime)).unwrap_or_else(|e| panic!("{e}"));
        let short = PathBuf::from(format!("/tmp/rcpr-{}", std::process::id()));
        let runroot = if rootless {
            short.join("run")
        } else {
            dir.join("runroot")
        };
        let user = rootless.then(|| {
            ensure("slirp4netns", "slirp4netns");
            // short: conmon's attach socket lives below it (sun_path has 108 bytes)
            let u = rootless_user(&short.join("xdg"));
            // the user needs its own store, runroot and tmpdir
            for d in [
                dir.join("root"),
                dir.join("tmp"),
                dir.join("image"),
                runroot.clone(),
            ] {
                std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
            }
            chown_tree(dir.path(), u.uid, u.gid);
            chown_tree(&short, u.uid, u.gid);
            u
        });
        let p = Podman {
            bin,
            runtime: runtime.to_path_buf(),
            io: dir.join("io"),
            conf,
            user,
            runroot,
            dir,
        };
        let owner = p.user.as_ref().map(|u| (u.uid, u.gid));
        image::import_busybox(&p.dir.join("image"), IMAGE, owner, |a| p.podman(a));
        p
    }

    pub fn global_args(&self) -> Vec<String> {
        vec![
            format!("--root={}", self.dir.join("root").display()),
            format!("--runroot={}", self.runroot.display()),
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
        let conf = self.conf.display().to_string();
        let Some(u) = &self.user else {
            let refs: Vec<&str> = a[1..].iter().map(String::as_str).collect();
            return Cmd::new(&self.io, &self.bin, &refs)
                .env("CONTAINERS_CONF", &conf)
                .timeout(90);
        };
        let setpriv = ensure("setpriv", "util-linux");
        let (uid, gid) = (u.uid.to_string(), u.gid.to_string());
        let mut sa: Vec<&str> = vec!["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"];
        sa.extend(a.iter().map(String::as_str));
        Cmd::new(&self.io, &setpriv, &sa)
            .env("CONTAINERS_CONF", &conf)
            .env("HOME", &u.home.display().to_string())
            .env("USER", &u.name)
            .env("LOGNAME", &u.name)
            .env("XDG_RUNTIME_DIR", &u.runtime_dir.display().to_string())
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
        if let Some(u) = &self.user {
            // rootless podman's pause process holds its user and mount namespaces; its pid
            // file is in --tmpdir (else $XDG_RUNTIME_DIR/libpod/tmp)
            for pidfile in [
                self.dir.join("tmp/pause.pid"),
                u.runtime_dir.join("libpod/tmp/pause.pid"),
            ] {
                if let Some(pid) = std::fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) of the pause process this test's podman started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if let Some(short) = u.runtime_dir.parent() {
                super::sweep(short);
                let _ = std::fs::remove_dir_all(short);
            }
        }
        super::sweep(self.dir.path());
        super::remove_cgroup_tree(&cgroup_parent());
    }
}
