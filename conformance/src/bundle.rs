//! OCI bundle builder: a temp dir with a busybox rootfs and a config.json.

use crate::env::{busybox, busybox_applets};
use crate::util::{unique_id, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Exactly what `runc spec` (runc 1.1) writes: on a pure cgroup v2 host it adds a cgroup
/// namespace.
pub fn default_spec() -> Value {
    let mut spec = runc_spec_v1_host();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
            nss.push(json!({"type": "cgroup"}));
        }
    }
    spec
}

fn runc_spec_v1_host() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps.clone(),
                "effective": caps.clone(),
                "permitted": caps.clone(),
                "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The capability names of the default spec.
pub const DEFAULT_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Hook kinds, in the order the OCI spec runs them.
pub const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A bundle directory.  `id` is a fresh container id meant for this bundle
/// and `cgroups_path` is set to `/rcrun-conformance/<id>` so cgroups can be
/// checked and cleaned deterministically.
pub struct Bundle {
    dir: TempDir,
    pub id: String,
    pub cfg: Value,
}

impl Bundle {
    /// runc's default spec with `process.terminal = false`, args `["true"]`,
    /// a busybox rootfs, and a per-bundle cgroupsPath.
    pub fn new() -> Bundle {
        let id = unique_id("rcc");
        let dir = TempDir::new("bundle");
        let rootfs = dir.join("rootfs");
        populate_rootfs(&rootfs);
        // The same namespaces on every host (the v1-host template): tests that want a cgroup
        // namespace ask for one, so v1 and v2 runs check the same things.
        let mut cfg = runc_spec_v1_host();
        cfg["process"]["terminal"] = json!(false);
        cfg["process"]["args"] = json!(["true"]);
        cfg["linux"]["cgroupsPath"] = json!(format!("/rcrun-conformance/{id}"));
        Bundle { dir, id, cfg }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The cgroupsPath in the config (absolute, as set by `new`).
    pub fn cgroups_path(&self) -> Option<String> {
        self.cfg["linux"]["cgroupsPath"].as_str().map(String::from)
    }

    /// Write config.json (called by the runtime helpers before create/run).
    pub fn write(&self) {
        let text = serde_json::to_string_pretty(&self.cfg).unwrap_or_default();
        std::fs::write(self.config_path(), text)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path().display()));
    }

    /// Set any value by JSON pointer (`/process/cwd`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, v: Value) -> &mut Self {
        set_pointer(&mut self.cfg, pointer, v);
        self
    }
    /// Remove a key by JSON pointer (no-op if absent).
    pub fn unset(&mut self, pointer: &str) -> &mut Self {
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            if let Some(Value::Object(m)) = self.cfg.pointer_mut(parent) {
                m.remove(key);
            }
        }
        self
    }

    // ---- process ----
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }
    /// `sh -c SCRIPT` (busybox sh).
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }
    pub fn env(&mut self, kv: &str) -> &mut Self {
        let key = kv.split('=').next().unwrap_or(kv).to_string();
        let envs = self.cfg["process"]["env"]
            .as_array_mut()
            .expect("process.env array");
        envs.retain(|e| {
            e.as_str()
                .map(|s| s.split('=').next() != Some(key.as_str()))
                .unwrap_or(true)
        });
        envs.push(json!(kv));
        self
    }
    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }
    pub fn user(&mut self, uid: u32, gid: u32, additional: &[u32]) -> &mut Self {
        let mut u = json!({"uid": uid, "gid": gid});
        if !additional.is_empty() {
            u["additionalGids"] = json!(additional);
        }
        self.set("/process/user", u)
    }
    pub fn umask(&mut self, umask: u32) -> &mut Self {
        self.set("/process/user/umask", json!(umask))
    }
    /// Same capability list for bounding/effective/permitted/ambient (+inheritable if `inh`).
    pub fn caps(&mut self, caps: &[&str], inheritable: bool) -> &mut Self {
        let mut c =
            json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps});
        if inheritable {
            c["inheritable"] = json!(caps);
        }
        self.set("/process/capabilities", c)
    }
    pub fn cap_set(&mut self, set: &str, caps: &[&str]) -> &mut Self {
        self.set(&format!("/process/capabilities/{set}"), json!(caps))
    }
    /// Replace (or add) one rlimit.
    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        if !self.cfg["process"]["rlimits"].is_array() {
            self.cfg["process"]["rlimits"] = json!([]);
        }
        let rl = self.cfg["process"]["rlimits"]
            .as_array_mut()
            .expect("rlimits array");
        rl.retain(|r| r["type"] != json!(kind));
        rl.push(json!({"type": kind, "soft": soft, "hard": hard}));
        self
    }
    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.set("/process/noNewPrivileges", json!(on))
    }
    pub fn oom_score_adj(&mut self, v: i32) -> &mut Self {
        self.set("/process/oomScoreAdj", json!(v))
    }
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.set("/process/terminal", json!(on))
    }
    pub fn console_size(&mut self, height: u32, width: u32) -> &mut Self {
        self.set(
            "/process/consoleSize",
            json!({"height": height, "width": width}),
        )
    }

    // ---- root / mounts ----
    pub fn readonly_root(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }
    pub fn mount(&mut self, m: Value) -> &mut Self {
        let dest = m["destination"].clone();
        let ms = self.cfg["mounts"].as_array_mut().expect("mounts array");
        ms.retain(|x| x["destination"] != dest);
        ms.push(m);
        self
    }
    /// Bind-mount a host path at `dest` with extra options (e.g. `["ro"]`).
    pub fn bind(&mut self, src: &Path, dest: &str, opts: &[&str]) -> &mut Self {
        let mut o = vec!["rbind"];
        o.extend_from_slice(opts);
        self.mount(json!({"destination": dest, "type": "bind", "source": src, "options": o}))
    }
    pub fn remove_mount(&mut self, dest: &str) -> &mut Self {
        if let Some(ms) = self.cfg["mounts"].as_array_mut() {
            ms.retain(|x| x["destination"] != json!(dest));
        }
        self
    }

    // ---- linux ----
    /// Add a namespace (replacing one of the same type), optionally joining `path`.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        let ns = self.cfg["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces array");
        ns.retain(|n| n["type"] != json!(kind));
        let mut n = json!({"type": kind});
        if let Some(p) = path {
            n["path"] = json!(p);
        }
        ns.push(n);
        self
    }
    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(ns) = self.cfg["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != json!(kind));
        }
        self
    }
    pub fn hostname(&mut self, h: &str) -> &mut Self {
        self.set("/hostname", json!(h))
    }
    pub fn domainname(&mut self, d: &str) -> &mut Self {
        self.set("/domainname", json!(d))
    }
    /// Set `linux.resources.<key>` (e.g. `memory`, `pids`, `cpu`).
    pub fn resources(&mut self, key: &str, v: Value) -> &mut Self {
        self.set(&format!("/linux/resources/{key}"), v)
    }
    pub fn device(&mut self, d: Value) -> &mut Self {
        if !self.cfg["linux"]["devices"].is_array() {
            self.cfg["linux"]["devices"] = json!([]);
        }
        self.cfg["linux"]["devices"]
            .as_array_mut()
            .expect("devices")
            .push(d);
        self
    }
    /// Allow a device in the cgroup device controller (`c`/`b`, major, minor, access).
    pub fn allow_device(&mut self, kind: &str, major: i64, minor: i64, access: &str) -> &mut Self {
        self.cfg["linux"]["resources"]["devices"]
            .as_array_mut()
            .expect("resources.devices")
            .push(json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}));
        self
    }
    pub fn sysctl(&mut self, key: &str, val: &str) -> &mut Self {
        self.set(&format!("/linux/sysctl/{key}"), json!(val))
    }
    pub fn id_mappings(&mut self, host_uid: u32, host_gid: u32, size: u32) -> &mut Self {
        self.set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": host_uid, "size": size}]),
        );
        self.set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": host_gid, "size": size}]),
        )
    }
    pub fn masked_paths(&mut self, p: &[&str]) -> &mut Self {
        self.set("/linux/maskedPaths", json!(p))
    }
    pub fn readonly_paths(&mut self, p: &[&str]) -> &mut Self {
        self.set("/linux/readonlyPaths", json!(p))
    }

    // ---- hooks / misc ----
    /// Append a hook of `kind` (`prestart`, `createRuntime`, ...).
    pub fn hook(&mut self, kind: &str, hook: Value) -> &mut Self {
        if !self.cfg["hooks"].is_object() {
            self.cfg["hooks"] = json!({});
        }
        if !self.cfg["hooks"][kind].is_array() {
            self.cfg["hooks"][kind] = json!([]);
        }
        self.cfg["hooks"][kind]
            .as_array_mut()
            .expect("hook array")
            .push(hook);
        self
    }
    /// A `/bin/sh -c SCRIPT` hook.
    pub fn sh_hook(&mut self, kind: &str, script: &str) -> &mut Self {
        self.hook(
            kind,
            json!({"path": "/bin/sh", "args": ["sh", "-c", script]}),
        )
    }
    pub fn annotation(&mut self, k: &str, v: &str) -> &mut Self {
        self.set(
            &format!("/annotations/{}", k.replace('~', "~0").replace('/', "~1")),
            json!(v),
        )
    }
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle::new()
    }
}

fn set_pointer(root: &mut Value, pointer: &str, v: Value) {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            obj.insert(part.clone(), v);
            return;
        }
        cur = obj.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

/// Busybox rootfs: /bin/busybox + one symlink per applet, /etc/passwd,
/// /etc/group (root and user 1000), and empty mount points.
pub fn populate_rootfs(rootfs: &Path) {
    let mk = |p: &Path| {
        std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()))
    };
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/user",
    ] {
        mk(&rootfs.join(d));
    }
    let bb = rootfs.join("bin/busybox");
    std::fs::copy(busybox(), &bb).unwrap_or_else(|e| panic!("copy busybox: {e}"));
    for applet in busybox_applets() {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap_or_else(|e| panic!("write passwd: {e}"));
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\nuser:x:1000:\nextra:x:2000:\n",
    )
    .unwrap_or_else(|e| panic!("write group: {e}"));
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777));
}
