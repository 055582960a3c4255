//! `rcrun-net`: container networks for any OCI runtime.
//!
//! - `network create|ls|inspect|rm`: networks in the store (bridge, macvlan, ipvlan, device).
//! - `hook`: the OCI hook. In `createRuntime` it attaches the container (state JSON on stdin:
//!   its id, pid and annotations); in `poststop` it detaches it. Options come from flags or
//!   the container's `org.rcrun.net.*` annotations.
//! - `attach`/`detach`: the same by hand (a pid instead of the state JSON).
//! - `ls`, `ipam ls`, `ipam forget`: what is attached and leased.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rcrun_net::attach::{self, Request};
use rcrun_net::config::{Network, Store};
use rcrun_net::nat::{PortMapping, Proto};

#[derive(Debug, Parser)]
#[command(
    name = "rcrun-net",
    about = "Container networks: OCI hook and network management"
)]
struct Cli {
    /// Network store (networks, leases, attachments); env RCRUN_NET_STORE.
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    /// Log at debug level to stderr.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// OCI hook: attach in createRuntime, detach in poststop (state JSON on stdin).
    Hook {
        /// up (attach), down (detach) or auto (by the state's status: "stopped" is down).
        #[arg(value_enum, default_value_t = HookAction::Auto)]
        action: HookAction,
        #[command(flatten)]
        opts: AttachOpts,
    },
    /// Attach a container's network namespace (through one of its processes) to a network.
    Attach {
        /// Container id.
        #[arg(long)]
        container: String,
        /// A process in the container's network namespace.
        #[arg(long)]
        pid: i32,
        #[command(flatten)]
        opts: AttachOpts,
    },
    /// Detach a container from a network (or from every network it is on).
    Detach {
        #[arg(long)]
        container: String,
        #[arg(long)]
        network: Option<String>,
    },
    /// Tear down the attachments of containers whose process is gone.
    Gc,
    /// List attachments.
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Address leases.
    #[command(subcommand)]
    Ipam(IpamCmd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HookAction {
    Up,
    Down,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Args, Default)]
struct AttachOpts {
    /// Network name (annotation org.rcrun.net.network).
    #[arg(long)]
    network: Option<String>,
    /// Static address (org.rcrun.net.ip).
    #[arg(long)]
    ip: Option<IpAddr>,
    /// Stable name: the address stays reserved for it across restarts (org.rcrun.net.name).
    #[arg(long)]
    name: Option<String>,
    /// Interface name in the container, default eth0 (org.rcrun.net.ifname).
    #[arg(long)]
    ifname: Option<String>,
    /// Published ports HOST:CONTAINER[/tcp|/udp], comma-separated (org.rcrun.net.ports).
    #[arg(long)]
    ports: Option<String>,
    /// Rate limit of what the container sends, e.g. 100mbit (org.rcrun.net.egress).
    #[arg(long)]
    egress: Option<String>,
    /// Rate limit of what the container receives (org.rcrun.net.ingress).
    #[arg(long)]
    ingress: Option<String>,
    /// Device networks: the pool device wanted (org.rcrun.net.device).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network from flags or a JSON file (`--from`).
    Create(Box<CreateArgs>),
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print a network's JSON.
    Inspect { name: String },
    /// Remove a network (refused while containers hold addresses on it, unless --force).
    Rm {
        #[arg(long)]
        force: bool,
        name: String,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Network name.
    name: Option<String>,
    /// The whole definition as JSON (the fields of docs/networking.md).
    #[arg(long, conflicts_with_all = ["mode", "subnet"])]
    from: Option<PathBuf>,
    /// bridge, macvlan, ipvlan or device.
    #[arg(long)]
    mode: Option<String>,
    #[arg(long)]
    subnet: Option<String>,
    #[arg(long)]
    gateway: Option<String>,
    /// Allocation range START-END inside the subnet.
    #[arg(long)]
    range: Option<String>,
    #[arg(long)]
    bridge: Option<String>,
    #[arg(long)]
    parent: Option<String>,
    #[arg(long)]
    vlan: Option<u16>,
    #[arg(long)]
    mtu: Option<u32>,
    /// Masquerade outbound traffic (bridge).
    #[arg(long)]
    nat: bool,
    #[arg(long = "macvlan-mode")]
    macvlan_mode: Option<String>,
    #[arg(long = "ipvlan-mode")]
    ipvlan_mode: Option<String>,
    /// Device pool (device mode), repeatable or comma-separated.
    #[arg(long = "device", value_delimiter = ',')]
    devices: Vec<String>,
    /// Default per-container rate limits.
    #[arg(long)]
    egress: Option<String>,
    #[arg(long)]
    ingress: Option<String>,
}

#[derive(Debug, Subcommand)]
enum IpamCmd {
    /// Leases of a network.
    Ls { network: String },
    /// Drop a stable name's reservation.
    Forget { network: String, name: String },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let level = if cli.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .without_time()
            .finish(),
    );
    if let Err(e) = run(cli) {
        // One line: hooks' stderr ends up in the runtime's error message.
        eprintln!("rcrun-net: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    let root = cli
        .store
        .or_else(|| std::env::var_os("RCRUN_NET_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(rcrun_net::config::DEFAULT_ROOT));
    let store = Store::open(&root)?;
    match cli.command {
        Command::Network(cmd) => network(&store, cmd),
        Command::Hook { action, opts } => hook(&store, action, opts),
        Command::Attach {
            container,
            pid,
            opts,
        } => {
            let req = request(container, pid, opts, &Default::default())?;
            let a = attach::setup(&store, &req)?;
            println!("{}", serde_json::to_string_pretty(&a)?);
            Ok(())
        }
        Command::Detach { container, network } => detach(&store, &container, network.as_deref()),
        Command::Gc => {
            for a in attach::gc(&store)? {
                println!("detached {} from {}", a.container, a.network);
            }
            Ok(())
        }
        Command::Ls { format } => {
            let all = attach::list(&store)?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<32} {:<16} {:<8} {:<20} DEVICE",
                "CONTAINER", "NETWORK", "IF", "ADDRESS"
            );
            for a in all {
                println!(
                    "{:<32} {:<16} {:<8} {:<20} {}",
                    a.container,
                    a.network,
                    a.ifname,
                    a.address
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "-".into()),
                    a.host_veth.or(a.claimed).unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        Command::Ipam(IpamCmd::Ls { network }) => {
            for l in store.ipam().leases(&network)? {
                println!("{}", serde_json::to_string(&l)?);
            }
            Ok(())
        }
        Command::Ipam(IpamCmd::Forget { network, name }) => {
            match store.ipam().forget(&network, &name)? {
                Some(a) => println!("released {a} reserved for {name:?}"),
                None => println!("{name:?} held nothing on {network:?}"),
            }
            Ok(())
        }
    }
}

fn network(store: &Store, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let net = match &a.from {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("read {}", p.display()))?;
                    let mut net = Network::from_json(&text)?;
                    if let Some(n) = &a.name {
                        net.name = n.clone();
                    }
                    net
                }
                None => Network::from_json(&serde_json::to_string(&create_json(&a)?)?)?,
            };
            let stored = store.create(&net)?;
            println!("{}", serde_json::to_string_pretty(&stored)?);
            Ok(())
        }
        NetworkCmd::Ls { format } => {
            let all = store.list()?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!("{:<16} {:<8} {:<20} LINK", "NAME", "MODE", "SUBNET");
            for n in all {
                let link = n
                    .bridge
                    .clone()
                    .or(n.parent.clone())
                    .unwrap_or_else(|| n.devices.join(","));
                let mode = serde_json::to_value(n.mode)?;
                println!(
                    "{:<16} {:<8} {:<20} {}",
                    n.name,
                    mode.as_str().unwrap_or("?"),
                    n.subnet,
                    link
                );
            }
            Ok(())
        }
        NetworkCmd::Inspect { name } => {
            println!("{}", serde_json::to_string_pretty(&store.load(&name)?)?);
            Ok(())
        }
        NetworkCmd::Rm { force, name } => {
            let net = store.load(&name)?;
            store.remove(&name, force)?;
            // What the network made on the host: its NAT rules, and its bridge once empty.
            // (Only a NAT network must have nft: others may have published no port.)
            if let Err(e) = store.nat().teardown(&net) {
                if net.nat {
                    return Err(e.into());
                }
                tracing::debug!("no NAT rules removed: {e}");
            }
            if let Some(br) = &net.bridge {
                let mut h = rcrun_net::netlink::Handle::new()?;
                if let Some(l) = h.link(br)? {
                    let ports = h
                        .links()?
                        .iter()
                        .filter(|x| x.master == Some(l.index))
                        .count();
                    if ports == 0 {
                        rcrun_net::bridge::remove_bridge(&mut h, br)?;
                    } else {
                        eprintln!(
                            "rcrun-net: bridge {br} still has {ports} port(s); left in place"
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// The flags of `network create` as the JSON definition (so one validator sees both forms).
fn create_json(a: &CreateArgs) -> Result<serde_json::Value> {
    let name = a
        .name
        .clone()
        .ok_or_else(|| anyhow!("network create: a NAME (or --from FILE) is required"))?;
    let mut m = serde_json::Map::new();
    m.insert("name".into(), name.clone().into());
    m.insert(
        "mode".into(),
        a.mode.clone().unwrap_or_else(|| "bridge".into()).into(),
    );
    let subnet = a
        .subnet
        .clone()
        .ok_or_else(|| anyhow!("network create {name}: --subnet is required"))?;
    m.insert("subnet".into(), subnet.into());
    let opt = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    };
    opt(&mut m, "gateway", &a.gateway);
    opt(&mut m, "bridge", &a.bridge);
    opt(&mut m, "parent", &a.parent);
    opt(&mut m, "macvlanMode", &a.macvlan_mode);
    opt(&mut m, "ipvlanMode", &a.ipvlan_mode);
    if let Some(r) = &a.range {
        let (s, e) = r
            .split_once('-')
            .ok_or_else(|| anyhow!("network create {name}: --range {r:?}: expected START-END"))?;
        m.insert("range".into(), serde_json::json!({"start": s, "end": e}));
    }
    if let Some(v) = a.vlan {
        m.insert("vlan".into(), v.into());
    }
    if let Some(v) = a.mtu {
        m.insert("mtu".into(), v.into());
    }
    if a.nat {
        m.insert("nat".into(), true.into());
    }
    if !a.devices.is_empty() {
        m.insert("devices".into(), a.devices.clone().into());
    }
    if a.egress.is_some() || a.ingress.is_some() {
        let mut q = serde_json::Map::new();
        opt(&mut q, "egress", &a.egress);
        opt(&mut q, "ingress", &a.ingress);
        m.insert("qos".into(), q.into());
    }
    Ok(m.into())
}

const ANN: &str = "org.rcrun.net.";

/// Flags win over the container's annotations.
fn request(
    container: String,
    pid: i32,
    o: AttachOpts,
    ann: &serde_json::Map<String, serde_json::Value>,
) -> Result<Request> {
    let a = |k: &str| {
        ann.get(&format!("{ANN}{k}"))
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    let network = o
        .network
        .or_else(|| a("network"))
        .ok_or_else(|| anyhow!("no network: pass --network or set the annotation {ANN}network"))?;
    let ip = match o.ip {
        Some(ip) => Some(ip),
        None => match a("ip") {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| anyhow!("annotation {ANN}ip: {s:?} is not an IP address"))?,
            ),
            None => None,
        },
    };
    let ports = match o.ports.or_else(|| a("ports")) {
        Some(s) => parse_ports(&s)?,
        None => Vec::new(),
    };
    Ok(Request {
        container,
        network,
        pid,
        ifname: o.ifname.or_else(|| a("ifname")),
        ip,
        name: o.name.or_else(|| a("name")),
        ports,
        egress: o.egress.or_else(|| a("egress")),
        ingress: o.ingress.or_else(|| a("ingress")),
        device: o.device.or_else(|| a("device")),
    })
}

fn parse_ports(s: &str) -> Result<Vec<PortMapping>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let p = p.trim();
            let (ports, proto) = match p.rsplit_once('/') {
                Some((ports, "tcp")) => (ports, Proto::Tcp),
                Some((ports, "udp")) => (ports, Proto::Udp),
                Some((_, other)) => bail!("ports {p:?}: protocol {other:?} is not tcp or udp"),
                None => (p, Proto::Tcp),
            };
            let (h, c) = ports
                .split_once(':')
                .ok_or_else(|| anyhow!("ports {p:?}: expected HOST:CONTAINER[/tcp|/udp]"))?;
            let port = |x: &str| -> Result<u16> {
                match x.parse::<u16>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("ports {p:?}: {x:?} is not a port (1-65535)"),
                }
            };
            Ok(PortMapping {
                proto,
                host_port: port(h)?,
                container_port: port(c)?,
            })
        })
        .collect()
}

fn hook(store: &Store, action: HookAction, o: AttachOpts) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("read the container state from stdin")?;
    let state: serde_json::Value =
        serde_json::from_str(&input).context("container state on stdin is not JSON")?;
    let id = state["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("container state on stdin has no id"))?
        .to_string();
    let status = state["status"].as_str().unwrap_or("");
    let down = match action {
        HookAction::Up => false,
        HookAction::Down => true,
        HookAction::Auto => status == "stopped",
    };
    let ann = state["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if down {
        let network = o.network.or_else(|| {
            ann.get(&format!("{ANN}network"))
                .and_then(|v| v.as_str())
                .map(String::from)
        });
        return detach(store, &id, network.as_deref());
    }
    let pid = state["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("container {id}: the state has no pid (run this hook in createRuntime, not {status:?})"))?;
    let req = request(id, pid, o, &ann)?;
    attach::setup(store, &req)?;
    Ok(())
}

fn detach(store: &Store, container: &str, network: Option<&str>) -> Result<()> {
    let networks: Vec<String> = match network {
        Some(n) => vec![n.to_string()],
        None => attach::list(store)?
            .into_iter()
            .filter(|a| a.container == container)
            .map(|a| a.network)
            .collect(),
    };
    for n in networks {
        attach::teardown(store, container, &n)?;
    }
    Ok(())
}
