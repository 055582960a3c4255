//! What rcrun keeps next to CRIU's images: runc's `descriptors.json` (where the container's
//! stdio pointed, so restore can hand over new pipes) and `rcrun-checkpoint.json` (the mounts
//! that were left to the host, and where the container came from).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// runc's name: a JSON array of the targets of fds 0, 1, 2 (`/dev/null`, `pipe:[123]`, ...).
pub const DESCRIPTORS: &str = "descriptors.json";
pub const META: &str = "rcrun-checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("checkpoint image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint image {path}: {msg}")]
    Corrupt { path: PathBuf, msg: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImagesError + '_ {
    move |source| ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a mount is external (not dumped by CRIU), which tells restore what to put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A bind mount of the spec: restored from the (new) spec's source for the same destination.
    Bind,
    /// A cgroup hierarchy (a bind of the container's cgroup, or a cgroup2 mount): restored as a
    /// bind of the new container's cgroup.
    Cgroup,
    /// A masked file: /dev/null again.
    Masked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMount {
    /// Mount point inside the container.
    pub dest: String,
    pub kind: MountKind,
    /// The host source at checkpoint time (the fallback when the new spec has none).
    pub source: String,
    /// For [`MountKind::Cgroup`] on cgroup v1: the hierarchy's controllers (`cpu,cpuacct`).
    #[serde(default)]
    pub controllers: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub external_mounts: Vec<ExternalMount>,
    /// The container had a terminal (restore then needs `--shell-job`-like handling).
    #[serde(default)]
    pub terminal: bool,
    /// Files the container's processes had open on a mount outside the container (the host's
    /// /dev/null as stdio, a caller's log file), dumped with `--external file[mnt_id:inode]`:
    /// restore hands over a descriptor of its own in their place.
    #[serde(default)]
    pub external_files: Vec<ExternalFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalFile {
    /// CRIU's key, `file[mnt_id:inode]` (hex).
    pub key: String,
    /// The path it had (reopened on restore when it was not stdio).
    pub path: String,
    /// The init's fd 0, 1 or 2 it was: restore then gives its own.
    pub stdio: Option<i32>,
}

/// Record where `pid`'s fds 0-2 point.
pub fn write_descriptors(dir: &Path, pid: i32) -> Result<Vec<String>, ImagesError> {
    let fds: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    write_json(&dir.join(DESCRIPTORS), &fds)?;
    Ok(fds)
}

pub fn read_descriptors(dir: &Path) -> Result<Vec<String>, ImagesError> {
    read_json(&dir.join(DESCRIPTORS))
}

pub fn write_meta(dir: &Path, meta: &Meta) -> Result<(), ImagesError> {
    write_json(&dir.join(META), meta)
}

pub fn read_meta(dir: &Path) -> Result<Meta, ImagesError> {
    read_json(&dir.join(META))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), ImagesError> {
    let data = serde_json::to_vec(v).map_err(|e| ImagesError::Corrupt {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    std::fs::write(path, data).map_err(io(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ImagesError> {
    let data = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&data).map_err(|e| ImagesError::Corrupt {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Whether a descriptor needs `--inherit-fd` on restore: CRIU cannot reopen a pipe or socket
/// whose other end was outside the container, so it takes ours instead.
pub fn needs_inherit(desc: &str) -> bool {
    desc.starts_with("pipe:") || desc.starts_with("socket:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("rcrun-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let fds = write_descriptors(&dir, std::process::id() as i32)?;
        assert_eq!(read_descriptors(&dir)?, fds);
        let m = Meta {
            id: "a".into(),
            external_mounts: vec![ExternalMount {
                dest: "/data".into(),
                kind: MountKind::Bind,
                source: "/srv/data".into(),
                controllers: String::new(),
            }],
            ..Meta::default()
        };
        write_meta(&dir, &m)?;
        assert_eq!(read_meta(&dir)?, m);
        std::fs::remove_dir_all(&dir)?;
        assert!(needs_inherit("pipe:[12]") && !needs_inherit("/dev/null"));
        Ok(())
    }
}
