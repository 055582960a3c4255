//! Real-kernel tests: a forked child sets no_new_privs, loads a compiled
//! filter and reports what happened through its exit status.
//!
//! The child only makes async-signal-safe calls (prctl, seccomp, mkdir,
//! syscall, _exit): everything that allocates is prepared before `fork`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::CString;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator as Op, LinuxSyscallBuilder,
};
use rcrun_seccomp::{
    compile, compile_with, load, set_no_new_privs, Arch, CompileOptions, Program, UnknownSyscalls,
};

fn native() -> Arch {
    Arch::native().expect("supported build architecture")
}

fn profile(default: Act, rules: Vec<oci_spec::runtime::LinuxSyscall>) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(default)
        .architectures(vec![native().to_oci()])
        .syscalls(rules)
        .build()
        .unwrap()
}

fn rule(names: &[&str], action: Act) -> oci_spec::runtime::LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action)
        .build()
        .unwrap()
}

/// Fork; the child runs `body` after loading `prog` (with NNP) and exits with
/// its return value. Returns the raw wait status.
fn in_child(prog: &Program, body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only calls async-signal-safe functions, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = if set_no_new_privs().is_err() {
            100
        } else if load(prog, 0).is_err() {
            101
        } else {
            body()
        };
        // SAFETY: terminate the child without running destructors/atexit.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    status
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rcrun-seccomp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn mkdir_gets_eperm_other_syscalls_work() {
    let p = compile(
        &profile(
            Act::ScmpActAllow,
            vec![rule(&["mkdir", "mkdirat"], Act::ScmpActErrno)],
        ),
        native(),
    )
    .unwrap();
    let dir = tempdir("eperm");
    let target = CString::new(dir.join("blocked").into_os_string().into_encoded_bytes()).unwrap();
    let file = CString::new(dir.join("allowed").into_os_string().into_encoded_bytes()).unwrap();

    let status = in_child(&p, || {
        // SAFETY: valid NUL-terminated path.
        let r = unsafe { libc::mkdir(target.as_ptr(), 0o755) };
        if r == 0 {
            return 10; // not blocked
        }
        let e = errno();
        if e != libc::EPERM {
            return 11;
        }
        // Other syscalls still work: open/creat, write, close, getpid.
        // SAFETY: valid path, plain syscalls.
        let fd = unsafe { libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
        if fd < 0 {
            return 12;
        }
        // SAFETY: writing a static buffer to our fd.
        let w = unsafe { libc::write(fd, b"ok".as_ptr().cast(), 2) };
        // SAFETY: closing our fd.
        unsafe { libc::close(fd) };
        if w != 2 {
            return 13;
        }
        // SAFETY: no arguments.
        if unsafe { libc::getpid() } <= 0 {
            return 14;
        }
        0
    });
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child failed");
    assert!(!dir.join("blocked").exists());
    assert_eq!(std::fs::read(dir.join("allowed")).unwrap(), b"ok");
    // The parent is unaffected.
    std::fs::create_dir(dir.join("parent-can")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_process_delivers_sigsys() {
    let p = compile(
        &profile(
            Act::ScmpActAllow,
            vec![rule(&["getpgid"], Act::ScmpActKillProcess)],
        ),
        native(),
    )
    .unwrap();
    let status = in_child(&p, || {
        // SAFETY: harmless syscall; the filter kills us here.
        unsafe { libc::syscall(libc::SYS_getpgid, 0) };
        42
    });
    assert!(libc::WIFSIGNALED(status), "status {status:#x}");
    assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
}

#[test]
fn errno_ret_and_64bit_argument_condition_in_kernel() {
    // setns(fd, nstype): fail with ENOSYS only when nstype == 2^33 + 5,
    // which is not a valid nstype (so the kernel would say EINVAL/EBADF).
    let arg = LinuxSeccompArgBuilder::default()
        .index(1usize)
        .op(Op::ScmpCmpEq)
        .value((1u64 << 33) + 5)
        .build()
        .unwrap();
    let r = LinuxSyscallBuilder::default()
        .names(vec!["setns".to_string()])
        .action(Act::ScmpActErrno)
        .errno_ret(libc::ENOSYS as u32)
        .args(vec![arg])
        .build()
        .unwrap();
    let p = compile(&profile(Act::ScmpActAllow, vec![r]), native()).unwrap();
    let status = in_child(&p, || {
        // SAFETY: setns on an invalid fd only returns an error.
        let r = unsafe { libc::syscall(libc::SYS_setns, -1, (1u64 << 33) + 5) };
        if r != -1 || errno() != libc::ENOSYS {
            return 20;
        }
        // SAFETY: as above, different nstype: real kernel error (EBADF).
        let r = unsafe { libc::syscall(libc::SYS_setns, -1, 5u64) };
        if r != -1 || errno() == libc::ENOSYS {
            return 21;
        }
        0
    });
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
}

#[test]
fn docker_profile_loads_and_runs() {
    let spec: LinuxSeccomp =
        serde_json::from_str(include_str!("data/docker-default.json")).unwrap();
    let opts = CompileOptions {
        unknown_syscalls: UnknownSyscalls::Ignore,
        ..Default::default()
    };
    let p = compile_with(&spec, native(), &opts).unwrap();
    let dir = tempdir("docker");
    let d = CString::new(dir.join("sub").into_os_string().into_encoded_bytes()).unwrap();
    let status = in_child(&p, || {
        // Allowed by the profile.
        // SAFETY: valid path.
        if unsafe { libc::mkdir(d.as_ptr(), 0o755) } != 0 {
            return 30;
        }
        // Not in the allow list: default ERRNO(EPERM).
        // SAFETY: acct(NULL) would only disable accounting; it is blocked.
        let r = unsafe { libc::syscall(libc::SYS_acct, 0usize) };
        if r != -1 || errno() != libc::EPERM {
            return 31;
        }
        0
    });
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
    assert!(dir.join("sub").is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn notify_rule_returns_listener_fd() {
    let spec = profile(
        Act::ScmpActAllow,
        vec![rule(&["getpgid"], Act::ScmpActNotify)],
    );
    let p = compile(&spec, native()).unwrap();
    assert!(p.uses_notify);
    let flags = rcrun_seccomp::filter_flags(&spec, &p);
    assert_ne!(flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0);
    // SAFETY: the child only makes async-signal-safe calls, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = match set_no_new_privs().and_then(|()| load(&p, flags)) {
            Ok(Some(fd)) => {
                use std::os::fd::AsRawFd;
                // The listener is a real fd; getpid is still allowed.
                // SAFETY: fcntl on our own fd; getpid has no arguments.
                let ok = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } >= 0
                    && unsafe { libc::getpid() } > 0;
                if ok {
                    0
                } else {
                    51
                }
            }
            Ok(None) => 50,
            Err(_) => 52,
        };
        // SAFETY: terminate the child without running destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
}
