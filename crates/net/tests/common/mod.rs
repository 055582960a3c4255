//! Shared helpers for the kernel tests: fresh pinned namespaces that clean up after
//! themselves, and small socket exchanges between namespaces.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rcrun_net::netlink::Handle;
use rcrun_net::netns::NetNs;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type AnyErr = Box<dyn std::error::Error + Send + Sync>;

/// A fresh network namespace pinned in a temporary directory; dropping it unpins it,
/// which destroys every virtual link inside.
pub struct TestNs {
    pub ns: NetNs,
    pub path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl TestNs {
    pub fn new(label: &str) -> Result<Self, AnyErr> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rcrun-net-{label}-"))
            .tempdir()?;
        let path = dir.path().join("ns");
        let ns = NetNs::new_pinned(&path)?;
        Ok(Self {
            ns,
            path,
            dir: Some(dir),
        })
    }

    /// Runs `f` with a handle inside this namespace.
    pub fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Handle) -> Result<T, AnyErr> + Send,
    ) -> Result<T, AnyErr> {
        self.ns.run(|| {
            let mut h = Handle::new()?;
            f(&mut h)
        })?
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = NetNs::unpin(&self.path);
        drop(self.dir.take());
    }
}

/// Whether the test may skip when the kernel lacks `feature` (RCRUN_NET_HOST_ONLY=1);
/// otherwise the caller fails with a clear message.
pub fn skip_or_fail(feature: &str, err: &dyn std::fmt::Display) -> TestResult {
    if std::env::var("RCRUN_NET_HOST_ONLY").as_deref() == Ok("1") {
        println!("skipped: needs {feature} ({err})");
        Ok(())
    } else {
        Err(format!(
            "this kernel lacks {feature}: {err}; run this test in the guest \
             (guest/run --profile net ...) or set RCRUN_NET_HOST_ONLY=1 to skip it"
        )
        .into())
    }
}

/// A UDP datagram from `from_ns` (bound to `from`) to `to` in `to_ns`, and the reply.
pub fn udp_exchange(from_ns: &NetNs, from: IpAddr, to_ns: &NetNs, to: IpAddr) -> TestResult {
    let server = to_ns.run(|| UdpSocket::bind(SocketAddr::new(to, 0)))??;
    let client = from_ns.run(|| UdpSocket::bind(SocketAddr::new(from, 0)))??;
    let server_addr = server.local_addr()?;
    server.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    // The first datagram can be lost while ARP resolves: retry a few times.
    let mut buf = [0u8; 64];
    for attempt in 0..10 {
        client.send_to(b"ping", server_addr)?;
        match server.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if &buf[..n] != b"ping" {
                    return Err(format!("server got {:?}", &buf[..n]).into());
                }
                server.send_to(b"pong", peer)?;
                let (n, _) = client.recv_from(&mut buf)?;
                if &buf[..n] != b"pong" {
                    return Err(format!("client got {:?}", &buf[..n]).into());
                }
                return Ok(());
            }
            Err(e) if attempt < 9 => eprintln!("udp attempt {attempt}: {e}"),
            Err(e) => return Err(format!("no datagram from {from} to {to}: {e}").into()),
        }
    }
    Err("unreachable".into())
}

/// Bits per second received by a TCP server in `to_ns` at `to` from a client in
/// `from_ns` sending as fast as it can for about `secs` seconds.
pub fn tcp_throughput(
    from_ns: &NetNs,
    to_ns: &NetNs,
    to: IpAddr,
    secs: f64,
) -> Result<f64, AnyErr> {
    let listener = to_ns.run(|| TcpListener::bind(SocketAddr::new(to, 0)))??;
    let addr = listener.local_addr()?;
    let client = from_ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let writer = std::thread::spawn(move || {
        let mut client = client;
        let _ = client.set_write_timeout(Some(Duration::from_millis(500)));
        let chunk = vec![0x5au8; 64 * 1024];
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs + 1.0 {
            if client.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    // Skip the first burst (the bucket starts full), then measure.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        let _ = conn.read(&mut buf);
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(conn);
    let _ = writer.join();
    Ok(total as f64 * 8.0 / elapsed)
}
