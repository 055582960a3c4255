//! `rcrun features` (in progress).

#[allow(unused_imports)]
use crate::cli::{Cli, ListFormat, UpdateArgs};

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("features: not implemented yet")
}
