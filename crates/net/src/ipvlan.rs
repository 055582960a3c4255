//! ipvlan mode: an ipvlan (l2 or l3) on a host parent, created directly inside the
//! container's netns under its final name. All ipvlans share the parent's MAC.

use tracing::info_span;

use crate::link::{IpvlanMode, LinkError, LinkKind, NewLink};
use crate::macvlan::{delete_in, InNsError};
use crate::netlink::{Handle, NetlinkError};
use crate::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum IpvlanError {
    #[error("ipvlan {ifname:?} on {parent:?}: {source}")]
    Link {
        parent: String,
        ifname: String,
        #[source]
        source: LinkError,
    },
    #[error("ipvlan {ifname:?}: {source}")]
    Netns {
        ifname: String,
        #[source]
        source: NetNsError,
    },
    #[error("ipvlan {ifname:?}: {source}")]
    Netlink {
        ifname: String,
        #[source]
        source: NetlinkError,
    },
}

/// Creates ipvlan `ifname` on host interface `parent` inside `netns` (parent brought up).
pub fn setup(
    h: &mut Handle,
    parent: &str,
    netns: &NetNs,
    ifname: &str,
    mode: IpvlanMode,
    mtu: Option<u32>,
) -> Result<(), IpvlanError> {
    let _span = info_span!("ipvlan_setup", parent, ifname, ?mode).entered();
    let err = |source| IpvlanError::Link {
        parent: parent.to_owned(),
        ifname: ifname.to_owned(),
        source,
    };
    let mut spec = NewLink::new(ifname, LinkKind::Ipvlan { parent, mode });
    spec.mtu = mtu;
    spec.netns = Some(netns);
    h.add_link(&spec).map_err(err)?;
    h.set_up(parent, true).map_err(err)
}

/// Deletes `ifname` inside `netns`; fine if it is gone.
pub fn teardown(netns: &NetNs, ifname: &str) -> Result<(), IpvlanError> {
    delete_in(netns, ifname).map_err(|e| match e {
        InNsError::Netns(source) => IpvlanError::Netns {
            ifname: ifname.to_owned(),
            source,
        },
        InNsError::Netlink(source) => IpvlanError::Netlink {
            ifname: ifname.to_owned(),
            source,
        },
        InNsError::Link(source) => IpvlanError::Link {
            parent: String::new(),
            ifname: ifname.to_owned(),
            source,
        },
    })
}
