//! runtime-spec 1.3 `linux.netDevices`: host interfaces moved into the container's network
//! namespace at create, renamed when asked, their addresses kept (as runc does), and given back
//! under their original names, with MTU, MAC and addresses, at delete.
//!
//! Each device's record is saved in the state directory before it moves (`net-devices.json`),
//! so a create that fails or is killed, or a `delete --force` without state.json, still knows
//! what to give back. A container with its own network namespace loses it when its last
//! process exits: a physical device (an SR-IOV VF) then returns to the host by itself, under
//! its container-side name, and delete renames it back; a virtual one (a veth) dies with the
//! namespace. A namespace joined by path outlives the container: delete moves the device out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rcrun_net::device::{self, ContainerSide, DeviceError, DeviceRecord};
use rcrun_net::iface::{self, IfaceConfig};
use rcrun_net::netlink::Handle;
use rcrun_net::netns::NetNs;

/// The records of the moved devices, in the state directory.
pub const RECORD_FILE: &str = "net-devices.json";

/// How long delete waits for a device to come back from a dying network namespace (the
/// kernel tears namespaces down asynchronously).
const RETURN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NetDeviceError {
    #[error("linux.netDevices: moving network devices needs a network namespace of the container's own (linux.namespaces has no \"network\" entry)")]
    NoNetns,
    #[error("linux.netDevices[{host:?}]: {what}: {reason}")]
    BadName {
        host: String,
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("linux.netDevices: {a:?} and {b:?} both become {name:?} in the container")]
    Duplicate { a: String, b: String, name: String },
    #[error("linux.netDevices[{host:?}]: {source}")]
    Device {
        host: String,
        #[source]
        source: DeviceError,
    },
    #[error("linux.netDevices[{host:?}]: addresses in the container: {source}")]
    Iface {
        host: String,
        #[source]
        source: iface::IfaceError,
    },
    #[error("linux.netDevices: netlink: {0}")]
    Netlink(#[source] rcrun_net::netlink::NetlinkError),
    #[error("linux.netDevices: {what} {path}: {source}")]
    Record {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The devices of the spec, sorted by host name: (host name, name in the container).
fn wanted(spec: &Spec) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.net_devices().as_ref())
        .map(|m| {
            m.iter()
                .map(|(host, d)| {
                    let name = d
                        .name()
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(host);
                    (host.clone(), name.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn check_name(host: &str, what: &'static str, name: &str) -> Result<(), NetDeviceError> {
    rcrun_net::link::validate_name(name).map_err(|e| NetDeviceError::BadName {
        host: host.into(),
        what,
        name: name.into(),
        reason: e.to_string(),
    })
}

/// Checks the field before anything is made: names, and a network namespace to move into.
pub fn validate(spec: &Spec) -> Result<(), NetDeviceError> {
    let devices = wanted(spec);
    if devices.is_empty() {
        return Ok(());
    }
    if crate::spec::namespace(spec, LinuxNamespaceType::Network).is_none() {
        return Err(NetDeviceError::NoNetns);
    }
    let mut seen: std::collections::HashMap<&str, &str> = Default::default();
    for (host, name) in &devices {
        check_name(host, "host device", host)?;
        check_name(host, "name", name)?;
        if let Some(other) = seen.insert(name.as_str(), host.as_str()) {
            return Err(NetDeviceError::Duplicate {
                a: other.into(),
                b: host.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// Devices moved by a create in progress; [`Moved::undo`] gives them back if it fails.
#[derive(Debug, Default)]
pub struct Moved {
    records: Vec<DeviceRecord>,
}

impl Moved {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Gives every device back (create failed; the container's namespace is still alive).
    pub fn undo(self) {
        if let Err(e) = give_back(&self.records, false) {
            tracing::warn!("cleanup after failed create: {e}");
        }
    }
}

/// Moves the spec's devices into the network namespace of `pid` (a container process that
/// waits for "go"), saving each record in `state_dir` first. On error, what already moved is
/// returned to the host before this returns.
pub fn move_in(spec: &Spec, state_dir: &Path, pid: i32) -> Result<Moved, NetDeviceError> {
    let devices = wanted(spec);
    let mut moved = Moved::default();
    if devices.is_empty() {
        return Ok(moved);
    }
    let _span = tracing::info_span!("net_devices", count = devices.len()).entered();
    // A namespace joined by path is found by that path at delete; the container's own one
    // through its process while it lives.
    let netns_path = crate::spec::namespace(spec, LinuxNamespaceType::Network)
        .and_then(|ns| ns.path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/ns/net")));
    let mut h = Handle::new().map_err(NetDeviceError::Netlink)?;
    for (host, name) in devices {
        let record = device::capture(
            &mut h,
            &host,
            &netns_path,
            ContainerSide {
                name: name.clone(),
                ..Default::default()
            },
        )
        .map_err(|source| NetDeviceError::Device {
            host: host.clone(),
            source,
        });
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                moved.undo();
                return Err(e);
            }
        };
        moved.records.push(record.clone());
        let done = save(state_dir, &moved.records)
            .and_then(|()| {
                device::move_in(&mut h, &record).map_err(|source| NetDeviceError::Device {
                    host: host.clone(),
                    source,
                })
            })
            .and_then(|ifname| {
                // Moving a device flushes its addresses; runc puts them back in the container.
                if record.addresses.is_empty() {
                    return Ok(());
                }
                let ns = NetNs::open(&netns_path).map_err(|e| NetDeviceError::Device {
                    host: host.clone(),
                    source: DeviceError::Netns {
                        name: host.clone(),
                        source: e,
                    },
                })?;
                iface::configure(
                    &ns,
                    &IfaceConfig {
                        name: ifname,
                        addresses: record.addresses.clone(),
                        ..Default::default()
                    },
                )
                .map_err(|source| NetDeviceError::Iface {
                    host: host.clone(),
                    source,
                })
            });
        if let Err(e) = done {
            moved.undo();
            return Err(e);
        }
    }
    Ok(moved)
}

fn save(state_dir: &Path, records: &[DeviceRecord]) -> Result<(), NetDeviceError> {
    let path = state_dir.join(RECORD_FILE);
    let tmp = state_dir.join(format!(".{RECORD_FILE}.tmp"));
    let bytes = serde_json::to_vec(records).unwrap_or_default();
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| NetDeviceError::Record {
            what: "save",
            path,
            source,
        })
}

/// Delete (the container's processes are dead): gives back the devices recorded in
/// `state_dir`, if any.
pub fn release(state_dir: &Path) -> Result<(), NetDeviceError> {
    let path = state_dir.join(RECORD_FILE);
    let records: Vec<DeviceRecord> = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; no device to give back", path.display());
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NetDeviceError::Record {
                what: "read",
                path,
                source,
            })
        }
    };
    give_back(&records, true)
}

/// `dead`: the container's processes are gone, so its own namespace (a `/proc/PID` path) is
/// gone too and a device can only be on the host, or destroyed with it if virtual.
fn give_back(records: &[DeviceRecord], dead: bool) -> Result<(), NetDeviceError> {
    let mut h = Handle::new().map_err(NetDeviceError::Netlink)?;
    let mut first_err = None;
    for r in records.iter().rev() {
        let mut r = r.clone();
        let netns_gone = dead && r.netns_path.starts_with("/proc");
        if netns_gone {
            // /proc/PID may name another process by now.
            r.netns_path = PathBuf::new();
        }
        let wait = if netns_gone {
            RETURN_WAIT
        } else {
            Duration::ZERO
        };
        let res = match device::restore_waiting(&mut h, &r, wait) {
            // A virtual device (veth) is destroyed with its namespace: nothing to give back.
            Err(DeviceError::NotFound { .. }) if netns_gone => {
                tracing::warn!(
                    device = %r.host_name,
                    "did not come back from the container's network namespace (a virtual device dies with it)"
                );
                Ok(())
            }
            other => other,
        };
        if let Err(source) = res {
            tracing::warn!(device = %r.host_name, "give back: {source}");
            first_err.get_or_insert(NetDeviceError::Device {
                host: r.host_name.clone(),
                source,
            });
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
