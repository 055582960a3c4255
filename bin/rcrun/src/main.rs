//! `rcrun`: the command-line edge. Parses runc's flags, sets up logging, calls the runtime
//! library, and turns errors into runc's one-line messages and exit codes.

mod cli;
mod commands;
mod go_flags;
mod logging;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use rcrun_runtime::container::{self, create::CreateOptions, run::RunOptions};

use cli::{Cli, Command, CreateArgs, ListFormat};

fn main() {
    let args = go_flags::normalize_if_needed(std::env::args_os().collect(), Cli::command);
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    if cli.version {
        println!("rcrun version {}", env!("CARGO_PKG_VERSION"));
        println!("commit: {}", env!("RCRUN_COMMIT"));
        println!("spec: {}", rcrun_runtime::OCI_VERSION);
        return;
    }
    let logger = match logging::Logger::new(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!(
                "open log file {:?}: {e}",
                cli.log.as_deref().unwrap_or(Path::new(""))
            );
            std::process::exit(1);
        }
    };
    let _ = tracing::subscriber::set_global_default(LoggerRef(logger.clone()));
    // The commands whose processes enter a container run from a read-only copy of this binary
    // (CVE-2019-5736); this re-executes the command once when it does not yet.
    let enters_container = matches!(
        cli.command,
        Some(Command::Create(_) | Command::Run(_) | Command::Exec(_))
    );
    let sealed = if enters_container {
        rcrun_runtime::exe_seal::ensure_sealed().map_err(anyhow::Error::from)
    } else {
        Ok(())
    };
    match sealed.and_then(|()| dispatch(&cli)) {
        Ok(code) => {
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
        Err(e) => {
            // Our errors carry their causes in their own text: print the top one, runc-style.
            let msg = runc_style(&e.to_string());
            logger.write(tracing::Level::ERROR, &msg, &[]);
            if cli.log.is_some() {
                eprintln!("{msg}");
            }
            std::process::exit(1)
        }
    }
}

/// Help and version go to stdout as clap renders them; a usage error is one line and exit 1,
/// as with runc (whose clients only look at the last line and the status).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        std::process::exit(0);
    }
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let msg = first.strip_prefix("error: ").unwrap_or(&first);
    let line = format!("{msg} (see rcrun --help)");
    eprintln!("rcrun: {line}");
    log_usage_error(&line);
    std::process::exit(1)
}

/// Shims read the runtime's error from its `--log` file (containerd: log.json), so a bad flag
/// goes there too; the arguments did not parse, so `--log`/`--log-format` are found by hand.
fn log_usage_error(line: &str) {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(String::from)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let Some(log) = value("--log") else {
        return;
    };
    let format = match value("--log-format").as_deref() {
        Some("json") => cli::LogFormat::Json,
        _ => cli::LogFormat::Text,
    };
    if let Ok(l) = logging::Logger::new(Some(Path::new(&log)), format, false) {
        l.write(tracing::Level::ERROR, line, &[]);
    }
}

/// The global subscriber must be 'static; share the logger with main's error path.
struct LoggerRef(Arc<logging::Logger>);

impl tracing::Subscriber for LoggerRef {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.0.new_span(a)
    }
    fn record(&self, i: &tracing::span::Id, r: &tracing::span::Record<'_>) {
        self.0.record(i, r)
    }
    fn record_follows_from(&self, a: &tracing::span::Id, b: &tracing::span::Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &tracing::Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, i: &tracing::span::Id) {
        self.0.enter(i)
    }
    fn exit(&self, i: &tracing::span::Id) {
        self.0.exit(i)
    }
}

fn rootless(cli: &Cli) -> Result<bool> {
    Ok(match cli.rootless.as_deref() {
        None | Some("auto") => rcrun_runtime::identity::rootless_auto(),
        Some("true") => true,
        Some("false") => false,
        Some(other) => bail!("--rootless: invalid value {other:?} (want true, false or auto)"),
    })
}

fn create_options<'a>(cli: &'a Cli, a: &'a CreateArgs) -> Result<CreateOptions<'a>> {
    Ok(CreateOptions {
        root: &cli.root,
        id: &a.id,
        bundle: &a.bundle,
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        systemd_cgroup: cli.systemd_cgroup,
        rootless: rootless(cli)?,
        own_console: false,
    })
}

fn dispatch(cli: &Cli) -> Result<i32> {
    let Some(cmd) = &cli.command else {
        bail!("no command given: see rcrun --help");
    };
    match cmd {
        Command::Create(a) => {
            commands::storage_link::check_bundle(&a.bundle)?;
            container::create::create(&create_options(cli, a)?)?;
        }
        Command::Start { id } => container::start::start(&cli.root, id)?,
        Command::Run(a) => {
            commands::storage_link::check_bundle(&a.create.bundle)?;
            // A foreground run without --keep deletes the container: like `delete`, that
            // releases a `bundle create` rootfs.
            let link = (!a.detach && !a.keep)
                .then(|| commands::storage_link::Link::from_bundle(&a.create.bundle))
                .transpose()?
                .flatten();
            let opts = RunOptions {
                create: create_options(cli, &a.create)?,
                detach: a.detach,
                keep: a.keep,
            };
            let code = container::run::run(opts)?;
            if let Some((link, _)) = link {
                commands::storage_link::release_after_delete(&cli.root, &a.create.id, &link)?;
            }
            return Ok(code);
        }
        Command::State { id } => {
            let v = container::query::state(&cli.root, id)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Kill { all, id, signal } => {
            let sig = rcrun_runtime::signal::parse(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill::kill(&cli.root, id, sig, *all)?;
        }
        Command::Delete { force, ids } => {
            for id in ids {
                // Read before the state goes: a `bundle create` rootfs is released after.
                let link = commands::storage_link::of_container(&cli.root, id);
                container::delete::delete(&cli.root, id, *force)?;
                if let Some(link) = link {
                    commands::storage_link::release_after_delete(&cli.root, id, &link)?;
                }
            }
        }
        Command::List { format, quiet } => list(cli, *format, *quiet)?,
        Command::Exec(a) => return commands::exec::run(cli, a),
        Command::Ps {
            format,
            id,
            ps_args,
        } => commands::ps::run(cli, *format, id, ps_args)?,
        Command::Pause { id } => commands::pause::pause(cli, id)?,
        Command::Resume { id } => commands::pause::resume(cli, id)?,
        Command::Update(a) => commands::update::run(cli, a)?,
        Command::Events {
            stats,
            interval,
            id,
        } => commands::events::run(cli, *stats, interval, id)?,
        Command::Features => commands::features::run()?,
        Command::Spec { bundle, rootless } => spec(bundle.as_deref(), *rootless)?,
        Command::Image(a) => commands::image::run(a)?,
        Command::Bundle(a) => commands::bundle::run(cli, a)?,
        Command::Checkpoint(a) => commands::checkpoint::run(cli, a)?,
        Command::Restore(a) => return commands::restore::run(cli, a),
        Command::Migrate(a) => commands::migrate::run(cli, a)?,
    }
    Ok(0)
}

fn list(cli: &Cli, format: ListFormat, quiet: bool) -> Result<()> {
    let entries = container::query::list(&cli.root)?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for e in &entries {
            writeln!(out, "{}", e.state.id)?;
        }
        return Ok(());
    }
    if format == ListFormat::Json {
        if entries.is_empty() {
            writeln!(out, "null")?;
            return Ok(());
        }
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                let mut j = e.state.to_oci_json(e.status);
                j["owner"] = e.owner.clone().into();
                j
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    // Go's tabwriter as runc configures it: min width 12, padding 3.
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        .map(String::from)
        .to_vec()];
    for e in &entries {
        let pid = if e.status == rcrun_runtime::state::Status::Stopped {
            0
        } else {
            e.state.pid
        };
        rows.push(vec![
            e.state.id.clone(),
            pid.to_string(),
            e.status.to_string(),
            e.state.bundle.display().to_string(),
            e.state.created.clone(),
            e.owner.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len() + 3)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 5 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn spec(bundle: Option<&Path>, rootless: bool) -> Result<()> {
    let dir = bundle.unwrap_or(Path::new("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let ids = rootless.then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let v = rcrun_runtime::default_spec::default_spec(ids);
    let text = serde_json::to_string_pretty(&v)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Go spells errno text in lower case without decoration ("no such file or directory"); Rust's
/// io::Error adds " (os error 2)" and nix prefixes "ENOENT: ". Clients match Go's words (Docker
/// maps "no such file or directory" and "permission denied" to exit codes 127 and 126).
fn runc_style(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    // "... : No such file or directory (os error 2)" -> "... : no such file or directory"
    while let Some(i) = rest.find(" (os error ") {
        let Some(j) = rest[i..].find(')') else { break };
        let seg = &rest[..i];
        let start = seg.rfind(": ").map(|k| k + 2).unwrap_or(0);
        out.push_str(&seg[..start]);
        out.push_str(&lower_first(&seg[start..]));
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    // "... : EPERM: Operation not permitted" -> "... : operation not permitted"
    let mut result = String::with_capacity(out.len());
    let mut text = out.as_str();
    while let Some(k) = text.find(": E") {
        let after = &text[k + 2..];
        let word_len = after.find(": ").unwrap_or(0);
        let word = &after[..word_len];
        if word_len > 1
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            result.push_str(&text[..k + 2]);
            let tail = &after[word_len + 2..];
            let end = tail.find(": ").unwrap_or(tail.len());
            result.push_str(&lower_first(&tail[..end]));
            text = &tail[end..];
        } else {
            result.push_str(&text[..k + 3]);
            text = &text[k + 3..];
        }
    }
    result.push_str(text);
    result
}

/// Lower-case an initial capital that starts a lower-case word (strerror text), not acronyms.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match (c.next(), c.clone().next()) {
        (Some(f), Some(n)) if f.is_ascii_uppercase() && n.is_ascii_lowercase() => {
            let mut out = String::with_capacity(s.len());
            out.push(f.to_ascii_lowercase());
            out.push_str(c.as_str());
            out
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::runc_style;

    #[test]
    fn errno_text_like_go() {
        assert_eq!(
            runc_style("open /x/config.json: No such file or directory (os error 2)"),
            "open /x/config.json: no such file or directory"
        );
        assert_eq!(
            runc_style("mount a to b: EPERM: Operation not permitted"),
            "mount a to b: operation not permitted"
        );
        assert_eq!(
            runc_style("container with id exists: Foo"),
            "container with id exists: Foo"
        );
    }
}
