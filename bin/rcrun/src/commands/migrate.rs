//! `rcrun migrate`: move a running container to another `--root`, id and bundle with iterative
//! pre-copy (see [`rcrun_checkpoint::migrate`]): pre-dump rounds and rootfs syncs while it runs,
//! then the final dump, the last rootfs delta and the restore. Prints each round as it ends and
//! a summary (or JSON with `--format json`): total time, downtime, bytes per round.
//!
//! Transports: `local` (images written straight into the destination's directory) or
//! `page-server` (memory goes over TCP to a `criu page-server` writing into the destination's
//! directory, the other images are copied after each round: what a migration to another host
//! does, here on one host).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rcrun_checkpoint::migrate::{self, Policy, Round, StepError, StepFigures, Steps};
use rcrun_checkpoint::opts::PageServerAddr;
use rcrun_checkpoint::pageserver::PageServer;
use rcrun_checkpoint::{stats, treesync, Criu};
use rcrun_runtime::container::checkpoint::{checkpoint, CheckpointOptions};
use rcrun_runtime::container::restore::{restore, Lazy, RestoreOptions};

use super::checkpoint::CommonArgs;
use crate::cli::Cli;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Local,
    PageServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// State root at the destination (default: the global --root).
    #[arg(long = "to-root")]
    pub to_root: Option<PathBuf>,
    /// Container id at the destination (default: the same id).
    #[arg(long = "to-id")]
    pub to_id: Option<String>,
    /// Bundle at the destination (default: the source bundle). Made from the source's
    /// config.json if it has none; its rootfs is synced from the source's.
    #[arg(long = "to-bundle")]
    pub to_bundle: Option<PathBuf>,
    /// Where the images go (default: <to-bundle>/migrate-images); removed after success
    /// unless --keep-images.
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    #[arg(long = "keep-images")]
    pub keep_images: bool,
    /// Stop-and-copy: no pre-dump rounds (the baseline).
    #[arg(long = "no-precopy")]
    pub no_precopy: bool,
    /// Most pre-dump rounds.
    #[arg(long = "max-rounds", default_value_t = 8)]
    pub max_rounds: u32,
    /// Cut over once a round writes at most this many bytes of memory (k/m/g suffixes).
    #[arg(long, default_value = "4m")]
    pub threshold: String,
    /// A round must write less than this fraction of the previous one, or we cut over.
    #[arg(long = "min-shrink", default_value_t = 0.8)]
    pub min_shrink: f64,
    #[arg(long, value_enum, default_value_t = Transport::Local)]
    pub transport: Transport,
    /// Page-server transport: ADDRESS:PORT the page server listens on.
    #[arg(long = "page-server", default_value = "127.0.0.1:27027")]
    pub page_server: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Post-copy restore: the container runs at the destination before its memory is loaded;
    /// a `criu lazy-pages` daemon fills it from the images on page faults and in the background.
    #[arg(long)]
    pub lazy: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    pub id: String,
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--threshold {s:?}: want bytes, or a number with k, m or g"))?;
    Ok(n.saturating_mul(mul))
}

struct ContainerSteps<'a> {
    cli: &'a Cli,
    a: &'a MigrateArgs,
    criu: Criu,
    /// Where CRIU writes on the source side, and where the restore reads.
    src_images: PathBuf,
    dst_images: PathBuf,
    src_rootfs: PathBuf,
    dst_rootfs: Option<PathBuf>,
    to_root: PathBuf,
    to_id: String,
    to_bundle: PathBuf,
    page_server: Option<PageServerAddr>,
    final_dir: String,
}

impl ContainerSteps<'_> {
    fn sync_rootfs(&self) -> Result<u64, StepError> {
        match &self.dst_rootfs {
            Some(d) => Ok(treesync::sync(&self.src_rootfs, d)?.bytes),
            None => Ok(0),
        }
    }

    /// One dump into `name` (a pre-dump unless `final_`), chained on `parent`.
    fn dump(
        &mut self,
        name: &str,
        parent: Option<String>,
        final_: bool,
    ) -> Result<StepFigures, StepError> {
        let src = self.src_images.join(name);
        let dst = self.dst_images.join(name);
        std::fs::create_dir_all(&src)?;
        std::fs::create_dir_all(&dst)?;
        let parent_rel = parent.map(|p| PathBuf::from("..").join(p));
        let server = match &self.page_server {
            Some(addr) => Some(PageServer::start(
                &self.criu,
                &dst,
                &addr.address,
                addr.port,
                parent_rel.as_deref(),
            )?),
            None => None,
        };
        let done = checkpoint(&CheckpointOptions {
            root: &self.cli.root,
            id: &self.a.id,
            criu: self.cli.criu.as_deref().map(Path::new),
            image_path: src.clone(),
            work_path: None,
            parent_path: parent_rel,
            leave_running: false,
            pre_dump: !final_,
            track_mem: true,
            tcp_skip_in_flight: false,
            link_remap: false,
            auto_dedup: false,
            page_server: self.page_server.clone(),
            common: self.a.common.to_common()?,
        })?;
        let mut fig = StepFigures {
            memory_bytes: done.memory_bytes,
            image_bytes: done.image_bytes,
            frozen: done.stats.map(|s| s.frozen_time).unwrap_or_default(),
            rootfs_bytes: 0,
        };
        if let Some(s) = done.stats {
            // Through a page server the pages are not in the source directory.
            fig.memory_bytes = fig.memory_bytes.max(s.pages_written * page_size());
        }
        if let Some(server) = server {
            server.wait(self.criu.timeout)?;
            let (pages, _) = stats::image_bytes(&dst);
            fig.memory_bytes = pages;
            fig.image_bytes = pages + copy_missing(&src, &dst)?;
        }
        Ok(fig)
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf with a constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Copy the files of `src` that `dst` lacks (the non-memory images of a page-server dump, and
/// the `parent` link); returns the bytes copied.
fn copy_missing(src: &Path, dst: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if to.symlink_metadata().is_ok() {
            continue;
        }
        let md = e.path().symlink_metadata()?;
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &to)?;
        } else if md.is_file() {
            bytes += std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(bytes)
}

impl Steps for ContainerSteps<'_> {
    fn pre_dump(&mut self, round: u32) -> Result<StepFigures, StepError> {
        let parent = (round > 1).then(|| (round - 1).to_string());
        let mut fig = self.dump(&round.to_string(), parent, false)?;
        fig.rootfs_bytes = self.sync_rootfs()?;
        Ok(fig)
    }

    fn final_dump(&mut self, last_round: u32) -> Result<StepFigures, StepError> {
        let parent = (last_round > 0).then(|| last_round.to_string());
        let name = self.final_dir.clone();
        let mut fig = self.dump(&name, parent, true)?;
        fig.rootfs_bytes = self.sync_rootfs()?;
        Ok(fig)
    }

    fn restore(&mut self) -> Result<StepFigures, StepError> {
        let r = restore(&RestoreOptions {
            root: &self.to_root,
            id: &self.to_id,
            bundle: &self.to_bundle,
            criu: self.cli.criu.as_deref().map(Path::new),
            image_path: self.dst_images.join(&self.final_dir),
            work_path: None,
            pid_file: None,
            console_socket: None,
            detach: true,
            no_subreaper: true,
            no_pivot: false,
            systemd_cgroup: self.cli.systemd_cgroup,
            rootless: crate::rootless(self.cli)?,
            tcp_close: false,
            reopen_stdio: true,
            common: self.a.common.to_common()?,
            lazy: self.a.lazy.then_some(Lazy::Local),
        })?;
        // No images written here; `frozen` holds the `criu restore` run (the container is not
        // running until it ends).
        Ok(StepFigures {
            frozen: r.elapsed,
            ..StepFigures::default()
        })
    }
}

pub fn run(cli: &Cli, a: &MigrateArgs) -> Result<()> {
    let policy = Policy {
        max_rounds: a.max_rounds,
        threshold_bytes: parse_size(&a.threshold)?,
        min_shrink: a.min_shrink,
    };
    let criu = Criu::locate(cli.criu.as_deref().map(Path::new))?;
    let state = rcrun_runtime::state::load_state(&cli.root.join(&a.id), &a.id)?;
    let to_root = a.to_root.clone().unwrap_or_else(|| cli.root.clone());
    let to_id = a.to_id.clone().unwrap_or_else(|| a.id.clone());
    rcrun_runtime::state::validate_id(&to_id)?;
    if to_root.join(&to_id).exists() && !(to_root == cli.root && to_id == a.id) {
        bail!(
            "migrate: container {to_id} already exists in {}",
            to_root.display()
        );
    }
    let to_bundle = rcrun_runtime::spec::absolute(a.to_bundle.as_deref().unwrap_or(&state.bundle));
    // A new bundle: the source's config.json, and its rootfs synced from the source's.
    let mut dst_rootfs = None;
    if to_bundle != state.bundle {
        std::fs::create_dir_all(&to_bundle)
            .with_context(|| format!("create bundle {}", to_bundle.display()))?;
        let cfg = to_bundle.join("config.json");
        if !cfg.exists() {
            std::fs::copy(state.bundle.join("config.json"), &cfg)
                .with_context(|| format!("copy config.json to {}", cfg.display()))?;
        }
        let spec = rcrun_runtime::spec::read(&to_bundle)?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let r = if root.is_absolute() {
            root
        } else {
            to_bundle.join(root)
        };
        if r != state.rootfs {
            dst_rootfs = Some(r);
        }
    }
    let dst_images = a
        .image_path
        .clone()
        .map(|p| rcrun_runtime::spec::absolute(&p))
        .unwrap_or_else(|| to_bundle.join("migrate-images"));
    let page_server = match a.transport {
        Transport::Local => None,
        Transport::PageServer => Some(PageServerAddr::parse(&a.page_server)?),
    };
    // Over a page server the source keeps its own images (what the destination host would not
    // see); locally they are written where the restore reads them.
    let src_images = match page_server {
        Some(_) => dst_images.with_file_name(format!(
            "{}-source",
            dst_images
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        )),
        None => dst_images.clone(),
    };
    let mut steps = ContainerSteps {
        cli,
        a,
        criu,
        src_images: src_images.clone(),
        dst_images: dst_images.clone(),
        src_rootfs: state.rootfs.clone(),
        dst_rootfs,
        to_root,
        to_id,
        to_bundle,
        page_server,
        final_dir: "final".into(),
    };
    let text = a.format == Format::Text;
    let report = migrate::run(&policy, !a.no_precopy, &mut steps, &mut |r: &Round| {
        if text {
            eprintln!(
                "round {} {}: memory {} B, images {} B, rootfs {} B, {:.3} s (frozen {:.3} s)",
                r.round,
                r.phase,
                r.figures.memory_bytes,
                r.figures.image_bytes,
                r.figures.rootfs_bytes,
                r.duration.as_secs_f64(),
                r.figures.frozen.as_secs_f64()
            );
        }
    })?;
    if !a.keep_images {
        let _ = std::fs::remove_dir_all(&dst_images);
        if src_images != dst_images {
            let _ = std::fs::remove_dir_all(&src_images);
        }
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => println!(
            "migrated {} -> {} in {:.3} s: downtime {:.3} s, {} bytes moved, {} pre-dump round(s), stopped: {:?}",
            a.id,
            steps.to_id,
            report.total.as_secs_f64(),
            report.downtime.as_secs_f64(),
            report.bytes,
            report.rounds.iter().filter(|r| r.phase == migrate::Phase::PreDump).count(),
            report.stop
        ),
    }
    Ok(())
}
