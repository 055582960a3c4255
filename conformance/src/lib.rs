//! Helpers for the rcrun conformance suite.
//!
//! The suite drives a runtime binary through runc's command line and runs
//! *real* containers (busybox rootfs).  The subject binary comes from
//! `RCRUN_BIN`, the reference from `RUNC_BIN` (see [`env`]).
//!
//! This is a test-support crate: failing an assertion by panicking is the
//! intended way to report a problem, hence the lint allowances below.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bundle;
pub mod cgroups;
pub mod cleanup;
pub mod clients;
pub mod console;
pub mod env;
pub mod images;
pub mod runtime;
pub mod util;

pub use bundle::Bundle;
pub use cleanup::assert_no_leftovers;
pub use console::{ConsoleSocket, Pty};
pub use runtime::{Guard, Output, Runtime};
pub use serde_json::{json, Value};
pub use util::{unique_id, wait_until, TempDir};
