//! IP address management: one lease table per network at `<root>/ipam/<network>.json`.
//!
//! Every operation takes the network's `flock`, reads the table, changes it and replaces the
//! file atomically, so parallel OCI hooks (separate processes) never hand out one address
//! twice, and a writer killed half-way leaves the previous table intact.
//!
//! Owners: a lease belongs to a container id, optionally under a stable name chosen by the user.
//! Named leases are sticky: releasing the container keeps the reservation (the store is on
//! disk, so it survives restarts and reboots) and the next container with that name gets the
//! same address; [`Ipam::forget`] drops it.
//!
//! Allocation scans sequentially from the start of the range, skipping taken addresses, so
//! the cost is bounded by the number of leases, not the size of the range (an IPv6 /64 is
//! fine). Static requests must lie inside the subnet and, when the network has a `range`,
//! inside the range; they may not be the gateway, network or broadcast address, or taken.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn};

use crate::config::{
    self, addr_number, addr_of, host_bounds, state, ConfigError, StateError, Store,
};

/// Errors of address management; each names the network.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
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
    #[error("network {network:?}: requested address {address}: {reason}")]
    BadRequest {
        network: String,
        address: IpAddr,
        reason: String,
    },
    #[error("network {network:?}: requested address {address} is taken by {holder}")]
    Taken {
        network: String,
        address: IpAddr,
        holder: String,
    },
    #[error(
        "network {network:?}: name {name:?} (address {address}) is in use by live container {container:?}"
    )]
    NameInUse {
        network: String,
        name: String,
        address: IpAddr,
        container: String,
    },
    #[error("network {network:?}: {owner} already holds address {held}; requested {requested}")]
    HoldsOther {
        network: String,
        owner: String,
        held: IpAddr,
        requested: IpAddr,
    },
    #[error("network {network:?}: address pool exhausted: all {size} address(es) of range {range} are taken")]
    Exhausted {
        network: String,
        range: String,
        size: u128,
    },
    #[error("network {network:?}: name {name:?} is attached to live container {container:?}; release it first")]
    ForgetLive {
        network: String,
        name: String,
        container: String,
    },
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Container id of the attachment.
    pub container: String,
    /// Stable name chosen by the user: makes the lease sticky.
    pub name: Option<String>,
}

impl Owner {
    pub fn container(id: impl Into<String>) -> Owner {
        Owner {
            container: id.into(),
            name: None,
        }
    }
    pub fn named(id: impl Into<String>, name: impl Into<String>) -> Owner {
        Owner {
            container: id.into(),
            name: Some(name.into()),
        }
    }
}

/// One entry of a network's lease table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    pub address: IpAddr,
    /// Live attachment; `None` for a sticky reservation whose container is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Lease {
    fn describe(&self) -> String {
        match (&self.name, &self.container) {
            (Some(n), Some(c)) => format!("name {n:?} (container {c:?})"),
            (Some(n), None) => format!("name {n:?} (reserved)"),
            (None, Some(c)) => format!("container {c:?}"),
            (None, None) => "nobody".to_string(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Table {
    #[serde(default)]
    leases: Vec<Lease>,
}

/// The result of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The address with the subnet's prefix length.
    pub address: IpNet,
    pub gateway: IpAddr,
}

/// What [`Ipam::release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The container held nothing.
    Nothing,
    /// The address went back to the pool.
    Freed(IpAddr),
    /// A named (sticky) reservation stays for the next container with that name.
    Kept { address: IpAddr, name: String },
}

/// Address management on a store.
#[derive(Debug, Clone, Copy)]
pub struct Ipam<'s> {
    store: &'s Store,
}

impl Store {
    pub fn ipam(&self) -> Ipam<'_> {
        Ipam { store: self }
    }
}

fn check_owner(network: &str, owner: &str) -> Result<(), IpamError> {
    let reason = if owner.is_empty() {
        "is empty"
    } else if owner.len() > 1024 {
        "is longer than 1024 bytes"
    } else if owner.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(IpamError::BadOwner {
        network: network.to_string(),
        owner: owner.to_string(),
        reason,
    })
}

/// Container ids holding live leases; the caller holds the network's IPAM lock.
pub(crate) fn live_owners_locked(store: &Store, network: &str) -> Result<Vec<String>, StateError> {
    let table: Table = state::read(&store.ipam_path(network))?.unwrap_or_default();
    Ok(table
        .leases
        .into_iter()
        .filter_map(|l| l.container)
        .collect())
}

impl Ipam<'_> {
    /// Gives `owner` an address on `network`: the one it already holds (idempotent; a named
    /// owner gets its sticky reservation back), the requested one, or the first free one.
    pub fn allocate(
        &self,
        network: &str,
        owner: &Owner,
        request: Option<IpAddr>,
    ) -> Result<Allocation, IpamError> {
        let _span = info_span!("ipam_allocate", network, container = %owner.container).entered();
        config::validate_name(network)?;
        check_owner(network, &owner.container)?;
        if let Some(n) = &owner.name {
            check_owner(network, n)?;
        }
        let _lock = state::lock(&self.store.ipam_lock(network))?;
        // Loaded under the lock: a concurrent `remove` either finished (not found) or waits.
        let net = self.store.load(network)?;
        let path = self.store.ipam_path(network);
        let mut table: Table = state::read(&path)?.unwrap_or_default();
        let gateway = net.gateway().ok_or_else(|| IpamError::BadRequest {
            network: network.to_string(),
            address: net.subnet.addr(),
            reason: "subnet has no gateway address".to_string(),
        })?;
        let prefix = net.subnet.prefix_len();
        let with_prefix = |a: IpAddr| IpNet::new(a, prefix).unwrap_or(net.subnet);

        let before = table.leases.len();
        table.leases.retain(|l| {
            let ok = net.subnet.contains(&l.address);
            if !ok {
                warn!(network, address = %l.address, "dropping lease outside the subnet");
            }
            ok
        });
        let dropped = before != table.leases.len();

        if let Some(i) = self.find_existing(network, &table, owner)? {
            let lease = &mut table.leases[i];
            if let Some(r) = request {
                if r != lease.address {
                    return Err(IpamError::HoldsOther {
                        network: network.to_string(),
                        owner: lease.describe(),
                        held: lease.address,
                        requested: r,
                    });
                }
            }
            let address = lease.address;
            if lease.container.as_deref() != Some(owner.container.as_str()) {
                lease.container = Some(owner.container.clone());
                state::write(&path, &table)?;
            } else if dropped {
                state::write(&path, &table)?;
            }
            info!(network, %address, "address (re)used");
            return Ok(Allocation {
                address: with_prefix(address),
                gateway,
            });
        }

        let address = match request {
            Some(r) => self.check_request(&net, &table, gateway, r)?,
            None => self.first_free(&net, &table, gateway)?,
        };
        table.leases.push(Lease {
            address,
            container: Some(owner.container.clone()),
            name: owner.name.clone(),
        });
        state::write(&path, &table)?;
        info!(network, %address, name = owner.name.as_deref().unwrap_or(""), "address allocated");
        Ok(Allocation {
            address: with_prefix(address),
            gateway,
        })
    }

    fn find_existing(
        &self,
        network: &str,
        table: &Table,
        owner: &Owner,
    ) -> Result<Option<usize>, IpamError> {
        if let Some(name) = &owner.name {
            if let Some(i) = table
                .leases
                .iter()
                .position(|l| l.name.as_ref() == Some(name))
            {
                let l = &table.leases[i];
                if let Some(c) = &l.container {
                    if c != &owner.container {
                        return Err(IpamError::NameInUse {
                            network: network.to_string(),
                            name: name.clone(),
                            address: l.address,
                            container: c.clone(),
                        });
                    }
                }
                return Ok(Some(i));
            }
        }
        match table
            .leases
            .iter()
            .position(|l| l.container.as_deref() == Some(owner.container.as_str()))
        {
            // The same container under the same (absent) name: idempotent.
            Some(i) if table.leases[i].name == owner.name => Ok(Some(i)),
            Some(i) => Err(IpamError::Taken {
                network: network.to_string(),
                address: table.leases[i].address,
                holder: format!(
                    "{} (one address per container and network)",
                    table.leases[i].describe()
                ),
            }),
            None => Ok(None),
        }
    }

    fn check_request(
        &self,
        net: &config::Network,
        table: &Table,
        gateway: IpAddr,
        r: IpAddr,
    ) -> Result<IpAddr, IpamError> {
        let bad = |reason: String| IpamError::BadRequest {
            network: net.name.clone(),
            address: r,
            reason,
        };
        if r.is_ipv4() != net.subnet.addr().is_ipv4() || !net.subnet.contains(&r) {
            return Err(bad(format!("is outside subnet {}", net.subnet)));
        }
        if r == gateway {
            return Err(bad("is the gateway".to_string()));
        }
        let n = addr_number(r);
        match host_bounds(&net.subnet) {
            Some((first, last)) if n >= first && n <= last => {}
            _ => {
                return Err(bad(format!(
                    "is the network or broadcast address of subnet {}",
                    net.subnet
                )))
            }
        }
        if let Some(range) = net.range {
            if n < addr_number(range.start) || n > addr_number(range.end) {
                return Err(bad(format!(
                    "is outside range {}-{}",
                    range.start, range.end
                )));
            }
        }
        if let Some(l) = table.leases.iter().find(|l| l.address == r) {
            return Err(IpamError::Taken {
                network: net.name.clone(),
                address: r,
                holder: l.describe(),
            });
        }
        Ok(r)
    }

    fn first_free(
        &self,
        net: &config::Network,
        table: &Table,
        gateway: IpAddr,
    ) -> Result<IpAddr, IpamError> {
        let (lo, hi) = net.allocation_bounds().unwrap_or((1, 0));
        let taken: HashSet<u128> = table
            .leases
            .iter()
            .map(|l| addr_number(l.address))
            .collect();
        let gw = addr_number(gateway);
        // At most |taken| + 2 steps: every skipped number is a lease or the gateway.
        let mut n = lo;
        while n <= hi {
            if n != gw && !taken.contains(&n) {
                return Ok(addr_of(&net.subnet, n));
            }
            match n.checked_add(1) {
                Some(next) => n = next,
                None => break,
            }
        }
        let size = if hi >= lo { hi - lo + 1 } else { 0 };
        Err(IpamError::Exhausted {
            network: net.name.clone(),
            range: format!("{}-{}", addr_of(&net.subnet, lo), addr_of(&net.subnet, hi)),
            size,
        })
    }

    /// Ends `container`'s attachment: an unnamed lease is freed, a named one is kept as a
    /// reservation for its name. Works even when the network definition is gone.
    pub fn release(&self, network: &str, container: &str) -> Result<Released, IpamError> {
        let _span = info_span!("ipam_release", network, container).entered();
        config::validate_name(network)?;
        let _lock = state::lock(&self.store.ipam_lock(network))?;
        let path = self.store.ipam_path(network);
        let Some(mut table) = state::read::<Table>(&path)? else {
            return Ok(Released::Nothing);
        };
        let Some(i) = table
            .leases
            .iter()
            .position(|l| l.container.as_deref() == Some(container))
        else {
            return Ok(Released::Nothing);
        };
        let result = match table.leases[i].name.clone() {
            Some(name) => {
                table.leases[i].container = None;
                Released::Kept {
                    address: table.leases[i].address,
                    name,
                }
            }
            None => Released::Freed(table.leases.remove(i).address),
        };
        state::write(&path, &table)?;
        info!(network, container, ?result, "address released");
        Ok(result)
    }

    /// Drops the sticky reservation of `name`; refused while a container uses it.
    pub fn forget(&self, network: &str, name: &str) -> Result<Option<IpAddr>, IpamError> {
        let _span = info_span!("ipam_forget", network, name).entered();
        config::validate_name(network)?;
        let _lock = state::lock(&self.store.ipam_lock(network))?;
        let path = self.store.ipam_path(network);
        let Some(mut table) = state::read::<Table>(&path)? else {
            return Ok(None);
        };
        let Some(i) = table
            .leases
            .iter()
            .position(|l| l.name.as_deref() == Some(name))
        else {
            return Ok(None);
        };
        if let Some(c) = &table.leases[i].container {
            return Err(IpamError::ForgetLive {
                network: network.to_string(),
                name: name.to_string(),
                container: c.clone(),
            });
        }
        let lease = table.leases.remove(i);
        state::write(&path, &table)?;
        info!(network, name, address = %lease.address, "reservation forgotten");
        Ok(Some(lease.address))
    }

    /// The network's lease table (live leases and reservations).
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, IpamError> {
        config::validate_name(network)?;
        let _lock = state::lock(&self.store.ipam_lock(network))?;
        let table: Table = state::read(&self.store.ipam_path(network))?.unwrap_or_default();
        Ok(table.leases)
    }
}
