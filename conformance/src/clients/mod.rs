//! Real clients driving the runtime under test: containerd 1.6 (`ctr`, the
//! `io.containerd.runc.v2` shim), dockerd (`--add-runtime`), podman
//! (`--runtime`, conmon).
//!
//! Every client is started by the test itself with PRIVATE roots, state dirs
//! and sockets under one temp dir; a system-wide daemon is never touched.
//! Images are built locally (no registry): a busybox rootfs tarred and
//! `docker import`ed / `podman import`ed, or an OCI image archive generated
//! here ([`image::oci_archive`]) for `ctr image import`.
//!
//! One `#[test]` per client runs all scenarios as named steps
//! ([`Scenarios`]): every step runs even if an earlier one failed, the test
//! prints a pass/fail table and fails if any step failed.  Select steps with
//! `RCRUN_CLIENT_STEPS=substr1,substr2`.

pub mod containerd;
pub mod cri;
pub mod docker;
pub mod docker_rootless;
pub mod image;
pub mod podman;

use crate::env::{subject_bin, which};
use crate::util::TempDir;
use std::fmt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Install the Debian package providing `tool` unless it is on PATH
/// (`apt-get install -y`, `apt-get update` and retry on failure).
pub fn ensure(tool: &str, package: &str) -> PathBuf {
    crate::env::ensure_tool(tool, package)
}

/// The runtime under test, as an absolute path (clients need one).
pub fn subject() -> PathBuf {
    let p = subject_bin();
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// "runc" if the subject is runc (the suite validating itself), else "rcrun".
pub fn subject_label() -> &'static str {
    let s = subject();
    let runc = which("runc").and_then(|p| std::fs::canonicalize(p).ok());
    if runc.as_deref() == Some(s.as_path())
        || s.file_name().is_some_and(|n| {
            n.to_string_lossy().contains("runc") && !n.to_string_lossy().contains("rcrun")
        })
    {
        "runc"
    } else {
        "rcrun"
    }
}

/// Result of one client command.
#[derive(Clone, Debug)]
pub struct Out {
    pub cmdline: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
    /// Panics with the whole invocation unless exit code 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "expected success:\n{self}");
        self
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert!(
            self.code == Some(code) && !self.timed_out,
            "expected exit code {code}:\n{self}"
        );
        self
    }
    /// stdout with `\r` removed (tty output), trimmed.
    pub fn text(&self) -> String {
        self.stdout.replace('\r', "").trim().to_string()
    }
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{self}"
        );
        self
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.cmdline)?;
        writeln!(
            f,
            "  exit: code={:?} signal={:?} timed_out={}",
            self.code, self.signal, self.timed_out
        )?;
        writeln!(f, "  stdout: {:?}", truncate(&self.stdout, 3000))?;
        write!(f, "  stderr: {:?}", truncate(&self.stderr, 3000))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut i = s.len() - n;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        format!("...{}", &s[i..])
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A client command line (program + args + env), run with a time limit.
/// stdout/stderr go to files so that processes left running in the
/// background (e.g. a detached container's stdio) can never block us.
pub struct Cmd {
    cmd: Command,
    cmdline: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    io: PathBuf,
}

impl Cmd {
    pub fn new(io: &Path, program: &Path, args: &[&str]) -> Cmd {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Cmd {
            cmd,
            cmdline: format!("{} {}", program.display(), args.join(" ")),
            stdin: None,
            timeout: Duration::from_secs(60),
            io: io.to_path_buf(),
        }
    }
    pub fn env(mut self, k: &str, v: &str) -> Cmd {
        self.cmd.env(k, v);
        self.cmdline = format!("{k}={v} {}", self.cmdline);
        self
    }
    pub fn stdin(mut self, data: &[u8]) -> Cmd {
        self.stdin = Some(data.to_vec());
        self
    }
    pub fn timeout(mut self, secs: u64) -> Cmd {
        self.timeout = Duration::from_secs(secs);
        self
    }
    /// Start without waiting (stdout/stderr to files, stdin from the data or /dev/null).
    pub fn spawn(mut self) -> Running {
        let n = N.fetch_add(1, Ordering::SeqCst);
        std::fs::create_dir_all(&self.io).ok();
        let out_p = self.io.join(format!("cmd{n}.out"));
        let err_p = self.io.join(format!("cmd{n}.err"));
        let out_f = std::fs::File::create(&out_p).unwrap_or_else(|e| panic!("create out: {e}"));
        let err_f = std::fs::File::create(&err_p).unwrap_or_else(|e| panic!("create err: {e}"));
        self.cmd.stdout(out_f).stderr(err_f).process_group(0);
        match &self.stdin {
            Some(d) => {
                let in_p = self.io.join(format!("cmd{n}.in"));
                std::fs::write(&in_p, d).unwrap_or_else(|e| panic!("write stdin: {e}"));
                self.cmd
                    .stdin(std::fs::File::open(&in_p).unwrap_or_else(|e| panic!("{e}")));
            }
            None => {
                self.cmd.stdin(Stdio::null());
            }
        }
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.cmdline));
        Running {
            child,
            cmdline: self.cmdline,
            out_p,
            err_p,
            timeout: self.timeout,
        }
    }
    /// Run to completion (killed with its process group after the timeout).
    pub fn run(self) -> Out {
        self.spawn().wait()
    }
}

/// A client command running in the background.
pub struct Running {
    child: Child,
    pub cmdline: String,
    out_p: PathBuf,
    err_p: PathBuf,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out_p).unwrap_or_default()).into_owned()
    }
    pub fn wait(mut self) -> Out {
        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            if Instant::now() >= deadline {
                timed_out = true;
                // SAFETY: kill(2) of the process group created for this child.
                unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
                let _ = self.child.kill();
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Out {
            cmdline: self.cmdline,
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout: read(&self.out_p),
            stderr: read(&self.err_p),
            timed_out,
        }
    }
}

/// Wrap a command line so that it runs on a pseudo-terminal (`script -qec`):
/// what `docker run -it` / `podman exec -it` need to see on their stdin.
/// Returns the `script` argv (program first).
pub fn on_pty(argv: &[String]) -> Vec<String> {
    let script = ensure("script", "bsdutils");
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    vec![
        script.display().to_string(),
        "-qec".into(),
        quoted.join(" "),
        "/dev/null".into(),
    ]
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A daemon started by a test: own process group, log to a file; stopped
/// (TERM, then KILL after 15s) on drop.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Daemon {
        let f =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let f2 = f.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        eprintln!(
            "[{name}] starting: {} {}",
            program.display(),
            args.join(" ")
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }
    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
    /// Wait until `ready()` holds (panics with the log tail if the daemon dies or times out).
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            assert!(
                self.alive(),
                "{} exited during startup; log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}; log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: signalling the daemon we spawned.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "[{}] did not stop on SIGTERM within 15s: SIGKILL",
            self.name
        );
        // SAFETY: our daemon's process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kill every process whose command line or executable mentions `dir`
/// (shims, conmon, containers left behind by the private daemons started under
/// it), then lazily unmount everything below `dir`.
pub fn sweep(dir: &Path) {
    let d = dir.to_string_lossy().to_string();
    let me = std::process::id();
    for _round in 0..3 {
        let mut killed = 0;
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&d) {
                    // SAFETY: a process started (indirectly) by this test under its private dir.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    killed += 1;
                }
            }
        }
        if killed == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut mounts = crate::util::mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let c = std::ffi::CString::new(m.clone()).unwrap_or_default();
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Outcome of a named step.
#[derive(Clone, Debug)]
pub enum StepResult {
    Pass,
    Fail(String),
    Skip(String),
}

/// Runs the scenarios of one client as named steps, recording pass/fail.
pub struct Scenarios {
    pub client: String,
    results: Vec<(String, StepResult, Duration)>,
    filter: Vec<String>,
    /// Printed after a failure (e.g. the daemon's log tail).
    pub context: Box<dyn Fn() -> String>,
    started: Instant,
}

/// Mark a step as skipped (e.g. a feature the host lacks): panic with this prefix.
pub const SKIP: &str = "SKIP: ";

impl Scenarios {
    pub fn new(client: &str) -> Scenarios {
        let filter = std::env::var("RCRUN_CLIENT_STEPS")
            .ok()
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        eprintln!(
            "== {client} scenarios, runtime under test: {} ({})",
            subject().display(),
            subject_label()
        );
        Scenarios {
            client: client.to_string(),
            results: Vec::new(),
            filter,
            context: Box::new(String::new),
            started: Instant::now(),
        }
    }
    pub fn selected(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }
    /// Run one step; a panic fails the step (not the test, yet).
    pub fn step(&mut self, name: &str, f: impl FnOnce()) {
        if !self.selected(name) {
            return;
        }
        eprintln!("-- [{}] step {name}", self.client);
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let res = match r {
            Ok(()) => StepResult::Pass,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                if let Some(why) = msg.strip_prefix(SKIP) {
                    StepResult::Skip(why.to_string())
                } else {
                    let ctx = (self.context)();
                    eprintln!(
                        "-- [{}] step {name} FAILED:\n{msg}\n--- context:\n{ctx}\n---",
                        self.client
                    );
                    StepResult::Fail(msg)
                }
            }
        };
        eprintln!(
            "-- [{}] step {name}: {} ({:.1}s)",
            self.client,
            match &res {
                StepResult::Pass => "pass",
                StepResult::Fail(_) => "FAIL",
                StepResult::Skip(_) => "skip",
            },
            t.elapsed().as_secs_f64()
        );
        self.results.push((name.to_string(), res, t.elapsed()));
    }
    /// Print the table; panic if any step failed.
    pub fn finish(self) {
        let mut table = format!(
            "\n== {} with runtime {} ({}): {:.0}s\n",
            self.client,
            subject().display(),
            subject_label(),
            self.started.elapsed().as_secs_f64()
        );
        let mut failed = Vec::new();
        for (name, r, d) in &self.results {
            let (tag, why) = match r {
                StepResult::Pass => ("pass", String::new()),
                StepResult::Skip(w) => ("skip", w.clone()),
                StepResult::Fail(m) => {
                    failed.push(name.clone());
                    ("FAIL", m.lines().next().unwrap_or("").to_string())
                }
            };
            table.push_str(&format!(
                "  {tag:4}  {name:40} {:5.1}s  {why}\n",
                d.as_secs_f64()
            ));
        }
        eprintln!("{table}");
        let _ = std::fs::write(
            crate::util::base_tmp().join(format!(
                "clients-{}-{}.txt",
                self.client,
                subject_label()
            )),
            &table,
        );
        assert!(
            failed.is_empty(),
            "{} step(s) failed: {failed:?}{table}",
            failed.len()
        );
    }
}

/// A per-test private directory for a client (roots, sockets, logs); on drop
/// processes mentioning it are killed and its mounts detached, then removed.
pub struct ClientDir {
    pub dir: TempDir,
}

impl ClientDir {
    pub fn new(prefix: &str) -> ClientDir {
        ClientDir {
            dir: TempDir::new(prefix),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for ClientDir {
    fn drop(&mut self) {
        sweep(self.dir.path());
    }
}

/// The fds open in the container's shell, as printed by `ls /proc/$$/fd`
/// (the trailing `; true` keeps sh from exec'ing `ls`, whose own directory
/// fd would show up; no pipeline: the shell would hold a pipe end for a moment).
pub const FD_LIST_SH: &str = "ls /proc/$$/fd; true";

/// Assert the fd list printed by [`FD_LIST_SH`] is exactly 0 1 2.
pub fn assert_only_stdio(out: &Out) {
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "the container process has extra fds (leaked from the runtime / shim / conmon):\n{out}"
    );
}

/// Hard limits of this process, used to keep clients from asking for more
/// (podman defaults to nofile/nproc 1048576+, which needs CAP_SYS_RESOURCE).
pub fn hard_limit(res: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid out pointer.
    unsafe { libc::getrlimit(res, &mut r) };
    r.rlim_max
}

/// Poll until `f` returns true (default 20s); panics with `what`.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    assert!(
        crate::util::wait_until(Duration::from_secs(secs), &mut f),
        "timed out after {secs}s waiting for: {what}"
    );
}

/// Skip the current step (see [`SKIP`]).
pub fn skip(why: &str) -> ! {
    std::panic::panic_any(format!("{SKIP}{why}"))
}

/// `pid` and all its descendants (from /proc/PID/task/*/children).
pub fn process_tree(pid: i64) -> Vec<i64> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in rd.flatten() {
                let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(c.split_whitespace().filter_map(|s| s.parse::<i64>().ok()));
            }
        }
        i += 1;
    }
    out
}

/// Remove the (empty) cgroup directories `name` (a path relative to each
/// hierarchy root, e.g. `rcrun-clients`) and everything empty below it, in
/// every mounted hierarchy.  Directories still holding processes stay.
pub fn remove_cgroup_tree(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for h in crate::cgroups::hierarchies() {
        rm(&h.mount.join(name.trim_start_matches('/')));
    }
}
