//! `rcrun exec`: flags to [`ExecOptions`]; the work is in `rcrun_runtime::container::exec`.

use anyhow::{bail, Context, Result};
use rcrun_runtime::container::exec::{exec, ExecOptions, Overrides, ProcessSpec};

use crate::cli::{Cli, ExecArgs};

pub fn run(cli: &Cli, a: &ExecArgs) -> Result<i32> {
    let process = match &a.process {
        Some(p) => ProcessSpec::File(p.clone()),
        None => {
            if a.command.is_empty() {
                bail!("exec: a command (or --process) is required");
            }
            ProcessSpec::Args(Overrides {
                args: a.command.clone(),
                tty: a.tty,
                env: a.env.clone(),
                cwd: a.cwd.clone(),
                user: a.user.as_deref().map(parse_user).transpose()?,
                additional_gids: a.additional_gids.clone(),
                caps: a.cap.clone(),
                no_new_privs: a.no_new_privs,
                apparmor: a.apparmor.clone(),
                process_label: a.process_label.clone(),
            })
        }
    };
    let opts = ExecOptions {
        root: &cli.root,
        id: &a.id,
        process,
        console_socket: a.console_socket.as_deref(),
        detach: a.detach,
        pid_file: a.pid_file.as_deref(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
    };
    Ok(exec(&opts)?)
}

/// `uid[:gid]`, numbers only, as runc takes it.
fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u
        .parse()
        .with_context(|| format!("--user {s:?}: uid must be a number"))?;
    let gid = g
        .map(|g| {
            g.parse()
                .with_context(|| format!("--user {s:?}: gid must be a number"))
        })
        .transpose()?;
    Ok((uid, gid))
}
