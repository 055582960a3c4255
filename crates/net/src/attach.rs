//! One container on one network: set up (OCI `createRuntime` hook) and torn down (`poststop`),
//! with every step recorded before it is taken, so a teardown after a crash, a kill or a failed
//! step undoes exactly what was done and the host is left as it was.
//!
//! Order of setup: record → pin the netns (device mode: the device must be given back even if
//! the container dies first) → address (IPAM) → link (veth on the bridge, macvlan/ipvlan on the
//! parent or its VLAN, or the moved device) → addresses and route inside → QoS → published
//! ports. Teardown walks the record backwards; each step is idempotent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn};

use crate::config::{self, Mode, Network, Store};
use crate::device::{self, ContainerSide, DeviceError, DeviceRecord};
use crate::iface::{self, IfaceConfig};
use crate::ipam::Owner;
use crate::link::{BondMode, IpvlanMode, MacvlanMode};
use crate::nat::PortMapping;
use crate::netlink::Handle;
use crate::netns::NetNs;
use crate::qos::{self, EgressLimit, Rate};
use crate::{bond, bridge, ipvlan, macvlan, vlan};

/// How long teardown waits for a device to come back from a dying netns (the kernel tears
/// namespaces down asynchronously).
const RETURN_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    #[error(transparent)]
    Nat(#[from] crate::nat::NatError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetNsError),
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error(transparent)]
    Macvlan(#[from] macvlan::MacvlanError),
    #[error(transparent)]
    Ipvlan(#[from] ipvlan::IpvlanError),
    #[error(transparent)]
    Vlan(#[from] vlan::VlanError),
    #[error(transparent)]
    Bond(#[from] bond::BondError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Iface(#[from] iface::IfaceError),
    #[error(transparent)]
    Qos(#[from] qos::QosError),
    #[error("network {network:?}: {field} {value:?}: {reason}")]
    Request {
        network: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("attachment record {path}: {reason}")]
    Record { path: PathBuf, reason: String },
}

/// What a container asks of a network (hook flags or `org.rcrun.net.*` annotations).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub container: String,
    pub network: String,
    /// A process in the container's network namespace.
    pub pid: i32,
    /// Interface name inside (default eth0).
    pub ifname: Option<String>,
    /// A static address.
    pub ip: Option<IpAddr>,
    /// A stable name: the address stays reserved for it across restarts.
    pub name: Option<String>,
    pub ports: Vec<PortMapping>,
    /// Rate of what the container sends / receives ("100mbit"); default: the network's qos.
    pub egress: Option<String>,
    pub ingress: Option<String>,
    /// Device mode: the pool device wanted.
    pub device: Option<String>,
}

/// What was done for one container on one network: saved before each step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container: String,
    pub network: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_name: Option<String>,
    /// The container process that was attached, and its start time (clock ticks since
    /// boot): `gc` tears down attachments whose process is gone.
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub pid_start: u64,
    /// Device mode: the netns pin (bind mount) that keeps the device reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_pin: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Bridge mode: the host end of the veth pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// macvlan/ipvlan: made inside the netns (goes with it).
    #[serde(default)]
    pub child_link: bool,
    /// Device mode: the pool device claimed, and the record of each device moved in
    /// (captured before its move): the device, or the two VFs of a bond pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRecord>,
    /// A bond pair: the bond made inside the netns over the moved VFs (a bond itself
    /// cannot change namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Setup finished.
    #[serde(default)]
    pub complete: bool,
}

fn record_path(store: &Store, container: &str, network: &str) -> PathBuf {
    store
        .root()
        .join("attachments")
        .join(format!("{container}@{network}.json"))
}

fn pin_path(store: &Store, container: &str, network: &str) -> PathBuf {
    store
        .root()
        .join("netns")
        .join(format!("{container}@{network}"))
}

fn save(store: &Store, a: &Attachment) -> Result<(), AttachError> {
    let path = record_path(store, &a.container, &a.network);
    let err = |reason: String| AttachError::Record {
        path: path.clone(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(a).map_err(|e| err(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| err(e.to_string()))
}

/// The record of `container` on `network`, if any.
pub fn load(
    store: &Store,
    container: &str,
    network: &str,
) -> Result<Option<Attachment>, AttachError> {
    let path = record_path(store, container, network);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| AttachError::Record {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AttachError::Record {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Every attachment record in the store (for `ls` and garbage collection).
pub fn list(store: &Store) -> Result<Vec<Attachment>, AttachError> {
    let dir = store.root().join("attachments");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(AttachError::Record {
                path: dir,
                reason: e.to_string(),
            })
        }
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        if let Ok(b) = std::fs::read(&p) {
            if let Ok(a) = serde_json::from_slice::<Attachment>(&b) {
                out.push(a);
            }
        }
    }
    out.sort_by(|a, b| (&a.container, &a.network).cmp(&(&b.container, &b.network)));
    Ok(out)
}

fn bad(net: &Network, field: &'static str, value: impl ToString, reason: &str) -> AttachError {
    AttachError::Request {
        network: net.name.clone(),
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn rate(
    net: &Network,
    field: &'static str,
    asked: Option<&str>,
    default: Option<&str>,
) -> Result<Option<Rate>, AttachError> {
    match asked.or(default) {
        None => Ok(None),
        Some(s) => Rate::from_str(s)
            .map(Some)
            .map_err(|e| bad(net, field, s, &e.to_string())),
    }
}

/// Sets the container up on the network. On any failure what was done is undone before the
/// error returns.
pub fn setup(store: &Store, req: &Request) -> Result<Attachment, AttachError> {
    let _span = info_span!("attach", container = %req.container, network = %req.network).entered();
    let net = store.load(&req.network)?;
    let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
    config::validate_ifname(&ifname).map_err(|r| bad(&net, "ifname", &ifname, &r))?;
    if req.pid <= 0 {
        return Err(bad(
            &net,
            "pid",
            req.pid,
            "the container has no process (state pid)",
        ));
    }
    if !req.ports.is_empty() && net.mode != Mode::Bridge {
        return Err(bad(
            &net,
            "ports",
            format!("{} mapping(s)", req.ports.len()),
            "published ports need a bridge network",
        ));
    }
    if req.device.is_some() && net.mode != Mode::Device {
        return Err(bad(
            &net,
            "device",
            req.device.as_deref().unwrap_or(""),
            "only device networks hand out devices",
        ));
    }
    let qos_default = net.qos.clone().unwrap_or_default();
    let egress = rate(
        &net,
        "egress",
        req.egress.as_deref(),
        qos_default.egress.as_deref(),
    )?;
    let ingress = rate(
        &net,
        "ingress",
        req.ingress.as_deref(),
        qos_default.ingress.as_deref(),
    )?;
    let netns = NetNs::of_pid(req.pid)?;
    let mut a = match load(store, &req.container, &req.network)? {
        // A completed attachment of the same container: setup is idempotent.
        Some(a) if a.complete => return Ok(a),
        // A leftover of a crashed attempt: undo it first.
        Some(a) => {
            teardown_record(store, &net, a)?;
            fresh(req, &ifname)
        }
        None => fresh(req, &ifname),
    };
    save(store, &a)?;
    let done = steps(store, &net, req, &netns, &mut a, egress, ingress);
    match done {
        Ok(()) => {
            a.complete = true;
            save(store, &a)?;
            info!(address = ?a.address, ifname = %a.ifname, "attached");
            Ok(a)
        }
        Err(e) => {
            warn!("setup failed, undoing: {e}");
            if let Err(u) = teardown_record(store, &net, a) {
                warn!("undo after failed setup: {u}");
            }
            Err(e)
        }
    }
}

fn fresh(req: &Request, ifname: &str) -> Attachment {
    Attachment {
        container: req.container.clone(),
        network: req.network.clone(),
        ifname: ifname.to_string(),
        stable_name: req.name.clone(),
        pid: req.pid,
        pid_start: start_time(req.pid).unwrap_or(0),
        ..Default::default()
    }
}

/// Field 22 of /proc/PID/stat: when the process started, which tells a reused pid apart.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after its end.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the attached process still runs (same pid, same start time).
pub fn process_alive(a: &Attachment) -> bool {
    a.pid > 0 && start_time(a.pid).is_some_and(|t| a.pid_start == 0 || t == a.pid_start)
}

/// Tears down every attachment whose container process is gone (a runtime that never ran
/// the poststop hook, a crashed host process); returns what was removed.
pub fn gc(store: &Store) -> Result<Vec<Attachment>, AttachError> {
    let mut removed = Vec::new();
    for a in list(store)? {
        if process_alive(&a) {
            continue;
        }
        let _span = info_span!("gc", container = %a.container, network = %a.network).entered();
        teardown(store, &a.container, &a.network)?;
        removed.push(a);
    }
    Ok(removed)
}

fn steps(
    store: &Store,
    net: &Network,
    req: &Request,
    netns: &NetNs,
    a: &mut Attachment,
    egress: Option<Rate>,
    ingress: Option<Rate>,
) -> Result<(), AttachError> {
    let mut h = Handle::new()?;
    // Pinned in every mode: teardown can always reach the container's side (a moved device,
    // a macvlan) even after the container's processes are gone, or while they still run.
    {
        let pin = pin_path(store, &a.container, &a.network);
        a.netns_pin = Some(pin.clone());
        save(store, a)?;
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir).map_err(|e| AttachError::Record {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        NetNs::pin(req.pid, &pin)?;
    }
    let owner = match &req.name {
        Some(n) => Owner::named(&a.container, n),
        None => Owner::container(&a.container),
    };
    let alloc = store.ipam().allocate(&net.name, &owner, req.ip)?;
    a.address = Some(alloc.address);
    a.gateway = Some(alloc.gateway);
    save(store, a)?;

    // The interface that gets the address: the container end, or the VLAN on a moved device.
    let mut addr_if = a.ifname.clone();
    match net.mode {
        Mode::Bridge => {
            let bridge_name = net.bridge.clone().unwrap_or_else(|| "rcrun0".into());
            let gw = IpNet::new(alloc.gateway, alloc.address.prefix_len())
                .map_err(|e| bad(net, "gateway", alloc.gateway, &e.to_string()))?;
            bridge::ensure_bridge(&mut h, &bridge_name, &[gw], net.mtu)?;
            // The bridge's uplink: the parent, or its VLAN parent.VID (a VLAN per network).
            if let Some(parent) = net.parent.as_deref() {
                let up = match net.vlan {
                    Some(vid) => vlan::ensure(&mut h, parent, vid, net.mtu)?,
                    None => parent.to_string(),
                };
                h.set_master(&up, &bridge_name)
                    .map_err(|e| bad(net, "parent", &up, &e.to_string()))?;
                h.set_up(&up, true)
                    .map_err(|e| bad(net, "parent", &up, &e.to_string()))?;
            }
            if net.nat {
                store.nat().setup(net)?;
            }
            a.host_veth = Some(bridge::host_veth_name(&a.container));
            save(store, a)?;
            bridge::attach(
                &mut h,
                &bridge_name,
                &a.container,
                netns,
                &a.ifname,
                net.mtu,
            )?;
        }
        Mode::Macvlan | Mode::Ipvlan => {
            let parent = net
                .parent
                .clone()
                .ok_or_else(|| bad(net, "parent", "", "required for this mode"))?;
            let lower = match net.vlan {
                Some(vid) => vlan::ensure(&mut h, &parent, vid, net.mtu)?,
                None => parent,
            };
            a.child_link = true;
            save(store, a)?;
            // Made under a temporary name, then renamed inside: the kernel checks an ipvlan's
            // name against the parent's namespace too, where "eth0" may well exist.
            let tmp = temp_ifname(&a.container);
            if net.mode == Mode::Macvlan {
                let mode = net.macvlan_mode.unwrap_or(MacvlanMode::Bridge);
                macvlan::setup(&mut h, &lower, netns, &tmp, mode, net.mtu, None)?;
            } else {
                let mode = net.ipvlan_mode.unwrap_or(IpvlanMode::L2);
                ipvlan::setup(&mut h, &lower, netns, &tmp, mode, net.mtu)?;
            }
            let ifname = a.ifname.clone();
            netns.run(|| -> Result<(), AttachError> {
                let mut nh = Handle::new()?;
                nh.rename(&tmp, &ifname)
                    .map_err(|e| bad(net, "ifname", &ifname, &e.to_string()))
            })??;
        }
        Mode::Device => {
            let dev = store
                .pool()
                .claim(&net.name, &a.container, req.device.as_deref())?;
            a.claimed = Some(dev.clone());
            save(store, a)?;
            let pin = a.netns_pin.clone().unwrap_or_default();
            match bond_pair(net, &dev)? {
                None => {
                    let side = ContainerSide {
                        name: a.ifname.clone(),
                        mtu: net.mtu,
                        mac: None,
                        vlan: net.vlan,
                    };
                    let record = device::capture(&mut h, &dev, &pin, side)?;
                    a.devices.push(record.clone());
                    save(store, a)?;
                    addr_if = device::move_in(&mut h, &record)?;
                }
                Some((mode, members)) => {
                    for (i, m) in members.iter().enumerate() {
                        // Inside, the VFs are the bond's ports: eth0s0, eth0s1 (their host
                        // names may be the bond's own name there, e.g. eth0).
                        let side = ContainerSide {
                            name: port_name(&a.ifname, i),
                            ..Default::default()
                        };
                        let record = device::capture(&mut h, m, &pin, side)?;
                        a.devices.push(record.clone());
                        save(store, a)?;
                        device::move_in(&mut h, &record)?;
                    }
                    a.bond = Some(a.ifname.clone());
                    save(store, a)?;
                    let ports: Vec<String> = (0..members.len())
                        .map(|i| port_name(&a.ifname, i))
                        .collect();
                    addr_if = bond_inside(netns, net, &a.ifname, &ports, mode)?;
                }
            }
        }
    }
    iface::configure(
        netns,
        &IfaceConfig {
            name: addr_if.clone(),
            addresses: vec![alloc.address],
            gateways: vec![alloc.gateway],
            mtu: None,
            mac: None,
        },
    )?;
    // What the container sends: shaped on its own interface (it cannot change that qdisc
    // without CAP_NET_ADMIN). What it receives: on the host end of its veth, else policed on
    // its interface.
    if let Some(r) = egress {
        let ifn = addr_if.clone();
        netns.run(move || -> Result<(), AttachError> {
            let mut nh = Handle::new()?;
            qos::set_egress(&mut nh, &ifn, &EgressLimit::new(r))?;
            Ok(())
        })??;
    }
    if let Some(r) = ingress {
        match &a.host_veth {
            Some(host) => qos::set_egress(&mut h, host, &EgressLimit::new(r))?,
            None => {
                let ifn = addr_if.clone();
                netns.run(move || -> Result<(), AttachError> {
                    let mut nh = Handle::new()?;
                    qos::set_ingress(&mut nh, &ifn, r, None)?;
                    Ok(())
                })??;
            }
        }
    }
    if !req.ports.is_empty() {
        a.ports = req.ports.clone();
        save(store, a)?;
        store
            .nat()
            .publish(net, &a.container, alloc.address.addr(), &req.ports)?;
    }
    Ok(())
}

/// A name no container interface has: "rc" and 12 hex digits of the container id's hash.
fn temp_ifname(container: &str) -> String {
    format!("rc{:012x}", bridge::fnv1a(container.as_bytes()) >> 16)
}

/// The i-th bond port inside the container: "eth0s0", cut to fit 15 bytes.
fn port_name(ifname: &str, i: usize) -> String {
    let suffix = format!("s{i}");
    let keep = 15usize.saturating_sub(suffix.len()).min(ifname.len());
    format!("{}{suffix}", ifname.get(..keep).unwrap_or(ifname))
}

/// Device mode with `bond` pairs: the pool entry `dev` names two VFs to bond.
fn bond_pair(net: &Network, dev: &str) -> Result<Option<(BondMode, Vec<String>)>, AttachError> {
    let Some(spec) = &net.bond else {
        return Ok(None);
    };
    let Some(pair) = spec.pairs.iter().find(|p| p.name == dev) else {
        return Ok(None);
    };
    let mode = BondMode::from_str(&spec.mode)
        .map_err(|e| bad(net, "bond.mode", &spec.mode, &e.to_string()))?;
    Ok(Some((mode, pair.members.to_vec())))
}

/// The container's one logical NIC: a bond over the VFs just moved in, named `ifname`, with
/// the network's MTU and VLAN. Returns the interface that gets the address.
fn bond_inside(
    netns: &NetNs,
    net: &Network,
    ifname: &str,
    members: &[String],
    mode: BondMode,
) -> Result<String, AttachError> {
    let (mtu, vid) = (net.mtu, net.vlan);
    netns.run(|| -> Result<String, AttachError> {
        let mut nh = Handle::new()?;
        let names: Vec<&str> = members.iter().map(String::as_str).collect();
        bond::create_named(&mut nh, ifname, &names, mode)?;
        if let Some(m) = mtu {
            nh.set_mtu(ifname, m)
                .map_err(|e| bad(net, "mtu", m, &e.to_string()))?;
        }
        info!(bond = ifname, ?members, "bond created in the container");
        match vid {
            Some(v) => Ok(vlan::ensure(&mut nh, ifname, v, mtu)?),
            None => Ok(ifname.to_string()),
        }
    })?
}

/// Tears the container down from the network: ports, links, device, address, pool, pin,
/// record. Fine if there is nothing (already torn down).
pub fn teardown(store: &Store, container: &str, network: &str) -> Result<bool, AttachError> {
    let _span = info_span!("detach", container, network).entered();
    let Some(a) = load(store, container, network)? else {
        return Ok(false);
    };
    let net = store.load(network)?;
    teardown_record(store, &net, a)?;
    Ok(true)
}

fn teardown_record(store: &Store, net: &Network, a: Attachment) -> Result<(), AttachError> {
    let mut first: Option<AttachError> = None;
    let mut note = |r: Result<(), AttachError>| {
        if let Err(e) = r {
            warn!("teardown: {e}");
            first.get_or_insert(e);
        }
    };
    if !a.ports.is_empty() {
        note(
            store
                .nat()
                .unpublish(&a.container)
                .map(drop)
                .map_err(Into::into),
        );
    }
    let mut h = Handle::new()?;
    if a.host_veth.is_some() {
        note(bridge::detach(&mut h, &a.container).map_err(Into::into));
    }
    if a.child_link {
        // Only reachable through the pin; otherwise it went with the container's netns.
        if let Some(ns) = a.netns_pin.as_ref().and_then(|p| NetNs::open(p).ok()) {
            let r = if net.mode == Mode::Ipvlan {
                ipvlan::teardown(&ns, &a.ifname).map_err(Into::into)
            } else {
                macvlan::teardown(&ns, &a.ifname).map_err(Into::into)
            };
            note(r);
        }
    }
    if let (Some(bond), Some(ns)) = (
        &a.bond,
        a.netns_pin.as_ref().and_then(|p| NetNs::open(p).ok()),
    ) {
        let r = ns.run(|| -> Result<(), AttachError> {
            let mut nh = Handle::new()?;
            bond::destroy(&mut nh, bond)?;
            Ok(())
        });
        note(r.map_err(AttachError::from).and_then(|x| x));
    }
    for rec in a.devices.iter().rev() {
        note(device::restore_waiting(&mut h, rec, RETURN_WAIT).map_err(Into::into));
    }
    if a.claimed.is_some() {
        note(
            store
                .pool()
                .release(&net.name, &a.container)
                .map(drop)
                .map_err(Into::into),
        );
    }
    if a.address.is_some() {
        note(
            store
                .ipam()
                .release(&net.name, &a.container)
                .map(drop)
                .map_err(Into::into),
        );
    }
    if let Some(pin) = &a.netns_pin {
        note(NetNs::unpin(pin).map_err(Into::into));
    }
    if let Some(e) = first {
        // Keep the record: a later teardown (or `rcrun-net gc`) retries what failed.
        return Err(e);
    }
    let path = record_path(store, &a.container, &a.network);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AttachError::Record {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Where a store lives unless told otherwise.
pub fn default_store_root() -> &'static Path {
    Path::new("/var/lib/rcrun/net")
}
