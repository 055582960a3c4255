//! `rcrun checkpoint`: runc's flags, mapped onto [`rcrun_runtime::container::checkpoint`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rcrun_checkpoint::opts::{CgroupsMode, Common, PageServerAddr};
use rcrun_runtime::container::checkpoint::{checkpoint, CheckpointOptions};

use crate::cli::Cli;

/// The flags checkpoint and restore share (each side must be given the same ones).
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Allow open TCP connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Allow shell jobs (a process on a terminal).
    #[arg(long = "shell-job")]
    pub shell_job: bool,
    /// Handle file locks.
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    /// Cgroups mode for CRIU: soft, full, strict or ignore.
    #[arg(long = "manage-cgroups-mode")]
    pub manage_cgroups_mode: Option<String>,
    /// Leave a namespace's contents to someone else (network only; repeatable).
    #[arg(long = "empty-ns")]
    pub empty_ns: Vec<String>,
    /// Post-copy: memory pages move on demand (with --page-server).
    #[arg(long = "lazy-pages")]
    pub lazy_pages: bool,
    /// A descriptor CRIU writes a zero byte to once it is ready (lazy pages).
    #[arg(long = "status-fd")]
    pub status_fd: Option<i32>,
}

impl CommonArgs {
    pub fn to_common(&self) -> Result<Common> {
        Ok(Common {
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
            empty_ns: self.empty_ns.clone(),
            manage_cgroups: self
                .manage_cgroups_mode
                .as_deref()
                .map(CgroupsMode::parse)
                .transpose()?,
            lazy_pages: self.lazy_pages,
            status_fd: self.status_fd,
        })
    }
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Directory for the image files (default: ./checkpoint).
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    /// Directory for CRIU's log and temporary files (default: the image directory).
    #[arg(long = "work-path")]
    pub work_path: Option<PathBuf>,
    /// The previous pre-dump, relative to the image path.
    #[arg(long = "parent-path")]
    pub parent_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint.
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    /// Drop data in flight on established TCP connections.
    #[arg(long = "tcp-skip-in-flight")]
    pub tcp_skip_in_flight: bool,
    /// Allow CRIU to link-remap deleted but open files.
    #[arg(long = "link-remap")]
    pub link_remap: bool,
    /// ADDRESS:PORT of a CRIU page server to send memory to.
    #[arg(long = "page-server")]
    pub page_server: Option<String>,
    /// Dump memory only, leave the container running (the first stages of a migration).
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
    /// Deduplicate pages against the parent image on the fly.
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    pub id: String,
}

pub fn run(cli: &Cli, a: &CheckpointArgs) -> Result<()> {
    let image_path = a
        .image_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoint"));
    let page_server = a
        .page_server
        .as_deref()
        .map(PageServerAddr::parse)
        .transpose()?;
    checkpoint(&CheckpointOptions {
        root: &cli.root,
        id: &a.id,
        criu: cli.criu.as_deref().map(std::path::Path::new),
        image_path,
        work_path: a.work_path.clone(),
        parent_path: a.parent_path.clone(),
        leave_running: a.leave_running,
        pre_dump: a.pre_dump,
        track_mem: false,
        tcp_skip_in_flight: a.tcp_skip_in_flight,
        link_remap: a.link_remap,
        auto_dedup: a.auto_dedup,
        page_server,
        common: a.common.to_common()?,
    })?;
    Ok(())
}
