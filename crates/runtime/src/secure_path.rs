//! Resolve a path inside the container's rootfs the way the container would see it: symlinks are
//! followed but scoped to the rootfs, and `..` stops at its top, so a hostile image cannot point a
//! mount destination at the host (the filepath-securejoin rule runc uses).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecurePathError {
    #[error("resolve {path} in {root}: too many levels of symbolic links")]
    Loop { root: PathBuf, path: PathBuf },
    #[error("resolve {path} in {root}: {source}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
}

const MAX_LINKS: usize = 255;

/// `root` joined with `unsafe_path`, every symlink resolved as if `root` were `/`.
pub fn join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, SecurePathError> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(SecurePathError::Loop {
                        root: root.into(),
                        path: unsafe_path.into(),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|source| SecurePathError::Io {
                        root: root.into(),
                        path: unsafe_path.into(),
                        source,
                    })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() -> Result<(), Box<dyn std::error::Error>> {
        let root = std::env::temp_dir().join(format!("rcrun-sp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b"))?;
        symlink("/etc", root.join("abs"))?;
        symlink("../../..", root.join("a/b/up"))?;
        symlink("b", root.join("a/rel"))?;
        assert_eq!(
            join(&root, Path::new("/abs/passwd"))?,
            root.join("etc/passwd")
        );
        assert_eq!(join(&root, Path::new("a/b/up/x"))?, root.join("x"));
        assert_eq!(join(&root, Path::new("/a/rel/c"))?, root.join("a/b/c"));
        assert_eq!(join(&root, Path::new("/../../etc"))?, root.join("etc"));
        symlink("loop", root.join("loop"))?;
        assert!(join(&root, Path::new("/loop")).is_err());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
