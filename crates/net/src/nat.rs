//! Outbound NAT and published ports with nftables, in tables of our own (`table ip rcrun`,
//! `table ip6 rcrun`), so teardown removes exactly our rules and other tools' tables are never
//! touched.
//!
//! Rules (per family, in base chains of type `nat`):
//! - `postrouting` (srcnat): `ip saddr <subnet> oifname != <bridge> masquerade` for a network
//!   with `nat: true`, and for published ports `ip saddr 127.0.0.0/8 oifname <bridge>
//!   masquerade` (with `route_localnet` on the bridge) so the host reaches them on localhost;
//! - `prerouting` (dstnat): `fib daddr type local <proto> dport <host port> dnat to <ip>:<port>`
//!   for connections arriving from outside;
//! - `output` (dstnat): the same rule for connections made by the host itself.
//!
//! Every rule carries a comment `rcrun net=<network>` or `rcrun ctr=<container> port=<proto>/<port>`:
//! [`Nat::unpublish`] and [`Nat::teardown`] list the table and delete by handle exactly the
//! rules whose comment names the container or network. A table left without rules is deleted.
//! Changes are serialised by a `flock` on `<store>/nat.lock` and each is one nft transaction.
//!
//! **Mechanism: the `nft` binary with JSON** (Debian package `nftables`; `scripts/deps.sh` must
//! install it). The netlink alternative, the `rustables` crate (0.9), was evaluated and rejected:
//! its build script runs bindgen unconditionally, so every build (and every cross type-check for
//! aarch64/loongarch64/mips64) needs libclang, which this machine does not have (the build fails
//! with "Unable to find libclang"); it is GPL-3.0-or-later while rcrun is Apache-2.0; and it
//! pulls a second `nix` (0.31 next to the workspace's 0.29). Hand-writing nf_tables netlink
//! (batches, expressions, userdata comments) is possible but a large surface to get right;
//! `nft -j` is the stable, documented interface and costs one exec per change, which only
//! happens at container start/stop.
//!
//! The kernel must have nf_tables with NAT (`NFT_NAT`, `NFT_MASQ`, `NFT_FIB_IPV4/6`); where it
//! does not, calls fail with [`NatError::KernelLacksNfTables`] and [`Nat::probe`] says so up
//! front. Forwarding (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`) is enabled in the
//! caller's network namespace when NAT or a published port needs it, and logged.
//! All calls act on the network namespace of the calling thread: call them from the host's.

mod nft;
mod sysctl;

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{json, Value};
use tracing::{info, info_span};

use crate::config::{state, Mode, Network, StateError, Store};

/// Name of our table in both families.
pub const TABLE: &str = "rcrun";

/// Errors of NAT setup.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("nft not found (looked at {0}); install Debian's nftables package")]
    NftMissing(String),
    #[error("the kernel lacks nf_tables NAT support: needs {0}")]
    KernelLacksNfTables(String),
    #[error("running {nft:?}: {source}")]
    Spawn {
        nft: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{nft:?} failed: {stderr} (input: {what}...)")]
    Nft {
        nft: PathBuf,
        what: String,
        stderr: String,
    },
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network {network:?}: {reason}")]
    Network { network: String, reason: String },
    #[error("container {container:?}: {reason}")]
    Container { container: String, reason: String },
    #[error("host port {proto}/{port} is already published by container {owner:?}")]
    PortTaken {
        proto: Proto,
        port: u16,
        owner: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A host port forwarded to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub proto: Proto,
    pub host_port: u16,
    pub container_port: u16,
}

/// NAT on a store (the store provides the lock that serialises rule changes).
#[derive(Debug, Clone)]
pub struct Nat<'s> {
    store: &'s Store,
}

impl Store {
    pub fn nat(&self) -> Nat<'_> {
        Nat { store: self }
    }
}

fn family_of(ipv6: bool) -> &'static str {
    if ipv6 {
        "ip6"
    } else {
        "ip"
    }
}

fn net_comment(network: &str) -> String {
    format!("rcrun net={network}")
}

fn ctr_comment(container: &str, m: &PortMapping) -> String {
    format!("rcrun ctr={container} port={}/{}", m.proto, m.host_port)
}

/// Whether a rule comment carries `key=value` as one of its words.
fn comment_has(comment: &str, key: &str, value: &str) -> bool {
    comment
        .split(' ')
        .any(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) == Some(value))
}

fn table_cmds(family: &str) -> Vec<Value> {
    let mut v = vec![json!({"add": {"table": {"family": family, "name": TABLE}}})];
    for (chain, hook, prio) in [
        ("prerouting", "prerouting", -100),
        ("output", "output", -100),
        ("postrouting", "postrouting", 100),
    ] {
        v.push(json!({"add": {"chain": {
            "family": family, "table": TABLE, "name": chain,
            "type": "nat", "hook": hook, "prio": prio, "policy": "accept"
        }}}));
    }
    v
}

fn rule(family: &str, chain: &str, comment: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "comment": comment, "expr": expr}}})
}

fn delete_rule(family: &str, chain: &str, handle: u64) -> Value {
    json!({"delete": {"rule": {"family": family, "table": TABLE, "chain": chain, "handle": handle}}})
}

fn match_saddr(family: &str, net: IpNet) -> Value {
    json!({"match": {"op": "==",
        "left": {"payload": {"protocol": family, "field": "saddr"}},
        "right": {"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}}}})
}

fn match_oifname(op: &str, ifname: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": "oifname"}}, "right": ifname}})
}

fn bridge_of(net: &Network) -> Result<&str, NatError> {
    match (net.mode, net.bridge.as_deref()) {
        (Mode::Bridge, Some(b)) => Ok(b),
        _ => Err(NatError::Network {
            network: net.name.clone(),
            reason: "NAT and published ports need a bridge-mode network with a bridge name (as stored by Store::create)".to_string(),
        }),
    }
}

fn check_container(container: &str) -> Result<(), NatError> {
    // The id goes into a rule comment (at most 128 bytes in nft) and is matched word-wise.
    if container.is_empty()
        || container.len() > 96
        || !container
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=')
    {
        return Err(NatError::Container {
            container: container.to_string(),
            reason: "ids for NAT rules are 1 to 96 printable ASCII characters without '\"' or '='"
                .to_string(),
        });
    }
    Ok(())
}

impl Nat<'_> {
    /// Checks that `nft` is installed and the kernel accepts our NAT table (creates and deletes
    /// a scratch table in one transaction: nothing stays behind).
    pub fn probe(&self) -> Result<(), NatError> {
        let nft = nft::find_nft()?;
        let family = "ip";
        let scratch = "rcrun_probe";
        let mut cmds = vec![json!({"add": {"table": {"family": family, "name": scratch}}})];
        cmds.push(
            json!({"add": {"chain": {"family": family, "table": scratch, "name": "p",
            "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}}),
        );
        cmds.push(json!({"add": {"rule": {"family": family, "table": scratch, "chain": "p", "expr": [{"masquerade": null}]}}}));
        cmds.push(json!({"delete": {"table": {"family": family, "name": scratch}}}));
        nft::apply(&nft, cmds)
    }

    /// Installs the network's outbound NAT (when `nat` is set) and enables forwarding.
    /// Idempotent: an existing rule of the network is replaced in the same transaction.
    pub fn setup(&self, net: &Network) -> Result<(), NatError> {
        let _span = info_span!("nat_setup", network = %net.name).entered();
        if !net.nat {
            return Ok(());
        }
        let bridge = bridge_of(net)?;
        let nft = nft::find_nft()?;
        let _lock = state::lock(&self.store.nat_lock())?;
        let ipv6 = net.subnet.addr().is_ipv6();
        let family = family_of(ipv6);
        let comment = net_comment(&net.name);
        let mut cmds = table_cmds(family);
        for r in nft::list_rules(&nft, family, TABLE)?.unwrap_or_default() {
            if comment_has(&r.comment, "net", &net.name) && !r.comment.contains("localhost") {
                cmds.push(delete_rule(family, &r.chain, r.handle));
            }
        }
        cmds.push(rule(
            family,
            "postrouting",
            &comment,
            vec![
                match_saddr(family, net.subnet),
                match_oifname("!=", bridge),
                json!({"masquerade": null}),
            ],
        ));
        nft::apply(&nft, cmds)?;
        if sysctl::enable_forwarding(ipv6)? {
            info!(network = %net.name, "enabled {} forwarding in the host namespace for NAT", family);
        }
        info!(network = %net.name, subnet = %net.subnet, bridge, "masquerade installed");
        Ok(())
    }

    /// Removes every rule of the network (its masquerade and localhost rules); returns how
    /// many. Published ports are removed per container by [`Nat::unpublish`].
    pub fn teardown(&self, net: &Network) -> Result<usize, NatError> {
        let _span = info_span!("nat_teardown", network = %net.name).entered();
        let family = family_of(net.subnet.addr().is_ipv6());
        self.delete_matching(family, |c| comment_has(c, "net", &net.name))
    }

    /// Forwards each host port to `container_ip` (the container's address on `net`), from
    /// outside (prerouting) and from the host itself (output, including localhost for IPv4).
    /// Replaces the container's earlier mappings in the same transaction; a host port another
    /// container publishes is refused.
    pub fn publish(
        &self,
        net: &Network,
        container: &str,
        container_ip: IpAddr,
        ports: &[PortMapping],
    ) -> Result<(), NatError> {
        let _span = info_span!("nat_publish", network = %net.name, container).entered();
        check_container(container)?;
        let bridge = bridge_of(net)?;
        if !net.subnet.contains(&container_ip)
            || container_ip.is_ipv6() != net.subnet.addr().is_ipv6()
        {
            return Err(NatError::Container {
                container: container.to_string(),
                reason: format!(
                    "address {container_ip} is outside network {:?}'s subnet {}",
                    net.name, net.subnet
                ),
            });
        }
        let nft = nft::find_nft()?;
        let _lock = state::lock(&self.store.nat_lock())?;
        let ipv6 = container_ip.is_ipv6();
        let family = family_of(ipv6);
        let existing = nft::list_rules(&nft, family, TABLE)?.unwrap_or_default();
        let mut cmds = table_cmds(family);
        for r in &existing {
            if comment_has(&r.comment, "ctr", container) {
                cmds.push(delete_rule(family, &r.chain, r.handle));
            }
        }
        for m in ports {
            let port_word = format!("{}/{}", m.proto, m.host_port);
            if let Some(r) = existing.iter().find(|r| {
                comment_has(&r.comment, "port", &port_word)
                    && !comment_has(&r.comment, "ctr", container)
            }) {
                let owner = r
                    .comment
                    .split(' ')
                    .find_map(|w| w.strip_prefix("ctr="))
                    .unwrap_or("?")
                    .to_string();
                return Err(NatError::PortTaken {
                    proto: m.proto,
                    port: m.host_port,
                    owner,
                });
            }
            let comment = ctr_comment(container, m);
            let expr = vec![
                json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}),
                json!({"match": {"op": "==", "left": {"payload": {"protocol": m.proto.to_string(), "field": "dport"}}, "right": m.host_port}}),
                json!({"dnat": {"addr": container_ip.to_string(), "port": m.container_port}}),
            ];
            cmds.push(rule(family, "prerouting", &comment, expr.clone()));
            cmds.push(rule(family, "output", &comment, expr));
        }
        // Host-to-localhost connections leave with source 127.0.0.1 after DNAT: masquerade them
        // on the bridge (and let the bridge route 127/8, below). IPv6 ::1 cannot be routed at all.
        let localhost_comment = format!("{} localhost", net_comment(&net.name));
        if !ipv6 && !ports.is_empty() && !existing.iter().any(|r| r.comment == localhost_comment) {
            cmds.push(rule(
                family,
                "postrouting",
                &localhost_comment,
                vec![
                    match_saddr(
                        family,
                        IpNet::V4(
                            ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8)
                                .unwrap_or_default(),
                        ),
                    ),
                    match_oifname("==", bridge),
                    json!({"masquerade": null}),
                ],
            ));
        }
        nft::apply(&nft, cmds)?;
        if sysctl::enable_forwarding(ipv6)? {
            info!(network = %net.name, "enabled {} forwarding in the host namespace for published ports", family);
        }
        if !ipv6 && !ports.is_empty() {
            sysctl::enable(&format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))?;
        }
        info!(network = %net.name, container, %container_ip, ports = ports.len(), "ports published");
        Ok(())
    }

    /// Removes the container's published ports in both families; returns how many rules.
    pub fn unpublish(&self, container: &str) -> Result<usize, NatError> {
        let _span = info_span!("nat_unpublish", container).entered();
        check_container(container)?;
        let mut n = 0;
        for family in ["ip", "ip6"] {
            n += self.delete_matching(family, |c| comment_has(c, "ctr", container))?;
        }
        info!(container, rules = n, "ports unpublished");
        Ok(n)
    }

    /// Deletes our tables in both families, whatever they hold.
    pub fn remove_tables(&self) -> Result<(), NatError> {
        let nft = nft::find_nft()?;
        let _lock = state::lock(&self.store.nat_lock())?;
        for family in ["ip", "ip6"] {
            if nft::list_rules(&nft, family, TABLE)?.is_some() {
                nft::apply(
                    &nft,
                    vec![json!({"delete": {"table": {"family": family, "name": TABLE}}})],
                )?;
            }
        }
        Ok(())
    }

    fn delete_matching(
        &self,
        family: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<usize, NatError> {
        let nft = nft::find_nft()?;
        let _lock = state::lock(&self.store.nat_lock())?;
        let Some(rules) = nft::list_rules(&nft, family, TABLE)? else {
            return Ok(0);
        };
        let doomed: Vec<_> = rules.iter().filter(|r| matches(&r.comment)).collect();
        let mut cmds: Vec<Value> = doomed
            .iter()
            .map(|r| delete_rule(family, &r.chain, r.handle))
            .collect();
        if doomed.len() == rules.len() {
            // Nothing of ours is left: leave no empty table behind.
            cmds = vec![json!({"delete": {"table": {"family": family, "name": TABLE}}})];
        }
        nft::apply(&nft, cmds)?;
        Ok(doomed.len())
    }
}
