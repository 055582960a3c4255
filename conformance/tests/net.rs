//! Container networks through the `rcrun-net` OCI hook (createRuntime attaches, poststop
//! detaches), with real rcrun containers: bridge (ping, iperf3, stable and static addresses,
//! QoS, published ports), macvlan on a veth parent, a veth end standing in for an SR-IOV VF
//! (moved in, given back after a kill), and failures that leave the host as it was.
//! VLAN and ipvlan need drivers this host lacks: `ipvlan_and_vlan_networks` runs in the guest
//! (`guest/run-suite --profile cgroup2,net -- net`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::env::net_bin;
use rcrun_conformance::util::unique_id;
use rcrun_conformance::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn sh(cmd: &str) -> (bool, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn sh_ok(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "{cmd}: {out}");
    out
}

/// A short name unique to this run (interface names are at most 15 bytes).
fn short(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}{:x}",
        std::process::id() % 0xfff,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Subnets 10.252.N.0/24, unique per test in this process.
fn subnet_octet() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 200 + N.fetch_add(1, Ordering::SeqCst) * 7) % 250 + 1
}

fn link_exists(name: &str) -> bool {
    sh(&format!("ip link show dev {name}")).0
}

/// A network store in a temp dir and the links the test makes on the host, removed on drop.
struct Net {
    store: TempDir,
    links: Vec<String>,
    name: String,
    /// Networks made here: removed on drop (their NAT rules go with them).
    networks: Vec<String>,
}

impl Net {
    fn new() -> Net {
        Net {
            store: TempDir::new("netstore"),
            links: Vec::new(),
            name: String::new(),
            networks: Vec::new(),
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(net_bin())
            .arg("--store")
            .arg(self.store.path())
            .args(args)
            .output()
            .expect("run rcrun-net")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "rcrun-net {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `network create NAME ARGS`; a bridge it names is removed on drop.
    fn create(&mut self, args: &[&str]) -> String {
        let name = short("n");
        let mut a = vec!["network", "create", &name];
        a.extend_from_slice(args);
        let out = self.cli_ok(&a);
        let v: Value = serde_json::from_str(&out).expect("network JSON");
        if let Some(br) = v["bridge"].as_str() {
            self.links.push(br.to_string());
        }
        self.name = name.clone();
        self.networks.push(name.clone());
        name
    }

    fn bridge(&mut self, prefix: &str) -> (String, String) {
        let br = short("rcbr");
        let name = self.create(&["--subnet", prefix, "--bridge", &br]);
        (name, br)
    }

    /// The createRuntime/poststop hooks, with annotations for the per-container options.
    fn attach_hooks(&self, b: &mut Bundle, network: &str) {
        let bin = net_bin().to_string_lossy().into_owned();
        let store = self.store.path().to_string_lossy().into_owned();
        for (kind, action) in [("createRuntime", "up"), ("poststop", "down")] {
            b.hook(
                kind,
                json!({"path": bin, "args": ["rcrun-net", "--store", store, "hook", action, "--network", network]}),
            );
        }
    }

    fn attachments(&self) -> Vec<Value> {
        let out = self.cli_ok(&["ls", "--format", "json"]);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn address_of(&self, id: &str) -> String {
        self.attachments()
            .iter()
            .find(|a| a["container"] == id)
            .and_then(|a| a["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{id} has no attachment: {:?}", self.attachments()))
    }

    fn leases(&self, network: &str) -> String {
        self.cli_ok(&["ipam", "ls", network])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A create killed after its hook attached (a failed test's timeout) leaves an
        // attachment whose process is gone: gc takes it (and its netns pin) away.
        let _ = self.cli(&["gc"]);
        for n in &self.networks {
            let _ = self.cli(&["network", "rm", "--force", n]);
        }
        for l in &self.links {
            let _ = sh(&format!("ip link del {l}"));
        }
    }
}

/// A container running `script`, attached to `network` through the hook.
fn container(rt: &Runtime, net: &Net, network: &str, ann: &[(&str, &str)], script: &str) -> Bundle {
    let mut b = Bundle::new();
    b.sh(script);
    b.caps(&["CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_KILL"], false);
    net.attach_hooks(&mut b, network);
    for (k, v) in ann {
        b.annotation(&format!("org.rcrun.net.{k}"), v);
    }
    b.id = unique_id("net");
    rt.remember(&b.id, &b);
    b
}

fn start(rt: &Runtime, b: &Bundle) -> i64 {
    rt.start_detached(b)
}

fn ping(rt: &Runtime, from: &str, to: &str) {
    let o = rt.exec(&["exec", from, "ping", "-c", "2", "-W", "3", to]);
    assert!(o.success(), "{from} cannot ping {to}: {o}");
}

/// iperf3 between the netns of two container processes; returns bits/s.
fn iperf(server_pid: i64, client_pid: i64, server_ip: &str) -> f64 {
    let mut srv = Command::new("nsenter")
        .args([
            "-t",
            &server_pid.to_string(),
            "-n",
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5301",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(400));
    let out = Command::new("nsenter")
        .args([
            "-t",
            &client_pid.to_string(),
            "-n",
            "iperf3",
            "-c",
            server_ip,
            "-p",
            "5301",
            "-t",
            "2",
            "-J",
        ])
        .output()
        .expect("iperf3 client");
    let _ = srv.kill();
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {v}"))
}

/// Installs a Debian package once per process (tests run in parallel; dpkg has one lock).
fn ensure_tool(cmd: &str, package: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _l = LOCK.lock();
    if !sh(&format!("command -v {cmd}")).0 {
        sh_ok(&format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package} || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package})"));
    }
}

fn ensure_iperf3() {
    ensure_tool("iperf3", "iperf3");
}

/// `ip -d link show dev eth0` in the container's netns, with the host's iproute2 (busybox's
/// `ip` has no details).
fn link_details(rt: &Runtime, id: &str) -> String {
    let pid = rt.pid(id);
    sh_ok(&format!("nsenter -t {pid} -n ip -d link show dev eth0"))
}

#[test]
fn bridge_containers_ping_and_iperf_each_other_and_leave_nothing() {
    ensure_iperf3();
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let (n, br) = net.bridge(&format!("10.252.{o}.0/24"));
    let a = container(&rt, &net, &n, &[], "sleep 300");
    let b = container(&rt, &net, &n, &[], "sleep 300");
    let (_ga, _gb) = (rt.guard(&a.id), rt.guard(&b.id));
    let pa = start(&rt, &a);
    let pb = start(&rt, &b);
    let (ia, ib) = (net.address_of(&a.id), net.address_of(&b.id));
    assert_ne!(ia, ib);
    let inside = rt.exec(&["exec", &a.id, "ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.stdout.contains(&format!("{ia}/24")), "{inside}");
    ping(&rt, &a.id, &ib);
    ping(&rt, &b.id, &ia);
    let bps = iperf(pa, pb, &ia);
    assert!(bps > 50e6, "bridge throughput {bps} bit/s");
    let host_veths: Vec<String> = net
        .attachments()
        .iter()
        .filter_map(|x| x["hostVeth"].as_str().map(String::from))
        .collect();
    assert_eq!(host_veths.len(), 2);
    for id in [&a.id, &b.id] {
        rt.kill(id, "KILL").assert_ok();
        assert!(rt.wait_status(id, "stopped"));
        rt.delete(id).assert_ok();
    }
    for v in host_veths {
        assert!(!link_exists(&v), "{v} left on the host");
    }
    assert!(net.attachments().is_empty(), "{:?}", net.attachments());
    assert_eq!(net.leases(&n).trim(), "", "leases left");
    assert!(link_exists(&br), "the bridge is the network's, it stays");
}

#[test]
fn stable_name_keeps_its_address_across_restarts_and_static_addresses_are_honoured() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let (n, _br) = net.bridge(&format!("10.252.{o}.0/24"));
    let first = container(&rt, &net, &n, &[("name", "web")], "sleep 300");
    let _g1 = rt.guard(&first.id);
    start(&rt, &first);
    let addr = net.address_of(&first.id);
    // Another container (no name) in between takes the next free address.
    let other = container(&rt, &net, &n, &[], "sleep 300");
    let _g2 = rt.guard(&other.id);
    start(&rt, &other);
    rt.delete_force(&first.id).assert_ok();
    // "Restart": a new container id with the same stable name.
    let again = container(&rt, &net, &n, &[("name", "web")], "sleep 300");
    let _g3 = rt.guard(&again.id);
    start(&rt, &again);
    assert_eq!(
        net.address_of(&again.id),
        addr,
        "the stable name lost its address"
    );
    assert_ne!(net.address_of(&other.id), addr);
    // A static address.
    let want = format!("10.252.{o}.77");
    let fixed = container(&rt, &net, &n, &[("ip", &want)], "sleep 300");
    let _g4 = rt.guard(&fixed.id);
    start(&rt, &fixed);
    assert_eq!(net.address_of(&fixed.id), want);
    let inside = rt.exec(&["exec", &fixed.id, "ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.stdout.contains(&want), "{inside}");
    // The same static address again: refused, naming it.
    let dup = container(&rt, &net, &n, &[("ip", &want)], "sleep 300");
    let _g5 = rt.guard(&dup.id);
    let out = rt.create_id(&dup, &dup.id, &[]);
    out.assert_fail();
    assert!(out.stderr.contains(&want), "{out}");
    assert!(!rt.state_dir(&dup.id).exists());
}

#[test]
fn bad_requests_fail_create_with_clear_errors_and_leave_the_host_as_it_was() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    // A /30: one address besides the gateway.
    let (small, br) = net.bridge(&format!("10.252.{o}.0/30"));
    let outside = container(&rt, &net, &small, &[("ip", "10.99.0.5")], "sleep 300");
    let _g = rt.guard(&outside.id);
    let out = rt.create_id(&outside, &outside.id, &[]);
    out.assert_fail();
    assert!(out.stderr.contains("10.99.0.5"), "{out}");
    assert!(!rt.state_dir(&outside.id).exists());

    let one = container(&rt, &net, &small, &[], "sleep 300");
    let _g1 = rt.guard(&one.id);
    start(&rt, &one);
    let two = container(&rt, &net, &small, &[], "sleep 300");
    let _g2 = rt.guard(&two.id);
    let out = rt.create_id(&two, &two.id, &[]);
    out.assert_fail();
    assert!(
        out.stderr.contains("exhausted") || out.stderr.contains("no free"),
        "{out}"
    );
    assert!(!rt.state_dir(&two.id).exists());
    assert_eq!(net.attachments().len(), 1, "{:?}", net.attachments());
    // Only the running container's veth is on the bridge: the failed ones left none.
    let ports = sh_ok(&format!("ip -o link show master {br}"));
    assert_eq!(ports.lines().count(), 1, "{ports}");

    // An unknown parent: nothing made on the host, no lease, no record.
    let mv = net.create(&[
        "--mode",
        "macvlan",
        "--parent",
        "rcnoparent0",
        "--subnet",
        &format!("10.253.{o}.0/24"),
    ]);
    let c = container(&rt, &net, &mv, &[], "sleep 300");
    let _g3 = rt.guard(&c.id);
    let out = rt.create_id(&c, &c.id, &[]);
    out.assert_fail();
    assert!(out.stderr.contains("rcnoparent0"), "{out}");
    assert!(!rt.state_dir(&c.id).exists());
    assert_eq!(net.leases(&mv).trim(), "");
    rt.delete_force(&one.id).assert_ok();
    assert!(net.attachments().is_empty(), "{:?}", net.attachments());
    let ports = sh_ok(&format!("ip -o link show master {br}"));
    assert_eq!(ports.trim(), "", "veths left on the bridge");
}

#[test]
fn macvlan_containers_on_a_veth_parent_reach_each_other() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let (p0, p1) = (short("mvp"), short("mvq"));
    sh_ok(&format!(
        "ip link add {p0} type veth peer name {p1} && ip link set {p0} up && ip link set {p1} up"
    ));
    net.links.push(p0.clone());
    let o = subnet_octet();
    let n = net.create(&[
        "--mode",
        "macvlan",
        "--parent",
        &p0,
        "--macvlan-mode",
        "bridge",
        "--subnet",
        &format!("10.254.{o}.0/24"),
    ]);
    let a = container(&rt, &net, &n, &[], "sleep 300");
    let b = container(&rt, &net, &n, &[], "sleep 300");
    let (_ga, _gb) = (rt.guard(&a.id), rt.guard(&b.id));
    start(&rt, &a);
    start(&rt, &b);
    let link = link_details(&rt, &a.id);
    assert!(link.contains("macvlan"), "{link}");
    ping(&rt, &a.id, &net.address_of(&b.id));
    rt.delete_force(&a.id).assert_ok();
    rt.delete_force(&b.id).assert_ok();
    assert!(net.attachments().is_empty());
}

#[test]
fn device_mode_moves_a_vf_stand_in_in_and_gives_it_back_after_a_kill() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let (dev, peer) = (short("vfa"), short("vfb"));
    sh_ok(&format!(
        "ip link add {dev} mtu 1450 type veth peer name {peer} && ip link set {dev} up"
    ));
    net.links.push(peer.clone());
    let mac_before = sh_ok(&format!("cat /sys/class/net/{dev}/address"));
    let o = subnet_octet();
    let n = net.create(&[
        "--mode",
        "device",
        "--device",
        &dev,
        "--subnet",
        &format!("10.251.{o}.0/24"),
    ]);
    let a = container(&rt, &net, &n, &[], "sleep 300");
    let _ga = rt.guard(&a.id);
    start(&rt, &a);
    assert!(!link_exists(&dev), "{dev} still on the host");
    let inside = rt.exec(&["exec", &a.id, "ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(inside.stdout.contains(&net.address_of(&a.id)), "{inside}");
    let mac_inside = rt.exec(&["exec", &a.id, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(
        mac_inside.stdout.trim(),
        mac_before.trim(),
        "not the same device"
    );
    // The pool has one device: a second container is refused and leaves nothing.
    let b = container(&rt, &net, &n, &[], "sleep 300");
    let _gb = rt.guard(&b.id);
    let out = rt.create_id(&b, &b.id, &[]);
    out.assert_fail();
    assert!(!rt.state_dir(&b.id).exists());
    // Killed: the netns stays pinned by the hook, so delete's poststop gives the device back.
    rt.kill(&a.id, "KILL").assert_ok();
    assert!(rt.wait_status(&a.id, "stopped"));
    rt.delete(&a.id).assert_ok();
    assert!(link_exists(&dev), "{dev} was not given back");
    let mtu = sh_ok(&format!("cat /sys/class/net/{dev}/mtu"));
    assert_eq!(mtu.trim(), "1450");
    assert_eq!(
        sh_ok(&format!("cat /sys/class/net/{dev}/address")).trim(),
        mac_before.trim()
    );
    assert!(net.attachments().is_empty());
    assert!(
        !sh_ok("grep -c rcrun /proc/self/mountinfo || true").contains(&a.id),
        "netns pin left mounted"
    );
    let _ = sh(&format!("ip link del {dev}"));
}

#[test]
fn qos_limits_shape_what_a_container_sends_and_receives() {
    ensure_iperf3();
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let (n, _br) = net.bridge(&format!("10.252.{o}.0/24"));
    let server = container(&rt, &net, &n, &[], "sleep 300");
    let limited = container(&rt, &net, &n, &[("egress", "10mbit")], "sleep 300");
    let (_g1, _g2) = (rt.guard(&server.id), rt.guard(&limited.id));
    let ps = start(&rt, &server);
    let pl = start(&rt, &limited);
    let qdisc = sh_ok(&format!("nsenter -t {pl} -n tc qdisc show dev eth0"));
    assert!(qdisc.contains("tbf"), "{qdisc}");
    let bps = iperf(ps, pl, &net.address_of(&server.id));
    assert!(bps < 30e6, "10mbit limit but {bps} bit/s ({qdisc})");
    assert!(bps > 2e6, "limited to {bps} bit/s, far below 10mbit");
    // Ingress: what a container receives, shaped on the host end of its veth.
    let inbound = container(&rt, &net, &n, &[("ingress", "10mbit")], "sleep 300");
    let _g3 = rt.guard(&inbound.id);
    let pi = start(&rt, &inbound);
    let bps = iperf(pi, ps, &net.address_of(&inbound.id));
    assert!(bps < 30e6, "10mbit ingress limit but {bps} bit/s");
    assert!(
        bps > 2e6,
        "ingress limited to {bps} bit/s, far below 10mbit"
    );
    // The unlimited direction stays fast: the limits are per container and direction.
    let free = iperf(pl, ps, &net.address_of(&limited.id));
    assert!(free > 50e6, "unlimited direction only {free} bit/s");
}

#[test]
fn published_port_reaches_the_container_from_the_host() {
    ensure_tool("nft", "nftables");
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let br = short("rcbr");
    let n = net.create(&[
        "--subnet",
        &format!("10.249.{o}.0/24"),
        "--bridge",
        &br,
        "--nat",
    ]);
    let port = 20000 + (std::process::id() % 20000) as u16;
    let ports = format!("{port}:8080/tcp");
    let c = container(
        &rt,
        &net,
        &n,
        &[("ports", &ports)],
        "mkdir -p /tmp/www && echo hello-from-the-container > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    let _g = rt.guard(&c.id);
    let mut b = c;
    b.set("/root/readonly", json!(false));
    start(&rt, &b);
    let mut body = String::new();
    let got = wait_until(Duration::from_secs(5), || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        body.clear();
        let _ = s.read_to_string(&mut body);
        body.contains("hello-from-the-container")
    });
    assert!(got, "no answer on 127.0.0.1:{port}: {body:?}");
    rt.delete_force(&b.id).assert_ok();
    let rules = sh("nft list table ip rcrun").1;
    assert!(!rules.contains(&b.id), "rules of {} left: {rules}", b.id);
}

/// VLAN sub-interfaces and ipvlan: only where the kernel has 8021q, ipvlan and dummy.
#[test]
fn ipvlan_and_vlan_networks() {
    let d = short("rcdm");
    let (ok, out) = sh(&format!("ip link add {d} type dummy && ip link set {d} up"));
    if !ok {
        if std::env::var_os("RCRUN_NET_HOST_ONLY").is_some() {
            eprintln!("skipped: needs dummy, 8021q and ipvlan (guest): {out}");
            return;
        }
        panic!("no dummy driver ({out}): run in the guest (guest/run-suite --profile cgroup2,net -- net) or set RCRUN_NET_HOST_ONLY=1");
    }
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    net.links.push(d.clone());
    let o = subnet_octet();
    let ipv = net.create(&[
        "--mode",
        "ipvlan",
        "--parent",
        &d,
        "--vlan",
        "42",
        "--subnet",
        &format!("10.248.{o}.0/24"),
    ]);
    let a = container(&rt, &net, &ipv, &[], "sleep 300");
    let b = container(&rt, &net, &ipv, &[], "sleep 300");
    let (_ga, _gb) = (rt.guard(&a.id), rt.guard(&b.id));
    start(&rt, &a);
    start(&rt, &b);
    let link = link_details(&rt, &a.id);
    assert!(link.contains("ipvlan"), "{link}");
    let vlans = sh_ok("ip -d link show | grep -c 'vlan protocol 802.1Q id 42' || true");
    assert!(vlans.trim() != "0", "no VLAN 42 sub-interface on {d}");
    ping(&rt, &a.id, &net.address_of(&b.id));
    rt.delete_force(&a.id).assert_ok();
    rt.delete_force(&b.id).assert_ok();
    assert!(net.attachments().is_empty());
}

/// 50 containers created at once on one network: 50 different addresses, all released after.
#[test]
fn fifty_parallel_containers_get_distinct_addresses() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let (n, br) = net.bridge(&format!("10.247.{o}.0/24"));
    let bundles: Vec<Bundle> = (0..50)
        .map(|_| container(&rt, &net, &n, &[], "sleep 300"))
        .collect();
    let guards: Vec<_> = bundles.iter().map(|b| rt.guard(&b.id)).collect();
    // 50 creates at once on 2 CPUs take minutes under the guest's emulation: a long timeout.
    std::thread::scope(|s| {
        for b in &bundles {
            let rt = &rt;
            s.spawn(move || {
                b.write();
                let bp = b.path().to_string_lossy().into_owned();
                let opts = rcrun_conformance::runtime::Opts {
                    timeout: Some(Duration::from_secs(900)),
                    ..Default::default()
                };
                rt.exec_opts(&["create", "--bundle", &bp, &b.id], opts)
                    .assert_ok();
            });
        }
    });
    let mut addrs: Vec<String> = bundles.iter().map(|b| net.address_of(&b.id)).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 50, "duplicate addresses: {addrs:?}");
    let ports = sh_ok(&format!("ip -o link show master {br}"));
    assert_eq!(ports.lines().count(), 50, "{ports}");
    std::thread::scope(|s| {
        for b in &bundles {
            let rt = &rt;
            s.spawn(move || {
                rt.delete_force(&b.id).assert_ok();
            });
        }
    });
    drop(guards);
    assert!(net.attachments().is_empty(), "{:?}", net.attachments());
    assert_eq!(net.leases(&n).trim(), "");
}

/// SR-IOV's bonded pair: two VFs (the guest's spare PCI NICs) moved into the container and
/// bonded there as its one NIC eth0 (a bond cannot change namespace); after a kill, delete
/// gives both back under their names. Needs the guest (net profile).
#[test]
fn device_mode_bonds_two_vfs_into_one_nic() {
    let nics = rcrun_conformance::util::spare_nics();
    if nics.len() < 2 {
        if std::env::var_os("RCRUN_NET_HOST_ONLY").is_some() {
            eprintln!("skipped: needs two spare PCI NICs and bonding (guest net profile)");
            return;
        }
        panic!("no two spare NICs (MAC 52:54:00:c0:ff:1x): run in the guest (guest/run-suite --profile cgroup2,net -- net) or set RCRUN_NET_HOST_ONLY=1");
    }
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let def = net.store.join("bond-net.json");
    let name = short("n");
    std::fs::write(
        &def,
        json!({
            "name": name,
            "mode": "device",
            "subnet": format!("10.246.{o}.0/24"),
            "bond": {"mode": "active-backup", "pairs": [{"name": "cbond0", "members": [nics[0], nics[1]]}]}
        })
        .to_string(),
    )
    .unwrap();
    net.cli_ok(&["network", "create", "--from", &def.to_string_lossy()]);
    net.networks.push(name.clone());
    let a = container(&rt, &net, &name, &[], "sleep 300");
    let _g = rt.guard(&a.id);
    let pid = start(&rt, &a);
    let link = sh_ok(&format!("nsenter -t {pid} -n ip -d link show dev eth0"));
    assert!(link.contains("bond mode active-backup"), "{link}");
    // The bond's ports are the two NICs (by their burnt-in MACs), renamed eth0s0/eth0s1.
    let slaves = sh_ok(&format!("nsenter -t {pid} -n ip -o link show master eth0"));
    assert_eq!(slaves.lines().count(), 2, "{slaves}");
    for n in &nics[..2] {
        assert!(!link_exists(n), "{n} still on the host");
    }
    for m in ["52:54:00:c0:ff:10", "52:54:00:c0:ff:11"] {
        assert!(slaves.contains(m), "{m} not in the bond: {slaves}");
    }
    let addr = sh_ok(&format!("nsenter -t {pid} -n ip -o addr show dev eth0"));
    assert!(addr.contains(&net.address_of(&a.id)), "{addr}");
    rt.kill(&a.id, "KILL").assert_ok();
    assert!(rt.wait_status(&a.id, "stopped"));
    rt.delete(&a.id).assert_ok();
    for (n, mac) in nics[..2]
        .iter()
        .zip(["52:54:00:c0:ff:10", "52:54:00:c0:ff:11"])
    {
        assert!(link_exists(n), "{n} was not given back");
        let now =
            std::fs::read_to_string(format!("/sys/class/net/{n}/address")).unwrap_or_default();
        assert_eq!(now.trim(), mac, "{n} came back with another MAC");
    }
    assert!(net.attachments().is_empty(), "{:?}", net.attachments());
}

/// A create that fails after the createRuntime hook attached it (here: no such binary) runs
/// the poststop hooks, as runc does, so the network is torn down with it.
#[test]
fn failed_create_after_the_hook_detaches_again() {
    let rt = Runtime::rcrun();
    let mut net = Net::new();
    let o = subnet_octet();
    let (n, br) = net.bridge(&format!("10.243.{o}.0/24"));
    let mut b = container(&rt, &net, &n, &[], "true");
    b.args(&["/no/such/binary"]);
    let _g = rt.guard(&b.id);
    let out = rt.create_id(&b, &b.id, &[]);
    out.assert_fail();
    assert!(!rt.state_dir(&b.id).exists());
    assert!(net.attachments().is_empty(), "{:?}", net.attachments());
    assert_eq!(net.leases(&n).trim(), "");
    assert_eq!(sh_ok(&format!("ip -o link show master {br}")).trim(), "");
}

/// `rcrun-net gc` tears down attachments whose process is gone (no poststop ever ran).
#[test]
fn gc_detaches_containers_whose_process_is_gone() {
    let net_store = {
        let mut net = Net::new();
        let o = subnet_octet();
        let (n, br) = net.bridge(&format!("10.242.{o}.0/24"));
        let ns = short("rcgc");
        sh_ok(&format!("ip netns add {ns}"));
        let mut sleeper = Command::new("ip")
            .args(["netns", "exec", &ns, "sleep", "300"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let pid = sleeper.id().to_string();
        net.cli_ok(&[
            "attach",
            "--container",
            "gc-test",
            "--pid",
            &pid,
            "--network",
            &n,
        ]);
        assert_eq!(net.attachments().len(), 1);
        // Still running: gc leaves it.
        net.cli_ok(&["gc"]);
        assert_eq!(net.attachments().len(), 1);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let _ = sh(&format!("ip netns del {ns}"));
        let out = net.cli_ok(&["gc"]);
        assert!(out.contains("gc-test"), "{out}");
        assert!(net.attachments().is_empty());
        assert_eq!(net.leases(&n).trim(), "");
        assert_eq!(sh_ok(&format!("ip -o link show master {br}")).trim(), "");
        net
    };
    drop(net_store);
}
