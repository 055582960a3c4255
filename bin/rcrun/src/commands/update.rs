//! `rcrun update` (in progress).

#[allow(unused_imports)]
use crate::cli::{Cli, ListFormat, UpdateArgs};

pub fn run(_cli: &Cli, _a: &UpdateArgs) -> anyhow::Result<()> {
    anyhow::bail!("update: not implemented yet")
}
