//! Forwarding sysctls. `/proc/sys/net` belongs to the network namespace of the thread that
//! opens it, so these act on the caller's (the host's) namespace.

use std::fs;
use std::path::Path;

use tracing::info;

use super::NatError;

/// Sets a boolean sysctl to 1; returns whether it changed.
pub(super) fn enable(path: &str) -> Result<bool, NatError> {
    let p = Path::new(path);
    let cur = fs::read_to_string(p).map_err(|e| NatError::Sysctl {
        path: path.to_string(),
        source: e,
    })?;
    if cur.trim() == "1" {
        return Ok(false);
    }
    fs::write(p, "1\n").map_err(|e| NatError::Sysctl {
        path: path.to_string(),
        source: e,
    })?;
    info!(sysctl = path, "enabled (was {})", cur.trim());
    Ok(true)
}

pub(super) fn enable_forwarding(ipv6: bool) -> Result<bool, NatError> {
    if ipv6 {
        enable("/proc/sys/net/ipv6/conf/all/forwarding")
    } else {
        enable("/proc/sys/net/ipv4/ip_forward")
    }
}
