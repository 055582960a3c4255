//! `checkpoint`: dump a running container with CRIU (runc's flags), or pre-dump it.
//!
//! Next to CRIU's images rcrun writes runc's `descriptors.json` and `rcrun-checkpoint.json`,
//! which lists the mounts CRIU must leave to the host (spec bind mounts, the cgroup mounts,
//! masked files): restore maps each to its new source. A dump that does not leave the container
//! running destroys it afterwards (its processes are gone), as runc does, so the id can be
//! restored again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcrun_checkpoint::images::{self, ExternalFile, ExternalMount, Meta, MountKind};
use rcrun_checkpoint::opts::{self, Common, DumpOptions, ExtMount, PageServerAddr};
use rcrun_checkpoint::stats::{self, DumpStats};
use rcrun_checkpoint::{Criu, CriuError};

use super::{delete, Error};
use crate::cgroups::Cgroup;
use crate::state::{StateDir, Status};

/// Errors of checkpoint and restore.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Criu(#[from] CriuError),
    #[error(transparent)]
    Opts(#[from] opts::OptsError),
    #[error(transparent)]
    Images(#[from] images::ImagesError),
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    #[error("container {id} is {status}: only a running or paused container can be checkpointed")]
    NotRunning { id: String, status: Status },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("restore: mount point {dest} in the rootfs: {source}")]
    MountPoint {
        dest: PathBuf,
        source: crate::secure_path::SecurePathError,
    },
    #[error("criu restore: no pid in {path} after a successful restore")]
    NoPid { path: PathBuf },
}

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub struct CheckpointOptions<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    /// `--criu`: the binary (default: `criu` on PATH).
    pub criu: Option<&'a Path>,
    pub image_path: PathBuf,
    /// Where CRIU writes its log and temporary files (default: the image directory).
    pub work_path: Option<PathBuf>,
    /// The previous pre-dump, relative to `image_path` (CRIU's `--prev-images-dir`).
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    pub pre_dump: bool,
    /// Track dirty memory in a final dump too (a pre-copy migration's last round).
    pub track_mem: bool,
    pub tcp_skip_in_flight: bool,
    pub link_remap: bool,
    pub auto_dedup: bool,
    pub page_server: Option<PageServerAddr>,
    pub common: Common,
}

/// What a dump wrote and took.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    pub image_dir: PathBuf,
    pub stats: Option<DumpStats>,
    /// Bytes of memory pages in the image directory (not the parent's).
    pub memory_bytes: u64,
    /// Bytes of every file in the image directory.
    pub image_bytes: u64,
    pub elapsed: Duration,
}

pub fn checkpoint(opts: &CheckpointOptions) -> Result<Checkpointed, Error> {
    let _span = tracing::info_span!("checkpoint", id = opts.id, pre_dump = opts.pre_dump).entered();
    let dir = StateDir::open(opts.root, opts.id)?;
    let state = dir.load()?;
    let status = state.status(&dir.dir);
    // Paused too, as runc: containerd's shim pauses a task before a `--leave-running` dump
    // (`ctr task checkpoint`), and CRIU leaves an already frozen cgroup frozen.
    if !matches!(status, Status::Running | Status::Paused) {
        return Err(CheckpointError::NotRunning {
            id: opts.id.to_string(),
            status,
        }
        .into());
    }
    let criu = Criu::locate(opts.criu).map_err(CheckpointError::from)?;
    let image_dir = crate::spec::absolute(&opts.image_path);
    std::fs::create_dir_all(&image_dir).map_err(io("create image directory", &image_dir))?;
    let work_dir = opts
        .work_path
        .as_deref()
        .map(crate::spec::absolute)
        .unwrap_or_else(|| image_dir.clone());
    std::fs::create_dir_all(&work_dir).map_err(io("create work directory", &work_dir))?;

    let spec = crate::spec::read(&state.bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && !opts.common.shell_job {
        return Err(CheckpointError::Unsupported(format!(
            "container {}: process.terminal is true: checkpointing a container with a terminal needs --shell-job",
            opts.id
        ))
        .into());
    }
    let mounts = mountinfo(state.pid)?;
    let external = external_mounts(&mounts, &spec);
    let pids = state
        .cgroup
        .as_deref()
        .and_then(|c| Cgroup::open(c, state.systemd_cgroup).ok())
        .and_then(|cg| cg.pids().ok())
        .map(|p| p.into_iter().map(|p| p.as_raw()).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![state.pid]);
    let external_files = external_files(state.pid, &pids, &mounts);
    images::write_descriptors(&image_dir, state.pid).map_err(CheckpointError::from)?;
    images::write_meta(
        &image_dir,
        &Meta {
            id: opts.id.to_string(),
            bundle: state.bundle.clone(),
            rootfs: state.rootfs.clone(),
            external_mounts: external.clone(),
            terminal,
            external_files: external_files.clone(),
        },
    )
    .map_err(CheckpointError::from)?;

    let freeze_cgroup = state
        .cgroup
        .as_deref()
        .and_then(|c| Cgroup::open(c, state.systemd_cgroup).ok())
        .and_then(|cg| {
            cg.controller_dir("freezer")
                .or_else(|| cg.controller_dir(""))
                .map(Path::to_path_buf)
        });
    let dump = DumpOptions {
        image_dir: image_dir.clone(),
        work_dir: work_dir.clone(),
        parent: opts.parent_path.clone(),
        leave_running: opts.leave_running,
        pre_dump: opts.pre_dump,
        track_mem: opts.track_mem,
        tcp_skip_in_flight: opts.tcp_skip_in_flight,
        link_remap: opts.link_remap,
        auto_dedup: opts.auto_dedup,
        page_server: opts.page_server.clone(),
        ext_mounts: external
            .iter()
            .map(|m| ExtMount {
                key: m.dest.clone(),
                value: m.dest.clone(),
            })
            .collect(),
        external: external_files.into_iter().map(|f| f.key).collect(),
        freeze_cgroup,
        common: opts.common.clone(),
    };
    let action = if opts.pre_dump { "pre-dump" } else { "dump" };
    let args = opts::dump_args(state.pid, &dump).map_err(CheckpointError::from)?;
    let t0 = Instant::now();
    criu.run(rcrun_checkpoint::criu::Invocation {
        action,
        args,
        log: work_dir.join(format!("{action}.log")),
        pre_exec: None,
    })
    .map_err(CheckpointError::from)?;
    let elapsed = t0.elapsed();
    let (memory_bytes, image_bytes) = stats::image_bytes(&image_dir);
    let dump_stats = stats::dump_stats(&image_dir).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    });
    if !opts.pre_dump && !opts.leave_running {
        // CRIU killed the tasks; what is left is the cgroup and the state.
        super::wait_gone(state.pid, state.pid_start, Duration::from_secs(10));
        delete::destroy(dir, &state)?;
    }
    Ok(Checkpointed {
        image_dir,
        stats: dump_stats,
        memory_bytes,
        image_bytes,
        elapsed,
    })
}

/// One line of /proc/PID/mountinfo: mount point, root of the mount in its filesystem, fs type,
/// super options.
struct MountLine {
    id: u64,
    point: String,
    root: String,
    fstype: String,
    super_opts: String,
}

fn mountinfo(pid: i32) -> Result<Vec<MountLine>, CheckpointError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                fstype: r.first()?.to_string(),
                super_opts: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of the running container that CRIU must not dump: spec bind mounts, cgroup
/// hierarchies, masked files, and devices bound from the host (in a user namespace).
fn external_mounts(mountinfo: &[MountLine], spec: &oci_spec::runtime::Spec) -> Vec<ExternalMount> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    let cgroup_dests: Vec<String> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("cgroup"))
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    let mut out: Vec<ExternalMount> = Vec::new();
    for l in mountinfo {
        let bind = mounts.iter().find(|m| {
            m.destination().to_string_lossy() == l.point
                && (m.typ().as_deref() == Some("bind")
                    || m.options()
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind")))
        });
        let ext = if let Some(m) = bind {
            Some((
                MountKind::Bind,
                m.source()
                    .as_ref()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                String::new(),
            ))
        } else if (l.fstype == "cgroup" || l.fstype == "cgroup2")
            && cgroup_dests
                .iter()
                .any(|d| l.point == *d || l.point.starts_with(&format!("{d}/")))
        {
            let ctrls = if l.fstype == "cgroup" {
                l.super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                String::new()
            };
            Some((MountKind::Cgroup, l.root.clone(), ctrls))
        } else if masked.contains(&l.point) && l.fstype != "tmpfs" {
            Some((MountKind::Masked, "/dev/null".to_string(), String::new()))
        } else if l.fstype == "devtmpfs" && l.point.starts_with("/dev/") && l.root != "/" {
            Some((MountKind::Bind, format!("/dev{}", l.root), String::new()))
        } else {
            None
        };
        if let Some((kind, source, controllers)) = ext {
            // A mount point covered twice (a bind over a bind) needs one entry.
            out.retain(|m| m.dest != l.point);
            out.push(ExternalMount {
                dest: l.point.clone(),
                kind,
                source,
                controllers,
            });
        }
    }
    out
}

/// Files the container's processes have open on a mount the container does not have (the
/// host's /dev/null as stdio, a caller's log file, and their copies a shell keeps on fd 10):
/// CRIU cannot dump those by path, so they become external files (`file[mnt_id:inode]`) that
/// restore replaces with its own stdio or a reopened file, as runc does for stdio pipes.
fn external_files(init: i32, pids: &[i32], mountinfo: &[MountLine]) -> Vec<ExternalFile> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<ExternalFile> = Vec::new();
    for &pid in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
                continue;
            };
            let Some(mnt) = info
                .lines()
                .find_map(|l| l.strip_prefix("mnt_id:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            if mountinfo.iter().any(|m| m.id == mnt) {
                continue;
            }
            let Ok(md) = std::fs::metadata(e.path()) else {
                continue;
            };
            // Pipes and sockets live on internal mounts: CRIU handles those (and restore hands
            // over stdio pipes from descriptors.json).
            let path = std::fs::read_link(e.path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !path.starts_with('/') {
                continue;
            }
            let key = format!("file[{mnt:x}:{:x}]", md.ino());
            let stdio = (pid == init && fd < 3).then_some(fd);
            match out.iter_mut().find(|f| f.key == key) {
                Some(f) => f.stdio = f.stdio.or(stdio),
                None => out.push(ExternalFile { key, path, stdio }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }
}
