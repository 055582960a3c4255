//! Cgroup layout detection (v1, hybrid, pure v2) and reading limits back
//! from the host side.

use std::path::PathBuf;

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// true for cgroup2
    pub v2: bool,
    /// v1: controllers named in the super options (incl. `name=systemd`);
    /// v2: contents of cgroup.controllers.
    pub controllers: Vec<String>,
}

/// All cgroup/cgroup2 mounts of the host (from /proc/self/mountinfo).
pub fn hierarchies() -> Vec<Hierarchy> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _src = r.next();
        let superopts = r.next().unwrap_or("");
        if out
            .iter()
            .any(|h| h.mount.as_path() == std::path::Path::new(mount))
        {
            continue;
        }
        match fstype {
            "cgroup" => out.push(Hierarchy {
                mount: mount.into(),
                v2: false,
                controllers: superopts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "xattr"
                        ) && !o.starts_with("release_agent")
                    })
                    .map(String::from)
                    .collect(),
            }),
            "cgroup2" => out.push(Hierarchy {
                mount: mount.into(),
                v2: true,
                controllers: std::fs::read_to_string(
                    PathBuf::from(mount).join("cgroup.controllers"),
                )
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            }),
            _ => {}
        }
    }
    // only the host's real hierarchies under /sys/fs/cgroup
    out.retain(|h| h.mount.starts_with("/sys/fs/cgroup"));
    out
}

/// True when /sys/fs/cgroup itself is a cgroup2 mount (no v1 controllers).
pub fn is_pure_v2() -> bool {
    hierarchies()
        .iter()
        .any(|h| h.v2 && h.mount.as_path() == std::path::Path::new("/sys/fs/cgroup"))
}

/// Every directory a container with this cgroupsPath may occupy (one per hierarchy).
pub fn all_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    hierarchies().iter().map(|h| h.mount.join(rel)).collect()
}

/// Directory holding `controller`'s files for this cgroupsPath.
pub fn controller_dir(controller: &str, cgroups_path: &str) -> PathBuf {
    let rel = cgroups_path.trim_start_matches('/');
    let hs = hierarchies();
    if let Some(h) = hs
        .iter()
        .find(|h| !h.v2 && h.controllers.iter().any(|c| c == controller))
    {
        return h.mount.join(rel);
    }
    if let Some(h) = hs
        .iter()
        .find(|h| h.v2 && h.controllers.iter().any(|c| c == controller))
    {
        return h.mount.join(rel);
    }
    panic!("no cgroup hierarchy has the {controller} controller: {hs:?}")
}

fn read_trim(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn is_v2_for(controller: &str) -> bool {
    !hierarchies()
        .iter()
        .any(|h| !h.v2 && h.controllers.iter().any(|c| c == controller))
}

/// Memory limit in bytes (`None` = unlimited).
pub fn memory_limit(cgroups_path: &str) -> Option<u64> {
    let dir = controller_dir("memory", cgroups_path);
    let v = if is_v2_for("memory") {
        read_trim(dir.join("memory.max"))
    } else {
        read_trim(dir.join("memory.limit_in_bytes"))
    };
    // v1 "unlimited" is a huge page-rounded number
    v.parse::<u64>().ok().filter(|n| *n < (1u64 << 62))
}

/// pids.max as a string ("max" or a number).
pub fn pids_max(cgroups_path: &str) -> String {
    read_trim(controller_dir("pids", cgroups_path).join("pids.max"))
}

/// CPU quota and period in microseconds (`quota == -1` = unlimited).
pub fn cpu_quota_period(cgroups_path: &str) -> (i64, u64) {
    let dir = controller_dir("cpu", cgroups_path);
    if is_v2_for("cpu") {
        let s = read_trim(dir.join("cpu.max"));
        let mut it = s.split_whitespace();
        let q = it.next().unwrap_or("max");
        let p = it.next().unwrap_or("100000").parse().unwrap_or(0);
        (
            if q == "max" {
                -1
            } else {
                q.parse().unwrap_or(0)
            },
            p,
        )
    } else {
        (
            read_trim(dir.join("cpu.cfs_quota_us")).parse().unwrap_or(0),
            read_trim(dir.join("cpu.cfs_period_us"))
                .parse()
                .unwrap_or(0),
        )
    }
}

/// v1: cpu.shares; v2: cpu.weight.  Compare with [`expected_cpu_value`].
pub fn cpu_shares_or_weight(cgroups_path: &str) -> u64 {
    let dir = controller_dir("cpu", cgroups_path);
    let f = if is_v2_for("cpu") {
        "cpu.weight"
    } else {
        "cpu.shares"
    };
    read_trim(dir.join(f)).parse().unwrap_or(0)
}

/// What cpu.shares=`shares` must read back as on this host: the shares
/// themselves on v1, runc's conversion `1 + ((shares - 2) * 9999) / 262142` on v2.
pub fn expected_cpu_value(shares: u64) -> u64 {
    if is_v2_for("cpu") {
        1 + ((shares - 2) * 9999) / 262142
    } else {
        shares
    }
}

/// The path for `controller` in a /proc/PID/cgroup dump (v1 line naming the
/// controller, else the `0::` line).
pub fn proc_cgroup_path(dump: &str, controller: &str) -> Option<String> {
    let mut v2 = None;
    for l in dump.lines() {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if ctrls.split(',').any(|c| c == controller) {
            return Some(path.to_string());
        }
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    if is_v2_for(controller) {
        v2
    } else {
        None
    }
}
