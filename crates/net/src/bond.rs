//! Bonds of VFs: `cbondN` with members set down and enslaved.

use tracing::info_span;

pub use crate::link::BondMode;
use crate::link::{LinkError, LinkKind, NewLink};
use crate::netlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum BondError {
    #[error("bonding is not available in this kernel (modprobe bonding)")]
    Unavailable,
    #[error("bond {name:?}: needs at least one member")]
    NoMembers { name: String },
    #[error("bond {name:?}: no free cbondN name")]
    NoFreeName { name: String },
    #[error("bond {name:?}: {source}")]
    Link {
        name: String,
        #[source]
        source: LinkError,
    },
}

/// The first `cbondN` not in use.
pub fn free_name(h: &mut Handle) -> Result<String, BondError> {
    let taken: Vec<String> = h
        .links()
        .map_err(|source| BondError::Link {
            name: "cbond*".into(),
            source,
        })?
        .into_iter()
        .map(|l| l.name)
        .collect();
    (0..10_000)
        .map(|n| format!("cbond{n}"))
        .find(|n| !taken.contains(n))
        .ok_or(BondError::NoFreeName {
            name: "cbond*".into(),
        })
}

/// Creates a bond under the first free `cbondN` name with `members` enslaved; returns
/// its name.
pub fn create(h: &mut Handle, members: &[&str], mode: BondMode) -> Result<String, BondError> {
    let name = free_name(h)?;
    create_named(h, &name, members, mode)?;
    Ok(name)
}

/// Creates bond `name` with `members` (set down, then enslaved) and brings it up.
/// On failure the bond is removed again and members are released.
pub fn create_named(
    h: &mut Handle,
    name: &str,
    members: &[&str],
    mode: BondMode,
) -> Result<(), BondError> {
    let _span = info_span!("bond_create", bond = name, ?mode, ?members).entered();
    if members.is_empty() {
        return Err(BondError::NoMembers {
            name: name.to_owned(),
        });
    }
    let err = |source| BondError::Link {
        name: name.to_owned(),
        source,
    };
    // Check the members first, so a typo does not leave a bond behind.
    for m in members {
        h.require_link(m).map_err(err)?;
    }
    match h.add_link(&NewLink::new(name, LinkKind::Bond { mode })) {
        Ok(()) => {}
        // The kernel answers an unknown link kind with EOPNOTSUPP.
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => return Err(BondError::Unavailable),
        Err(e) => return Err(err(e)),
    }
    let r = (|| {
        for m in members {
            h.set_up(m, false)?;
            h.set_master(m, name)?;
        }
        h.set_up(name, true)
    })();
    if let Err(e) = r {
        let _ = destroy(h, name);
        return Err(err(e));
    }
    Ok(())
}

/// Releases the members (left down) and deletes the bond. Fine if it is gone.
pub fn destroy(h: &mut Handle, name: &str) -> Result<(), BondError> {
    let err = |source| BondError::Link {
        name: name.to_owned(),
        source,
    };
    let Some(bond) = h.link(name).map_err(err)? else {
        return Ok(());
    };
    for l in h.links().map_err(err)? {
        if l.master == Some(bond.index) {
            h.set_nomaster(&l.name).map_err(err)?;
        }
    }
    h.delete_link_if_exists(name).map_err(err)?;
    Ok(())
}

/// Names of the links enslaved to bond `name`.
pub fn members(h: &mut Handle, name: &str) -> Result<Vec<String>, BondError> {
    let err = |source| BondError::Link {
        name: name.to_owned(),
        source,
    };
    let bond = h.require_link(name).map_err(err)?;
    Ok(h.links()
        .map_err(err)?
        .into_iter()
        .filter(|l| l.master == Some(bond.index))
        .map(|l| l.name)
        .collect())
}
