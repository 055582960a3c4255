//! NAT and published ports against the real kernel, inside network namespaces made here:
//!
//! ```text
//!  client ns (192.168.77.2) --veth-- host ns (192.168.77.1, bridge rcbr0 10.77.0.1/24) --veth-- container ns (10.77.0.2)
//! ```
//!
//! The library runs in a thread that entered the "host" namespace, so the real host's
//! nftables and sysctls are never touched. Needs root, `ip` (test setup only) and `nft`
//! (Debian package nftables, which the library itself needs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use rcrun_net::config::{Network, Store};
use rcrun_net::nat::{NatError, PortMapping, Proto};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// Network namespaces deleted on drop (their links go with them).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &str) -> Result<(), BoxErr> {
    let st = Command::new("ip").args(args.split_whitespace()).status()?;
    if !st.success() {
        return Err(format!("ip {args}: {st}").into());
    }
    Ok(())
}

fn nft_in(ns: &str, args: &str) -> Result<String, BoxErr> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args.split_whitespace())
        .output()?;
    if !out.status.success() {
        return Err(format!("nft {args}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` in a thread that entered network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, BoxErr> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T, BoxErr> {
        setns(File::open(&path)?, CloneFlags::CLONE_NEWNET)?;
        Ok(f())
    })
    .join()
    .map_err(|_| "namespace thread panicked")?
}

/// A TCP server in a namespace answering every connection with the peer's address.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, addr: &str) -> Result<Server, BoxErr> {
        let addr: SocketAddr = addr.parse()?;
        let listener = in_ns(ns, move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from namespace `ns` and returns what the server said (the peer it saw).
fn ask(ns: &str, addr: &str) -> Result<String, BoxErr> {
    let addr: SocketAddr = addr.parse()?;
    in_ns(ns, move || -> Result<String, BoxErr> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

fn topology(tag: &str) -> Result<(Namespaces, [String; 3]), BoxErr> {
    let pid = std::process::id();
    let (h, c, x) = (
        format!("rcnh{tag}{pid}"),
        format!("rcnc{tag}{pid}"),
        format!("rcnx{tag}{pid}"),
    );
    for n in [&h, &c, &x] {
        ip(&format!("netns add {n}"))?;
    }
    let guard = Namespaces(vec![h.clone(), c.clone(), x.clone()]);
    for n in [&h, &c, &x] {
        ip(&format!("-n {n} link set lo up"))?;
    }
    ip(&format!("-n {h} link add rcbr0 type bridge"))?;
    ip(&format!("-n {h} addr add 10.77.0.1/24 dev rcbr0"))?;
    ip(&format!("-n {h} link set rcbr0 up"))?;
    ip(&format!(
        "-n {h} link add vh0 type veth peer name eth0 netns {c}"
    ))?;
    ip(&format!("-n {h} link set vh0 master rcbr0 up"))?;
    ip(&format!("-n {c} addr add 10.77.0.2/24 dev eth0"))?;
    ip(&format!("-n {c} link set eth0 up"))?;
    ip(&format!("-n {c} route add default via 10.77.0.1"))?;
    ip(&format!(
        "-n {h} link add vx0 type veth peer name eth0 netns {x}"
    ))?;
    ip(&format!("-n {h} addr add 192.168.77.1/24 dev vx0"))?;
    ip(&format!("-n {h} link set vx0 up"))?;
    ip(&format!("-n {x} addr add 192.168.77.2/24 dev eth0"))?;
    ip(&format!("-n {x} link set eth0 up"))?;
    Ok((guard, [h, c, x]))
}

fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_port,
        container_port,
    }
}

#[test]
fn masquerade_publish_unpublish_teardown() -> Result<(), BoxErr> {
    let (_ns, [h, c, x]) = topology("a")?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let net = store.create(&Network::from_json(
        r#"{"name":"natnet","mode":"bridge","bridge":"rcbr0","subnet":"10.77.0.0/24","nat":true}"#,
    )?)?;
    // Another tool's table in the same namespace: must survive everything below.
    nft_in(&h, "add table ip other")?;
    nft_in(
        &h,
        "add chain ip other post { type nat hook postrouting priority 50 ; }",
    )?;
    nft_in(
        &h,
        "add rule ip other post meta l4proto udp counter comment foreign",
    )?;

    let root = dir.path().to_path_buf();
    let ctr_ip: IpAddr = "10.77.0.2".parse()?;
    let n2 = net.clone();
    in_ns(&h, move || -> Result<(), NatError> {
        let store = Store::open(&root).map_err(|e| NatError::Network {
            network: "?".into(),
            reason: e.to_string(),
        })?;
        let nat = store.nat();
        nat.setup(&n2)?;
        nat.setup(&n2)?; // idempotent
        nat.publish(&n2, "ctrA", ctr_ip, &[tcp(8080, 80)])?;
        nat.publish(&n2, "ctrB", ctr_ip, &[tcp(8081, 81)])?;
        Ok(())
    })??;
    assert_eq!(
        in_ns(&h, || std::fs::read_to_string(
            "/proc/sys/net/ipv4/ip_forward"
        ))??
        .trim(),
        "1"
    );
    let listing = nft_in(&h, "list table ip rcrun")?;
    assert_eq!(
        listing.matches("rcrun net=natnet\"").count(),
        1,
        "setup twice leaves one masquerade rule:\n{listing}"
    );

    let _s80 = Server::start(&c, "0.0.0.0:80")?;
    let _s81 = Server::start(&c, "0.0.0.0:81")?;
    let _sx = Server::start(&x, "192.168.77.2:9090")?;

    // Published port from outside: DNAT keeps the client's address.
    assert_eq!(ask(&x, "192.168.77.1:8080")?, "192.168.77.2");
    assert_eq!(ask(&x, "192.168.77.1:8081")?, "192.168.77.2");
    // From the host itself (output chain), to its own address and to localhost.
    assert_eq!(ask(&h, "192.168.77.1:8080")?, "192.168.77.1");
    assert_eq!(
        ask(&h, "127.0.0.1:8080")?,
        "10.77.0.1",
        "localhost is masqueraded to the bridge address"
    );
    // Masquerade: the outside peer sees the host's address, not the container's.
    assert_eq!(ask(&c, "192.168.77.2:9090")?, "192.168.77.1");

    // Another container may not take a published host port.
    let (root, n2) = (dir.path().to_path_buf(), net.clone());
    let taken = in_ns(&h, move || {
        Store::open(&root)
            .ok()
            .map(|s| s.nat().publish(&n2, "ctrC", ctr_ip, &[tcp(8081, 80)]))
    })?;
    match taken {
        Some(Err(e @ NatError::PortTaken { .. })) => assert!(e.to_string().contains("ctrB"), "{e}"),
        other => return Err(format!("expected PortTaken, got {other:?}").into()),
    }

    // Unpublish one container: only its rules go.
    let root = dir.path().to_path_buf();
    let removed = in_ns(&h, move || {
        Store::open(&root).ok().map(|s| s.nat().unpublish("ctrA"))
    })?;
    assert!(
        matches!(removed, Some(Ok(2))),
        "ctrA had a prerouting and an output rule: {removed:?}"
    );
    assert!(
        ask(&x, "192.168.77.1:8080").is_err(),
        "port 8080 no longer forwarded"
    );
    assert_eq!(
        ask(&x, "192.168.77.1:8081")?,
        "192.168.77.2",
        "ctrB untouched"
    );
    let listing = nft_in(&h, "list table ip rcrun")?;
    assert!(
        !listing.contains("ctrA") && listing.contains("ctrB") && listing.contains("net=natnet"),
        "{listing}"
    );
    assert!(nft_in(&h, "list table ip other")?.contains("foreign"));

    // Teardown of the network, then the last container: nothing of ours is left.
    let (root, n2) = (dir.path().to_path_buf(), net.clone());
    in_ns(&h, move || -> Result<(), NatError> {
        let store = Store::open(&root).map_err(|e| NatError::Network {
            network: "?".into(),
            reason: e.to_string(),
        })?;
        store.nat().teardown(&n2)?;
        store.nat().unpublish("ctrB")?;
        Ok(())
    })??;
    assert!(
        nft_in(&h, "list table ip rcrun").is_err(),
        "our table is gone"
    );
    assert!(
        nft_in(&h, "list table ip other")?.contains("foreign"),
        "the other table survives"
    );
    // Without masquerade the client has no route back to the container's subnet.
    assert!(ask(&c, "192.168.77.2:9090").is_err(), "masquerade removed");
    Ok(())
}

#[test]
fn ipv6_masquerade_and_publish() -> Result<(), BoxErr> {
    let (_ns, [h, c, x]) = topology("b")?;
    ip(&format!("-n {h} addr add fd77::1/64 dev rcbr0 nodad"))?;
    ip(&format!("-n {c} addr add fd77::2/64 dev eth0 nodad"))?;
    ip(&format!("-n {c} route add default via fd77::1"))?;
    ip(&format!("-n {h} addr add fd78::1/64 dev vx0 nodad"))?;
    ip(&format!("-n {x} addr add fd78::2/64 dev eth0 nodad"))?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let net = store.create(&Network::from_json(
        r#"{"name":"nat6","mode":"bridge","bridge":"rcbr0","subnet":"fd77::/64","nat":true}"#,
    )?)?;
    let root = dir.path().to_path_buf();
    let ctr_ip: IpAddr = "fd77::2".parse()?;
    in_ns(&h, move || -> Result<(), NatError> {
        let store = Store::open(&root).map_err(|e| NatError::Network {
            network: "?".into(),
            reason: e.to_string(),
        })?;
        store.nat().setup(&net)?;
        store
            .nat()
            .publish(&net, "ctr6", ctr_ip, &[tcp(8080, 80)])?;
        Ok(())
    })??;
    let _s = Server::start(&c, "[::]:80")?;
    let _sx = Server::start(&x, "[fd78::2]:9090")?;
    assert_eq!(ask(&x, "[fd78::1]:8080")?, "fd78::2");
    assert_eq!(
        ask(&c, "[fd78::2]:9090")?,
        "fd78::1",
        "masqueraded to the host's address"
    );
    let root = dir.path().to_path_buf();
    let n = in_ns(&h, move || {
        Store::open(&root).ok().map(|s| s.nat().unpublish("ctr6"))
    })?;
    assert!(matches!(n, Some(Ok(2))), "{n:?}");
    assert!(ask(&x, "[fd78::1]:8080").is_err());
    Ok(())
}

#[test]
fn probe_leaves_nothing_behind() -> Result<(), BoxErr> {
    let (_ns, [h, _, _]) = topology("p")?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    in_ns(&h, move || Store::open(&root).ok().map(|s| s.nat().probe()))?.ok_or("store")??;
    let tables = nft_in(&h, "list tables")?;
    assert!(tables.trim().is_empty(), "probe left {tables}");
    Ok(())
}

/// Answers one UDP datagram per request with the sender's address, until the socket times out.
fn udp_echo(ns: &str, addr: &str) -> Result<JoinHandle<()>, BoxErr> {
    let addr: SocketAddr = addr.parse()?;
    let sock = in_ns(ns, move || UdpSocket::bind(addr))??;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(peer.ip().to_string().as_bytes(), peer);
        }
    }))
}

fn ask_udp(ns: &str, addr: &str) -> Result<String, BoxErr> {
    let addr: SocketAddr = addr.parse()?;
    in_ns(ns, move || -> Result<String, BoxErr> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"?", addr)?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

#[test]
fn udp_publish() -> Result<(), BoxErr> {
    let (_ns, [h, c, x]) = topology("u")?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let net = store.create(&Network::from_json(
        r#"{"name":"udpnet","mode":"bridge","bridge":"rcbr0","subnet":"10.77.0.0/24"}"#,
    )?)?;
    let root = dir.path().to_path_buf();
    let ctr_ip: IpAddr = "10.77.0.2".parse()?;
    let net2 = net.clone();
    let m = PortMapping {
        proto: Proto::Udp,
        host_port: 5353,
        container_port: 53,
    };
    in_ns(&h, move || {
        Store::open(&root)
            .ok()
            .map(|s| s.nat().publish(&net, "ctrU", ctr_ip, &[m]))
    })?
    .ok_or("store")??;
    let _echo = udp_echo(&c, "0.0.0.0:53")?;
    assert_eq!(ask_udp(&x, "192.168.77.1:5353")?, "192.168.77.2");
    // TCP on the same port number is not forwarded.
    assert!(ask(&x, "192.168.77.1:5353").is_err());
    let root = dir.path().to_path_buf();
    let n = in_ns(&h, move || {
        Store::open(&root).ok().map(|s| s.nat().unpublish("ctrU"))
    })?;
    assert!(matches!(n, Some(Ok(2))), "{n:?}");
    // The network keeps its localhost masquerade rule until it is torn down.
    let listing = nft_in(&h, "list table ip rcrun")?;
    assert!(
        !listing.contains("ctrU") && listing.contains("net=udpnet localhost"),
        "{listing}"
    );
    let root = dir.path().to_path_buf();
    let n = in_ns(&h, move || {
        Store::open(&root).ok().map(|s| s.nat().teardown(&net2))
    })?;
    assert!(matches!(n, Some(Ok(1))), "{n:?}");
    assert!(
        nft_in(&h, "list table ip rcrun").is_err(),
        "nothing of ours left"
    );
    Ok(())
}
