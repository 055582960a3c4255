//! `rcrun restore`: runc's flags, mapped onto [`rcrun_runtime::container::restore`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use rcrun_runtime::container::restore::{restore, Lazy, RestoreOptions};

use super::checkpoint::CommonArgs;
use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Directory of the image files (default: ./checkpoint).
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    /// Directory for CRIU's log and temporary files (default: the image directory).
    #[arg(long = "work-path")]
    pub work_path: Option<PathBuf>,
    /// The bundle to restore into (default: current directory).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Detach from the restored container.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Do not become the restored process' subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Accepted for runc compatibility (CRIU switches root itself).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (restore dedups nothing).
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
    /// Close established TCP connections instead of restoring them.
    #[arg(long = "tcp-close")]
    pub tcp_close: bool,
    /// Post-copy (with --lazy-pages): fetch memory from the dump side's page server at
    /// ADDRESS:PORT (without it: from the local images, on demand).
    #[arg(long = "page-server")]
    pub page_server: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    pub id: String,
}

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<i32> {
    let lazy = match (&a.page_server, a.common.lazy_pages) {
        (Some(p), true) => Some(Lazy::Remote(rcrun_checkpoint::opts::PageServerAddr::parse(
            p,
        )?)),
        (None, true) => Some(Lazy::Local),
        _ => None,
    };
    let r = restore(&RestoreOptions {
        root: &cli.root,
        id: &a.id,
        bundle: &a.bundle,
        criu: cli.criu.as_deref().map(Path::new),
        image_path: a
            .image_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoint")),
        work_path: a.work_path.clone(),
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        detach: a.detach,
        no_subreaper: a.no_subreaper,
        no_pivot: a.no_pivot,
        systemd_cgroup: cli.systemd_cgroup,
        rootless: crate::rootless(cli)?,
        tcp_close: a.tcp_close,
        reopen_stdio: false,
        common: a.common.to_common()?,
        lazy,
    })?;
    Ok(r.exit_code.unwrap_or(0))
}
