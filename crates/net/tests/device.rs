//! A veth end standing in for an SR-IOV VF: moved into a container netns and given back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use common::{AnyErr, TestNs, TestResult};
use ipnet::IpNet;
use rcrun_net::device::{self, ContainerSide, DeviceRecord};
use rcrun_net::link::{LinkKind, Mac, NewLink};
use rcrun_net::netlink::Handle;
use rcrun_net::netns::NetNs;

const VF_MAC: &str = "02:00:00:aa:bb:01";
const CT_MAC: &str = "02:00:00:cc:dd:02";

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The "VF": a veth end with a known MAC, MTU and address, up.
fn make_vf(h: &mut Handle) -> Result<(), AnyErr> {
    let mut spec = NewLink::new(
        "vf0",
        LinkKind::Veth {
            peer: "vf0pf",
            peer_netns: None,
        },
    );
    spec.mac = Some(VF_MAC.parse()?);
    spec.mtu = Some(1450);
    h.add_link(&spec)?;
    h.add_address("vf0", net("192.168.77.1/24"))?;
    h.add_address("vf0", net("fd77::1/64"))?;
    h.set_up("vf0", true)?;
    h.set_up("vf0pf", true)?;
    Ok(())
}

fn check_restored(host: &TestNs, record: &DeviceRecord) -> TestResult {
    host.with(|h| {
        let l = h.require_link("vf0")?;
        assert_eq!(l.mac, Some(VF_MAC.parse::<Mac>()?));
        assert_eq!(l.mtu, 1450);
        assert!(l.up);
        let addrs = h.addresses("vf0")?;
        for a in &record.addresses {
            assert!(addrs.contains(a), "{a} missing from {addrs:?}");
        }
        assert!(addrs.contains(&net("192.168.77.1/24")));
        assert!(h.link("eth0")?.is_none());
        Ok(())
    })
}

fn container_side() -> ContainerSide {
    ContainerSide {
        name: "eth0".into(),
        mtu: Some(1300),
        mac: Some(CT_MAC.parse().unwrap()),
        vlan: None,
    }
}

#[test]
fn vf_moved_in_then_restored_twice() -> TestResult {
    let host = TestNs::new("dev-host")?;
    let ct = TestNs::new("dev-ct")?;
    let record = host.with(|h| {
        make_vf(h)?;
        let r = device::capture(h, "vf0", &ct.path, container_side())?;
        Ok(r)
    })?;
    // The record is what the caller persists: it must survive a JSON round trip.
    let json = serde_json::to_string(&record)?;
    let record: DeviceRecord = serde_json::from_str(&json)?;
    assert_eq!(record.host_name, "vf0");
    assert_eq!(record.mtu, 1450);
    assert!(record.up);
    assert!(record.addresses.contains(&net("192.168.77.1/24")));
    assert!(record.addresses.contains(&net("fd77::1/64")));

    let ifname = host.with(|h| Ok(device::move_in(h, &record)?))?;
    assert_eq!(ifname, "eth0");
    host.with(|h| {
        assert!(h.link("vf0")?.is_none(), "vf0 still on the host");
        Ok(())
    })?;
    ct.with(|h| {
        let l = h.require_link("eth0")?;
        assert_eq!(l.mtu, 1300);
        assert_eq!(l.mac, Some(CT_MAC.parse::<Mac>()?));
        assert!(l.up);
        h.add_address("eth0", net("10.1.2.3/24"))?;
        Ok(())
    })?;
    // move_in again (a retry after a crash) is harmless.
    host.with(|h| Ok(device::move_in(h, &record)?))?;

    host.with(|h| Ok(device::restore(h, &record)?))?;
    check_restored(&host, &record)?;
    ct.with(|h| {
        assert!(h.link("eth0")?.is_none());
        Ok(())
    })?;
    host.with(|h| Ok(device::restore(h, &record)?))?;
    check_restored(&host, &record)?;
    Ok(())
}

/// A process in a new netns (sleep), killed on drop.
struct NsProcess(Child);

impl NsProcess {
    fn spawn() -> Result<Self, AnyErr> {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        // SAFETY: unshare is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Self(cmd.spawn()?))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Unpin(std::path::PathBuf);
impl Drop for Unpin {
    fn drop(&mut self) {
        let _ = NetNs::unpin(&self.0);
    }
}

#[test]
fn vf_restored_after_the_container_processes_are_gone() -> TestResult {
    let host = TestNs::new("dev2-host")?;
    let dir = tempfile::tempdir()?;
    let pin = dir.path().join("ct-ns");
    let mut proc_ = NsProcess::spawn()?;
    let pid = proc_.0.id() as i32;
    // Wait until the child has unshared (its netns differs from ours).
    let me = NetNs::current()?;
    for _ in 0..100 {
        if !NetNs::of_pid(pid)?.same_as(&me) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    NetNs::pin(pid, &pin)?;
    let _unpin = Unpin(pin.clone());
    let record = host.with(|h| {
        make_vf(h)?;
        let r = device::capture(h, "vf0", &pin, container_side())?;
        device::move_in(h, &r)?;
        Ok(r)
    })?;
    // Every process of the container exits; the pin keeps the netns (and the VF) alive.
    let _ = proc_.0.kill();
    let _ = proc_.0.wait();
    drop(proc_);
    NetNs::open(&pin)?.run(|| -> Result<(), AnyErr> {
        let mut h = Handle::new()?;
        assert_eq!(h.require_link("eth0")?.mtu, 1300);
        Ok(())
    })??;
    host.with(|h| Ok(device::restore(h, &record)?))?;
    check_restored(&host, &record)?;
    host.with(|h| Ok(device::restore(h, &record)?))?;
    check_restored(&host, &record)?;
    Ok(())
}

#[test]
fn vf_found_back_on_the_host_under_another_name() -> TestResult {
    // What the kernel does with a real VF when its netns dies: it comes back to the
    // initial netns with a different name (here: still called eth0, container MAC).
    let host = TestNs::new("dev3-host")?;
    let ct = TestNs::new("dev3-ct")?;
    let record = host.with(|h| {
        make_vf(h)?;
        let r = device::capture(h, "vf0", &ct.path, container_side())?;
        device::move_in(h, &r)?;
        Ok(r)
    })?;
    let host_ns = host.ns.try_clone()?;
    ct.with(move |h| {
        h.move_to_netns("eth0", &host_ns, Some("dev7"))?;
        Ok(())
    })?;
    host.with(|h| {
        assert!(h.link("dev7")?.is_some());
        Ok(device::restore(h, &record)?)
    })?;
    check_restored(&host, &record)?;
    // The pin gone entirely: restore still works (and is a no-op).
    let path = ct.path.clone();
    drop(ct);
    assert!(!path.exists());
    host.with(|h| Ok(device::restore(h, &record)?))?;
    check_restored(&host, &record)?;
    Ok(())
}

#[test]
fn restore_of_a_vanished_device_says_so() -> TestResult {
    let host = TestNs::new("dev4-host")?;
    let ct = TestNs::new("dev4-ct")?;
    let record = host.with(|h| {
        make_vf(h)?;
        let r = device::capture(h, "vf0", &ct.path, container_side())?;
        h.delete_link("vf0")?;
        Ok(r)
    })?;
    let e = host
        .with(|h| Ok(device::restore(h, &record)?))
        .unwrap_err()
        .to_string();
    assert!(e.contains("device \"vf0\": not found"), "{e}");
    Ok(())
}
