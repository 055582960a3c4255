//! Rootless: an unprivileged user runs a container from `spec --rootless` (its own user
//! namespace mapping only its uid, no cgroup), with the state under $XDG_RUNTIME_DIR.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rcrun_conformance::bundle::populate_rootfs;
use rcrun_conformance::env::subject_bin;
use rcrun_conformance::util::TempDir;

const UID: u32 = 1000;

/// Run the subject as uid/gid 1000 (no supplementary groups), with XDG_RUNTIME_DIR set. Output
/// goes through files: a created container inherits the runtime's stdio, and a pipe would
/// stay open for as long as it lives.
fn as_user(runtime_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out_path = runtime_dir.join(format!(".out-{}", args[0]));
    let err_path = runtime_dir.join(format!(".err-{}", args[0]));
    let mut cmd = Command::new(subject_bin());
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(UID, UID, UID) != 0
                || libc::setresuid(UID, UID, UID) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env("HOME", runtime_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .expect("run the runtime as uid 1000");
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

fn chown_tree(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn unprivileged_user_runs_a_container() {
    let dir = TempDir::new("rootless");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = dir.join("bundle");
    let rundir = dir.join("run");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::create_dir_all(&rundir).unwrap();
    populate_rootfs(&bundle.join("rootfs"));
    chown_tree(dir.path());
    // Parents of the bundle must be searchable by the user.
    let b = bundle.to_string_lossy().into_owned();

    let (code, _, err) = as_user(&rundir, &["spec", "--rootless", "--bundle", &b]);
    assert_eq!(code, 0, "spec --rootless: {err}");
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    assert_eq!(
        cfg["linux"]["uidMappings"][0]["hostID"], UID,
        "spec --rootless maps the caller's uid"
    );
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; touch /proc/x 2>/dev/null || echo ro-proc-ok"
    ]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    chown_tree(&cfg_path);

    let id = format!("rootless-{}", std::process::id());
    let (code, out, err) = as_user(&rundir, &["run", "--bundle", &b, &id]);
    assert_eq!(code, 0, "rootless run failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "root inside the user namespace");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, vec!["0", "1000", "1"]);
    // The state went to $XDG_RUNTIME_DIR/<runtime> and was removed with the container.
    let (code, out, err) = as_user(&rundir, &["list", "--quiet"]);
    assert_eq!(code, 0, "list: {err}");
    assert_eq!(out.trim(), "", "container left in the list");

    // create/start/state/delete as the user too.
    cfg["process"]["args"] = serde_json::json!(["sleep", "100"]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (code, _, err) = as_user(&rundir, &["create", "--bundle", &b, &id]);
    assert_eq!(code, 0, "create: {err}");
    let (code, _, err) = as_user(&rundir, &["start", &id]);
    assert_eq!(code, 0, "start: {err}");
    let (code, out, err) = as_user(&rundir, &["state", &id]);
    assert_eq!(code, 0, "state: {err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line.contains(&UID.to_string()),
        "host uid of the container process: {uid_line}"
    );
    let (code, _, err) = as_user(&rundir, &["delete", "--force", &id]);
    assert_eq!(code, 0, "delete: {err}");
    assert!(
        !Path::new(&format!("/proc/{pid}/status")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
}
