//! `rcrun bundle create|rm|mount`: an OCI bundle from a stored image. `create` makes a store
//! container (its own upper over the image's shared layers), mounts its overlay at
//! `DIR/rootfs`, and writes `DIR/config.json`: rcrun's default spec with the image's process
//! (Entrypoint/Cmd, Env, WorkingDir, User resolved in the image's /etc/passwd) and annotations
//! linking the bundle to the store container, which `delete` uses to release it (see
//! `storage_link`).
//!
//! A failed `create` leaves nothing: the mount, the store container and the directories it made
//! are undone in reverse order ([`Undo`]).

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rcrun_runtime::secure_path::Root;
use rcrun_storage_overlay2::image::ProcessSpec;
use rcrun_storage_overlay2::mount::{self, MountOptions};
use rcrun_storage_overlay2::store::Store;
use serde_json::{json, Value};

use super::image::open_store;
use super::image_user;
use super::storage_link::{self, Link, ANN_CONTAINER, ANN_IMAGE, ANN_KEEP_UPPER, ANN_ROOT};
use crate::cli::{BundleArgs, BundleCommand, BundleCreateArgs, Cli};

/// The kernel's limit (`__NEW_UTS_LEN`).
const HOSTNAME_MAX: usize = 64;

pub fn run(cli: &Cli, a: &BundleArgs) -> Result<()> {
    match &a.command {
        BundleCommand::Create(c) => create(&open_store(&a.store)?, c),
        BundleCommand::Rm { dir } => rm(cli, dir),
        BundleCommand::Mount { dir } => mount_again(dir),
    }
}

/// What a failing `create` must take back, newest first.
struct Undo<'s> {
    store: &'s Store,
    dir: PathBuf,
    made_dir: bool,
    made_rootfs: bool,
    container: Option<String>,
    mounted: bool,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(id) = &self.container {
            if self.mounted {
                if let Err(e) = mount::unmount_container(self.store, id) {
                    tracing::warn!(container = %id, error = %e, "undo: unmount");
                }
            }
            if let Err(e) = self.store.remove_container(id) {
                tracing::warn!(container = %id, error = %e, "undo: remove store container");
            }
        }
        let _ = std::fs::remove_file(self.dir.join(".config.json.tmp"));
        if self.made_rootfs {
            let _ = std::fs::remove_dir(self.dir.join("rootfs"));
        }
        if self.made_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A fresh store container id: 32 hex digits (the first 12 are the hostname, as docker's).
fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom(2) into a buffer we own, of its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if usize::try_from(n).ok() != Some(b.len()) {
        bail!(
            "getrandom for a container id: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The bundle directory: made, or an existing empty one. Returns whether it was made.
fn prepare_dir(dir: &Path) -> Result<bool> {
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| anyhow!("bundle directory {}: {e}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "bundle directory {} is not empty: use a new or an empty directory",
                    dir.display()
                );
            }
            Ok(false)
        }
        Err(e) => Err(anyhow!("create bundle directory {}: {e}", dir.display())),
    }
}

/// `KEY=value` entries: replace the key where it is, else append (moby's
/// ReplaceOrAppendEnvValues).
fn replace_or_append(env: &mut Vec<String>, kv: &str) {
    let key = kv.split('=').next().unwrap_or(kv);
    match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
        Some(e) => *e = kv.to_string(),
        None => env.push(kv.to_string()),
    }
}

/// Docker's environment: PATH (the image's, or the default), HOSTNAME, then the image's Env.
fn container_env(proc: &ProcessSpec, hostname: &str) -> Vec<String> {
    let mut env = vec![
        rcrun_storage_overlay2::image::DEFAULT_PATH_ENV.to_string(),
        format!("HOSTNAME={hostname}"),
    ];
    for kv in &proc.env {
        replace_or_append(&mut env, kv);
    }
    env
}

fn create(store: &Store, a: &BundleCreateArgs) -> Result<()> {
    let _span =
        tracing::info_span!("bundle_create", image = %a.image, dir = %a.dir.display()).entered();
    // Everything that can be refused is checked before anything is made.
    let image = store.image(&a.image)?;
    let entrypoint = a.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let proc = image
        .config
        .to_process_with(entrypoint.as_deref(), Some(&a.args))
        .map_err(|e| anyhow!("image {}: {e}", a.image))?;
    let id = match &a.name {
        Some(n) => n.clone(),
        None => random_id()?,
    };
    store.container_paths(&id)?;
    if store.container(&id).is_ok() {
        bail!(
            "--name {id}: a store container of that name exists in {}",
            store.root().display()
        );
    }
    let hostname: String = if a.name.is_some() {
        id.chars().take(HOSTNAME_MAX - 1).collect()
    } else {
        id.chars().take(12).collect()
    };
    let dir = std::path::absolute(&a.dir)
        .map_err(|e| anyhow!("bundle directory {}: {e}", a.dir.display()))?;

    let mut undo = Undo {
        store,
        dir: dir.clone(),
        made_dir: prepare_dir(&dir)?,
        made_rootfs: false,
        container: None,
        mounted: false,
        armed: true,
    };
    let rootfs = dir.join("rootfs");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&rootfs)
        .map_err(|e| anyhow!("create {}: {e}", rootfs.display()))?;
    undo.made_rootfs = true;

    store.create_container(&id, image.id.as_str())?;
    undo.container = Some(id.clone());
    let mounted = mount::mount(
        store,
        &id,
        &MountOptions {
            target: Some(rootfs.clone()),
            ..MountOptions::default()
        },
    )?;
    undo.mounted = true;
    tracing::debug!(layers = mounted.layers, method = ?mounted.method, "rootfs mounted");

    let user = image_user::resolve_in(&rootfs, &proc.user)?;
    // Docker creates a missing WorkingDir (in the container's own layer).
    if proc.cwd != "/" {
        Root::open(&rootfs)?
            .mkdir_all(Path::new(&proc.cwd))
            .map_err(|e| anyhow!("image config WorkingDir {:?}: {e}", proc.cwd))?;
    }

    let ids = a.rootless.then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let mut spec = rcrun_runtime::default_spec::default_spec(ids);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(proc.args);
    spec["process"]["env"] = json!(container_env(&proc, &hostname));
    spec["process"]["cwd"] = json!(proc.cwd);
    spec["process"]["user"] = json!({
        "uid": user.uid,
        "gid": user.gid,
        "additionalGids": user.additional_gids,
    });
    // The container writes into its own upper layer: the point of the overlay.
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    spec["hostname"] = json!(hostname);
    let mut ann = serde_json::Map::new();
    ann.insert(ANN_CONTAINER.into(), json!(id));
    ann.insert(ANN_ROOT.into(), json!(store.root().to_string_lossy()));
    ann.insert(ANN_IMAGE.into(), json!(image.id.to_string()));
    if a.keep_upper {
        ann.insert(ANN_KEEP_UPPER.into(), json!("true"));
    }
    spec["annotations"] = Value::Object(ann);
    write_config(&dir, &spec)?;

    undo.armed = false;
    tracing::info!(container = %id, image = %image.id, "bundle created");
    writeln!(std::io::stdout().lock(), "{id}")?;
    Ok(())
}

/// config.json through a temp file and rename: a reader never sees half a file.
fn write_config(dir: &Path, spec: &Value) -> Result<()> {
    let tmp = dir.join(".config.json.tmp");
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(spec)? + "\n";
    std::fs::write(&tmp, text).map_err(|e| anyhow!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| anyhow!("write {}: {e}", path.display()))
}

fn bundle_link(dir: &Path) -> Result<(Link, PathBuf)> {
    let cfg = dir.join("config.json");
    if !cfg.is_file() {
        bail!("bundle {}: no config.json", dir.display());
    }
    Link::from_bundle(dir)?.ok_or_else(|| {
        anyhow!(
            "bundle {}: config.json has no {ANN_CONTAINER} annotation (not made by `rcrun bundle create`)",
            dir.display()
        )
    })
}

/// Unmount, delete the store container (upper included), config.json and the empty
/// directories; refused while a container of this bundle exists.
fn rm(cli: &Cli, dir: &Path) -> Result<()> {
    let _span = tracing::info_span!("bundle_rm", dir = %dir.display()).entered();
    let (link, rootfs) = bundle_link(dir)?;
    let users = storage_link::other_users(&cli.root, &link, "");
    if !users.is_empty() {
        bail!(
            "bundle {} is used by container(s) {users:?} (under {}): delete them first",
            dir.display(),
            cli.root.display()
        );
    }
    link.release(false)?;
    let cfg = dir.join("config.json");
    std::fs::remove_file(&cfg).map_err(|e| anyhow!("remove {}: {e}", cfg.display()))?;
    // Only directories left empty: never a tree of the user's.
    if !mount::is_mounted(&rootfs).unwrap_or(true) {
        let _ = std::fs::remove_dir(&rootfs);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Mount a kept store container again at the bundle's rootfs.
fn mount_again(dir: &Path) -> Result<()> {
    let (link, rootfs) = bundle_link(dir)?;
    let store = link.open_store()?;
    store.container(&link.container)?;
    mount::mount(
        &store,
        &link.container,
        &MountOptions {
            target: Some(rootfs),
            ..MountOptions::default()
        },
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_like_docker() {
        let p = ProcessSpec {
            args: vec!["sh".into()],
            env: vec![
                "PATH=/custom".into(),
                "FOO=bar".into(),
                "HOSTNAME=img".into(),
            ],
            cwd: "/".into(),
            user: String::new(),
        };
        assert_eq!(
            container_env(&p, "h1"),
            vec!["PATH=/custom", "HOSTNAME=img", "FOO=bar"]
        );
    }

    #[test]
    fn ids_are_hex() {
        let a = random_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_id().unwrap());
    }
}
