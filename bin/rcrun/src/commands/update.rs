//! `rcrun update`: new resource limits from flags or a `--resources FILE|-` JSON document.

use std::io::Read;

use anyhow::Context;
use rcrun_runtime::container::update::{self, UpdateFlags};

use crate::cli::{Cli, UpdateArgs};

pub fn run(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<()> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        anyhow::bail!("Intel RDT is not supported by rcrun (--l3-cache-schema, --mem-bw-schema)");
    }
    let request = match a.resources.as_deref() {
        // runc: with --resources the other flags are ignored.
        Some(src) => {
            let mut data = Vec::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("read resources from stdin")?;
            } else {
                data = std::fs::read(src).with_context(|| format!("open {src}"))?;
            }
            update::resources_from_json(&data)?
        }
        None => update::resources_from_flags(&UpdateFlags {
            blkio_weight: a.blkio_weight,
            cpu_period: a.cpu_period,
            cpu_quota: a.cpu_quota,
            cpu_share: a.cpu_share,
            cpu_rt_period: a.cpu_rt_period,
            cpu_rt_runtime: a.cpu_rt_runtime,
            cpuset_cpus: a.cpuset_cpus.clone(),
            cpuset_mems: a.cpuset_mems.clone(),
            memory: a.memory.clone(),
            memory_reservation: a.memory_reservation.clone(),
            memory_swap: a.memory_swap.clone(),
            pids_limit: a.pids_limit,
        })?,
    };
    Ok(update::update(&cli.root, &a.id, &request)?)
}
