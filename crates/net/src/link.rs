//! Link, address and route operations over a [`Handle`].
//!
//! Everything is addressed by interface name in the handle's namespace; the name is
//! validated first so a bad one fails with a clear message rather than a bare EINVAL.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::str::FromStr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    BondMode as NlBondMode, InfoBond, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth,
    InfoVlan, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::netlink::{Handle, NetlinkError};
use crate::netns::NetNs;

/// IFNAMSIZ minus the terminating NUL.
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("interface {name:?} not found")]
    NotFound { name: String },
    #[error("{op}: parent interface {parent:?} not found")]
    ParentNotFound { op: String, parent: String },
    #[error("{what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl LinkError {
    /// The errno of a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkError::Netlink(e) => e.errno(),
            _ => None,
        }
    }
}

/// Checks an interface name: 1..=15 bytes, no '/', no whitespace, not "." or "..".
pub fn validate_name(name: &str) -> Result<(), LinkError> {
    let bad = |reason: String| {
        Err(LinkError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!(
            "{} bytes is longer than the kernel's limit of {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.contains('/') || name.contains(':') {
        return bad("must not contain '/' or ':'".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters".into());
    }
    if name == "." || name == ".." {
        return bad("must not be \".\" or \"..\"".into());
    }
    Ok(())
}

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff` (also in serde).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        let bad = || LinkError::Invalid {
            what: "MAC address",
            value: s.to_owned(),
            reason: "expected six hex bytes like 02:42:ac:11:00:02".into(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl Mac {
    fn from_bytes(b: &[u8]) -> Option<Mac> {
        b.try_into().ok().map(Mac)
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the kernel reports about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// The burnt-in address, for real NICs and VFs (absent for virtual links).
    pub perm_mac: Option<Mac>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// `IFLA_INFO_KIND` ("veth", "bridge", "vlan", ...); None for plain hardware.
    pub kind: Option<String>,
    /// Index of the bridge or bond this link is enslaved to.
    pub master: Option<u32>,
    /// Index of the lower device (vlan, macvlan, ipvlan; the peer for veth).
    pub parent: Option<u32>,
    /// VLAN id for vlan links.
    pub vlan_id: Option<u16>,
    /// RFC 2863 operational state, lower case ("up", "down", "lowerlayerdown", ...).
    pub operstate: String,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            mac: None,
            perm_mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            master: None,
            parent: None,
            vlan_id: None,
            operstate: "unknown".into(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Address(b) => l.mac = Mac::from_bytes(b),
                LinkAttribute::PermAddress(b) => l.perm_mac = Mac::from_bytes(b),
                LinkAttribute::Controller(v) => l.master = Some(*v),
                LinkAttribute::Link(v) => l.parent = Some(*v),
                LinkAttribute::OperState(s) => l.operstate = format!("{s:?}").to_lowercase(),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::Vlan(v)) => {
                                for x in v {
                                    if let InfoVlan::Id(id) = x {
                                        l.vlan_id = Some(*id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// macvlan modes (see ip-link(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl FromStr for MacvlanMode {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Ok(match s {
            "bridge" => Self::Bridge,
            "private" => Self::Private,
            "vepa" => Self::Vepa,
            "passthru" => Self::Passthru,
            _ => {
                return Err(LinkError::Invalid {
                    what: "macvlan mode",
                    value: s.into(),
                    reason: "expected bridge, private, vepa or passthru".into(),
                })
            }
        })
    }
}

/// ipvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    L2,
    L3,
}

impl FromStr for IpvlanMode {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Ok(match s {
            "l2" => Self::L2,
            "l3" => Self::L3,
            _ => {
                return Err(LinkError::Invalid {
                    what: "ipvlan mode",
                    value: s.into(),
                    reason: "expected l2 or l3".into(),
                })
            }
        })
    }
}

/// Bonding modes, spelled as in the kernel's bonding documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl FromStr for BondMode {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        Ok(match s {
            "balance-rr" | "0" => Self::BalanceRr,
            "active-backup" | "1" => Self::ActiveBackup,
            "balance-xor" | "2" => Self::BalanceXor,
            "broadcast" | "3" => Self::Broadcast,
            "802.3ad" | "4" => Self::Lacp,
            "balance-tlb" | "5" => Self::BalanceTlb,
            "balance-alb" | "6" => Self::BalanceAlb,
            _ => {
                return Err(LinkError::Invalid {
                    what: "bond mode",
                    value: s.into(),
                    reason: "expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb".into(),
                })
            }
        })
    }
}

impl BondMode {
    fn to_netlink(self) -> NlBondMode {
        match self {
            Self::BalanceRr => NlBondMode::BalanceRr,
            Self::ActiveBackup => NlBondMode::ActiveBackup,
            Self::BalanceXor => NlBondMode::BalanceXor,
            Self::Broadcast => NlBondMode::Broadcast,
            Self::Lacp => NlBondMode::Ieee8023Ad,
            Self::BalanceTlb => NlBondMode::BalanceTlb,
            Self::BalanceAlb => NlBondMode::BalanceAlb,
        }
    }
}

/// The type-specific part of a new link.
#[derive(Debug, Clone, Copy)]
pub enum LinkKind<'a> {
    Bridge,
    Dummy,
    /// A veth pair; the peer is created directly in `peer_netns` when given.
    Veth {
        peer: &'a str,
        peer_netns: Option<&'a NetNs>,
    },
    Macvlan {
        parent: &'a str,
        mode: MacvlanMode,
    },
    Ipvlan {
        parent: &'a str,
        mode: IpvlanMode,
    },
    Vlan {
        parent: &'a str,
        id: u16,
    },
    Bond {
        mode: BondMode,
    },
}

impl LinkKind<'_> {
    fn label(&self) -> &'static str {
        match self {
            LinkKind::Bridge => "bridge",
            LinkKind::Dummy => "dummy",
            LinkKind::Veth { .. } => "veth pair",
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Ipvlan { .. } => "ipvlan",
            LinkKind::Vlan { .. } => "vlan",
            LinkKind::Bond { .. } => "bond",
        }
    }
}

/// A link to create. With `netns`, the link is created directly in that namespace
/// (its parent, if any, is looked up in the handle's namespace).
#[derive(Debug, Clone, Copy)]
pub struct NewLink<'a> {
    pub name: &'a str,
    pub kind: LinkKind<'a>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub netns: Option<&'a NetNs>,
}

impl<'a> NewLink<'a> {
    pub fn new(name: &'a str, kind: LinkKind<'a>) -> Self {
        Self {
            name,
            kind,
            mtu: None,
            mac: None,
            netns: None,
        }
    }
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Handle {
    /// Looks a link up by name; `Ok(None)` when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, LinkError> {
        validate_name(name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.query(
            RouteNetlinkMessage::GetLink(m),
            0,
            &format!("look up interface {name}"),
        ) {
            Ok(msgs) => Ok(first_link(&msgs)),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Looks a link up by index; `Ok(None)` when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, LinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.query(
            RouteNetlinkMessage::GetLink(m),
            0,
            &format!("look up interface index {index}"),
        ) {
            Ok(msgs) => Ok(first_link(&msgs)),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Looks a link up by name, failing when it does not exist.
    pub fn require_link(&mut self, name: &str) -> Result<Link, LinkError> {
        self.link(name)?.ok_or_else(|| LinkError::NotFound {
            name: name.to_owned(),
        })
    }

    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, LinkError> {
        let msgs = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list interfaces",
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    fn index_of(&mut self, name: &str) -> Result<u32, LinkError> {
        Ok(self.require_link(name)?.index)
    }

    /// Creates a link (fails with EEXIST if the name is taken).
    pub fn add_link(&mut self, spec: &NewLink<'_>) -> Result<(), LinkError> {
        validate_name(spec.name)?;
        let label = spec.kind.label();
        let op = match spec.kind {
            LinkKind::Veth { peer, .. } => format!("create veth pair {} / {peer}", spec.name),
            LinkKind::Macvlan { parent, .. }
            | LinkKind::Ipvlan { parent, .. }
            | LinkKind::Vlan { parent, .. } => {
                format!("create {label} {} on {parent}", spec.name)
            }
            _ => format!("create {label} {}", spec.name),
        };
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::IfName(spec.name.to_owned()));
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(ns) = spec.netns {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        let parent = |h: &mut Handle, p: &str| -> Result<u32, LinkError> {
            validate_name(p)?;
            match h.link(p)? {
                Some(l) => Ok(l.index),
                None => Err(LinkError::ParentNotFound {
                    op: op.clone(),
                    parent: p.to_owned(),
                }),
            }
        };
        let info = match spec.kind {
            LinkKind::Bridge => vec![LinkInfo::Kind(InfoKind::Bridge)],
            LinkKind::Dummy => vec![LinkInfo::Kind(InfoKind::Dummy)],
            LinkKind::Veth { peer, peer_netns } => {
                validate_name(peer)?;
                let mut p = LinkMessage::default();
                p.attributes.push(LinkAttribute::IfName(peer.to_owned()));
                if let Some(mtu) = spec.mtu {
                    p.attributes.push(LinkAttribute::Mtu(mtu));
                }
                if let Some(ns) = peer_netns {
                    p.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
                }
                vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
                ]
            }
            LinkKind::Macvlan { parent: p, mode } => {
                m.attributes.push(LinkAttribute::Link(parent(self, p)?));
                let mode = match mode {
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                vec![
                    LinkInfo::Kind(InfoKind::MacVlan),
                    LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
                ]
            }
            LinkKind::Ipvlan { parent: p, mode } => {
                m.attributes.push(LinkAttribute::Link(parent(self, p)?));
                let mode = match mode {
                    IpvlanMode::L2 => IpVlanMode::L2,
                    IpvlanMode::L3 => IpVlanMode::L3,
                };
                vec![
                    LinkInfo::Kind(InfoKind::IpVlan),
                    LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(mode)])),
                ]
            }
            LinkKind::Vlan { parent: p, id } => {
                if !(1..=4094).contains(&id) {
                    return Err(LinkError::Invalid {
                        what: "VLAN id",
                        value: id.to_string(),
                        reason: "must be in 1..=4094".into(),
                    });
                }
                m.attributes.push(LinkAttribute::Link(parent(self, p)?));
                vec![
                    LinkInfo::Kind(InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
                ]
            }
            LinkKind::Bond { mode } => vec![
                LinkInfo::Kind(InfoKind::Bond),
                LinkInfo::Data(InfoData::Bond(vec![
                    InfoBond::Mode(mode.to_netlink()),
                    // Link monitoring, so failover works without extra setup.
                    InfoBond::MiiMon(100),
                ])),
            ],
        };
        m.attributes.push(LinkAttribute::LinkInfo(info));
        debug!(name = spec.name, kind = label, "create link");
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )?;
        Ok(())
    }

    fn set_link(
        &mut self,
        name: &str,
        op: &str,
        fill: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), LinkError> {
        let index = self.index_of(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        fill(&mut m);
        self.request(RouteNetlinkMessage::SetLink(m), 0, op)?;
        Ok(())
    }

    /// Sets a link administratively up or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), LinkError> {
        let op = format!("set {name} {}", if up { "up" } else { "down" });
        self.set_link(name, &op, |m| {
            if up {
                m.header.flags = LinkFlags::Up;
            }
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), LinkError> {
        self.set_link(name, &format!("set MTU of {name} to {mtu}"), |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    pub fn set_mac(&mut self, name: &str, mac: Mac) -> Result<(), LinkError> {
        self.set_link(name, &format!("set MAC address of {name} to {mac}"), |m| {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
        })
    }

    /// Renames a link (the kernel wants it down).
    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<(), LinkError> {
        validate_name(new_name)?;
        self.set_link(name, &format!("rename {name} to {new_name}"), |m| {
            m.attributes
                .push(LinkAttribute::IfName(new_name.to_owned()))
        })
    }

    /// Enslaves `name` to the bridge or bond `master`.
    pub fn set_master(&mut self, name: &str, master: &str) -> Result<(), LinkError> {
        let master_index = self.index_of(master)?;
        self.set_link(name, &format!("attach {name} to {master}"), |m| {
            m.attributes.push(LinkAttribute::Controller(master_index))
        })
    }

    /// Releases `name` from its bridge or bond.
    pub fn set_nomaster(&mut self, name: &str) -> Result<(), LinkError> {
        self.set_link(name, &format!("release {name} from its master"), |m| {
            m.attributes.push(LinkAttribute::Controller(0))
        })
    }

    /// Moves a link into `netns`, optionally renaming it there in the same step (so a
    /// name taken on this side, or in the target, never gets in the way).
    pub fn move_to_netns(
        &mut self,
        name: &str,
        netns: &NetNs,
        new_name: Option<&str>,
    ) -> Result<(), LinkError> {
        if let Some(n) = new_name {
            validate_name(n)?;
        }
        let op = match new_name {
            Some(n) => format!(
                "move {name} to network namespace {} as {n}",
                netns.describe()
            ),
            None => format!("move {name} to network namespace {}", netns.describe()),
        };
        self.set_link(name, &op, |m| {
            m.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
            if let Some(n) = new_name {
                m.attributes.push(LinkAttribute::IfName(n.to_owned()));
            }
        })
    }

    /// Deletes a link.
    pub fn delete_link(&mut self, name: &str) -> Result<(), LinkError> {
        let index = self.index_of(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(
            RouteNetlinkMessage::DelLink(m),
            0,
            &format!("delete {name}"),
        )?;
        Ok(())
    }

    /// Deletes a link if it exists; true when something was deleted.
    pub fn delete_link_if_exists(&mut self, name: &str) -> Result<bool, LinkError> {
        match self.delete_link(name) {
            Ok(()) => Ok(true),
            Err(LinkError::NotFound { .. }) => Ok(false),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn address_message(&mut self, name: &str, addr: &IpNet) -> Result<AddressMessage, LinkError> {
        let index = self.index_of(name)?;
        let ip = addr.addr();
        let mut m = AddressMessage::default();
        m.header.family = family_of(&ip);
        m.header.prefix_len = addr.prefix_len();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(ip));
        m.attributes.push(AddressAttribute::Address(ip));
        if let IpNet::V4(v4) = addr {
            if v4.prefix_len() < 31 {
                m.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        } else {
            // Containers want their address usable at once, not after duplicate detection.
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        Ok(m)
    }

    /// Adds an address (EEXIST if it is already there).
    pub fn add_address(&mut self, name: &str, addr: IpNet) -> Result<(), LinkError> {
        let m = self.address_message(name, &addr)?;
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {addr} to {name}"),
        )?;
        Ok(())
    }

    /// Adds an address unless it is already there.
    pub fn ensure_address(&mut self, name: &str, addr: IpNet) -> Result<(), LinkError> {
        match self.add_address(name, addr) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    pub fn del_address(&mut self, name: &str, addr: IpNet) -> Result<(), LinkError> {
        let m = self.address_message(name, &addr)?;
        self.request(
            RouteNetlinkMessage::DelAddress(m),
            0,
            &format!("delete address {addr} from {name}"),
        )?;
        Ok(())
    }

    /// Addresses of a link (IPv4 and IPv6, including link-local ones).
    pub fn addresses(&mut self, name: &str) -> Result<Vec<IpNet>, LinkError> {
        let index = self.index_of(name)?;
        self.addresses_of_index(index)
    }

    /// Addresses of the link with this index.
    pub fn addresses_of_index(&mut self, index: u32) -> Result<Vec<IpNet>, LinkError> {
        let msgs = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "list addresses",
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
            // point-to-point links, so prefer the former.
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Adds or replaces a route in the main table.
    pub fn replace_route(
        &mut self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), LinkError> {
        let oif = match dev {
            Some(d) => Some(self.index_of(d)?),
            None => None,
        };
        let mut m = RouteMessage::default();
        let dst = destination.addr();
        m.header.address_family = family_of(&dst);
        m.header.destination_prefix_length = destination.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if destination.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(gw) = gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        let mut op = format!("add route {destination}");
        if let Some(gw) = gateway {
            op.push_str(&format!(" via {gw}"));
        }
        if let Some(d) = dev {
            op.push_str(&format!(" dev {d}"));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            &op,
        )?;
        Ok(())
    }

    /// Sets the default route (IPv4 or IPv6, after the gateway's family).
    pub fn set_default_route(
        &mut self,
        gateway: IpAddr,
        dev: Option<&str>,
    ) -> Result<(), LinkError> {
        let any = match gateway {
            IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
        }
        .map_err(|e| LinkError::Invalid {
            what: "default route",
            value: gateway.to_string(),
            reason: e.to_string(),
        })?;
        self.replace_route(any, Some(gateway), dev)
    }

    /// Routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<Route>, LinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let msgs = self.dump(RouteNetlinkMessage::GetRoute(req), "list routes")?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                    continue;
                }
                let ip_of = |a: &RouteAddress| match a {
                    RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
                    RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
                    _ => None,
                };
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(d) => ip_of(d),
                    _ => None,
                });
                let dst = dst.unwrap_or(if family == AddressFamily::Inet {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                });
                let Ok(destination) = IpNet::new(dst, r.header.destination_prefix_length) else {
                    continue;
                };
                out.push(Route {
                    destination,
                    gateway: r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        _ => None,
                    }),
                    oif: r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    }),
                });
            }
        }
        Ok(out)
    }
}

fn first_link(msgs: &[RouteNetlinkMessage]) -> Option<Link> {
    msgs.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mac_parses_prints_and_serializes() {
        let m: Mac = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:42:ac:11:00:02\"");
        for bad in [
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            let e = bad.parse::<Mac>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("MAC address {bad:?}")), "{e}");
        }
    }

    #[test]
    fn modes_parse_with_clear_errors() {
        assert_eq!("802.3ad".parse::<BondMode>().unwrap(), BondMode::Lacp);
        assert_eq!(
            "active-backup".parse::<BondMode>().unwrap(),
            BondMode::ActiveBackup
        );
        assert_eq!(
            "passthru".parse::<MacvlanMode>().unwrap(),
            MacvlanMode::Passthru
        );
        assert_eq!("l3".parse::<IpvlanMode>().unwrap(), IpvlanMode::L3);
        let e = "l4".parse::<IpvlanMode>().unwrap_err().to_string();
        assert_eq!(e, "ipvlan mode \"l4\": expected l2 or l3");
    }
}
