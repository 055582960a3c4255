//! macvlan mode: a macvlan on a host parent, created directly inside the container's
//! netns under its final name.

use tracing::info_span;

use crate::link::{LinkError, LinkKind, Mac, MacvlanMode, NewLink};
use crate::netlink::{Handle, NetlinkError};
use crate::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum MacvlanError {
    #[error("macvlan {ifname:?} on {parent:?}: {source}")]
    Link {
        parent: String,
        ifname: String,
        #[source]
        source: LinkError,
    },
    #[error("macvlan {ifname:?}: {source}")]
    Netns {
        ifname: String,
        #[source]
        source: NetNsError,
    },
    #[error("macvlan {ifname:?}: {source}")]
    Netlink {
        ifname: String,
        #[source]
        source: NetlinkError,
    },
}

/// Creates macvlan `ifname` on host interface `parent` inside `netns` (the parent is
/// brought up; the new link stays down for [`crate::iface::configure`]).
pub fn setup(
    h: &mut Handle,
    parent: &str,
    netns: &NetNs,
    ifname: &str,
    mode: MacvlanMode,
    mtu: Option<u32>,
    mac: Option<Mac>,
) -> Result<(), MacvlanError> {
    let _span = info_span!("macvlan_setup", parent, ifname, ?mode).entered();
    let err = |source| MacvlanError::Link {
        parent: parent.to_owned(),
        ifname: ifname.to_owned(),
        source,
    };
    let mut spec = NewLink::new(ifname, LinkKind::Macvlan { parent, mode });
    spec.mtu = mtu;
    spec.mac = mac;
    spec.netns = Some(netns);
    h.add_link(&spec).map_err(err)?;
    h.set_up(parent, true).map_err(err)
}

/// Deletes `ifname` inside `netns`; fine if it is gone (it also goes with the netns).
pub fn teardown(netns: &NetNs, ifname: &str) -> Result<(), MacvlanError> {
    delete_in(netns, ifname).map_err(|e| match e {
        InNsError::Netns(source) => MacvlanError::Netns {
            ifname: ifname.to_owned(),
            source,
        },
        InNsError::Netlink(source) => MacvlanError::Netlink {
            ifname: ifname.to_owned(),
            source,
        },
        InNsError::Link(source) => MacvlanError::Link {
            parent: String::new(),
            ifname: ifname.to_owned(),
            source,
        },
    })
}

pub(crate) enum InNsError {
    Netns(NetNsError),
    Netlink(NetlinkError),
    Link(LinkError),
}

/// Deletes a link inside a namespace if present.
pub(crate) fn delete_in(netns: &NetNs, ifname: &str) -> Result<(), InNsError> {
    netns
        .run(|| {
            let mut h = Handle::new().map_err(InNsError::Netlink)?;
            h.delete_link_if_exists(ifname).map_err(InNsError::Link)?;
            Ok(())
        })
        .map_err(InNsError::Netns)?
}
