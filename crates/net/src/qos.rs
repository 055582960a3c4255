//! Traffic limits over rtnetlink (tc): egress token bucket (tbf root qdisc) and ingress
//! policing (ingress qdisc + matchall filter + police action).
//!
//! netlink-packet-route has no tbf or police types, so their option structs
//! (`tc_tbf_qopt`, `tc_police`, `tc_ratespec` from linux/pkt_sched.h and
//! linux/tc_act/tc_police.h) are encoded here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionOption, TcAttribute, TcFilterMatchAllOption, TcHandle,
    TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use tracing::info_span;

use crate::link::LinkError;
use crate::netlink::{Handle, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum QosError {
    #[error("rate {value:?}: {reason}")]
    BadRate { value: String, reason: String },
    #[error("{what} on {ifname:?}: {reason}")]
    Invalid {
        what: &'static str,
        ifname: String,
        reason: String,
    },
    #[error("{what} on {ifname:?}: the kernel lacks {feature} ({source})")]
    Unsupported {
        what: &'static str,
        ifname: String,
        feature: &'static str,
        #[source]
        source: Box<NetlinkError>,
    },
    #[error("{what} on {ifname:?}: {source}")]
    Link {
        what: &'static str,
        ifname: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{what} on {ifname:?}: {source}")]
    Netlink {
        what: &'static str,
        ifname: String,
        #[source]
        source: Box<NetlinkError>,
    },
}

/// A rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

impl Rate {
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }
    pub fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

impl fmt::Display for Rate {
    /// The largest tc unit that divides the rate exactly: "10mbit", "1500kbit".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (div, unit) in [
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if self.0 >= div && self.0.is_multiple_of(div) {
                return write!(f, "{}{unit}", self.0 / div);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

impl FromStr for Rate {
    type Err = QosError;
    /// tc's spelling: a number and a unit, bit/kbit/mbit/gbit/tbit (powers of 1000),
    /// kibit/mibit/gibit/tibit (1024), bps/kbps/mbps/gbps (bytes). A bare number is
    /// refused: tc reads it as bytes, most people mean bits.
    fn from_str(s: &str) -> Result<Self, QosError> {
        let bad = |reason: String| QosError::BadRate {
            value: s.to_owned(),
            reason,
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                bad(
                    "missing unit (use bit, kbit, mbit, gbit, tbit, bps, kbps, mbps or gbps)"
                        .into(),
                )
            })?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(bad("missing number before the unit".into()));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| bad(format!("{num:?} is not a number")))?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "tbit" => 1e12,
            "kibit" => 1024.0,
            "mibit" => 1024.0 * 1024.0,
            "gibit" => 1024.0 * 1024.0 * 1024.0,
            "tibit" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "bps" => 8.0,
            "kbps" => 8e3,
            "mbps" => 8e6,
            "gbps" => 8e9,
            "tbps" => 8e12,
            u => {
                return Err(bad(format!(
                    "unknown unit {u:?} (use bit, kbit, mbit, gbit, tbit, bps, kbps, mbps or gbps)"
                )))
            }
        };
        let bits = n * mult;
        if !bits.is_finite() || bits < 8.0 {
            return Err(bad("must be at least 8bit (one byte per second)".into()));
        }
        if bits > 8.0 * u64::MAX as f64 / 16.0 {
            return Err(bad("too large".into()));
        }
        Ok(Rate(bits as u64))
    }
}

/// An egress limit: a token bucket of `burst` bytes filled at `rate`, with packets
/// queued at most `latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimit {
    pub rate: Rate,
    /// Bucket size in bytes; None: 10 ms worth of rate, at least 16 KiB.
    pub burst: Option<u32>,
    pub latency: Duration,
}

impl EgressLimit {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            burst: None,
            latency: Duration::from_millis(50),
        }
    }
}

fn default_burst(rate: Rate) -> u32 {
    u32::try_from(rate.bytes_per_sec() / 100)
        .unwrap_or(u32::MAX)
        .max(16 * 1024)
}

/// A qdisc as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: (u16, u16),
    pub parent: (u16, u16),
}

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_POLICE_TBF: u16 = 1;
const TCA_POLICE_RATE: u16 = 2;
const TCA_POLICE_RATE64: u16 = 8;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const TC_ACT_SHOT: i32 = 2;
/// PSCHED_SHIFT: a psched tick is 64 ns (the kernel's fixed clock since 2.6.31).
const PSCHED_SHIFT: u32 = 6;
/// Filter priority of our ingress policer.
const INGRESS_PRIO: u32 = 49152;

/// Bytes of `struct tc_ratespec`; the rate field saturates, RATE64 carries the rest.
fn ratespec(rate: Rate, cell_log: u8, cell_align: i16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = cell_log;
    b[1] = TC_LINKLAYER_ETHERNET;
    b[4..6].copy_from_slice(&cell_align.to_ne_bytes());
    let r = u32::try_from(rate.bytes_per_sec()).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&r.to_ne_bytes());
    b
}

/// Time to send `bytes` at `rate`, in psched ticks.
fn xmit_ticks(rate: Rate, bytes: u64) -> u32 {
    let bps = rate.bytes_per_sec().max(1);
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(bps);
    u32::try_from(ns >> PSCHED_SHIFT).unwrap_or(u32::MAX)
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

impl Handle {
    fn ifindex_for(&mut self, ifname: &str, what: &'static str) -> Result<i32, QosError> {
        let l = self.require_link(ifname).map_err(|source| QosError::Link {
            what,
            ifname: ifname.to_owned(),
            source: Box::new(source),
        })?;
        i32::try_from(l.index).map_err(|_| QosError::Invalid {
            what,
            ifname: ifname.to_owned(),
            reason: format!("interface index {} out of range", l.index),
        })
    }
}

/// Installs (or replaces) a tbf root qdisc limiting what `ifname` sends.
pub fn set_egress(h: &mut Handle, ifname: &str, limit: &EgressLimit) -> Result<(), QosError> {
    const WHAT: &str = "egress limit";
    let _span = info_span!("qos_egress", ifname, rate = %limit.rate).entered();
    let index = h.ifindex_for(ifname, WHAT)?;
    let burst = limit.burst.unwrap_or_else(|| default_burst(limit.rate));
    if burst == 0 {
        return Err(QosError::Invalid {
            what: WHAT,
            ifname: ifname.to_owned(),
            reason: "burst must not be 0".into(),
        });
    }
    let queued = u128::from(limit.rate.bytes_per_sec()) * limit.latency.as_nanos() / 1_000_000_000;
    let qlimit = u32::try_from(queued + u128::from(burst)).unwrap_or(u32::MAX);
    // struct tc_tbf_qopt { rate, peakrate, limit, buffer, mtu }
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(limit.rate, 0, 0));
    parms.extend_from_slice(&[0u8; 12]);
    parms.extend_from_slice(&u32s(&[
        qlimit,
        xmit_ticks(limit.rate, u64::from(burst)),
        0,
    ]));
    let mut opts = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
    ];
    if limit.rate.bytes_per_sec() > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            limit.rate.bytes_per_sec().to_ne_bytes().to_vec(),
        )));
    }
    let mut m = TcMessage::default();
    m.header.index = index;
    m.header.handle = TcHandle { major: 1, minor: 0 };
    m.header.parent = TcHandle::ROOT;
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(opts));
    h.request(
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_REPLACE,
        &format!("add tbf qdisc (rate {}) to {ifname}", limit.rate),
    )
    .map_err(|source| match source.errno() {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => QosError::Unsupported {
            what: WHAT,
            ifname: ifname.to_owned(),
            feature: "the tbf qdisc (sch_tbf)",
            source: Box::new(source),
        },
        _ => QosError::Netlink {
            what: WHAT,
            ifname: ifname.to_owned(),
            source: Box::new(source),
        },
    })
}

/// Polices what `ifname` receives to `rate` (bucket `burst` bytes): packets over the
/// limit are dropped. Replaces an earlier ingress limit.
pub fn set_ingress(
    h: &mut Handle,
    ifname: &str,
    rate: Rate,
    burst: Option<u32>,
) -> Result<(), QosError> {
    const WHAT: &str = "ingress limit";
    let _span = info_span!("qos_ingress", ifname, rate = %rate).entered();
    let index = h.ifindex_for(ifname, WHAT)?;
    let burst = burst.unwrap_or_else(|| default_burst(rate));
    let nerr = |feature: &'static str| {
        move |source: NetlinkError| match source.errno() {
            Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => QosError::Unsupported {
                what: WHAT,
                ifname: ifname.to_owned(),
                feature,
                source: Box::new(source),
            },
            _ => QosError::Netlink {
                what: WHAT,
                ifname: ifname.to_owned(),
                source: Box::new(source),
            },
        }
    };
    // Start clean: deleting the ingress qdisc drops an earlier policer with it.
    clear_ingress(h, ifname)?;
    let mut q = TcMessage::default();
    q.header.index = index;
    q.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    q.header.parent = TcHandle::INGRESS;
    q.attributes.push(TcAttribute::Kind("ingress".into()));
    h.request(
        RouteNetlinkMessage::NewQueueDiscipline(q),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("add ingress qdisc to {ifname}"),
    )
    .map_err(nerr("the ingress qdisc (sch_ingress)"))?;

    // struct tc_police, with the rate table the kernel insists on (tc_calc_rtable:
    // cell_log 3 for the default 2047-byte MTU).
    let cell_log: u8 = 3;
    let rtab: Vec<u32> = (0..256u64)
        .map(|i| xmit_ticks(rate, (i + 1) << cell_log))
        .collect();
    let mut police = Vec::with_capacity(56);
    police.extend_from_slice(&0u32.to_ne_bytes()); // index
    police.extend_from_slice(&TC_ACT_SHOT.to_ne_bytes()); // action
    police.extend_from_slice(&u32s(&[0, xmit_ticks(rate, u64::from(burst)), 0])); // limit, burst, mtu
    police.extend_from_slice(&ratespec(rate, cell_log, -1));
    police.extend_from_slice(&[0u8; 12]); // peakrate
    police.extend_from_slice(&[0u8; 12]); // refcnt, bindcnt, capab
    let mut popts = vec![
        TcActionOption::Other(DefaultNla::new(TCA_POLICE_TBF, police)),
        TcActionOption::Other(DefaultNla::new(TCA_POLICE_RATE, u32s(&rtab))),
    ];
    if rate.bytes_per_sec() > u64::from(u32::MAX) {
        popts.push(TcActionOption::Other(DefaultNla::new(
            TCA_POLICE_RATE64,
            rate.bytes_per_sec().to_ne_bytes().to_vec(),
        )));
    }
    let mut action = TcAction::default();
    action.tab = 1;
    action
        .attributes
        .push(TcActionAttribute::Kind("police".into()));
    action.attributes.push(TcActionAttribute::Options(popts));
    let mut f = TcMessage::default();
    f.header.index = index;
    f.header.handle = TcHandle::UNSPEC;
    f.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
    f.header.info = (INGRESS_PRIO << 16) | u32::from(eth_p_all);
    f.attributes.push(TcAttribute::Kind("matchall".into()));
    f.attributes
        .push(TcAttribute::Options(vec![TcOption::MatchAll(
            TcFilterMatchAllOption::Action(vec![action]),
        )]));
    let r = h
        .request(
            RouteNetlinkMessage::NewTrafficFilter(f),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add matchall filter with police action (rate {rate}) to {ifname}"),
        )
        .map_err(nerr(
            "the matchall filter (cls_matchall) or the police action (act_police)",
        ));
    if r.is_err() {
        let _ = clear_ingress(h, ifname);
    }
    r
}

fn delete_qdisc(
    h: &mut Handle,
    ifname: &str,
    parent: TcHandle,
    what: &'static str,
) -> Result<(), QosError> {
    let Some(l) = h.link(ifname).map_err(|source| QosError::Link {
        what,
        ifname: ifname.to_owned(),
        source: Box::new(source),
    })?
    else {
        return Ok(());
    };
    let mut m = TcMessage::default();
    m.header.index = l.index as i32;
    m.header.parent = parent;
    match h.request(
        RouteNetlinkMessage::DelQueueDiscipline(m),
        0,
        &format!("delete {what} qdisc of {ifname}"),
    ) {
        Ok(()) => Ok(()),
        // None there (ENOENT), or only the default one that cannot be deleted (EINVAL).
        Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        Err(source) => Err(QosError::Netlink {
            what,
            ifname: ifname.to_owned(),
            source: Box::new(source),
        }),
    }
}

fn clear_ingress(h: &mut Handle, ifname: &str) -> Result<(), QosError> {
    delete_qdisc(h, ifname, TcHandle::INGRESS, "ingress")
}

/// Removes both limits (root and ingress qdiscs). Fine if there are none.
pub fn clear(h: &mut Handle, ifname: &str) -> Result<(), QosError> {
    delete_qdisc(h, ifname, TcHandle::ROOT, "root")?;
    clear_ingress(h, ifname)
}

/// The qdiscs of `ifname`.
pub fn qdiscs(h: &mut Handle, ifname: &str) -> Result<Vec<Qdisc>, QosError> {
    const WHAT: &str = "list qdiscs";
    let index = h.ifindex_for(ifname, WHAT)?;
    let msgs = h
        .dump(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            &format!("list qdiscs of {ifname}"),
        )
        .map_err(|source| QosError::Netlink {
            what: WHAT,
            ifname: ifname.to_owned(),
            source: Box::new(source),
        })?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(t) if t.header.index == index => Some(Qdisc {
                kind: t
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        TcAttribute::Kind(k) => Some(k.clone()),
                        _ => None,
                    })
                    .unwrap_or_default(),
                handle: (t.header.handle.major, t.header.handle.minor),
                parent: (t.header.parent.major, t.header.parent.minor),
            }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rate_display_round_trips() {
        for s in ["10mbit", "1gbit", "1500kbit", "9bit", "2tbit"] {
            let r: Rate = s.parse().unwrap_or(Rate(0));
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn ticks_are_64ns() {
        // 1250 bytes at 10 Mbit/s take 1 ms = 15625 ticks of 64 ns.
        assert_eq!(xmit_ticks(Rate(10_000_000), 1250), 15625);
    }
}
