//! runc's checkpoint and restore flags, and the CRIU arguments they become.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    #[error("--manage-cgroups-mode {0:?}: want soft, full, strict or ignore")]
    CgroupsMode(String),
    #[error("--empty-ns {0:?}: only the network namespace can be left empty")]
    EmptyNs(String),
    #[error("--page-server {0:?}: want ADDRESS:PORT")]
    PageServer(String),
}

/// CRIU's `--manage-cgroups` modes (runc's `--manage-cgroups-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupsMode {
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    pub fn parse(s: &str) -> Result<CgroupsMode, OptsError> {
        Ok(match s {
            "soft" => CgroupsMode::Soft,
            "full" => CgroupsMode::Full,
            "strict" => CgroupsMode::Strict,
            "ignore" => CgroupsMode::Ignore,
            _ => return Err(OptsError::CgroupsMode(s.into())),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupsMode::Soft => "soft",
            CgroupsMode::Full => "full",
            CgroupsMode::Strict => "strict",
            CgroupsMode::Ignore => "ignore",
        }
    }
}

/// `ADDRESS:PORT` of a page server (IPv6 in brackets: `[::1]:27`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageServerAddr {
    pub address: String,
    pub port: u16,
}

impl PageServerAddr {
    pub fn parse(s: &str) -> Result<PageServerAddr, OptsError> {
        let (a, p) = s.rsplit_once(':').ok_or(OptsError::PageServer(s.into()))?;
        let port = p.parse().map_err(|_| OptsError::PageServer(s.into()))?;
        let address = a.trim_start_matches('[').trim_end_matches(']').to_string();
        if address.is_empty() {
            return Err(OptsError::PageServer(s.into()));
        }
        Ok(PageServerAddr { address, port })
    }
}

/// Options shared by checkpoint and restore (each side must be given the same ones).
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    /// Namespaces to leave empty (only `network`/`net`: CRIU then neither dumps nor restores
    /// its contents, for a network set up by someone else).
    pub empty_ns: Vec<String>,
    pub manage_cgroups: Option<CgroupsMode>,
    pub lazy_pages: bool,
    /// A descriptor CRIU writes `\0` to once it is ready (lazy pages: dump is serving pages).
    pub status_fd: Option<i32>,
}

impl Common {
    fn push(&self, a: &mut Args) -> Result<(), OptsError> {
        a.flag(self.tcp_established, "--tcp-established");
        a.flag(self.ext_unix_sk, "--ext-unix-sk");
        a.flag(self.shell_job, "--shell-job");
        a.flag(self.file_locks, "--file-locks");
        a.flag(self.lazy_pages, "--lazy-pages");
        for ns in &self.empty_ns {
            match ns.as_str() {
                "network" | "net" => a.two("--empty-ns", "net"),
                other => return Err(OptsError::EmptyNs(other.into())),
            }
        }
        if let Some(m) = self.manage_cgroups {
            a.one(format!("--manage-cgroups={}", m.as_str()));
        }
        if let Some(fd) = self.status_fd {
            a.two("--status-fd", fd.to_string());
        }
        Ok(())
    }
}

/// A mount CRIU must not dump (its contents belong to the host): on dump the key names it, on
/// restore the key is mapped to what to bind there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtMount {
    pub key: String,
    pub value: String,
}

/// `criu dump` / `criu pre-dump`.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub image_dir: PathBuf,
    pub work_dir: PathBuf,
    /// `--prev-images-dir`: the parent pre-dump, relative to `image_dir` (as runc and CRIU want).
    pub parent: Option<PathBuf>,
    pub leave_running: bool,
    pub pre_dump: bool,
    /// Track dirty memory (soft-dirty) so a later dump writes only what changed.
    pub track_mem: bool,
    pub tcp_skip_in_flight: bool,
    pub link_remap: bool,
    pub auto_dedup: bool,
    pub page_server: Option<PageServerAddr>,
    pub ext_mounts: Vec<ExtMount>,
    /// Other external resources, as CRIU keys (`file[mnt_id:inode]`).
    pub external: Vec<String>,
    /// The cgroup whose freezer stops the tasks (all at once, so none forks away meanwhile).
    pub freeze_cgroup: Option<PathBuf>,
    pub common: Common,
}

/// `criu restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub image_dir: PathBuf,
    pub work_dir: PathBuf,
    /// The mount point the container's root is restored on (`--root`).
    pub root: PathBuf,
    /// Where CRIU writes the restored init's host pid.
    pub pidfile: PathBuf,
    pub ext_mounts: Vec<ExtMount>,
    /// `(our fd, descriptor)`: e.g. `(1, "pipe:[1234]")` gives the restored process our stdout
    /// where it had that pipe.
    pub inherit_fds: Vec<(i32, String)>,
    /// `(controller, path)`: the cgroup the restored tasks go to when CRIU manages cgroups.
    pub cgroup_roots: Vec<(String, String)>,
    pub tcp_skip_in_flight: bool,
    pub common: Common,
}

struct Args(Vec<OsString>);

impl Args {
    fn flag(&mut self, on: bool, f: &str) {
        if on {
            self.0.push(f.into());
        }
    }
    fn one(&mut self, a: impl Into<OsString>) {
        self.0.push(a.into());
    }
    fn two(&mut self, a: impl Into<OsString>, b: impl Into<OsString>) {
        self.0.push(a.into());
        self.0.push(b.into());
    }
}

/// Arguments for `criu dump` (or `pre-dump`) of the tree rooted at `pid`, after the action word
/// (the log option is added by [`crate::criu::Criu::run`]).
pub fn dump_args(pid: i32, o: &DumpOptions) -> Result<Vec<OsString>, OptsError> {
    let mut a = Args(Vec::new());
    a.two("--tree", pid.to_string());
    a.two("--images-dir", &o.image_dir);
    a.two("--work-dir", &o.work_dir);
    a.one("-v4");
    if let Some(p) = &o.parent {
        a.two("--prev-images-dir", p);
    }
    a.flag(o.track_mem || o.pre_dump, "--track-mem");
    a.flag(o.leave_running && !o.pre_dump, "--leave-running");
    a.flag(o.tcp_skip_in_flight, "--tcp-skip-in-flight");
    a.flag(o.link_remap, "--link-remap");
    a.flag(o.auto_dedup, "--auto-dedup");
    if let Some(ps) = &o.page_server {
        a.one("--page-server");
        a.two("--address", &ps.address);
        a.two("--port", ps.port.to_string());
    }
    for m in &o.ext_mounts {
        a.two("--external", format!("mnt[{}]:{}", m.key, m.value));
    }
    for e in &o.external {
        a.two("--external", e);
    }
    if let Some(cg) = &o.freeze_cgroup {
        a.two("--freeze-cgroup", cg);
    }
    let mut common = o.common.clone();
    if o.pre_dump {
        // A pre-dump never tears anything down: the network is not locked, cgroups not dumped.
        common.manage_cgroups = None;
    }
    common.push(&mut a)?;
    Ok(a.0)
}

/// Arguments for `criu restore`, detached (the restored tree outlives CRIU).
pub fn restore_args(o: &RestoreOptions) -> Result<Vec<OsString>, OptsError> {
    let mut a = Args(Vec::new());
    a.two("--images-dir", &o.image_dir);
    a.two("--work-dir", &o.work_dir);
    a.one("-v4");
    a.one("--restore-detached");
    a.two("--root", &o.root);
    a.two("--pidfile", &o.pidfile);
    a.flag(o.tcp_skip_in_flight, "--tcp-close");
    for m in &o.ext_mounts {
        a.two("--external", format!("mnt[{}]:{}", m.key, m.value));
    }
    for (fd, desc) in &o.inherit_fds {
        a.two("--inherit-fd", format!("fd[{fd}]:{desc}"));
    }
    let mut common = o.common.clone();
    // Unless asked otherwise, rcrun puts CRIU into the container's new cgroup and CRIU leaves
    // cgroups alone: the restored tasks are forked there.
    let mode = common.manage_cgroups.unwrap_or(CgroupsMode::Ignore);
    common.manage_cgroups = Some(mode);
    if mode != CgroupsMode::Ignore {
        for (ctrl, path) in &o.cgroup_roots {
            if ctrl.is_empty() {
                a.two("--cgroup-root", path);
            } else {
                a.two("--cgroup-root", format!("{ctrl}:{path}"));
            }
        }
    }
    common.push(&mut a)?;
    Ok(a.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[OsString]) -> Vec<String> {
        v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn dump_maps_runc_flags() -> Result<(), OptsError> {
        let o = DumpOptions {
            image_dir: "/img/2".into(),
            work_dir: "/work".into(),
            parent: Some("../1".into()),
            leave_running: true,
            tcp_skip_in_flight: true,
            page_server: Some(PageServerAddr::parse("10.0.0.2:27")?),
            ext_mounts: vec![ExtMount {
                key: "/data".into(),
                value: "/data".into(),
            }],
            common: Common {
                tcp_established: true,
                empty_ns: vec!["network".into()],
                manage_cgroups: Some(CgroupsMode::Soft),
                ..Common::default()
            },
            ..DumpOptions::default()
        };
        let a = s(&dump_args(42, &o)?);
        let j = a.join(" ");
        for want in [
            "--tree 42",
            "--images-dir /img/2",
            "--prev-images-dir ../1",
            "--leave-running",
            "--tcp-skip-in-flight",
            "--page-server --address 10.0.0.2 --port 27",
            "--external mnt[/data]:/data",
            "--tcp-established",
            "--empty-ns net",
            "--manage-cgroups=soft",
        ] {
            assert!(j.contains(want), "{want:?} not in {j}");
        }
        assert!(!j.contains("--track-mem"));
        Ok(())
    }

    #[test]
    fn pre_dump_tracks_memory_and_never_leaves_running_flag() -> Result<(), OptsError> {
        let o = DumpOptions {
            pre_dump: true,
            leave_running: true,
            common: Common {
                manage_cgroups: Some(CgroupsMode::Full),
                ..Common::default()
            },
            ..DumpOptions::default()
        };
        let j = s(&dump_args(1, &o)?).join(" ");
        assert!(j.contains("--track-mem"));
        assert!(!j.contains("--leave-running"));
        assert!(!j.contains("--manage-cgroups"));
        Ok(())
    }

    #[test]
    fn restore_defaults_to_ignoring_cgroups() -> Result<(), OptsError> {
        let o = RestoreOptions {
            root: "/run/x/criu-root".into(),
            inherit_fds: vec![(1, "pipe:[77]".into())],
            cgroup_roots: vec![("".into(), "/a/b".into())],
            ..RestoreOptions::default()
        };
        let j = s(&restore_args(&o)?).join(" ");
        assert!(j.contains("--restore-detached"));
        assert!(j.contains("--inherit-fd fd[1]:pipe:[77]"));
        assert!(j.contains("--manage-cgroups=ignore"));
        assert!(!j.contains("--cgroup-root"));
        let o = RestoreOptions {
            cgroup_roots: vec![("".into(), "/a/b".into())],
            common: Common {
                manage_cgroups: Some(CgroupsMode::Soft),
                ..Common::default()
            },
            ..RestoreOptions::default()
        };
        let j = s(&restore_args(&o)?).join(" ");
        assert!(j.contains("--cgroup-root /a/b"), "{j}");
        Ok(())
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = CgroupsMode::parse("hard").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--manage-cgroups-mode \"hard\": want soft, full, strict or ignore")
        );
        assert!(PageServerAddr::parse("nohost").is_err());
        assert!(PageServerAddr::parse(":27").is_err());
        assert_eq!(
            PageServerAddr::parse("[::1]:27").ok().map(|p| p.address),
            Some("::1".into())
        );
        let o = DumpOptions {
            common: Common {
                empty_ns: vec!["pid".into()],
                ..Common::default()
            },
            ..DumpOptions::default()
        };
        assert!(dump_args(1, &o).is_err());
    }
}
