//! The container side of an interface, configured inside its netns: MTU, MAC,
//! addresses, up, loopback up, default routes.

use std::net::IpAddr;

use ipnet::IpNet;
use tracing::info_span;

use crate::link::{LinkError, Mac};
use crate::netlink::{Handle, NetlinkError};
use crate::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error("configure {ifname:?} in network namespace {netns}: {source}")]
    Netns {
        ifname: String,
        netns: String,
        #[source]
        source: NetNsError,
    },
    #[error("configure {ifname:?}: {source}")]
    Netlink {
        ifname: String,
        #[source]
        source: NetlinkError,
    },
    #[error("configure {ifname:?}: {source}")]
    Link {
        ifname: String,
        #[source]
        source: LinkError,
    },
}

/// What the container's interface should look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Name inside the netns, e.g. "eth0".
    pub name: String,
    pub addresses: Vec<IpNet>,
    /// Default-route gateways (at most one per family is meaningful).
    pub gateways: Vec<IpAddr>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
}

/// Configures `cfg.name` inside `netns` (on a thread that enters it). Idempotent.
pub fn configure(netns: &NetNs, cfg: &IfaceConfig) -> Result<(), IfaceError> {
    netns
        .run(|| {
            let mut h = Handle::new().map_err(|source| IfaceError::Netlink {
                ifname: cfg.name.clone(),
                source,
            })?;
            configure_with(&mut h, cfg)
        })
        .map_err(|source| IfaceError::Netns {
            ifname: cfg.name.clone(),
            netns: netns.describe().to_owned(),
            source,
        })?
}

/// Same as [`configure`], in the namespace of an already open handle.
pub fn configure_with(h: &mut Handle, cfg: &IfaceConfig) -> Result<(), IfaceError> {
    let _span = info_span!("iface_configure", ifname = %cfg.name).entered();
    let err = |source| IfaceError::Link {
        ifname: cfg.name.clone(),
        source,
    };
    h.set_up("lo", true).map_err(err)?;
    let link = h.require_link(&cfg.name).map_err(err)?;
    if let Some(mtu) = cfg.mtu {
        if link.mtu != mtu {
            h.set_mtu(&cfg.name, mtu).map_err(err)?;
        }
    }
    if let Some(mac) = cfg.mac {
        if link.mac != Some(mac) {
            h.set_mac(&cfg.name, mac).map_err(err)?;
        }
    }
    for a in &cfg.addresses {
        h.ensure_address(&cfg.name, *a).map_err(err)?;
    }
    // Up before routes: a gateway is only reachable once the connected route exists.
    h.set_up(&cfg.name, true).map_err(err)?;
    for gw in &cfg.gateways {
        h.set_default_route(*gw, Some(&cfg.name)).map_err(err)?;
    }
    Ok(())
}
