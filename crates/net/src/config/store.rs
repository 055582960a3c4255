//! The network store: `<root>/networks/<name>.json` plus the IPAM and pool state directories.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{info, info_span};

use super::{state, ConfigError, Mode, Network, StateError};

/// Where the store lives unless the caller says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/rcrun/net";

/// A handle on a store directory. Cheap to clone; holds no locks or descriptors.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, ConfigError> {
        let root = root.as_ref().to_path_buf();
        for sub in ["networks", "ipam", "pools"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|source| StateError::Io {
                path: dir.clone(),
                op: "create directory",
                source,
            })?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn network_path(&self, name: &str) -> PathBuf {
        self.root.join("networks").join(format!("{name}.json"))
    }
    fn networks_lock(&self) -> PathBuf {
        self.root.join("networks.lock")
    }
    pub(crate) fn ipam_path(&self, network: &str) -> PathBuf {
        self.root.join("ipam").join(format!("{network}.json"))
    }
    pub(crate) fn ipam_lock(&self, network: &str) -> PathBuf {
        self.root.join("ipam").join(format!("{network}.lock"))
    }
    pub(crate) fn pool_path(&self, network: &str) -> PathBuf {
        self.root.join("pools").join(format!("{network}.json"))
    }
    pub(crate) fn pool_lock(&self, network: &str) -> PathBuf {
        self.root.join("pools").join(format!("{network}.lock"))
    }
    pub(crate) fn nat_lock(&self) -> PathBuf {
        self.root.join("nat.lock")
    }

    /// Stores a new network after validating it and checking it against the others: the name
    /// must be new, the subnet must not overlap another network's, and the bridge must be
    /// unused. A bridge-mode network without a bridge name gets the first free `rcrunN`.
    /// Returns the network as stored (defaults filled in).
    pub fn create(&self, net: &Network) -> Result<Network, ConfigError> {
        let _span = info_span!("network_create", network = %net.name).entered();
        net.validate()?;
        let _lock = state::lock(&self.networks_lock())?;
        if self.network_path(&net.name).exists() {
            return Err(ConfigError::Exists(net.name.clone()));
        }
        let others = self.list()?;
        for o in &others {
            if o.subnet.contains(&net.subnet.network()) || net.subnet.contains(&o.subnet.network())
            {
                return Err(ConfigError::Overlap {
                    network: net.name.clone(),
                    subnet: net.subnet,
                    other: o.name.clone(),
                    other_subnet: o.subnet,
                });
            }
        }
        let mut stored = net.clone();
        stored.gateway = net.gateway();
        if net.mode == Mode::Bridge {
            let used: Vec<(&str, &str)> = others
                .iter()
                .filter_map(|o| o.bridge.as_deref().map(|b| (b, o.name.as_str())))
                .collect();
            match &net.bridge {
                Some(b) => {
                    if let Some((_, other)) = used.iter().find(|(ub, _)| ub == b) {
                        return Err(ConfigError::BridgeInUse {
                            network: net.name.clone(),
                            bridge: b.clone(),
                            other: (*other).to_string(),
                        });
                    }
                }
                None => {
                    let free = (0u32..)
                        .map(|i| format!("rcrun{i}"))
                        .find(|c| !used.iter().any(|(ub, _)| ub == c));
                    stored.bridge = free;
                }
            }
        }
        state::write(&self.network_path(&net.name), &stored)?;
        info!(network = %net.name, subnet = %net.subnet, "network created");
        Ok(stored)
    }

    /// Loads (and re-validates) a network.
    pub fn load(&self, name: &str) -> Result<Network, ConfigError> {
        super::validate_name(name)?;
        let path = self.network_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound(name.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    path,
                    op: "read",
                    source,
                }
                .into())
            }
        };
        let net = Network::from_json(&text)?;
        if net.name != name {
            return Err(ConfigError::Invalid {
                network: name.to_string(),
                field: "name",
                value: net.name,
                reason: format!("does not match its file {path:?}"),
            });
        }
        Ok(net)
    }

    /// All networks, sorted by name.
    pub fn list(&self) -> Result<Vec<Network>, ConfigError> {
        let dir = self.root.join("networks");
        let entries = fs::read_dir(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            op: "read directory",
            source,
        })?;
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|source| StateError::Io {
                path: dir.clone(),
                op: "read directory",
                source,
            })?;
            let file = e.file_name();
            let file = file.to_string_lossy();
            // Writers' temp files end in ".tmp.<pid>", never in ".json".
            if let Some(name) = file.strip_suffix(".json") {
                names.push(name.to_string());
            }
        }
        names.sort();
        names.iter().map(|n| self.load(n)).collect()
    }

    /// Removes a network and its IPAM and pool state. Refused while containers hold
    /// addresses on it (sticky reservations of stopped containers do not count) unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), ConfigError> {
        let _span = info_span!("network_remove", network = name).entered();
        super::validate_name(name)?;
        let _lock = state::lock(&self.networks_lock())?;
        let path = self.network_path(name);
        if !path.exists() {
            return Err(ConfigError::NotFound(name.to_string()));
        }
        let _ipam = state::lock(&self.ipam_lock(name))?;
        let _pool = state::lock(&self.pool_lock(name))?;
        let live = crate::ipam::live_owners_locked(self, name)?;
        if !live.is_empty() {
            if !force {
                return Err(ConfigError::InUse {
                    network: name.to_string(),
                    live: live.len(),
                    owners: live.join(", "),
                });
            }
            info!(
                network = name,
                live = live.len(),
                "removing network with live allocations (forced)"
            );
        }
        state::remove(&self.ipam_path(name))?;
        state::remove(&self.pool_path(name))?;
        // Lock files stay: a process may be waiting on one right now.
        state::remove(&path)?;
        info!(network = name, "network removed");
        Ok(())
    }
}
