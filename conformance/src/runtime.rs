//! Driving a runtime binary through runc's command line.

use crate::bundle::Bundle;
use crate::env::{reference_bin, subject_bin};
use crate::util::{pid_alive, wait_until, TempDir};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default time limit for one runtime invocation (`RCRUN_CMD_TIMEOUT` seconds, default 30).
pub fn cmd_timeout() -> Duration {
    let secs = std::env::var("RCRUN_CMD_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Result of one runtime invocation.
#[derive(Clone, Debug)]
pub struct Output {
    pub cmdline: String,
    /// Exit code, `None` if killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Files that were the runtime's stdout/stderr.  A detached container
    /// without a terminal inherits them, so its later output lands here.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Output {
    /// Re-read the stdout file (e.g. output a detached container wrote later).
    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
    /// Panics (with the whole invocation in the message) unless exit code 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }
    /// Panics unless the runtime exited normally with a non-zero code.
    pub fn assert_fail(&self) -> &Self {
        assert!(
            !self.timed_out && self.signal.is_none() && matches!(self.code, Some(c) if c != 0),
            "expected a clean failure (non-zero exit):\n{self}"
        );
        self
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }
    /// The non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
    /// For failures: stderr is exactly one non-empty line that mentions every
    /// `needle` (case-insensitively).
    pub fn assert_one_line_error(&self, needles: &[&str]) -> &Self {
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected a one-line error on stderr:\n{self}"
        );
        let line = lines[0].to_lowercase();
        for n in needles {
            assert!(
                line.contains(&n.to_lowercase()),
                "error line does not mention {n:?}:\n{self}"
            );
        }
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.cmdline)?;
        writeln!(
            f,
            "  exit: code={:?} signal={:?} timed_out={}",
            self.code, self.signal, self.timed_out
        )?;
        writeln!(f, "  stdout: {:?}", self.stdout)?;
        write!(f, "  stderr: {:?}", self.stderr)
    }
}

/// A runtime binary with its own `--root` state directory (a temp dir).
pub struct Runtime {
    pub bin: PathBuf,
    pub name: String,
    root: TempDir,
    io: TempDir,
    n: AtomicUsize,
    /// container id -> cgroupsPath of the bundle it was created from (for the guard's fallback)
    cgroups: Mutex<HashMap<String, String>>,
}

/// Options for one invocation.
#[derive(Default)]
pub struct Opts {
    /// Global options placed before the subcommand (e.g. `--log`).
    pub global: Vec<String>,
    /// Data fed on stdin (else /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// Host files opened and placed at the given fd numbers in the child.
    pub fds: Vec<(PathBuf, RawFd)>,
    pub timeout: Option<Duration>,
    pub cwd: Option<PathBuf>,
    /// Extra environment variables for the runtime process itself.
    pub env: Vec<(String, String)>,
}

impl Runtime {
    /// The runtime under test (`RCRUN_BIN`).
    pub fn rcrun() -> Runtime {
        Runtime::with_bin(subject_bin(), "subject")
    }
    /// Whether the subject is runc itself (the suite's self-validation run): tests of features
    /// runc 1.1 lacks then have nothing to check and say so.
    pub fn subject_is_reference() -> bool {
        let out = std::process::Command::new(subject_bin())
            .arg("--version")
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).starts_with("runc version"))
            .unwrap_or(false)
    }
    /// For a check of something runc 1.1 lacks: true (after saying why) when the subject is
    /// runc, so the self-validation run has nothing to check.
    pub fn skip_for_reference(why: &str) -> bool {
        let skip = Runtime::subject_is_reference();
        if skip {
            eprintln!("subject is runc: {why}; nothing to check for the reference");
        }
        skip
    }
    /// The reference runtime (`RUNC_BIN` / runc on PATH).
    pub fn runc() -> Runtime {
        Runtime::with_bin(reference_bin(), "runc")
    }
    pub fn with_bin(bin: PathBuf, name: &str) -> Runtime {
        crate::env::require_root();
        Runtime {
            bin,
            name: name.into(),
            root: TempDir::new("root"),
            io: TempDir::new("io"),
            n: AtomicUsize::new(0),
            cgroups: Mutex::new(HashMap::new()),
        }
    }
    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
    /// Where the runtime keeps the state of `id` (`<root>/<id>`).
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Run `BIN --root ROOT <args>`.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_opts(args, Opts::default())
    }

    /// Run with options.  stdout/stderr go to files (not pipes), so a
    /// detached container inheriting them never blocks us.
    pub fn exec_opts(&self, args: &[&str], opts: Opts) -> Output {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let out_p = self.io.join(format!("{n}.out"));
        let err_p = self.io.join(format!("{n}.err"));
        let out_f = std::fs::File::create(&out_p)
            .unwrap_or_else(|e| panic!("create {}: {e}", out_p.display()));
        let err_f = std::fs::File::create(&err_p)
            .unwrap_or_else(|e| panic!("create {}: {e}", err_p.display()));
        let mut cmd = Command::new(&self.bin);
        // own process group, so a timeout can kill whatever the runtime forked
        cmd.process_group(0);
        cmd.args(&opts.global)
            .arg("--root")
            .arg(self.root())
            .args(args);
        cmd.stdout(out_f).stderr(err_f);
        match &opts.stdin {
            Some(data) => {
                let in_p = self.io.join(format!("{n}.in"));
                std::fs::write(&in_p, data).unwrap_or_else(|e| panic!("write stdin: {e}"));
                cmd.stdin(std::fs::File::open(&in_p).unwrap_or_else(|e| panic!("open stdin: {e}")));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(c) = &opts.cwd {
            cmd.current_dir(c);
        }
        // Extra fds: open them here (CLOEXEC by default), dup2 them in the child.
        let files: Vec<(std::fs::File, RawFd)> = opts
            .fds
            .iter()
            .map(|(p, target)| {
                let f =
                    std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
                (f, *target)
            })
            .collect();
        if !files.is_empty() {
            use std::os::fd::AsRawFd;
            let pairs: Vec<(RawFd, RawFd)> =
                files.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
            assert!(pairs.len() <= 16, "at most 16 extra fds");
            // SAFETY: only async-signal-safe libc calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // First move every source above all targets so a dup2 never clobbers a later source.
                    // (no allocation between fork and exec)
                    let mut moved = [-1 as RawFd; 16];
                    for (i, (src, _)) in pairs.iter().enumerate().take(16) {
                        let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        moved[i] = fd;
                    }
                    for (fd, (_, target)) in moved.iter().zip(&pairs) {
                        if libc::dup2(*fd, *target) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let cmdline = format!(
            "{} {} --root {} {}",
            self.bin.display(),
            opts.global.join(" "),
            self.root().display(),
            args.join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        drop(files);
        let deadline = Instant::now() + opts.timeout.unwrap_or_else(cmd_timeout);
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            if Instant::now() >= deadline {
                timed_out = true;
                // SAFETY: kill(2) of the process group we created for this child.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Output {
            cmdline,
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout: read(&out_p),
            stderr: read(&err_p),
            timed_out,
            stdout_path: out_p,
            stderr_path: err_p,
        }
    }

    /// Record which cgroupsPath container `id` uses (see [`Guard`]).
    pub fn remember(&self, id: &str, b: &Bundle) {
        if let (Some(cg), Ok(mut m)) = (b.cgroups_path(), self.cgroups.lock()) {
            m.insert(id.to_string(), cg);
        }
    }

    // ---- subcommands ----
    pub fn create(&self, b: &Bundle) -> Output {
        self.create_id(b, &b.id, &[])
    }
    /// `create [extra...] -b BUNDLE ID`
    pub fn create_id(&self, b: &Bundle, id: &str, extra: &[&str]) -> Output {
        b.write();
        self.remember(id, b);
        let bp = b.path().to_string_lossy().into_owned();
        let mut a = vec!["create"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--bundle", &bp, id]);
        self.exec(&a)
    }
    pub fn start(&self, id: &str) -> Output {
        self.exec(&["start", id])
    }
    pub fn state(&self, id: &str) -> Output {
        self.exec(&["state", id])
    }
    /// `state ID` parsed; panics if the command fails or is not JSON.
    pub fn state_json(&self, id: &str) -> Value {
        self.state(id).assert_ok().json()
    }
    /// The `status` field of `state`, or None if `state` fails.
    pub fn status(&self, id: &str) -> Option<String> {
        let o = self.state(id);
        if !o.success() {
            return None;
        }
        serde_json::from_str::<Value>(&o.stdout).ok()?["status"]
            .as_str()
            .map(String::from)
    }
    /// Poll until `state` reports `status` (default 10s).
    pub fn wait_status(&self, id: &str, status: &str) -> bool {
        wait_until(Duration::from_secs(10), || {
            self.status(id).as_deref() == Some(status)
        })
    }
    pub fn kill(&self, id: &str, sig: &str) -> Output {
        self.exec(&["kill", id, sig])
    }
    pub fn delete(&self, id: &str) -> Output {
        self.exec(&["delete", id])
    }
    pub fn delete_force(&self, id: &str) -> Output {
        self.exec(&["delete", "--force", id])
    }
    /// `run [extra...] -b BUNDLE b.id` (foreground unless extra has `-d`).
    pub fn run(&self, b: &Bundle, extra: &[&str]) -> Output {
        self.run_id(b, &b.id, extra)
    }
    pub fn run_id(&self, b: &Bundle, id: &str, extra: &[&str]) -> Output {
        b.write();
        self.remember(id, b);
        let bp = b.path().to_string_lossy().into_owned();
        let mut a = vec!["run"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--bundle", &bp, id]);
        self.exec(&a)
    }
    /// Run `args` in a fresh container (terminal off) in the foreground and
    /// return its output; the container is force-deleted afterwards.
    pub fn run_capture(&self, b: &mut Bundle, args: &[&str]) -> Output {
        b.terminal(false).args(args);
        let id = crate::util::unique_id("cap");
        let _g = self.guard(&id);
        self.run_id(b, &id, &[])
    }
    /// `run_capture` of `sh -c SCRIPT`, asserting success; returns stdout.
    pub fn sh_ok(&self, b: &mut Bundle, script: &str) -> String {
        self.run_capture(b, &["sh", "-c", script])
            .assert_ok()
            .stdout
            .clone()
    }
    pub fn list_json(&self) -> Value {
        self.exec(&["list", "--format", "json"]).assert_ok().json()
    }
    /// A guard that `kill KILL` + `delete --force`s `id` when dropped.
    pub fn guard(&self, id: &str) -> Guard<'_> {
        Guard {
            rt: self,
            id: id.to_string(),
        }
    }
    /// Host pid of a created/running container (from `state`).
    pub fn pid(&self, id: &str) -> i64 {
        self.state_json(id)["pid"].as_i64().unwrap_or(0)
    }
    /// Create `b` (must succeed), start it, wait for "running"; returns host pid.
    pub fn start_detached(&self, b: &Bundle) -> i64 {
        self.create(b).assert_ok();
        self.start(&b.id).assert_ok();
        let pid = self.pid(&b.id);
        assert!(
            pid > 0 && pid_alive(pid),
            "container {} has no live pid",
            b.id
        );
        pid
    }
}

/// Kills and force-deletes a container when dropped, so nothing leaks when
/// an assertion fails.
pub struct Guard<'a> {
    rt: &'a Runtime,
    pub id: String,
}

impl Drop for Guard<'_> {
    /// `kill KILL` + `delete --force` through the runtime; then, should the
    /// runtime have failed to clean up, SIGKILL what is left in the
    /// container's cgroup (and its init pid) and remove the cgroup dirs, so a
    /// broken runtime cannot leak processes into later tests.
    fn drop(&mut self) {
        let quick = || Opts {
            timeout: Some(Duration::from_secs(10)),
            ..Opts::default()
        };
        let st = self.rt.exec_opts(&["state", &self.id], quick());
        let pid = serde_json::from_str::<Value>(&st.stdout)
            .ok()
            .and_then(|v| v["pid"].as_i64())
            .unwrap_or(0);
        let _ = self.rt.exec_opts(&["kill", &self.id, "KILL"], quick());
        let _ = self.rt.exec_opts(&["delete", "--force", &self.id], quick());

        let mut cleaned = Vec::new();
        if pid > 0 && pid_alive(pid) {
            // SAFETY: kill(2) of the container init we created.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            cleaned.push(format!("pid {pid}"));
        }
        let cg = self
            .rt
            .cgroups
            .lock()
            .ok()
            .and_then(|m| m.get(&self.id).cloned());
        if let Some(cg) = cg {
            // A paused container's processes cannot die while frozen (cgroup v1): thaw first.
            for dir in crate::cgroups::all_dirs(&cg) {
                let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
                let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            }
            for dir in crate::cgroups::all_dirs(&cg) {
                if !dir.exists() {
                    continue;
                }
                let procs =
                    || std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for p in procs().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) of a process inside the container's own cgroup.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                wait_until(Duration::from_secs(2), || procs().trim().is_empty());
                let _ = std::fs::remove_dir(&dir);
                cleaned.push(dir.display().to_string());
            }
        }
        if !cleaned.is_empty() {
            eprintln!(
                "guard: {} left {} behind; removed: {cleaned:?}",
                self.rt.name, self.id
            );
        }
    }
}
