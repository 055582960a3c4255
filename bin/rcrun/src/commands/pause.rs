//! `rcrun pause` and `rcrun resume` (in progress).

use crate::cli::Cli;

pub fn pause(_cli: &Cli, _id: &str) -> anyhow::Result<()> {
    anyhow::bail!("pause: not implemented yet")
}

pub fn resume(_cli: &Cli, _id: &str) -> anyhow::Result<()> {
    anyhow::bail!("resume: not implemented yet")
}
