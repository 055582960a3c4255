//! `events`: the container's resource statistics in runc's JSON shape (`types.Stats` of runc
//! 1.1: `cpu`, `cpuset`, `memory`, `pids`, `blkio`, `hugetlb`, `intel_rdt`,
//! `network_interfaces`), read straight from the cgroup files (v1 or v2), plus OOM events.
//!
//! libcgroups has its own `stats()`, but its types serialise with different keys
//! (`usage_total`, `per_core_usage_total`, `fail_count`...), so the files are read here.
//! Go's `omitempty` is reproduced: zero numbers, empty lists and maps are left out, while
//! struct-valued fields are always present.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::Error;
use crate::cgroups::{Cgroup, CgroupMode};
use crate::state::{self, Status};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: BTreeMap<String, Value>,
    pub network_interfaces: Option<Vec<Value>>,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

// ---------------------------------------------------------------------------------------------
// file readers
// ---------------------------------------------------------------------------------------------

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A single number; "max" is u64::MAX (as runc's GetCgroupParamUint); missing is 0.
fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file).map_or(0, |s| parse_num(s.trim()))
}

fn parse_num(s: &str) -> u64 {
    if s == "max" {
        return u64::MAX;
    }
    // Negative values (e.g. a v1 limit of -1 read back) count as 0, as in runc.
    s.parse().unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, cpuacct.stat, memory.events...).
fn flat_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A cpuset list ("0-3,8") as numbers.
fn cpu_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u16>().ok()),
        }
    }
    out
}

fn list_u64(dir: &Path, file: &str) -> Vec<u64> {
    read(dir, file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn v1_memory_entry(dir: &Path, prefix: &str) -> MemoryEntry {
    MemoryEntry {
        limit: num(dir, &format!("{prefix}.limit_in_bytes")),
        usage: num(dir, &format!("{prefix}.usage_in_bytes")),
        max: num(dir, &format!("{prefix}.max_usage_in_bytes")),
        failcnt: num(dir, &format!("{prefix}.failcnt")),
    }
}

/// v1 blkio files: "MAJ:MIN Op value" lines ("Total N" lines skipped).
fn v1_blkio(dir: &Path, file: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in read(dir, file).unwrap_or_default().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let Some((maj, min)) = f[0].split_once(':') else {
            continue;
        };
        out.push(BlkioEntry {
            major: maj.parse().unwrap_or(0),
            minor: min.parse().unwrap_or(0),
            op: f[1].to_string(),
            value: f[2].parse().unwrap_or(0),
        });
    }
    out
}

fn hugetlb_sizes_in(dir: &Path, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let size = n.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                    (!size.contains('.')).then(|| size.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn stats_v1(cg: &Cgroup) -> Stats {
    let mut s = Stats::default();
    if let Some(d) = cg.controller_dir("cpuacct") {
        s.cpu.usage.total = num(d, "cpuacct.usage");
        s.cpu.usage.percpu = list_u64(d, "cpuacct.usage_percpu");
        s.cpu.usage.percpu_kernel = list_u64(d, "cpuacct.usage_percpu_sys");
        s.cpu.usage.percpu_user = list_u64(d, "cpuacct.usage_percpu_user");
        let st = flat_keyed(d, "cpuacct.stat");
        let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / clock_ticks();
        s.cpu.usage.user = ns(st.get("user").copied().unwrap_or(0));
        s.cpu.usage.kernel = ns(st.get("system").copied().unwrap_or(0));
    }
    if let Some(d) = cg.controller_dir("cpu") {
        let st = flat_keyed(d, "cpu.stat");
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(d) = cg.controller_dir("cpuset") {
        let n = |f: &str| num(d, &format!("cpuset.{f}"));
        s.cpuset = CpuSet {
            cpus: cpu_list(&read(d, "cpuset.cpus").unwrap_or_default()),
            cpu_exclusive: n("cpu_exclusive"),
            mems: cpu_list(&read(d, "cpuset.mems").unwrap_or_default()),
            mem_hardwall: n("mem_hardwall"),
            mem_exclusive: n("mem_exclusive"),
            memory_migrate: n("memory_migrate"),
            memory_spread_page: n("memory_spread_page"),
            memory_spread_slab: n("memory_spread_slab"),
            memory_pressure: n("memory_pressure"),
            sched_load_balance: n("sched_load_balance"),
            sched_relax_domain_level: read(d, "cpuset.sched_relax_domain_level")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        };
    }
    if let Some(d) = cg.controller_dir("memory") {
        s.memory.usage = v1_memory_entry(d, "memory");
        s.memory.swap = v1_memory_entry(d, "memory.memsw");
        s.memory.kernel = v1_memory_entry(d, "memory.kmem");
        s.memory.kernel_tcp = v1_memory_entry(d, "memory.kmem.tcp");
        s.memory.raw = flat_keyed(d, "memory.stat");
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(d) = cg.controller_dir("pids") {
        s.pids = pids_of(d);
    }
    if let Some(d) = cg.controller_dir("blkio") {
        s.blkio.io_service_bytes_recursive =
            v1_blkio(d, "blkio.throttle.io_service_bytes_recursive");
        s.blkio.io_serviced_recursive = v1_blkio(d, "blkio.throttle.io_serviced_recursive");
    }
    if let Some(d) = cg.controller_dir("hugetlb") {
        for size in hugetlb_sizes_in(d, ".usage_in_bytes") {
            let f = |x: &str| num(d, &format!("hugetlb.{size}.{x}"));
            let h = Hugetlb {
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
            };
            s.hugetlb.insert(size, h);
        }
    }
    s
}

fn pids_of(d: &Path) -> Pids {
    let limit = num(d, "pids.max");
    Pids {
        current: num(d, "pids.current"),
        // "max" (unlimited) is reported as 0, as runc does.
        limit: if limit == u64::MAX { 0 } else { limit },
    }
}

fn stats_v2(d: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = flat_keyed(d, "cpu.stat");
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    s.cpu.usage.total = get(&cpu, "usage_usec") * 1000;
    s.cpu.usage.user = get(&cpu, "user_usec") * 1000;
    s.cpu.usage.kernel = get(&cpu, "system_usec") * 1000;
    s.cpu.throttling = Throttling {
        periods: get(&cpu, "nr_periods"),
        throttled_periods: get(&cpu, "nr_throttled"),
        throttled_time: get(&cpu, "throttled_usec") * 1000,
    };
    if d.join("memory.current").exists() {
        let raw = flat_keyed(d, "memory.stat");
        let events = flat_keyed(d, "memory.events");
        let usage = MemoryEntry {
            limit: num(d, "memory.max"),
            usage: num(d, "memory.current"),
            max: num(d, "memory.peak"),
            failcnt: get(&events, "max"),
        };
        // cgroup v1 reports swap as memory+swap; runc adds the memory figures for v2 too.
        let swap_limit = num(d, "memory.swap.max");
        let swap = MemoryEntry {
            limit: if swap_limit == u64::MAX || usage.limit == u64::MAX {
                swap_limit
            } else {
                swap_limit.saturating_add(usage.limit)
            },
            usage: num(d, "memory.swap.current").saturating_add(usage.usage),
            max: 0,
            failcnt: get(&flat_keyed(d, "memory.swap.events"), "fail"),
        };
        s.memory.cache = get(&raw, "file");
        s.memory.usage = usage;
        s.memory.swap = swap;
        s.memory.raw = raw;
    }
    if d.join("pids.current").exists() {
        s.pids = pids_of(d);
    }
    for l in read(d, "io.stat").unwrap_or_default().lines() {
        let mut f = l.split_whitespace();
        let Some((maj, min)) = f.next().and_then(|dev| dev.split_once(':')) else {
            continue;
        };
        let (major, minor) = (maj.parse().unwrap_or(0), min.parse().unwrap_or(0));
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = v.parse().unwrap_or(0);
            let (list, op) = match k {
                "rbytes" => (&mut s.blkio.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut s.blkio.io_service_bytes_recursive, "Write"),
                "rios" => (&mut s.blkio.io_serviced_recursive, "Read"),
                "wios" => (&mut s.blkio.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    for size in hugetlb_sizes_in(d, ".current") {
        let h = Hugetlb {
            usage: num(d, &format!("hugetlb.{size}.current")),
            max: 0,
            failcnt: get(&flat_keyed(d, &format!("hugetlb.{size}.events")), "max"),
        };
        s.hugetlb.insert(size, h);
    }
    s
}

/// The statistics of a cgroup, in runc's `types.Stats` shape.
pub fn cgroup_stats(cg: &Cgroup) -> Stats {
    match cg.mode() {
        CgroupMode::Unified | CgroupMode::Systemd => {
            cg.controller_dir("").map(stats_v2).unwrap_or_default()
        }
        CgroupMode::Legacy | CgroupMode::Hybrid => stats_v1(cg),
    }
}

/// How many times the OOM killer fired in the cgroup (v2 `memory.events`, v1
/// `memory.oom_control`'s `oom_kill`, Linux 4.13+).
fn oom_count(cg: &Cgroup) -> u64 {
    match cg.mode() {
        CgroupMode::Unified | CgroupMode::Systemd => cg
            .controller_dir("")
            .map(|d| flat_keyed(d, "memory.events"))
            .and_then(|m| m.get("oom_kill").copied())
            .unwrap_or(0),
        CgroupMode::Legacy | CgroupMode::Hybrid => cg
            .controller_dir("memory")
            .map(|d| flat_keyed(d, "memory.oom_control"))
            .and_then(|m| m.get("oom_kill").copied())
            .unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------------
// the command
// ---------------------------------------------------------------------------------------------

/// Go's `time.ParseDuration` for the units `events --interval` is given in ("5s", "500ms",
/// "1m30s", "1.5h"...).
pub fn parse_interval(s: &str) -> Result<Duration, Error> {
    let bad = |why: &str| Error::InvalidValue {
        flag: "interval".into(),
        reason: format!("time: {why} \"{s}\""),
    };
    if s == "0" {
        return Err(Error::InvalidValue {
            flag: "interval".into(),
            reason: "duration interval must be greater than 0".into(),
        });
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad("invalid duration"));
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n_end == 0 {
            return Err(bad("invalid duration"));
        }
        let n: f64 = rest[..n_end].parse().map_err(|_| bad("invalid duration"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit in duration")),
            _ => return Err(bad("unknown unit in duration")),
        };
        rest = &rest[u_end..];
        total += n * mult;
    }
    if total <= 0.0 {
        return Err(Error::InvalidValue {
            flag: "interval".into(),
            reason: "duration interval must be greater than 0".into(),
        });
    }
    Ok(Duration::from_secs_f64(total))
}

fn open_running(root: &Path, id: &str) -> Result<(state::ContainerState, Cgroup), Error> {
    state::validate_id(id)?;
    let dir = root.join(id);
    let st = state::load_state(&dir, id)?;
    if st.status(&dir) == Status::Stopped {
        return Err(Error::EventsNotRunning(id.to_string()));
    }
    let Some(cg) = st.cgroup.as_deref() else {
        return Err(Error::EventsNotRunning(id.to_string()));
    };
    let cg = Cgroup::open(cg, st.systemd_cgroup)?;
    Ok((st, cg))
}

/// runc's `types.Event`, keys in runc's order.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

impl Event<'_> {
    /// One line of JSON, as runc's encoder writes it (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn stats_event<'a>(id: &'a str, cg: &Cgroup) -> Event<'a> {
    Event {
        kind: "stats",
        id,
        data: Some(cgroup_stats(cg)),
    }
}

/// `events --stats`: one stats event.
pub fn stats<'a>(root: &Path, id: &'a str) -> Result<Event<'a>, Error> {
    let (_, cg) = open_running(root, id)?;
    Ok(stats_event(id, &cg))
}

/// `events`: a stats event every `interval` and an `oom` event whenever the OOM killer fires,
/// until the container stops (or `emit` fails, e.g. the reader went away).
pub fn stream(
    root: &Path,
    id: &str,
    interval: Duration,
    mut emit: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<(), Error> {
    let (st, cg) = open_running(root, id)?;
    let io = |source| Error::Io {
        what: "write event",
        path: "stdout".into(),
        source,
    };
    let poll = interval.min(Duration::from_millis(200));
    let mut ooms = oom_count(&cg);
    let mut next = Instant::now() + interval;
    loop {
        std::thread::sleep(poll.min(next.saturating_duration_since(Instant::now())));
        // OOM first: a kill that also ended the container is still reported.
        let n = oom_count(&cg);
        if n > ooms {
            let oom = Event {
                kind: "oom",
                id,
                data: None,
            };
            emit(&oom).map_err(io)?;
        }
        ooms = n;
        if !st.is_alive() {
            return Ok(());
        }
        if Instant::now() >= next {
            emit(&stats_event(id, &cg)).map_err(io)?;
            next += interval;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let p = |s| parse_interval(s).ok();
        assert_eq!(p("5s"), Some(Duration::from_secs(5)));
        assert_eq!(p("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(p("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(p("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "5", "x", "0", "0s", "5x", "-1s"] {
            assert!(p(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn empty_stats_have_runcs_keys() {
        let v = serde_json::to_value(Stats::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in [
            "cpu",
            "cpuset",
            "memory",
            "pids",
            "blkio",
            "hugetlb",
            "intel_rdt",
            "network_interfaces",
        ] {
            assert!(keys.contains(&k), "{k} missing: {v}");
        }
        assert_eq!(
            v["cpu"]["usage"],
            serde_json::json!({"kernel": 0, "user": 0})
        );
        assert_eq!(v["cpu"]["throttling"], serde_json::json!({}));
        assert_eq!(
            v["memory"]["kernelTCP"],
            serde_json::json!({"limit": 0, "failcnt": 0})
        );
        assert_eq!(v["network_interfaces"], Value::Null);
        assert_eq!(cpu_list("0-2,5\n"), vec![0, 1, 2, 5]);
    }
}
