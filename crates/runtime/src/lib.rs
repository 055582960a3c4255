//! rcrun's container runtime library: everything between a bundle on disk and a running process.
//!
//! The lifecycle reads top-down in [`container`]: `create` (parent side) clones the container's
//! first process, which runs [`init`] inside the new namespaces; `start`, `kill`, `delete`,
//! `state` and `list` work from the state directory kept by [`state`].
//!
//! Module map, one job each:
//! - [`spec`]: load and validate config.json; [`default_spec`]: the `rcrun spec` template.
//! - [`state`]: the per-container state directory, its lock and the status of a container.
//! - [`namespaces`], [`rootfs`], [`mounts`], [`devices`], [`secure_path`]: isolation set-up.
//! - [`capabilities`], [`identity`], [`rlimits`], [`sched`], [`lsm`], [`fds`]: the process' attributes.
//! - [`exe_seal`]: the read-only re-exec that keeps containers from overwriting the binary.
//! - [`cgroups`]: cgroup v1/v2 through youki's `libcgroups`; [`hooks`]: OCI hooks; [`console`]: ptys.
//! - [`sync`]: the message channel between the runtime and the container's first process.

// Errors carry the paths and values a user needs to see; they travel on cold paths only.
#![allow(clippy::result_large_err)]

pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod container;
pub mod default_spec;
pub mod devices;
pub mod exe_seal;
pub mod fds;
pub mod features;
pub mod hooks;
pub mod identity;
pub mod init;
pub mod lsm;
pub mod mempolicy; // ipc-shm: linux.memoryPolicy
pub mod mounts;
pub mod namespaces;
pub mod net_devices;
pub mod net_hooks;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod sched;
pub mod seccomp_listener;
pub mod secure_path;
pub mod shm_channels; // ipc-shm: org.rcrun.shm.channels
pub mod signal;
pub mod spec;
pub mod state;
pub mod sync;
pub mod time;

/// The runtime-spec version this runtime implements and writes into state and `spec` output.
pub const OCI_VERSION: &str = "1.2.0";
