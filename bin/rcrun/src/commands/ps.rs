//! `rcrun ps`: the container's pids as JSON, or the host's ps(1) table filtered to them.

use std::io::Write;

use rcrun_runtime::container::ps;

use crate::cli::{Cli, ListFormat};

pub fn run(cli: &Cli, format: ListFormat, id: &str, ps_args: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ListFormat::Json => {
            let pids = ps::pids(&cli.root, id)?;
            // Go's encoding of an empty (nil) slice, as runc prints it.
            if pids.is_empty() {
                writeln!(out, "null")?;
            } else {
                writeln!(out, "{}", serde_json::to_string(&pids)?)?;
            }
        }
        ListFormat::Table => out.write_all(ps::table(&cli.root, id, ps_args)?.as_bytes())?,
    }
    Ok(())
}
