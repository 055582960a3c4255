//! `rcrun exec` (in progress).

use crate::cli::{Cli, ExecArgs};

pub fn run(_cli: &Cli, _a: &ExecArgs) -> anyhow::Result<i32> {
    anyhow::bail!("exec: not implemented yet")
}
