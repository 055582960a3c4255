//! Bridge mode: a host bridge holding the gateway address, and one veth pair per
//! container (host end on the bridge, container end created directly in its netns).

use ipnet::IpNet;
use tracing::info_span;

use crate::link::{LinkError, LinkKind, NewLink};
use crate::netlink::Handle;
use crate::netns::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {name:?}: an interface of that name exists but is a {kind}, not a bridge")]
    NotABridge { name: String, kind: String },
    #[error("container id {0:?}: must not be empty")]
    EmptyContainerId(String),
    #[error("bridge {bridge:?}: {source}")]
    Link {
        bridge: String,
        #[source]
        source: LinkError,
    },
}

fn at(bridge: &str) -> impl FnOnce(LinkError) -> BridgeError + '_ {
    move |source| BridgeError::Link {
        bridge: bridge.to_owned(),
        source,
    }
}

/// Makes sure bridge `name` exists, is up, has `mtu` (when given) and carries the
/// gateway addresses. Safe to call for every container.
pub fn ensure_bridge(
    h: &mut Handle,
    name: &str,
    gateways: &[IpNet],
    mtu: Option<u32>,
) -> Result<(), BridgeError> {
    let _span = info_span!("ensure_bridge", bridge = name).entered();
    match h.link(name).map_err(at(name))? {
        Some(l) => {
            if l.kind.as_deref() != Some("bridge") {
                return Err(BridgeError::NotABridge {
                    name: name.to_owned(),
                    kind: l.kind.unwrap_or_else(|| "device".into()),
                });
            }
            if let Some(m) = mtu {
                if l.mtu != m {
                    h.set_mtu(name, m).map_err(at(name))?;
                }
            }
        }
        None => {
            let mut spec = NewLink::new(name, LinkKind::Bridge);
            spec.mtu = mtu;
            match h.add_link(&spec) {
                // Another container's setup created it in the meantime.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                r => r.map_err(at(name))?,
            }
        }
    }
    for gw in gateways {
        h.ensure_address(name, *gw).map_err(at(name))?;
    }
    h.set_up(name, true).map_err(at(name))
}

/// Deletes the bridge if it exists.
pub fn remove_bridge(h: &mut Handle, name: &str) -> Result<(), BridgeError> {
    h.delete_link_if_exists(name).map_err(at(name))?;
    Ok(())
}

/// The host-side veth name of a container: "veth" and 11 hex digits of a hash of the
/// id, always 15 bytes, the same for the same id (so teardown finds it).
pub fn host_veth_name(container_id: &str) -> String {
    format!("veth{:011x}", fnv1a(container_id.as_bytes()) >> 20)
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Creates the container's veth pair: host end `host_veth_name(id)` on `bridge` and up,
/// container end `ifname` (e.g. "eth0") directly inside `netns`, down and unaddressed
/// (see [`crate::iface::configure`]). Returns the host end's name. A leftover pair from
/// an earlier attempt is replaced.
pub fn attach(
    h: &mut Handle,
    bridge: &str,
    container_id: &str,
    netns: &NetNs,
    ifname: &str,
    mtu: Option<u32>,
) -> Result<String, BridgeError> {
    if container_id.is_empty() {
        return Err(BridgeError::EmptyContainerId(container_id.to_owned()));
    }
    let host = host_veth_name(container_id);
    let _span = info_span!("bridge_attach", bridge, host = %host, ifname).entered();
    h.delete_link_if_exists(&host).map_err(at(bridge))?;
    let mut spec = NewLink::new(
        &host,
        LinkKind::Veth {
            peer: ifname,
            peer_netns: Some(netns),
        },
    );
    spec.mtu = mtu;
    h.add_link(&spec).map_err(at(bridge))?;
    let rest = (|| {
        h.set_master(&host, bridge)?;
        h.set_up(&host, true)
    })();
    if let Err(e) = rest {
        // Don't leave a half-configured pair behind.
        let _ = h.delete_link_if_exists(&host);
        return Err(at(bridge)(e));
    }
    Ok(host)
}

/// Removes the container's veth pair (deleting the host end takes the container end
/// with it). Fine if it is already gone.
pub fn detach(h: &mut Handle, container_id: &str) -> Result<(), BridgeError> {
    let host = host_veth_name(container_id);
    h.delete_link_if_exists(&host)
        .map_err(|source| BridgeError::Link {
            bridge: format!("(veth {host})"),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 15);
        assert_eq!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdee")
        );
        assert!(crate::link::validate_name(&a).is_ok());
    }
}
