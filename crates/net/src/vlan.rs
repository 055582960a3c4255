//! VLAN sub-interfaces (802.1Q) on a host parent: `parent.VID`, idempotent.

use tracing::info_span;

use crate::bridge::fnv1a;
use crate::link::{validate_name, LinkError, LinkKind, NewLink, MAX_NAME_LEN};
use crate::netlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    #[error("VLAN {vid} on {parent:?}: id must be in 1..=4094")]
    BadId { parent: String, vid: u16 },
    #[error("VLAN {vid} on {parent:?}: interface {name:?} exists but is not that VLAN ({found})")]
    Conflict {
        parent: String,
        vid: u16,
        name: String,
        found: String,
    },
    #[error("VLAN {vid} on {parent:?}: {source}")]
    Link {
        parent: String,
        vid: u16,
        #[source]
        source: LinkError,
    },
}

/// The sub-interface name: `parent.VID` when it fits in 15 bytes, otherwise
/// "vl" + a hash of the parent name + ".VID" (stable, so later calls find it).
pub fn vlan_name(parent: &str, vid: u16) -> String {
    let plain = format!("{parent}.{vid}");
    if plain.len() <= MAX_NAME_LEN {
        return plain;
    }
    let suffix = format!(".{vid}");
    let hex = format!("{:016x}", fnv1a(parent.as_bytes()));
    let room = MAX_NAME_LEN - 2 - suffix.len();
    format!("vl{}{suffix}", &hex[..room.min(hex.len())])
}

/// Makes sure VLAN `vid` exists on `parent`, is up (with the parent) and has `mtu`
/// when given; returns its name.
pub fn ensure(
    h: &mut Handle,
    parent: &str,
    vid: u16,
    mtu: Option<u32>,
) -> Result<String, VlanError> {
    let _span = info_span!("vlan_ensure", parent, vid).entered();
    if !(1..=4094).contains(&vid) {
        return Err(VlanError::BadId {
            parent: parent.to_owned(),
            vid,
        });
    }
    let err = |source| VlanError::Link {
        parent: parent.to_owned(),
        vid,
        source,
    };
    validate_name(parent).map_err(err)?;
    let name = vlan_name(parent, vid);
    let parent_link = h.require_link(parent).map_err(err)?;
    match h.link(&name).map_err(err)? {
        Some(l) => {
            if l.kind.as_deref() != Some("vlan")
                || l.vlan_id != Some(vid)
                || l.parent != Some(parent_link.index)
            {
                return Err(VlanError::Conflict {
                    parent: parent.to_owned(),
                    vid,
                    name,
                    found: format!(
                        "kind {}, id {:?}, lower index {:?}",
                        l.kind.unwrap_or_else(|| "device".into()),
                        l.vlan_id,
                        l.parent
                    ),
                });
            }
        }
        None => {
            let mut spec = NewLink::new(&name, LinkKind::Vlan { parent, id: vid });
            spec.mtu = mtu;
            match h.add_link(&spec) {
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                r => r.map_err(err)?,
            }
        }
    }
    if let Some(m) = mtu {
        h.set_mtu(&name, m).map_err(err)?;
    }
    h.set_up(parent, true).map_err(err)?;
    h.set_up(&name, true).map_err(err)?;
    Ok(name)
}

/// Deletes VLAN `vid` of `parent` if present.
pub fn remove(h: &mut Handle, parent: &str, vid: u16) -> Result<(), VlanError> {
    let name = vlan_name(parent, vid);
    h.delete_link_if_exists(&name)
        .map_err(|source| VlanError::Link {
            parent: parent.to_owned(),
            vid,
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        assert_eq!(vlan_name("eth0", 100), "eth0.100");
        assert_eq!(vlan_name("enp1s0f0np0", 409), "enp1s0f0np0.409");
        let long = vlan_name("enp129s0f1np1v3", 4094);
        assert!(long.len() <= MAX_NAME_LEN, "{long}");
        assert!(long.starts_with("vl") && long.ends_with(".4094"), "{long}");
        assert_eq!(long, vlan_name("enp129s0f1np1v3", 4094));
        assert_ne!(long, vlan_name("enp129s0f1np1v4", 4094));
    }
}
