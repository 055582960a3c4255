//! A `criu page-server`: receives the memory pages of one dump over TCP and writes them into an
//! images directory (on the destination host in a real migration).
//!
//! Started with `--daemon`: CRIU returns once it listens, so the dump that follows cannot race
//! it; the daemon serves one dump and exits.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::criu::{Criu, CriuError, Invocation};

#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    #[error(transparent)]
    Criu(#[from] CriuError),
    #[error("page server for {dir}: no pid in {pidfile}")]
    NoPid { dir: PathBuf, pidfile: PathBuf },
    #[error("page server for {dir} (pid {pid}) still running after {secs} s")]
    Stuck { dir: PathBuf, pid: i32, secs: u64 },
}

pub struct PageServer {
    pub pid: i32,
    pub dir: PathBuf,
    pub port: u16,
}

impl PageServer {
    /// Listen on `address:port`, writing into `dir` (which may name a `parent` for a chain).
    pub fn start(
        criu: &Criu,
        dir: &Path,
        address: &str,
        port: u16,
        parent: Option<&Path>,
    ) -> Result<PageServer, PageServerError> {
        let pidfile = dir.join("page-server.pid");
        let mut args: Vec<OsString> = vec![
            "--images-dir".into(),
            dir.into(),
            "--address".into(),
            address.into(),
            "--port".into(),
            port.to_string().into(),
            "--daemon".into(),
            "--pidfile".into(),
            pidfile.clone().into(),
            "-v4".into(),
        ];
        if let Some(p) = parent {
            args.push("--prev-images-dir".into());
            args.push(p.into());
        }
        criu.run(Invocation {
            action: "page-server",
            args,
            log: dir.join("page-server.log"),
            pre_exec: None,
        })?;
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(PageServerError::NoPid {
                dir: dir.to_path_buf(),
                pidfile,
            })?;
        Ok(PageServer {
            pid,
            dir: dir.to_path_buf(),
            port,
        })
    }

    /// Wait for the daemon to finish writing (it exits when the dump disconnects).
    pub fn wait(&self, timeout: Duration) -> Result<(), PageServerError> {
        let deadline = Instant::now() + timeout;
        while Path::new(&format!("/proc/{}", self.pid)).exists() {
            let zombie = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true);
            if zombie {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PageServerError::Stuck {
                    dir: self.dir.clone(),
                    pid: self.pid,
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        // A page server whose dump failed would wait for a connection forever.
        if Path::new(&format!("/proc/{}", self.pid)).exists() {
            // SAFETY: kill(2) of the daemon we started (its pid from its own pid file).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}
