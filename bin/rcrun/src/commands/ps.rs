//! `rcrun ps` (in progress).

#[allow(unused_imports)]
use crate::cli::{Cli, ListFormat, UpdateArgs};

pub fn run(_cli: &Cli, _format: ListFormat, _id: &str, _ps_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("ps: not implemented yet")
}
