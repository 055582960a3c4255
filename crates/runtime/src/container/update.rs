//! `update`: change the resource limits of a live container, with runc's semantics:
//!
//! * only what runc's `update` honours is taken: memory limit/reservation/swap, cpu
//!   shares/quota/period/realtime/cpus/mems/idle, blkio weight, pids limit and `unified`;
//!   everything else in a `--resources` document (device rules above all, hugepages, network,
//!   rdma, blkio throttles) is ignored, as runc does;
//! * a value of 0 (or an empty cpuset string) means "leave unchanged";
//! * the result is applied to the live cgroup and persisted in `<root>/<id>/resources.json`
//!   (atomically), which later `update`s start from (runc keeps the same in its config copy).
//!   Before the first update the bundle's `linux.resources` stands in for it.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::Error;
use crate::cgroups::{Cgroup, CgroupMode};
use crate::state::{ContainerState, StateDir, Status};

/// The file in the state directory holding the container's current resources.
pub const RESOURCES_FILE: &str = "resources.json";

/// `update`'s command-line flags, as given (sizes still unparsed).
#[derive(Debug, Default, Clone)]
pub struct UpdateFlags {
    pub blkio_weight: Option<u16>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_share: Option<u64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub pids_limit: Option<i64>,
}

/// Go's `units.RAMInBytes` (docker/go-units): `123`, `64m`, `1.5g`, `100KiB`, `2 GB`; binary
/// multipliers; `-1` is accepted by `update` itself for "unlimited".
pub fn parse_size(flag: &str, s: &str) -> Result<i64, Error> {
    if s == "-1" {
        return Ok(-1);
    }
    let bad = || Error::InvalidValue {
        flag: flag.to_string(),
        reason: format!("invalid size: '{s}'"),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut u = unit.as_str();
    let mult: f64 = match u.chars().next() {
        None => 1.0,
        Some(c) => {
            let exp = match c {
                'b' => 0,
                'k' => 1,
                'm' => 2,
                'g' => 3,
                't' => 4,
                'p' => 5,
                _ => return Err(bad()),
            };
            if exp > 0 {
                u = &u[1..];
                u = u.strip_prefix('i').unwrap_or(u);
            }
            if !(u.is_empty() || u == "b") {
                return Err(bad());
            }
            1024f64.powi(exp)
        }
    };
    Ok((value * mult) as i64)
}

/// The resources an update asks for, from the flags (runc: a flag not given is 0, "unchanged").
pub fn resources_from_flags(f: &UpdateFlags) -> Result<LinuxResources, Error> {
    let size = |flag: &str, v: &Option<String>| -> Result<Option<i64>, Error> {
        v.as_deref().map(|s| parse_size(flag, s)).transpose()
    };
    let mut r = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    mem.set_limit(size("memory", &f.memory)?);
    mem.set_swap(size("memory-swap", &f.memory_swap)?);
    mem.set_reservation(size("memory-reservation", &f.memory_reservation)?);
    r.set_memory(Some(mem));
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(f.cpu_share)
        .set_quota(f.cpu_quota)
        .set_period(f.cpu_period)
        .set_realtime_period(f.cpu_rt_period)
        .set_realtime_runtime(f.cpu_rt_runtime)
        .set_cpus(f.cpuset_cpus.clone())
        .set_mems(f.cpuset_mems.clone());
    r.set_cpu(Some(cpu));
    if let Some(w) = f.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    if let Some(l) = f.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(l);
        r.set_pids(Some(p));
    }
    Ok(r)
}

/// The resources an update asks for, from a `--resources` JSON document.
pub fn resources_from_json(data: &[u8]) -> Result<LinuxResources, Error> {
    serde_json::from_slice(data).map_err(|e| Error::InvalidValue {
        flag: "resources".into(),
        reason: e.to_string(),
    })
}

/// Only what runc's `update` honours, with zeros dropped (None = unchanged).
pub fn normalize(r: &LinuxResources) -> LinuxResources {
    let nz_i = |v: Option<i64>| v.filter(|v| *v != 0);
    let nz_u = |v: Option<u64>| v.filter(|v| *v != 0);
    let mut out = LinuxResources::default();
    if let Some(m) = r.memory() {
        if m.kernel().is_some_and(|v| v != 0) || m.kernel_tcp().is_some_and(|v| v != 0) {
            tracing::warn!("Kernel memory settings are ignored and will be removed");
        }
        let mut n = LinuxMemory::default();
        n.set_limit(nz_i(m.limit()))
            .set_swap(nz_i(m.swap()))
            .set_reservation(nz_i(m.reservation()));
        if n.limit().is_some() || n.swap().is_some() || n.reservation().is_some() {
            out.set_memory(Some(n));
        }
    }
    if let Some(c) = r.cpu() {
        let mut n = LinuxCpu::default();
        n.set_shares(nz_u(c.shares()))
            .set_quota(nz_i(c.quota()))
            .set_period(nz_u(c.period()))
            .set_realtime_period(nz_u(c.realtime_period()))
            .set_realtime_runtime(nz_i(c.realtime_runtime()))
            .set_cpus(c.cpus().clone().filter(|s| !s.is_empty()))
            .set_mems(c.mems().clone().filter(|s| !s.is_empty()))
            .set_idle(c.idle());
        if n != LinuxCpu::default() {
            out.set_cpu(Some(n));
        }
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
        if w != 0 {
            let mut b = LinuxBlockIo::default();
            b.set_weight(Some(w));
            out.set_block_io(Some(b));
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() != 0 {
            out.set_pids(Some(*p));
        }
    }
    if let Some(u) = r.unified() {
        if !u.is_empty() {
            out.set_unified(Some(u.clone()));
        }
    }
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        tracing::debug!("update: device rules are ignored (as runc does)");
    }
    out
}

/// `base` with every value set in `delta` replacing its counterpart.
pub fn merge(base: &LinuxResources, delta: &LinuxResources) -> LinuxResources {
    let mut out = base.clone();
    if let Some(d) = delta.memory() {
        let mut m = out.memory().unwrap_or_default();
        if d.limit().is_some() {
            m.set_limit(d.limit());
        }
        if d.swap().is_some() {
            m.set_swap(d.swap());
        }
        if d.reservation().is_some() {
            m.set_reservation(d.reservation());
        }
        out.set_memory(Some(m));
    }
    if let Some(d) = delta.cpu() {
        let mut c = out.cpu().clone().unwrap_or_default();
        if d.shares().is_some() {
            c.set_shares(d.shares());
        }
        if d.quota().is_some() {
            c.set_quota(d.quota());
        }
        if d.period().is_some() {
            c.set_period(d.period());
        }
        if d.realtime_period().is_some() {
            c.set_realtime_period(d.realtime_period());
        }
        if d.realtime_runtime().is_some() {
            c.set_realtime_runtime(d.realtime_runtime());
        }
        if d.cpus().is_some() {
            c.set_cpus(d.cpus().clone());
        }
        if d.mems().is_some() {
            c.set_mems(d.mems().clone());
        }
        if d.idle().is_some() {
            c.set_idle(d.idle());
        }
        out.set_cpu(Some(c));
    }
    if let Some(w) = delta.block_io().as_ref().and_then(|b| b.weight()) {
        let mut b = out.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        out.set_block_io(Some(b));
    }
    if let Some(p) = delta.pids() {
        out.set_pids(Some(*p));
    }
    if let Some(u) = delta.unified() {
        let mut m = out.unified().clone().unwrap_or_default();
        m.extend(u.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.set_unified(Some(m));
    }
    out
}

/// Apply `request` (from [`resources_from_flags`] or [`resources_from_json`]) to the container.
pub fn update(root: &Path, id: &str, request: &LinuxResources) -> Result<(), Error> {
    let _span = tracing::info_span!("update", id).entered();
    let dir = StateDir::open(root, id)?;
    let state = dir.load()?;
    if state.status(&dir.dir) == Status::Stopped {
        return Err(Error::NotRunning);
    }
    let Some(cg) = state.cgroup.as_deref() else {
        return Err(Error::NotRunning);
    };
    let cg = Cgroup::open(cg, state.systemd_cgroup)?;
    let delta = normalize(request);
    let current = current_resources(&dir.dir, &state);
    let mut merged = merge(&current, &delta);
    if !matches!(cg.mode(), CgroupMode::Unified | CgroupMode::Systemd) {
        // cgroup v1 lifts memory+swap along with an unlimited memory limit (as runc does).
        if let (Some(d), Some(m)) = (delta.memory(), merged.memory_mut()) {
            if d.limit() == Some(-1) && d.swap().is_none() && m.swap().is_some() {
                m.set_swap(Some(-1));
            }
        }
    }
    if let Err(e) = cg.apply(&to_write(&delta, &merged, cg.mode())) {
        // Part of the update may have been written: put the previous values back, as runc does.
        if let Err(back) = cg.apply(&normalize(&current)) {
            tracing::warn!(
                "Setting back cgroup configs failed due to error: {back}, your state and actual \
                 configs might be inconsistent."
            );
        }
        return Err(e.into());
    }
    save(&dir.dir.join(RESOURCES_FILE), &merged)
}

/// The container's resources as last set (by create or update).
pub fn current_resources(dir: &Path, state: &ContainerState) -> LinuxResources {
    if let Ok(data) = std::fs::read(dir.join(RESOURCES_FILE)) {
        if let Ok(r) = serde_json::from_slice(&data) {
            return r;
        }
    }
    oci_spec::runtime::Spec::load(state.bundle.join("config.json"))
        .ok()
        .and_then(|s| s.linux().as_ref().and_then(|l| l.resources().clone()))
        .unwrap_or_default()
}

/// What to write: the delta, plus the values cgroup v2 needs alongside (a swap limit is written
/// relative to the memory limit; cpu.max holds quota and period together).
fn to_write(delta: &LinuxResources, merged: &LinuxResources, mode: CgroupMode) -> LinuxResources {
    let mut w = delta.clone();
    if !matches!(mode, CgroupMode::Unified | CgroupMode::Systemd) {
        return w;
    }
    if let (Some(d), Some(m)) = (delta.memory(), merged.memory()) {
        if d.swap().is_some() && d.limit().is_none() {
            let mut n = *d;
            n.set_limit(m.limit());
            w.set_memory(Some(n));
        }
    }
    if let (Some(d), Some(m)) = (delta.cpu(), merged.cpu()) {
        if d.quota().is_some() && d.period().is_none() && m.period().is_some() {
            let mut n = d.clone();
            n.set_period(m.period());
            w.set_cpu(Some(n));
        }
    }
    w
}

fn save(path: &Path, r: &LinuxResources) -> Result<(), Error> {
    let io = |path: PathBuf| {
        move |source| Error::Io {
            what: "write",
            path,
            source,
        }
    };
    let tmp = path.with_file_name(".resources.json.tmp");
    let data = serde_json::to_vec(r).unwrap_or_default();
    let mut f = std::fs::File::create(&tmp).map_err(io(tmp.clone()))?;
    f.write_all(&data).map_err(io(tmp.clone()))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path.to_path_buf()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        let p = |s| parse_size("memory", s).ok();
        assert_eq!(p("123"), Some(123));
        assert_eq!(p("64m"), Some(64 << 20));
        assert_eq!(p("64M"), Some(64 << 20));
        assert_eq!(p("1.5g"), Some(1536 << 20));
        assert_eq!(p("100KiB"), Some(102400));
        assert_eq!(p("10kb"), Some(10240));
        assert_eq!(p("2 GB"), Some(2 << 30));
        assert_eq!(p("-1"), Some(-1));
        for bad in ["abc", "", "-2", "1x", "m", "1.m", "1mbb"] {
            assert!(p(bad).is_none(), "{bad} accepted");
        }
        let e = parse_size("memory", "abc").unwrap_err().to_string();
        assert_eq!(e, "invalid value for memory: invalid size: 'abc'");
    }

    #[test]
    fn zero_means_unchanged_and_devices_are_ignored() {
        let r = resources_from_json(
            br#"{"memory":{"limit":0,"swap":0},"cpu":{"shares":0,"quota":50000},
                "pids":{"limit":0},"devices":[{"allow":true,"access":"rwm"}]}"#,
        )
        .unwrap();
        let n = normalize(&r);
        assert!(n.memory().is_none());
        assert!(n.pids().is_none());
        assert!(n.devices().is_none());
        assert_eq!(n.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(n.cpu().as_ref().unwrap().shares(), None);
    }

    #[test]
    fn merge_keeps_what_is_not_updated() {
        let base = resources_from_json(
            br#"{"memory":{"limit":1000,"reservation":10},"cpu":{"period":100000}}"#,
        )
        .unwrap();
        let delta = normalize(&resources_from_json(br#"{"memory":{"limit":2000}}"#).unwrap());
        let m = merge(&base, &delta);
        assert_eq!(m.memory().unwrap().limit(), Some(2000));
        assert_eq!(m.memory().unwrap().reservation(), Some(10));
        assert_eq!(m.cpu().as_ref().unwrap().period(), Some(100000));
        let flags = UpdateFlags {
            cpu_quota: Some(20000),
            ..Default::default()
        };
        let d = normalize(&resources_from_flags(&flags).unwrap());
        let w = to_write(&d, &merge(&m, &d), CgroupMode::Unified);
        assert_eq!(w.cpu().as_ref().unwrap().period(), Some(100000));
        assert!(w.memory().is_none());
    }
}
