//! The `criu` binary: finding it, checking its version, running one action with a deadline, and
//! turning a failure into one line that names the cause.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The oldest CRIU rcrun drives: 3.11 has everything it passes (`--external mnt[]`/`file[]`,
/// `--track-mem` with `--prev-images-dir`, `--lazy-pages`, `--freeze-cgroup`, `--empty-ns`).
pub const MIN_VERSION: Version = Version(3, 11, 0);

/// How long one CRIU action may take unless the caller says otherwise
/// (`RCRUN_CRIU_TIMEOUT`, seconds): a dump of a large container under emulation takes minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// From `criu --version`: `Version: 3.17.1` (a first line), maybe followed by `GitID: ...`.
    pub fn parse(text: &str) -> Option<Version> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))?
            .trim();
        let mut it = v
            .split(|c: char| !c.is_ascii_digit())
            .map(|s| s.parse().ok());
        Some(Version(
            it.next()??,
            it.next().flatten().unwrap_or(0),
            it.next().flatten().unwrap_or(0),
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("criu not found: {0:?} is not on PATH (install it: apt-get install criu, or name it with --criu PATH)")]
    NotFound(String),
    #[error("criu {path}: cannot run it: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("criu {path}: cannot tell its version: `criu --version` printed {output:?}")]
    Version { path: PathBuf, output: String },
    #[error("criu {found} is too old: rcrun needs criu {need} or later")]
    TooOld { found: Version, need: Version },
    #[error("criu {version} is too old for this kernel ({kernel}): its kernel feature detection failed ({reason}); install a criu released after this kernel (log: {log})")]
    TooOldForKernel {
        version: Version,
        kernel: String,
        reason: String,
        log: PathBuf,
    },
    #[error("criu {action} failed: {fatal} (log: {log})")]
    Failed {
        action: String,
        fatal: String,
        log: PathBuf,
    },
    #[error("criu {action} did not finish within {secs} s and was killed (log: {log})")]
    Timeout {
        action: String,
        secs: u64,
        log: PathBuf,
    },
}

/// A located, version-checked CRIU.
#[derive(Debug, Clone)]
pub struct Criu {
    pub bin: PathBuf,
    pub version: Version,
    pub timeout: Duration,
}

/// Something to do in the CRIU child between fork and exec (join a cgroup, enter a private mount
/// namespace). Must be async-signal-safe: no allocation, only raw system calls.
pub type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;

/// One CRIU action.
pub struct Invocation {
    /// `dump`, `pre-dump`, `restore`, `page-server`, `lazy-pages`.
    pub action: &'static str,
    /// Every argument after the action.
    pub args: Vec<OsString>,
    /// The log file CRIU writes (`-o`, absolute); read back on failure.
    pub log: PathBuf,
    pub pre_exec: Option<PreExec>,
}

/// What a finished action took.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub elapsed: Duration,
}

impl Criu {
    /// Find CRIU (`explicit`, else `criu` on PATH, else /usr/sbin/criu, where Debian puts it
    /// and where a PATH without sbin misses it) and check its version.
    pub fn locate(explicit: Option<&Path>) -> Result<Criu, CriuError> {
        let bin = match explicit {
            Some(p) if p.components().count() > 1 => p.to_path_buf(),
            Some(p) => find_on_path(p).ok_or(CriuError::NotFound(p.display().to_string()))?,
            None => find_on_path(Path::new("criu"))
                .or_else(|| {
                    let p = PathBuf::from("/usr/sbin/criu");
                    p.exists().then_some(p)
                })
                .ok_or(CriuError::NotFound("criu".into()))?,
        };
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => CriuError::NotFound(bin.display().to_string()),
                _ => CriuError::Spawn {
                    path: bin.clone(),
                    source,
                },
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = Version::parse(&text).ok_or(CriuError::Version {
            path: bin.clone(),
            output: text.trim().to_string(),
        })?;
        if version < MIN_VERSION {
            return Err(CriuError::TooOld {
                found: version,
                need: MIN_VERSION,
            });
        }
        let timeout = std::env::var("RCRUN_CRIU_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(Criu {
            bin,
            version,
            timeout,
        })
    }

    /// Start an action without waiting (a page server, a lazy-pages daemon).
    pub fn spawn(&self, inv: Invocation) -> Result<Child, CriuError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(inv.action).args(&inv.args).arg("-o").arg(&inv.log);
        if let Some(f) = inv.pre_exec {
            // SAFETY: the callers' closures only make raw system calls (see `PreExec`).
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, f);
            }
        }
        tracing::debug!(bin = %self.bin.display(), action = inv.action, args = ?inv.args, "criu");
        cmd.spawn().map_err(|source| CriuError::Spawn {
            path: self.bin.clone(),
            source,
        })
    }

    /// Run an action to its end: `Ok` on exit status 0, else the diagnosed failure.
    pub fn run(&self, inv: Invocation) -> Result<Finished, CriuError> {
        let _span = tracing::info_span!("criu", action = inv.action).entered();
        let action = inv.action;
        let log = inv.log.clone();
        let t0 = Instant::now();
        let mut child = self.spawn(inv)?;
        let status = self.wait(&mut child, action, &log)?;
        let elapsed = t0.elapsed();
        if status.success() {
            tracing::debug!(?elapsed, "criu {action} done");
            return Ok(Finished { elapsed });
        }
        Err(self.diagnose(action, &log, status))
    }

    /// Wait for a started action, killing it at the deadline.
    pub fn wait(
        &self,
        child: &mut Child,
        action: &str,
        log: &Path,
    ) -> Result<ExitStatus, CriuError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(source) => {
                    return Err(CriuError::Spawn {
                        path: self.bin.clone(),
                        source,
                    })
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CriuError::Timeout {
                    action: action.to_string(),
                    secs: self.timeout.as_secs(),
                    log: log.to_path_buf(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The error for a failed action, from its log.
    pub fn diagnose(&self, action: &str, log: &Path, status: ExitStatus) -> CriuError {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(reason) = crate::log::kernel_too_new(&text) {
            return CriuError::TooOldForKernel {
                version: self.version,
                kernel: kernel_release(),
                reason,
                log: log.to_path_buf(),
            };
        }
        let fatal = crate::log::fatal_line(&text).unwrap_or_else(|| {
            if text.is_empty() {
                format!("{status}, and it wrote no log")
            } else {
                format!("{status}, with no error in its log")
            }
        });
        CriuError::Failed {
            action: action.to_string(),
            fatal,
            log: log.to_path_buf(),
        }
    }
}

fn find_on_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse("Version: 3.17.1\n"), Some(Version(3, 17, 1)));
        assert_eq!(
            Version::parse("Version: 4.0\nGitID: v4.0\n"),
            Some(Version(4, 0, 0))
        );
        assert_eq!(Version::parse("criu"), None);
        assert!(Version(3, 17, 1) > MIN_VERSION);
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let e = Criu::locate(Some(Path::new("/nonexistent/criu")));
        assert!(matches!(e, Err(CriuError::NotFound(_))), "{e:?}");
        let e = Criu::locate(Some(Path::new("no-such-criu-binary")));
        match e {
            Err(e @ CriuError::NotFound(_)) => {
                assert!(e.to_string().contains("apt-get install criu"), "{e}")
            }
            other => unreachable!("{other:?}"),
        }
    }
}
