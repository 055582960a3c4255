//! Network definitions and the on-disk network store.
//!
//! A network is a JSON document (camelCase fields, unknown fields refused) kept at
//! `<root>/networks/<name>.json`; the root defaults to [`DEFAULT_ROOT`]. Every value is checked
//! by [`Network::validate`], and errors name the network, the field and the value. The store
//! ([`Store`]) also owns the IPAM (`<root>/ipam/`) and device-pool (`<root>/pools/`) state; see
//! [`crate::ipam`] and [`crate::pool`].

mod json;
mod rate;
pub(crate) mod state;
mod store;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use rate::parse_rate;
pub use state::StateError;
pub use store::{Store, DEFAULT_ROOT};

/// Longest network name.
pub const MAX_NAME_LEN: usize = 32;
/// Longest Linux interface name in bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Errors of network definitions and the network store.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("network {network:?}: {field} {value:?}: {reason}")]
    Invalid {
        network: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("network {network:?}: {source}")]
    Json {
        network: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("network {0:?} already exists")]
    Exists(String),
    #[error("network {0:?} does not exist")]
    NotFound(String),
    #[error(
        "network {network:?}: subnet {subnet} overlaps subnet {other_subnet} of network {other:?}"
    )]
    Overlap {
        network: String,
        subnet: IpNet,
        other: String,
        other_subnet: IpNet,
    },
    #[error("network {network:?}: bridge {bridge:?} is already used by network {other:?}")]
    BridgeInUse {
        network: String,
        bridge: String,
        other: String,
    },
    #[error(
        "network {network:?} has {live} live address allocation(s) ({owners}); \
         detach them first or remove with force"
    )]
    InUse {
        network: String,
        live: usize,
        owners: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// How containers are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// veth pair, host end enslaved to a Linux bridge.
    Bridge,
    /// macvlan child of `parent`.
    Macvlan,
    /// ipvlan child of `parent`.
    Ipvlan,
    /// A host device from `devices` (e.g. an SR-IOV VF or a bond) moved into the container.
    Device,
}

// The link layer's own modes: the definition names exactly what the kernel is asked for.
pub use crate::link::{IpvlanMode, MacvlanMode};

/// Inclusive allocation range inside the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

/// Bonding of member pairs (e.g. two VFs of different PFs) into the devices handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BondSpec {
    /// Kernel bonding mode name: balance-rr, active-backup, balance-xor, broadcast, 802.3ad,
    /// balance-tlb or balance-alb.
    pub mode: String,
    pub pairs: Vec<BondPair>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BondPair {
    /// Name of the bond device; it joins the network's device pool.
    pub name: String,
    pub members: [String; 2],
}

const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
];

/// Default traffic limits per attachment; rates in tc syntax ("100mbit", "1gbit", "500kbps").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Qos {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
}

impl Qos {
    /// Egress rate in bits per second (validated networks never fail here).
    pub fn egress_bps(&self) -> Option<u64> {
        self.egress.as_deref().and_then(|r| parse_rate(r).ok())
    }
    /// Ingress rate in bits per second.
    pub fn ingress_bps(&self) -> Option<u64> {
        self.ingress.as_deref().and_then(|r| parse_rate(r).ok())
    }
}

/// resolv.conf contents for attached containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A network definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub name: String,
    pub mode: Mode,
    /// Bridge device (bridge mode). When absent, [`Store::create`] picks the first free
    /// `rcrunN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Host device that macvlan/ipvlan (or their VLAN) children hang off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<MacvlanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_mode: Option<IpvlanMode>,
    /// 802.1Q VLAN id: children hang off `<parent>.<vlan>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub subnet: IpNet,
    /// Defaults to the first host address of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<AddrRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade traffic leaving the subnet (bridge mode only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat: bool,
    /// Device mode: host devices handed out one per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<Qos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// Validates a network name (also used for file names in the store).
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let reason = if name.is_empty() || name.len() > MAX_NAME_LEN {
        format!("must be 1 to {MAX_NAME_LEN} characters long")
    } else if !ok_chars {
        "may only contain letters, digits, '_', '.' and '-'".to_string()
    } else if name == "." || name == ".." {
        "is not a usable name".to_string()
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        network: name.to_string(),
        field: "name",
        value: name.to_string(),
        reason,
    })
}

/// Validates a Linux interface name.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface names are 1 to {MAX_IFNAME_LEN} bytes long"
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(
            "not a valid interface name ('/', ':' and whitespace are not allowed)".to_string(),
        );
    }
    Ok(())
}

fn u128_of(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// First and last usable host address of `subnet` (IPv4 excludes network and broadcast
/// addresses, IPv6 the subnet-router anycast address), or `None` when there is none.
pub fn host_bounds(subnet: &IpNet) -> Option<(u128, u128)> {
    let net = u128_of(subnet.network());
    let last = u128_of(subnet.broadcast());
    let (first, last) = match subnet {
        IpNet::V4(_) => (net.checked_add(1)?, last.checked_sub(1)?),
        IpNet::V6(_) => (net.checked_add(1)?, last),
    };
    (first <= last).then_some((first, last))
}

impl Network {
    /// Parses and validates a JSON definition.
    pub fn from_json(text: &str) -> Result<Network, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| ConfigError::Json {
                network: "?".to_string(),
                source,
            })?;
        let network = value
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        // Typed fields are checked first so their errors name the network, field and value
        // (serde's own messages name neither).
        json::precheck(&network, &value)?;
        let net: Network = serde_json::from_value(value)
            .map_err(|source| ConfigError::Json { network, source })?;
        net.validate()?;
        Ok(net)
    }

    fn invalid(
        &self,
        field: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            network: self.name.clone(),
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The gateway: the configured one or the first host address.
    pub fn gateway(&self) -> Option<IpAddr> {
        if self.gateway.is_some() {
            return self.gateway;
        }
        let (first, _) = host_bounds(&self.subnet)?;
        Some(addr_of(&self.subnet, first))
    }

    /// The inclusive allocation range as integers: `range` or the subnet's hosts.
    pub fn allocation_bounds(&self) -> Option<(u128, u128)> {
        match self.range {
            Some(r) => Some((u128_of(r.start), u128_of(r.end))),
            None => host_bounds(&self.subnet),
        }
    }

    /// The device names handed out in device mode: `devices` and the bonds' names.
    pub fn device_pool(&self) -> Vec<String> {
        let mut pool = self.devices.clone();
        if let Some(bond) = &self.bond {
            for p in &bond.pairs {
                if !pool.contains(&p.name) {
                    pool.push(p.name.clone());
                }
            }
        }
        pool
    }

    /// Checks every field; the error names the network, the field and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        let is = |m: Mode| self.mode == m;
        if let Some(b) = &self.bridge {
            if !is(Mode::Bridge) {
                return Err(self.invalid("bridge", b, "only valid in bridge mode"));
            }
            validate_ifname(b).map_err(|r| self.invalid("bridge", b, r))?;
        }
        match &self.parent {
            Some(p) => {
                // Bridge mode: the uplink, a VLAN sub-interface of it when `vlan` is set.
                if is(Mode::Device) {
                    return Err(self.invalid(
                        "parent",
                        p,
                        "only valid in bridge (uplink), macvlan and ipvlan modes",
                    ));
                }
                validate_ifname(p).map_err(|r| self.invalid("parent", p, r))?;
            }
            None if is(Mode::Macvlan) || is(Mode::Ipvlan) => {
                return Err(self.invalid("parent", "", "required in macvlan and ipvlan modes"));
            }
            None => {}
        }
        if let Some(m) = self.macvlan_mode {
            if !is(Mode::Macvlan) {
                return Err(self.invalid(
                    "macvlanMode",
                    format!("{m:?}").to_lowercase(),
                    "only valid in macvlan mode",
                ));
            }
        }
        if let Some(m) = self.ipvlan_mode {
            if !is(Mode::Ipvlan) {
                return Err(self.invalid(
                    "ipvlanMode",
                    format!("{m:?}").to_lowercase(),
                    "only valid in ipvlan mode",
                ));
            }
        }
        if let Some(v) = self.vlan {
            if !(1..=4094).contains(&v) {
                return Err(self.invalid("vlan", v, "VLAN ids are 1 to 4094"));
            }
            match &self.parent {
                // The VLAN device is named <parent>.<vlan> and must fit IFNAMSIZ.
                Some(parent) => {
                    let vname = format!("{parent}.{v}");
                    validate_ifname(&vname)
                        .map_err(|r| self.invalid("vlan", v, format!("device {vname:?}: {r}")))?;
                }
                // Device mode: the VLAN is made inside the container, on the moved device.
                None if is(Mode::Device) => {}
                None => return Err(self.invalid("vlan", v, "needs a parent device")),
            }
        }
        self.validate_addresses()?;
        if let Some(mtu) = self.mtu {
            let min = if self.subnet.addr().is_ipv6() {
                1280
            } else {
                68
            };
            if !(min..=65535).contains(&mtu) {
                return Err(self.invalid("mtu", mtu, format!("must be {min} to 65535")));
            }
        }
        if self.nat && !is(Mode::Bridge) {
            return Err(self.invalid("nat", true, "NAT is only available in bridge mode"));
        }
        self.validate_devices()?;
        if let Some(q) = &self.qos {
            for (field, r) in [("qos.egress", &q.egress), ("qos.ingress", &q.ingress)] {
                if let Some(r) = r {
                    parse_rate(r).map_err(|reason| self.invalid(field, r, reason))?;
                }
            }
        }
        if let Some(d) = &self.dns {
            for s in &d.search {
                if s.is_empty() || s.chars().any(char::is_whitespace) {
                    return Err(self.invalid("dns.search", s, "not a domain name"));
                }
            }
            for o in &d.options {
                if o.is_empty() || o.chars().any(char::is_whitespace) {
                    return Err(self.invalid("dns.options", o, "not a resolv.conf option"));
                }
            }
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Result<(), ConfigError> {
        let subnet = self.subnet;
        if subnet.trunc() != subnet {
            return Err(self.invalid(
                "subnet",
                subnet,
                format!("host bits are set (the network is {})", subnet.trunc()),
            ));
        }
        let Some((first, last)) = host_bounds(&subnet) else {
            return Err(self.invalid("subnet", subnet, "has no usable host addresses"));
        };
        let family_ok = |a: &IpAddr| a.is_ipv4() == subnet.addr().is_ipv4();
        if let Some(gw) = self.gateway {
            if !family_ok(&gw) || !subnet.contains(&gw) {
                return Err(self.invalid("gateway", gw, format!("is outside subnet {subnet}")));
            }
            let g = u128_of(gw);
            if g < first || g > last {
                return Err(self.invalid(
                    "gateway",
                    gw,
                    format!("is the network or broadcast address of subnet {subnet}"),
                ));
            }
        }
        if let Some(r) = self.range {
            for (field, a) in [("range.start", r.start), ("range.end", r.end)] {
                if !family_ok(&a) || !subnet.contains(&a) {
                    return Err(self.invalid(field, a, format!("is outside subnet {subnet}")));
                }
                let n = u128_of(a);
                if n < first || n > last {
                    return Err(self.invalid(
                        field,
                        a,
                        format!("is the network or broadcast address of subnet {subnet}"),
                    ));
                }
            }
            if u128_of(r.start) > u128_of(r.end) {
                return Err(self.invalid(
                    "range",
                    format!("{}-{}", r.start, r.end),
                    "start is after end",
                ));
            }
        }
        let (lo, hi) = self.allocation_bounds().unwrap_or((first, last));
        let gw = self.gateway().map(u128_of);
        if lo == hi && gw == Some(lo) {
            return Err(self.invalid(
                "range",
                format!("{}-{}", addr_of(&subnet, lo), addr_of(&subnet, hi)),
                "holds only the gateway",
            ));
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<(), ConfigError> {
        if !self.devices.is_empty() && self.mode != Mode::Device {
            return Err(self.invalid(
                "devices",
                self.devices.join(","),
                "only valid in device mode",
            ));
        }
        if let Some(b) = &self.bond {
            if self.mode != Mode::Device {
                return Err(self.invalid("bond", &b.mode, "only valid in device mode"));
            }
            if !BOND_MODES.contains(&b.mode.as_str()) {
                return Err(self.invalid(
                    "bond.mode",
                    &b.mode,
                    format!("must be one of {}", BOND_MODES.join(", ")),
                ));
            }
            if b.pairs.is_empty() {
                return Err(self.invalid("bond.pairs", "[]", "needs at least one member pair"));
            }
            let mut members: Vec<&str> = Vec::new();
            for p in &b.pairs {
                validate_ifname(&p.name)
                    .map_err(|r| self.invalid("bond.pairs.name", &p.name, r))?;
                for m in &p.members {
                    validate_ifname(m).map_err(|r| self.invalid("bond.pairs.members", m, r))?;
                    if members.contains(&m.as_str()) || self.devices.contains(m) {
                        return Err(self.invalid("bond.pairs.members", m, "is used twice (members may belong to one bond only and not be pool devices)"));
                    }
                    members.push(m);
                }
                if p.members[0] == p.members[1] {
                    return Err(self.invalid(
                        "bond.pairs.members",
                        &p.members[0],
                        "a bond needs two different members",
                    ));
                }
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for d in &self.devices {
            validate_ifname(d).map_err(|r| self.invalid("devices", d, r))?;
            if seen.contains(&d.as_str()) {
                return Err(self.invalid("devices", d, "is listed twice"));
            }
            seen.push(d);
        }
        if self.mode == Mode::Device && self.device_pool().is_empty() {
            return Err(self.invalid(
                "devices",
                "[]",
                "device mode needs at least one device (or a bond)",
            ));
        }
        Ok(())
    }
}

/// The address numbered `n` in the family of `subnet`.
pub(crate) fn addr_of(subnet: &IpNet, n: u128) -> IpAddr {
    match subnet {
        // Truncation is intended: IPv4 numbers come from IPv4 bounds.
        IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
        IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(n)),
    }
}

pub(crate) fn addr_number(a: IpAddr) -> u128 {
    u128_of(a)
}
