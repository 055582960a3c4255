//! Device-mode pools: each container of a device-mode network gets one host device (an SR-IOV
//! VF, a bond, ...) from the network's `devices` list (and its bonds), never one that another
//! live container holds. Claims live at `<root>/pools/<network>.json`, updated under the
//! network's pool `flock` with atomic replacement, like the IPAM tables.

use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn};

use crate::config::{self, state, ConfigError, Mode, StateError, Store};

/// Errors of device pools; each names the network.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("network {network:?}: invalid owner {owner:?}: {reason}")]
    BadOwner {
        network: String,
        owner: String,
        reason: &'static str,
    },
    #[error("network {network:?}: mode is {mode:?}, device pools exist only in device mode")]
    NotDeviceMode { network: String, mode: Mode },
    #[error("network {network:?}: device {device:?} is not in the pool ({pool})")]
    NotInPool {
        network: String,
        device: String,
        pool: String,
    },
    #[error("network {network:?}: device {device:?} is claimed by {owner:?}")]
    Taken {
        network: String,
        device: String,
        owner: String,
    },
    #[error(
        "network {network:?}: {owner:?} already holds device {held:?}; requested {requested:?}"
    )]
    HoldsOther {
        network: String,
        owner: String,
        held: String,
        requested: String,
    },
    #[error("network {network:?}: device pool exhausted: all {size} device(s) are claimed")]
    Exhausted { network: String, size: usize },
}

/// One device handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claim {
    pub device: String,
    pub owner: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Table {
    #[serde(default)]
    claims: Vec<Claim>,
}

/// Device pools on a store.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'s> {
    store: &'s Store,
}

impl Store {
    pub fn pool(&self) -> Pool<'_> {
        Pool { store: self }
    }
}

impl Pool<'_> {
    /// Hands `owner` a device: the one it already holds (idempotent), `preferred` if free, or
    /// the first free one in pool order.
    pub fn claim(
        &self,
        network: &str,
        owner: &str,
        preferred: Option<&str>,
    ) -> Result<String, PoolError> {
        let _span = info_span!("pool_claim", network, owner).entered();
        config::validate_name(network)?;
        if owner.is_empty() || owner.chars().any(char::is_control) {
            return Err(PoolError::BadOwner {
                network: network.to_string(),
                owner: owner.to_string(),
                reason: "must be non-empty without control characters",
            });
        }
        let _lock = state::lock(&self.store.pool_lock(network))?;
        let net = self.store.load(network)?;
        if net.mode != Mode::Device {
            return Err(PoolError::NotDeviceMode {
                network: network.to_string(),
                mode: net.mode,
            });
        }
        let pool = net.device_pool();
        let path = self.store.pool_path(network);
        let mut table: Table = state::read(&path)?.unwrap_or_default();
        let before = table.claims.len();
        table.claims.retain(|c| {
            let ok = pool.contains(&c.device);
            if !ok {
                warn!(network, device = %c.device, owner = %c.owner, "dropping claim of a device no longer in the pool");
            }
            ok
        });
        let dropped = before != table.claims.len();

        if let Some(c) = table.claims.iter().find(|c| c.owner == owner) {
            if let Some(p) = preferred {
                if p != c.device {
                    return Err(PoolError::HoldsOther {
                        network: network.to_string(),
                        owner: owner.to_string(),
                        held: c.device.clone(),
                        requested: p.to_string(),
                    });
                }
            }
            let device = c.device.clone();
            if dropped {
                state::write(&path, &table)?;
            }
            return Ok(device);
        }

        let device = match preferred {
            Some(p) => {
                if !pool.iter().any(|d| d == p) {
                    return Err(PoolError::NotInPool {
                        network: network.to_string(),
                        device: p.to_string(),
                        pool: pool.join(", "),
                    });
                }
                if let Some(c) = table.claims.iter().find(|c| c.device == p) {
                    return Err(PoolError::Taken {
                        network: network.to_string(),
                        device: p.to_string(),
                        owner: c.owner.clone(),
                    });
                }
                p.to_string()
            }
            None => pool
                .iter()
                .find(|d| !table.claims.iter().any(|c| &c.device == *d))
                .cloned()
                .ok_or_else(|| PoolError::Exhausted {
                    network: network.to_string(),
                    size: pool.len(),
                })?,
        };
        table.claims.push(Claim {
            device: device.clone(),
            owner: owner.to_string(),
        });
        state::write(&path, &table)?;
        info!(network, owner, device = %device, "device claimed");
        Ok(device)
    }

    /// Returns `owner`'s device to the pool; `None` when it held none. Works even when the
    /// network definition is gone.
    pub fn release(&self, network: &str, owner: &str) -> Result<Option<String>, PoolError> {
        let _span = info_span!("pool_release", network, owner).entered();
        config::validate_name(network)?;
        let _lock = state::lock(&self.store.pool_lock(network))?;
        let path = self.store.pool_path(network);
        let Some(mut table) = state::read::<Table>(&path)? else {
            return Ok(None);
        };
        let Some(i) = table.claims.iter().position(|c| c.owner == owner) else {
            return Ok(None);
        };
        let claim = table.claims.remove(i);
        state::write(&path, &table)?;
        info!(network, owner, device = %claim.device, "device released");
        Ok(Some(claim.device))
    }

    /// Current claims of the network.
    pub fn claims(&self, network: &str) -> Result<Vec<Claim>, PoolError> {
        config::validate_name(network)?;
        let _lock = state::lock(&self.store.pool_lock(network))?;
        let table: Table = state::read(&self.store.pool_path(network))?.unwrap_or_default();
        Ok(table.claims)
    }
}
