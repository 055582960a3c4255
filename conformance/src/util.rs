//! Small generic helpers: unique ids, temp dirs, polling, host commands.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A container id unique across threads and concurrently running test binaries.
/// Only uses characters accepted by runc (`[A-Za-z0-9_+.-]`).
pub fn unique_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 10_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Base directory for everything the suite creates on the host.
pub fn base_tmp() -> PathBuf {
    let p = std::env::var_os("RCRUN_CONFORMANCE_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rcrun-conformance"));
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    p
}

/// A directory removed (recursively) on drop -- unless something is still
/// mounted below it, in which case it is left alone (never delete through a
/// bind mount) and a warning is printed.
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = base_tmp().join(unique_id(prefix));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir {
            path,
            keep: std::env::var_os("RCRUN_KEEP_TMP").is_some(),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join<P: AsRef<Path>>(&self, p: P) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let mounted = mounts_under(&self.path);
        if !mounted.is_empty() {
            eprintln!(
                "warning: not removing {}: still mounted below it: {mounted:?}",
                self.path.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
        .filter(|mp| mp == &d || mp.starts_with(&format!("{d}/")))
        .collect()
}

/// Undo the octal escapes (`\040` etc.) used in /proc/*/mountinfo.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Poll `f` every 20ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a host command; returns (exit code, stdout, stderr).  Panics if it cannot be spawned.
pub fn host(cmd: &str, args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Target of a namespace link, e.g. `net:[4026531840]`.
pub fn ns_id(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("readlink {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the first field after the ")" closing comm
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Lines of `text` that start with `prefix`.
pub fn grep<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Value of a `Key:\tvalue` line in a /proc/PID/status dump.
pub fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_string())
    })
}

/// One line of /proc/PID/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub root: String,
    pub mount_point: String,
    /// per-mount options (ro, nosuid, ...)
    pub opts: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_opts: Vec<String>,
}

impl MountEntry {
    pub fn has_opt(&self, o: &str) -> bool {
        self.opts.iter().any(|x| x == o)
    }
    pub fn has_super_opt(&self, o: &str) -> bool {
        self.super_opts.iter().any(|x| x == o)
    }
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(MountEntry {
                root: unescape_mountinfo(l[3]),
                mount_point: unescape_mountinfo(l[4]),
                opts: l[5].split(',').map(String::from).collect(),
                fstype: r[0].to_string(),
                source: r[1].to_string(),
                super_opts: r[2].split(',').map(String::from).collect(),
            })
        })
        .collect()
}

/// The last (top-most) mount at `mount_point`.
pub fn find_mount<'a>(mounts: &'a [MountEntry], mount_point: &str) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == mount_point)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)`
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .map(|x| x.iter().all(u8::is_ascii_digit))
            .unwrap_or(false)
    };
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !(b[10] == b'T' || b[10] == b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        "Z" | "z" => true,
        tz => {
            let t = tz.as_bytes();
            t.len() == 6
                && (t[0] == b'+' || t[0] == b'-')
                && t[3] == b':'
                && digits(i + 1..i + 3)
                && digits(i + 4..i + 6)
        }
    }
}

/// Linux capability names in bit order (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40).
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Bit mask of a list of capability names (panics on unknown names).
pub fn caps_mask(caps: &[&str]) -> u64 {
    caps.iter().fold(0u64, |m, c| {
        let bit = CAP_NAMES
            .iter()
            .position(|n| n == c)
            .unwrap_or_else(|| panic!("unknown cap {c}"));
        m | (1u64 << bit)
    })
}

/// The mask in /proc/PID/status format (16 hex digits).
pub fn caps_hex(caps: &[&str]) -> String {
    format!("{:016x}", caps_mask(caps))
}

/// The host's capability bounding set (from /proc/self/status).
pub fn host_cap_bnd() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_field(&s, "CapBnd")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

/// The guest's spare PCI NICs (net profile: MACs 52:54:00:c0:ff:1x), which stand in for
/// SR-IOV VFs: unlike veth or dummy, a real device returns to the host namespace when the
/// container's own netns dies. None on this host (its one NIC is not ours to move).
pub fn spare_nics() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("address"))
                .is_ok_and(|a| a.trim().starts_with("52:54:00:c0:ff:1"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert!(is_rfc3339("2026-11-23T12:56:09.744901125Z"));
        assert!(is_rfc3339("2026-11-23T12:56:09Z"));
        assert!(is_rfc3339("2026-11-23T12:56:09+02:00"));
        assert!(!is_rfc3339("2026-11-23 12:56:09"));
        assert!(!is_rfc3339("2026-11-23T12:56:09."));
        assert!(!is_rfc3339("1700000000"));
    }

    #[test]
    fn mountinfo_parsing() {
        let line = "68 66 0:41 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n\
                    74 73 0:29 /x /sys/fs/cgroup/cpu ro,nosuid shared:5 - cgroup cgroup rw,cpu\n\
                    1 0 0:1 / /with\\040space rw - tmpfs none rw";
        let ms = parse_mountinfo(line);
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].mount_point, "/dev");
        assert!(ms[0].has_opt("nosuid") && ms[0].has_super_opt("mode=755"));
        assert_eq!(ms[1].fstype, "cgroup");
        assert_eq!(ms[1].root, "/x");
        assert_eq!(ms[2].mount_point, "/with space");
    }

    #[test]
    fn caps() {
        assert_eq!(
            caps_hex(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            "0000000020000420"
        );
        assert_eq!(caps_mask(&["CAP_CHECKPOINT_RESTORE"]), 1 << 40);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tsh\nCapEff:\t0000000000000021\nGroups:\t\n";
        assert_eq!(
            status_field(s, "CapEff").as_deref(),
            Some("0000000000000021")
        );
        assert_eq!(status_field(s, "Groups").as_deref(), Some(""));
        assert_eq!(status_field(s, "Nope"), None);
    }

    #[test]
    fn unique_ids_differ() {
        assert_ne!(unique_id("a"), unique_id("a"));
    }
}
