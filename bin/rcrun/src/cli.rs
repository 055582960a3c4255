//! runc's command line, flag for flag, as Docker, containerd, podman and conmon call it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rcrun",
    about = "A runc-compatible OCI container runtime",
    disable_version_flag = true
)]
pub struct Cli {
    /// Root directory for storage of container state (should be on tmpfs; default /run/rcrun,
    /// or $XDG_RUNTIME_DIR/rcrun for a non-root user, as runc).
    #[arg(long, global = true, default_value_os_t = default_root())]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Enable debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups ("slice:prefix:name" cgroupsPath).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Ignore cgroup permission errors: true, false or auto.
    #[arg(long)]
    pub rootless: Option<String>,
    /// The CRIU binary for checkpoint/restore/migrate (default: criu on PATH, else /usr/sbin/criu).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

fn default_root() -> PathBuf {
    if rcrun_runtime::identity::honor_xdg_runtime_dir() {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(dir).join("rcrun");
        }
    }
    PathBuf::from("/run/rcrun")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start the user process of a created container.
    Start { id: String },
    /// Create and start a container, and wait for it unless detached.
    Run(RunArgs),
    /// Output the state of a container.
    State { id: String },
    /// Send a signal to a container's first process (default SIGTERM).
    Kill {
        /// Send the signal to every process in the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container and everything it holds.
    Delete {
        /// Kill the container first if it is running.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Display only container ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a new process inside a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// table (runs ps(1) on the host) or json (the pids).
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Suspend every process of a container (cgroup freezer).
    Pause { id: String },
    /// Resume a paused container.
    Resume { id: String },
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Stream a container's events and statistics as JSON.
    Events {
        /// Print one stats object and exit.
        #[arg(long)]
        stats: bool,
        /// Stats interval, e.g. 5s or 500ms.
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Print the runtime-spec features.json of this runtime.
    Features,
    /// Write a default config.json.
    Spec {
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        #[arg(long)]
        rootless: bool,
    },
    /// Import, list and remove images in the overlay2 layer store.
    Image(ImageArgs),
    /// Make a bundle from a stored image: config.json and an overlay rootfs.
    Bundle(BundleArgs),
    /// Checkpoint a running container with CRIU (or pre-dump it).
    Checkpoint(crate::commands::checkpoint::CheckpointArgs),
    /// Restore a container from a CRIU checkpoint.
    Restore(crate::commands::restore::RestoreArgs),
    /// Move a running container to another --root/id/bundle: iterative pre-copy, then a short
    /// stop for the last delta.
    Migrate(crate::commands::migrate::MigrateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Path to the bundle directory (default: current directory).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container process' pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for ramdisk roots).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: usize,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Detach from the container's process.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A process.json with the whole process to run (as containerd passes it).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Do not wait for the process.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids (repeatable).
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (repeatable).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privileges for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Exec even if the container is paused.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: usize,
    pub id: String,
    /// The command and its arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A JSON LinuxResources object, or - for stdin (then the flags are ignored).
    #[arg(short, long)]
    pub resources: Option<String>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpu-quota", allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime", allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with k/m/g suffix).
    #[arg(short, long, allow_negative_numbers = true)]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation", allow_negative_numbers = true)]
    pub memory_reservation: Option<String>,
    #[arg(long = "memory-swap", allow_negative_numbers = true)]
    pub memory_swap: Option<String>,
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

/// `--store` for the `image` and `bundle` commands (after either word, or after its
/// subcommand).
#[derive(Debug, Args)]
pub struct StoreArg {
    /// The layer store directory (default: $RCRUN_STORE, else /var/lib/rcrun/overlay2).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image layout directory, an oci-archive or a docker-archive (`docker
    /// save`), plain, gzip or zstd; prints the image id.
    Import {
        /// The name to record (default: the names in the source).
        #[arg(long)]
        name: Option<String>,
        #[arg(value_name = "FILE|DIR")]
        source: PathBuf,
    },
    /// List the stored images.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Remove images (a name of an image with several names only untags it).
    #[command(alias = "rmi")]
    Rm {
        /// Remove even while bundles use the image (their layers stay until they go).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Remove unused layers and what interrupted imports left; prints the space reclaimed.
    Prune,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(subcommand)]
    pub command: BundleCommand,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write DIR/config.json for an image and mount its overlay rootfs at DIR/rootfs.
    Create(BundleCreateArgs),
    /// Unmount and delete a bundle's rootfs (and its writable layer) and its config.json.
    Rm {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Mount again the rootfs of a bundle whose container was deleted with its writable layer
    /// kept (`bundle create --keep-upper`).
    Mount {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// The image: a name (busybox = busybox:latest) or an id (prefix).
    #[arg(long)]
    pub image: String,
    /// Id of the rootfs in the store, also the hostname (default: a random id).
    #[arg(long)]
    pub name: Option<String>,
    /// Override the image's Entrypoint (as docker run --entrypoint; drops its Cmd too).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Write the rootless variant of the default spec (user namespace, no cgroup devices).
    #[arg(long)]
    pub rootless: bool,
    /// When the container is deleted, unmount its rootfs but keep its writable layer (see
    /// `bundle mount`, `bundle rm`).
    #[arg(long = "keep-upper")]
    pub keep_upper: bool,
    /// The bundle directory: created, or an existing empty directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The command and its arguments, instead of the image's Cmd.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}
