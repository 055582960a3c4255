//! Seccomp user notification (`SCMP_ACT_NOTIFY` + `linux.seccomp.listenerPath`), with a real
//! agent in this test: it listens on a unix socket, receives the runtime-spec
//! `ContainerProcessState` and the listener fd (SCM_RIGHTS), and answers the container's
//! `mkdir` calls itself with a fake success, so the effect is visible (mkdir returns 0, no
//! directory appears). The container's init and an exec'd process each hand over a listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::*;
use serde_json::{json, Value};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

fn notify_profile(listener: &Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener.display().to_string(),
        "listenerMetadata": "agent-metadata-42",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    })
}

/// What the agent saw on one connection.
struct Handover {
    state: Value,
    got_fd: bool,
}

/// Receive the JSON and the fd of one connection.
fn receive(conn: &std::os::unix::net::UnixStream) -> (Vec<u8>, Option<OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut data = Vec::new();
    let mut fd = None;
    loop {
        let mut buf = [0u8; 8192];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: installed for us by the kernel.
                    fd.get_or_insert(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        // the runtime may keep the connection open: stop at the end of the JSON value
        if serde_json::from_slice::<Value>(&data).is_ok() {
            break;
        }
    }
    (data, fd)
}

// SECCOMP_IOCTL_NOTIF_RECV / _SEND: _IOWR('!', 0|1, ...), encoded per architecture by nix
// (the libc in Cargo.lock predates its own constants).
nix::ioctl_readwrite!(notif_recv, b'!', 0, libc::seccomp_notif);
nix::ioctl_readwrite!(notif_send, b'!', 1, libc::seccomp_notif_resp);

/// Answer every notification on `fd` with "success, return value 0" until the filter's
/// processes are gone.
fn serve(fd: OwnedFd) {
    loop {
        // SAFETY: zeroed plain-old-data structs, as the ioctls require.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: SECCOMP_IOCTL_NOTIF_RECV fills `req`.
        if unsafe { notif_recv(fd.as_raw_fd(), &mut req) }.is_err() {
            return;
        }
        let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
        resp.id = req.id;
        resp.val = 0;
        resp.error = 0;
        // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads `resp`.
        let _ = unsafe { notif_send(fd.as_raw_fd(), &mut resp) };
    }
}

/// Start the agent: every connection is reported on the channel and its fd served.
fn agent(sock: &Path) -> mpsc::Receiver<Handover> {
    let listener = UnixListener::bind(sock).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (data, fd) = receive(&conn);
            let state: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
            let got_fd = fd.is_some();
            if let Some(fd) = fd {
                std::thread::spawn(move || serve(fd));
            }
            if tx.send(Handover { state, got_fd }).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn notify_hands_the_listener_to_the_agent() {
    let rt = Runtime::rcrun();
    let tmp = TempDir::new("notify");
    let sock = tmp.join("agent.sock");
    let handovers = agent(&sock);
    let mut b = Bundle::new();
    b.set("/linux/seccomp", notify_profile(&sock));
    b.sh("mkdir /tmp/by-init; echo mkdir=$?; test -d /tmp/by-init && echo exists || echo absent; sleep 1000");
    let _g = rt.guard(&b.id);
    rt.create(&b).assert_ok();
    let h = handovers
        .recv_timeout(Duration::from_secs(10))
        .expect("the agent got no connection");
    assert!(h.got_fd, "no fd came with the process state");
    // runc 1.1 sends the state as it is while the container is being created
    let s = &h.state;
    assert_eq!(s["fds"], json!(["seccompFd"]), "{s}");
    assert_eq!(s["metadata"], "agent-metadata-42", "{s}");
    assert_eq!(s["state"]["status"], "creating", "{s}");
    assert_eq!(s["state"]["id"], b.id.as_str(), "{s}");
    assert_eq!(s["pid"].as_i64(), Some(rt.pid(&b.id)), "{s}");
    assert_eq!(s["state"]["pid"].as_i64(), Some(rt.pid(&b.id)), "{s}");
    assert!(
        s["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{s}"
    );
    rt.start(&b.id).assert_ok();
    // the agent answered the init's mkdir: success without a directory
    let out = rt.exec(&[
        "exec",
        &b.id,
        "sh",
        "-c",
        "test -d /tmp/by-init && echo exists || echo absent",
    ]);
    // the exec'd process has the filter too, and its listener reaches the agent
    let h2 = handovers
        .recv_timeout(Duration::from_secs(10))
        .expect("the exec'd process's listener never reached the agent");
    assert!(h2.got_fd);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "absent", "{out:?}");
    let out = rt.exec(&[
        "exec",
        &b.id,
        "sh",
        "-c",
        "mkdir /tmp/by-exec; echo mkdir=$?; test -d /tmp/by-exec && echo exists || echo absent",
    ]);
    let _ = handovers.recv_timeout(Duration::from_secs(10));
    out.assert_ok();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["mkdir=0", "absent"],
        "mkdir was not answered by the agent: {out:?}"
    );
}

#[test]
fn notify_without_listener_path_is_refused() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    b.args(&["true"]);
    let _g = rt.guard(&b.id);
    rt.create(&b)
        .assert_fail()
        .assert_one_line_error(&["listenerPath"]);
    assert!(!rt.state_dir(&b.id).exists(), "state left behind");
}

#[test]
fn unreachable_listener_fails_create_cleanly() {
    let rt = Runtime::rcrun();
    let tmp = TempDir::new("notify-none");
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        notify_profile(&tmp.join("nobody-listens.sock")),
    );
    b.args(&["true"]);
    let _g = rt.guard(&b.id);
    rt.create(&b)
        .assert_fail()
        .assert_one_line_error(&["nobody-listens.sock"]);
    assert!(!rt.state_dir(&b.id).exists(), "state left behind");
}

/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19+) with a listener, and ignored without
/// one (the kernel would refuse the filter).
#[test]
fn wait_killable_recv_flag() {
    let rt = Runtime::rcrun();
    if Runtime::skip_for_reference("runc 1.1 does not know SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
    {
        return;
    }
    let tmp = TempDir::new("notify-wk");
    let sock = tmp.join("agent.sock");
    let handovers = agent(&sock);
    let mut b = Bundle::new();
    let mut p = notify_profile(&sock);
    p["flags"] = json!(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]);
    b.set("/linux/seccomp", p);
    let out = rt.sh_ok(
        &mut b,
        "mkdir /tmp/wk; echo mkdir=$?; test -d /tmp/wk && echo exists || echo absent",
    );
    assert!(handovers.recv_timeout(Duration::from_secs(10)).is_ok());
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["mkdir=0", "absent"],
        "{out}"
    );
    // without NOTIFY rules the flag means nothing and the container runs
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}),
    );
    let out = rt.sh_ok(&mut b, "mkdir /tmp/x 2>&1; true");
    assert!(out.contains("Operation not permitted"), "{out}");
}
