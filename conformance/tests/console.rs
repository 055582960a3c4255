//! process.terminal = true: the pty master arrives over --console-socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// create with a console socket, receive the master, start.
fn start_with_console(rt: &Runtime, b: &Bundle, extra: &[&str]) -> Pty {
    let dir = TempDir::new("console");
    let sock = ConsoleSocket::new(dir.path());
    let sp = sock.path().to_string_lossy().into_owned();
    let mut args = vec!["--console-socket", sp.as_str()];
    args.extend_from_slice(extra);
    rt.create_id(b, &b.id, &args).assert_ok();
    let pty = sock.master();
    rt.start(&b.id).assert_ok();
    pty
}

#[test]
fn terminal_output_and_input_go_through_the_pty() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true)
        .sh("tty; echo ready; read line; echo got:$line; sleep 1000");
    let _g = rt.guard(&b.id);
    let pty = start_with_console(&rt, &b, &[]);
    let out = pty.read_until("ready", T);
    assert!(
        out.contains("/dev/pts/0"),
        "tty should be /dev/pts/0: {out:?}"
    );
    pty.write(b"hello-pty\n");
    let out = pty.read_until("got:hello-pty", T);
    // the line discipline echoes the input, then the shell answers
    assert!(out.contains("hello-pty\r\n"), "input not echoed: {out:?}");
    assert!(out.contains("got:hello-pty"), "{out:?}");
}

#[test]
fn stdio_are_all_the_pty() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true).sh("for f in 0 1 2; do readlink /proc/self/fd/$f; done; [ -t 0 ] && echo is-a-tty; echo done; sleep 1000");
    let _g = rt.guard(&b.id);
    let pty = start_with_console(&rt, &b, &[]);
    let out = pty.read_until("done", T);
    assert_eq!(out.matches("/dev/pts/0").count(), 3, "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
}

#[test]
fn console_size_is_honoured() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true)
        .console_size(37, 111)
        .sh("stty size; echo done; sleep 1000");
    let _g = rt.guard(&b.id);
    let pty = start_with_console(&rt, &b, &[]);
    let out = pty.read_until("done", T);
    assert!(out.contains("37 111"), "stty size: {out:?}");
}

#[test]
fn dev_console_is_the_pty() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true)
        .sh("stat -c '%F %t' /dev/console; echo done; sleep 1000");
    let _g = rt.guard(&b.id);
    let pty = start_with_console(&rt, &b, &[]);
    let out = pty.read_until("done", T);
    // a pts slave: major 136 (0x88)
    assert!(
        out.contains("character special file 88"),
        "/dev/console: {out:?}"
    );
}

#[test]
fn run_detach_with_console_socket() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true).sh("echo detached-tty:$(tty); sleep 1000");
    let _g = rt.guard(&b.id);
    let dir = TempDir::new("console");
    let sock = ConsoleSocket::new(dir.path());
    let sp = sock.path().to_string_lossy().into_owned();
    rt.run(&b, &["--detach", "--console-socket", &sp])
        .assert_ok();
    let pty = sock.master();
    let out = pty.read_until("/dev/pts/0", T);
    assert!(out.contains("detached-tty:/dev/pts/0"), "{out:?}");
    assert_eq!(rt.status(&b.id).as_deref(), Some("running"));
}

#[test]
fn ctrl_c_reaches_the_foreground_process() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.terminal(true).sh(
        "trap 'echo got-sigint' INT; echo ready; sleep 1000 & wait; echo after-wait; sleep 1000",
    );
    let _g = rt.guard(&b.id);
    let pty = start_with_console(&rt, &b, &[]);
    let _ = pty.read_until("ready", T);
    std::thread::sleep(Duration::from_millis(200));
    pty.write(b"\x03");
    let out = pty.read_until("after-wait", T);
    assert!(
        out.contains("got-sigint"),
        "^C did not deliver SIGINT: {out:?}"
    );
}
