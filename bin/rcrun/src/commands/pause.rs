//! `rcrun pause` and `rcrun resume`: freeze and thaw the container's cgroup.

use rcrun_runtime::container::pause;

use crate::cli::Cli;

pub fn pause(cli: &Cli, id: &str) -> anyhow::Result<()> {
    Ok(pause::pause(&cli.root, id)?)
}

pub fn resume(cli: &Cli, id: &str) -> anyhow::Result<()> {
    Ok(pause::resume(&cli.root, id)?)
}
