//! Moving a host device (an SR-IOV VF, a bond of VFs) into a container's netns and
//! giving it back.
//!
//! The caller captures a [`DeviceRecord`] and persists it BEFORE [`move_in`], so a
//! crash at any later point can be repaired with [`restore`]. `restore` finds the
//! device wherever it is: still in the pinned netns, or back on the host under another
//! name (a physical device returns to the initial netns when its netns dies), and it
//! is idempotent.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span};

use crate::link::{Link, LinkError, LinkKind, Mac, NewLink};
use crate::netlink::{Handle, NetlinkError};
use crate::netns::{NetNs, NetNsError};
use crate::vlan::vlan_name;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {name:?}: {source}")]
    Link {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("device {name:?}: {source}")]
    Netns {
        name: String,
        #[source]
        source: NetNsError,
    },
    #[error("device {name:?}: {source}")]
    Netlink {
        name: String,
        #[source]
        source: NetlinkError,
    },
    #[error("device {name:?}: not found on the host (by name, MAC {mac} or index {ifindex}) nor in network namespace {netns:?}")]
    NotFound {
        name: String,
        mac: String,
        ifindex: u32,
        netns: PathBuf,
    },
    #[error("device {name:?}: the {kind} driver does not let it change network namespace (for a bond, move its member VFs and create the bond inside the container's namespace): {source}")]
    CannotMove {
        name: String,
        kind: String,
        #[source]
        source: LinkError,
    },
    #[error("device {name:?}: it is a {kind}, which cannot be handed to a container")]
    Unsupported { name: String, kind: String },
}

/// How the device should look inside the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSide {
    /// Name inside the netns, e.g. "eth0".
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Create this 802.1Q sub-interface on the device inside the netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// Everything needed to give a device back, captured before it moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Name on the host before the move.
    pub host_name: String,
    pub ifindex: u32,
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm_mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    /// Addresses it had on the host (IPv6 link-local ones left out: the kernel
    /// makes them again).
    pub addresses: Vec<IpNet>,
    /// Bridge or bond it was enslaved to.
    pub master: Option<String>,
    /// The pinned netns it goes to.
    pub netns_path: PathBuf,
    pub container: ContainerSide,
}

fn is_link_local(n: &IpNet) -> bool {
    match n {
        IpNet::V6(v6) => (v6.addr().segments()[0] & 0xffc0) == 0xfe80,
        IpNet::V4(v4) => v4.addr().is_link_local(),
    }
}

/// Reads the device's current state into a record (nothing changes yet).
pub fn capture(
    h: &mut Handle,
    host_name: &str,
    netns_path: &Path,
    container: ContainerSide,
) -> Result<DeviceRecord, DeviceError> {
    let err = |source| DeviceError::Link {
        name: host_name.to_owned(),
        source,
    };
    let l = h.require_link(host_name).map_err(err)?;
    if let Some(k @ ("bridge" | "vlan" | "macvlan" | "ipvlan")) = l.kind.as_deref() {
        return Err(DeviceError::Unsupported {
            name: host_name.to_owned(),
            kind: k.to_owned(),
        });
    }
    let addresses = h
        .addresses_of_index(l.index)
        .map_err(err)?
        .into_iter()
        .filter(|a| !is_link_local(a))
        .collect();
    let master = match l.master {
        Some(i) => h.link_by_index(i).map_err(err)?.map(|m| m.name),
        None => None,
    };
    Ok(DeviceRecord {
        host_name: host_name.to_owned(),
        ifindex: l.index,
        mac: l.mac,
        perm_mac: l.perm_mac,
        mtu: l.mtu,
        up: l.up,
        addresses,
        master,
        netns_path: netns_path.to_owned(),
        container,
    })
}

/// Moves the device into the record's netns, renamed to the container name, with its
/// MTU/MAC set, up, and the VLAN sub-interface created when asked. Returns the name to
/// put addresses on ([`crate::iface::configure`]): the VLAN's or the device's.
/// Re-running after a crash continues where it stopped.
pub fn move_in(h: &mut Handle, record: &DeviceRecord) -> Result<String, DeviceError> {
    let name = record.host_name.clone();
    let _span = info_span!("device_move_in", device = %name, ns = ?record.netns_path).entered();
    let netns = NetNs::open(&record.netns_path).map_err(|source| DeviceError::Netns {
        name: name.clone(),
        source,
    })?;
    let lerr = |source| DeviceError::Link {
        name: name.clone(),
        source,
    };
    let on_host = h
        .links()
        .map_err(lerr)?
        .into_iter()
        .find(|l| l.name == record.host_name && matches_record(l, record));
    if let Some(l) = on_host {
        if l.master.is_some() {
            h.set_nomaster(&l.name).map_err(lerr)?;
        }
        h.move_to_netns(&l.name, &netns, Some(&record.container.name))
            .map_err(|source| match source.errno() {
                // NETIF_F_NETNS_LOCAL: the driver keeps it in its namespace.
                Some(libc::EINVAL) => DeviceError::CannotMove {
                    name: name.clone(),
                    kind: l.kind.clone().unwrap_or_else(|| "device".into()),
                    source,
                },
                _ => lerr(source),
            })?;
    }
    let c = record.container.clone();
    let rec = record.clone();
    netns
        .run(move || -> Result<String, DeviceError> {
            let mut nh = Handle::new().map_err(|source| DeviceError::Netlink {
                name: c.name.clone(),
                source,
            })?;
            let lerr = |source| DeviceError::Link {
                name: c.name.clone(),
                source,
            };
            let Some(l) = find_in(&mut nh, &rec).map_err(lerr)? else {
                return Err(not_found(&rec));
            };
            if l.name != c.name {
                nh.set_up(&l.name, false).map_err(lerr)?;
                nh.rename(&l.name, &c.name).map_err(lerr)?;
            }
            if let Some(mtu) = c.mtu {
                nh.set_mtu(&c.name, mtu).map_err(lerr)?;
            }
            if let Some(mac) = c.mac {
                if l.mac != Some(mac) {
                    nh.set_mac(&c.name, mac).map_err(lerr)?;
                }
            }
            nh.set_up(&c.name, true).map_err(lerr)?;
            let Some(vid) = c.vlan else {
                return Ok(c.name.clone());
            };
            let vname = vlan_name(&c.name, vid);
            if nh.link(&vname).map_err(lerr)?.is_none() {
                let mut spec = NewLink::new(
                    &vname,
                    LinkKind::Vlan {
                        parent: &c.name,
                        id: vid,
                    },
                );
                spec.mtu = c.mtu;
                nh.add_link(&spec).map_err(lerr)?;
            }
            nh.set_up(&vname, true).map_err(lerr)?;
            Ok(vname)
        })
        .map_err(|source| DeviceError::Netns { name, source })?
}

fn not_found(r: &DeviceRecord) -> DeviceError {
    DeviceError::NotFound {
        name: r.host_name.clone(),
        mac: r.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
        ifindex: r.ifindex,
        netns: r.netns_path.clone(),
    }
}

/// Whether a link is the recorded device: same burnt-in or current address, never an
/// upper device (a VLAN shares its parent's MAC).
fn matches_record(l: &Link, r: &DeviceRecord) -> bool {
    if matches!(
        l.kind.as_deref(),
        Some("vlan" | "macvlan" | "ipvlan" | "macvtap" | "bridge")
    ) {
        return false;
    }
    if l.perm_mac.is_some() && l.perm_mac == r.perm_mac {
        return true;
    }
    l.mac.is_some() && (l.mac == r.mac || l.mac == r.container.mac)
}

/// The device inside a netns (or on the host). Indexes usually survive a move and
/// MACs usually stay, but neither is guaranteed (bond members share one MAC), so
/// candidates are ranked: index and MAC, index and expected name, MAC and name, MAC.
fn find_in(h: &mut Handle, r: &DeviceRecord) -> Result<Option<Link>, LinkError> {
    Ok(find_ranked(h, r)?.map(|(_, l)| l))
}

/// [`find_in`] with the rank of the match (0 is best).
fn find_ranked(h: &mut Handle, r: &DeviceRecord) -> Result<Option<(u8, Link)>, LinkError> {
    let links = h.links()?;
    let rank = |l: &Link| -> Option<u8> {
        if matches!(
            l.kind.as_deref(),
            Some("vlan" | "macvlan" | "ipvlan" | "macvtap" | "bridge")
        ) {
            return None;
        }
        let idx = l.index == r.ifindex;
        let mac = matches_record(l, r);
        let name = l.name == r.container.name || l.name == r.host_name;
        match (idx, mac, name) {
            (true, true, _) => Some(0),
            (true, false, true) => Some(1),
            (false, true, true) => Some(2),
            (false, true, false) => Some(3),
            _ => None,
        }
    };
    Ok(links
        .iter()
        .filter_map(|l| rank(l).map(|k| (k, l)))
        .min_by_key(|(k, _)| *k)
        .map(|(k, l)| (k, l.clone())))
}

/// Gives the device back to the handle's namespace (the host) with its original name,
/// MAC, MTU, addresses, master and up state. Idempotent.
pub fn restore(h: &mut Handle, record: &DeviceRecord) -> Result<(), DeviceError> {
    let name = record.host_name.clone();
    let _span = info_span!("device_restore", device = %name, ns = ?record.netns_path).entered();
    let lerr = |source| DeviceError::Link {
        name: name.clone(),
        source,
    };
    // 1. Still in the container's netns (pinned)? Bring it home, unless the host
    //    already has it (a second restore): a better match there wins.
    let on_host = find_ranked(h, record).map_err(lerr)?.map(|(k, _)| k);
    match NetNs::open(&record.netns_path) {
        Ok(ns) if !ns.same_as(h.netns()) => {
            let host = h.netns().try_clone().map_err(|source| DeviceError::Netns {
                name: name.clone(),
                source,
            })?;
            let rec = record.clone();
            ns.run(move || -> Result<(), DeviceError> {
                let mut nh = Handle::new().map_err(|source| DeviceError::Netlink {
                    name: rec.host_name.clone(),
                    source,
                })?;
                let lerr = |source| DeviceError::Link {
                    name: rec.host_name.clone(),
                    source,
                };
                let Some((rank, l)) = find_ranked(&mut nh, &rec).map_err(lerr)? else {
                    return Ok(());
                };
                if on_host.is_some_and(|k| k < rank) {
                    return Ok(());
                }
                // Upper devices (the VLAN) would be left behind pointing across
                // namespaces: remove them first.
                for u in nh.links().map_err(lerr)? {
                    if u.parent == Some(l.index) && u.index != l.index && u.kind.is_some() {
                        nh.delete_link_if_exists(&u.name).map_err(lerr)?;
                    }
                }
                // A bond member inside the container: release it first.
                if l.master.is_some() {
                    nh.set_nomaster(&l.name).map_err(lerr)?;
                }
                info!(from = %l.name, "moving device back to the host");
                nh.move_to_netns(&l.name, &host, Some(&rec.host_name))
                    .map_err(lerr)
            })
            .map_err(|source| DeviceError::Netns {
                name: name.clone(),
                source,
            })??;
        }
        // Same netns, or the pin is gone: the device can only be on the host.
        _ => {}
    }
    // 2. On the host, under whatever name.
    let Some(l) = find_in(h, record).map_err(lerr)? else {
        return Err(not_found(record));
    };
    let lname = l.name.clone();
    let needs_down = lname != record.host_name || (record.mac.is_some() && l.mac != record.mac);
    if needs_down && l.up {
        h.set_up(&lname, false).map_err(lerr)?;
    }
    if lname != record.host_name {
        h.rename(&lname, &record.host_name).map_err(lerr)?;
    }
    let n = record.host_name.as_str();
    if let Some(mac) = record.mac {
        if l.mac != Some(mac) {
            h.set_mac(n, mac).map_err(lerr)?;
        }
    }
    if l.mtu != record.mtu {
        h.set_mtu(n, record.mtu).map_err(lerr)?;
    }
    for a in &record.addresses {
        h.ensure_address(n, *a).map_err(lerr)?;
    }
    if let Some(m) = &record.master {
        let current = match l.master {
            Some(i) => h.link_by_index(i).map_err(lerr)?.map(|x| x.name),
            None => None,
        };
        if current.as_deref() != Some(m.as_str()) && h.link(m).map_err(lerr)?.is_some() {
            h.set_master(n, m).map_err(lerr)?;
        }
    }
    h.set_up(n, record.up).map_err(lerr)?;
    Ok(())
}

/// [`restore`], waiting up to `wait` for a device that is not found yet: one leaving a dying
/// netns (the kernel tears namespaces down asynchronously) reappears on the host a moment
/// later. A device still missing after that is [`DeviceError::NotFound`].
pub fn restore_waiting(
    h: &mut Handle,
    record: &DeviceRecord,
    wait: std::time::Duration,
) -> Result<(), DeviceError> {
    let started = std::time::Instant::now();
    loop {
        match restore(h, record) {
            Err(DeviceError::NotFound { .. }) if started.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
