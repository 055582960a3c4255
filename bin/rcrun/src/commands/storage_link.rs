//! The link from a bundle made by `rcrun bundle create` to its rootfs in the layer store.
//!
//! The bundle's config.json carries annotations naming the store and the store container whose
//! overlay is mounted at the bundle's rootfs; the runtime copies annotations into the state, so
//! `delete` (and `run`, which deletes on exit) can find them. The release happens here, in the
//! CLI, after `rcrun_runtime::container::delete` returned: the runtime library knows nothing of
//! the store, and a container that failed to delete keeps its rootfs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rcrun_runtime::container::query;
use rcrun_storage_overlay2::mount::{self, MountError};
use rcrun_storage_overlay2::store::{Store, StoreError};

/// The store container whose overlay is the bundle's rootfs.
pub const ANN_CONTAINER: &str = "org.rcrun.storage.container";
/// The store directory (canonical).
pub const ANN_ROOT: &str = "org.rcrun.storage.root";
/// The image id the bundle was made from (informational).
pub const ANN_IMAGE: &str = "org.rcrun.storage.image";
/// `"true"`: on delete, unmount but keep the writable layer.
pub const ANN_KEEP_UPPER: &str = "org.rcrun.storage.keep-upper";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub store: PathBuf,
    pub container: String,
    pub keep_upper: bool,
}

impl Link {
    /// The link named by a set of annotations, if they name one.
    pub fn from_annotations<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Link> {
        let container = get(ANN_CONTAINER)?.to_string();
        let store = PathBuf::from(get(ANN_ROOT)?);
        Some(Link {
            store,
            container,
            keep_upper: get(ANN_KEEP_UPPER) == Some("true"),
        })
    }

    fn from_map(m: &HashMap<String, String>) -> Option<Link> {
        Link::from_annotations(|k| m.get(k).map(String::as_str))
    }

    /// The link in a bundle's config.json and the rootfs path it names. `None` for a bundle
    /// without the annotations (every bundle not made by `bundle create`): the file is only
    /// parsed when it mentions the annotation, so ordinary creates pay one read.
    pub fn from_bundle(bundle: &Path) -> Result<Option<(Link, PathBuf)>> {
        let path = bundle.join("config.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            // The runtime reports a missing or unreadable config in its own words.
            Err(_) => return Ok(None),
        };
        if !contains(&data, ANN_CONTAINER.as_bytes()) {
            return Ok(None);
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
            return Ok(None);
        };
        let ann = &v["annotations"];
        let Some(link) = Link::from_annotations(|k| ann.get(k).and_then(|x| x.as_str())) else {
            return Ok(None);
        };
        let root = v["root"]["path"].as_str().unwrap_or("rootfs");
        Ok(Some((link, bundle.join(root))))
    }

    /// The store, which must exist: opening a missing one would create an empty store.
    pub fn open_store(&self) -> Result<Store> {
        if !self.store.is_dir() {
            bail!(
                "store {} (annotation {ANN_ROOT}) does not exist",
                self.store.display()
            );
        }
        Ok(Store::open(&self.store)?)
    }

    /// Unmount the rootfs and delete the store container with its upper (or keep the upper,
    /// as annotated). Already released is fine: `bundle rm` may have come first.
    pub fn release(&self, keep_upper: bool) -> Result<()> {
        let _span = tracing::info_span!("release_rootfs", container = %self.container).entered();
        let store = self.open_store()?;
        match mount::teardown(&store, &self.container, keep_upper) {
            Ok(()) => Ok(()),
            Err(MountError::Store(StoreError::ContainerNotFound(_))) => Ok(()),
            Err(e) => Err(anyhow!(
                "release rootfs (store container {} in {}): {e}",
                self.container,
                self.store.display()
            )),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The link of container `id` under `root`, read before it is deleted (the state goes with it).
pub fn of_container(root: &Path, id: &str) -> Option<Link> {
    rcrun_runtime::state::validate_id(id).ok()?;
    let st = rcrun_runtime::state::load_state(&root.join(id), id).ok()?;
    Link::from_map(&st.annotations)
}

/// Other containers under `root` (any status) whose rootfs is the same store container.
pub fn other_users(root: &Path, link: &Link, except: &str) -> Vec<String> {
    query::list(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.state.id != except && Link::from_map(&e.state.annotations).as_ref() == Some(link)
        })
        .map(|e| e.state.id)
        .collect()
}

/// After container `id` was deleted: release its rootfs unless another container of the same
/// bundle still exists (its mount namespace holds the overlay; the last delete releases it).
pub fn release_after_delete(root: &Path, id: &str, link: &Link) -> Result<()> {
    let others = other_users(root, link, id);
    if !others.is_empty() {
        tracing::warn!(container = id, others = ?others,
            "rootfs kept: other containers of the same bundle still exist");
        return Ok(());
    }
    link.release(link.keep_upper)
        .map_err(|e| anyhow!("container {id} deleted, but {e}"))
}

/// Before `create`/`run` of a bundle made by `bundle create`: its rootfs must still be mounted,
/// or the container would start on an empty directory and fail with a puzzling exec error.
pub fn check_bundle(bundle: &Path) -> Result<()> {
    let Some((link, rootfs)) = Link::from_bundle(bundle)? else {
        return Ok(());
    };
    if mount::is_mounted(&rootfs).unwrap_or(true) {
        return Ok(());
    }
    let kept = link
        .open_store()
        .ok()
        .is_some_and(|s| s.container(&link.container).is_ok());
    if kept {
        bail!(
            "bundle {}: rootfs {} is not mounted (store container {} was kept when its container \
             was deleted): run `rcrun bundle mount {}` first",
            bundle.display(),
            rootfs.display(),
            link.container,
            bundle.display()
        );
    }
    bail!(
        "bundle {}: rootfs {} is not mounted: its store container {} was released when its \
         container was deleted; make the bundle again with `rcrun bundle create`",
        bundle.display(),
        rootfs.display(),
        link.container
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn annotations_make_a_link() {
        let mut m = HashMap::new();
        assert_eq!(Link::from_map(&m), None);
        m.insert(ANN_CONTAINER.to_string(), "c1".to_string());
        assert_eq!(Link::from_map(&m), None, "the store is needed too");
        m.insert(ANN_ROOT.to_string(), "/s".to_string());
        m.insert(ANN_KEEP_UPPER.to_string(), "true".to_string());
        assert_eq!(
            Link::from_map(&m),
            Some(Link {
                store: PathBuf::from("/s"),
                container: "c1".into(),
                keep_upper: true
            })
        );
    }

    #[test]
    fn substring_search() {
        assert!(contains(
            b"{\"org.rcrun.storage.container\":1}",
            ANN_CONTAINER.as_bytes()
        ));
        assert!(!contains(b"{}", ANN_CONTAINER.as_bytes()));
    }
}
