//! The five capability sets, through the `caps` crate. Names come from oci-spec's enum; a
//! capability the running kernel does not know is skipped (as runc does), not an error.

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("capabilities: {op}: {source}")]
    Apply {
        op: String,
        source: caps::errors::CapsError,
    },
    #[error("process.capabilities: effective set has {0} which is not in the permitted set")]
    NotPermitted(String),
}

fn convert(set: &Option<Capabilities>, supported: &CapsHashSet) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        if let Ok(cap) = format!("CAP_{c}").parse::<Cap>() {
            if supported.contains(&cap) {
                out.insert(cap);
            } else {
                tracing::warn!(capability = %c, "capability not supported by this kernel; ignored");
            }
        }
    }
    out
}

/// The sets a process gets, resolved against what the kernel supports.
#[derive(Debug, Default)]
pub struct Resolved {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// No `capabilities` object means an empty set everywhere, like runc.
pub fn resolve(caps: Option<&LinuxCapabilities>) -> Resolved {
    let supported = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    match caps {
        None => Resolved::default(),
        Some(c) => Resolved {
            bounding: convert(c.bounding(), &supported),
            effective: convert(c.effective(), &supported),
            permitted: convert(c.permitted(), &supported),
            inheritable: convert(c.inheritable(), &supported),
            ambient: convert(c.ambient(), &supported),
        },
    }
}

fn apply_err(op: &str) -> impl FnOnce(caps::errors::CapsError) -> CapsError + '_ {
    move |source| CapsError::Apply {
        op: op.to_string(),
        source,
    }
}

/// Drop everything outside the bounding set (before changing user, while we still can).
pub fn apply_bounding(r: &Resolved) -> Result<(), CapsError> {
    let current = caps::read(None, CapSet::Bounding).map_err(apply_err("read bounding set"))?;
    for c in current.difference(&r.bounding) {
        caps::drop(None, CapSet::Bounding, *c).map_err(apply_err("drop from bounding set"))?;
    }
    Ok(())
}

/// Set effective, permitted, inheritable and ambient (after the user change).
pub fn apply(r: &Resolved) -> Result<(), CapsError> {
    if let Some(c) = r.effective.difference(&r.permitted).next() {
        return Err(CapsError::NotPermitted(c.to_string()));
    }
    // Lower effective first: the kernel requires effective ⊆ permitted at every step.
    caps::set(None, CapSet::Effective, &r.effective).map_err(apply_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &r.permitted).map_err(apply_err("set permitted"))?;
    caps::set(None, CapSet::Inheritable, &r.inheritable).map_err(apply_err("set inheritable"))?;
    caps::clear(None, CapSet::Ambient).map_err(apply_err("clear ambient"))?;
    for c in &r.ambient {
        // An ambient capability must be permitted and inheritable; runc ignores the others.
        if r.permitted.contains(c) && r.inheritable.contains(c) {
            caps::raise(None, CapSet::Ambient, *c).map_err(apply_err("raise ambient"))?;
        }
    }
    Ok(())
}
