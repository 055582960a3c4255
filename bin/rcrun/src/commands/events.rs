//! `rcrun events` (in progress).

#[allow(unused_imports)]
use crate::cli::{Cli, ListFormat, UpdateArgs};

pub fn run(_cli: &Cli, _stats: bool, _interval: &str, _id: &str) -> anyhow::Result<()> {
    anyhow::bail!("events: not implemented yet")
}
