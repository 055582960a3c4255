//! `rcrun events`: one stats object (`--stats`), or a stream of stats and OOM events (one JSON
//! object per line) until the container stops.

use std::io::Write;

use rcrun_runtime::container::events;

use crate::cli::Cli;

pub fn run(cli: &Cli, stats: bool, interval: &str, id: &str) -> anyhow::Result<()> {
    if stats {
        let v = events::stats(&cli.root, id)?;
        println!("{}", v.to_json());
        return Ok(());
    }
    let interval = events::parse_interval(interval)?;
    events::stream(&cli.root, id, interval, |v| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", v.to_json())?;
        out.flush()
    })?;
    Ok(())
}
