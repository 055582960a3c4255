//! Driving CRIU for rcrun.
//!
//! CRIU is run as a binary (`criu dump|pre-dump|restore|page-server`), one process per action:
//! the CLI covers every option runc passes over RPC except the orphan pts master (terminals), and
//! a crash or hang of CRIU cannot take rcrun with it. The modules:
//!
//! - [`criu`]: find the binary, check its version, run one action with a deadline, and turn a
//!   failure into one clear line ([`log`] finds the fatal line of CRIU's log and recognises a
//!   CRIU too old for the running kernel);
//! - [`opts`]: runc's checkpoint/restore flags and their CRIU arguments;
//! - [`images`]: what rcrun keeps next to CRIU's images (runc's `descriptors.json`, the external
//!   mounts) and how many bytes a dump wrote ([`stats`] decodes CRIU's own `stats-dump`);
//! - [`pageserver`]: a `criu page-server` receiving pages over TCP;
//! - [`treesync`]: copying what changed in a directory tree (the rootfs ahead of a migration);
//! - [`migrate`]: the iterative pre-copy loop, its stopping rules and per-round figures.

pub mod criu;
pub mod images;
pub mod log;
pub mod migrate;
pub mod opts;
pub mod pageserver;
pub mod stats;
pub mod treesync;

pub use criu::{Criu, CriuError};
