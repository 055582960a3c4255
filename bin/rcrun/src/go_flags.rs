//! Go-style long flags. runc parses its command line with Go's flag rules, where `-name`
//! means `--name`, and clients rely on it: containerd's go-runc writes `restore
//! -no-subreaper`. clap would read that as `-n o-subreaper`. Before clap sees the command
//! line, a one-dash word that names one of our long options becomes the two-dash form.
//! As in runc, flags end at the first positional argument (or `--`): what follows (a
//! container id, the process' own arguments) is never rewritten.

use std::collections::HashMap;
use std::ffi::OsString;

/// Long and short option names of a command and its subcommands, with whether they take
/// a value (so the value after one is not mistaken for the first positional argument).
#[derive(Default)]
struct Options {
    long: HashMap<String, bool>,
    short: HashMap<char, bool>,
}

fn options(cmd: &clap::Command) -> Options {
    let mut o = Options::default();
    for a in cmd.get_arguments() {
        let takes = a.get_action().takes_values();
        if let Some(l) = a.get_long() {
            o.long.insert(l.to_string(), takes);
        }
        for al in a.get_all_aliases().into_iter().flatten() {
            o.long.insert(al.to_string(), takes);
        }
        if let Some(s) = a.get_short() {
            o.short.insert(s, takes);
        }
    }
    o
}

impl Options {
    /// Whether a long option takes a value; None: not one of ours.
    fn long_takes(&self, name: &str) -> Option<bool> {
        self.long.get(name).copied()
    }
    fn short_takes(&self, c: char) -> Option<bool> {
        self.short.get(&c).copied()
    }
}

/// [`normalize`] only when some word looks like a one-dash long flag: the usual command line
/// (two-dash flags, as Docker and containerd write them) costs no extra command tree on the
/// start-up path.
pub fn normalize_if_needed(
    args: Vec<OsString>,
    root: impl FnOnce() -> clap::Command,
) -> Vec<OsString> {
    let suspect = args.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|s| s.len() > 2 && s.starts_with('-') && !s.starts_with("--"))
    });
    if suspect {
        normalize(args, &root())
    } else {
        args
    }
}

/// The command line with `-name[=v]` turned into `--name[=v]` where `name` is a long option
/// of the global flags or of the subcommand, up to the first positional argument.
pub fn normalize(args: Vec<OsString>, root: &clap::Command) -> Vec<OsString> {
    let globals = options(root);
    let mut sub: Option<Options> = None;
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    out.extend(it.next()); // argv[0]
    let mut value_next = false;
    for arg in it.by_ref() {
        let Some(s) = arg.to_str().map(str::to_owned) else {
            out.push(arg);
            continue;
        };
        if std::mem::take(&mut value_next) {
            out.push(arg);
            continue;
        }
        let long_takes = |n: &str| {
            sub.as_ref()
                .and_then(|o| o.long_takes(n))
                .or(globals.long_takes(n))
        };
        if s == "--" {
            out.push(arg);
            break;
        }
        if !s.starts_with('-') || s == "-" {
            match root.find_subcommand(&s).filter(|_| sub.is_none()) {
                Some(cmd) => {
                    sub = Some(options(cmd));
                    out.push(arg);
                    continue;
                }
                // The first positional argument: flags end here, as in runc.
                None => {
                    out.push(arg);
                    break;
                }
            }
        }
        if let Some(body) = s.strip_prefix("--") {
            let name = body.split('=').next().unwrap_or(body);
            value_next = !body.contains('=') && long_takes(name).unwrap_or(false);
            out.push(arg);
            continue;
        }
        let body = s.get(1..).unwrap_or("");
        let name = body.split('=').next().unwrap_or(body);
        if name.chars().count() > 1 {
            if let Some(takes) = long_takes(name) {
                value_next = takes && !body.contains('=');
                out.push(format!("--{body}").into());
                continue;
            }
        }
        // `-d`, a cluster `-dt`, or `-p VALUE`; an attached value (`-pVALUE`) is clap's.
        if let (Some(c), 1) = (body.chars().next(), body.chars().count()) {
            value_next = sub
                .as_ref()
                .and_then(|o| o.short_takes(c))
                .or(globals.short_takes(c))
                .unwrap_or(false);
        }
        out.push(arg);
    }
    out.extend(it);
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use clap::CommandFactory;

    fn norm(args: &[&str]) -> Vec<String> {
        let v = args.iter().map(|a| (*a).into()).collect();
        normalize(v, &crate::cli::Cli::command())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn go_style_long_flags_become_two_dash_up_to_the_first_positional() {
        assert_eq!(
            norm(&[
                "rcrun",
                "-root",
                "/r",
                "restore",
                "-no-subreaper",
                "--bundle",
                "/b",
                "id"
            ]),
            [
                "rcrun",
                "--root",
                "/r",
                "restore",
                "--no-subreaper",
                "--bundle",
                "/b",
                "id"
            ]
        );
        // The process' own arguments are never touched, nor a value that looks like a flag.
        assert_eq!(
            norm(&["rcrun", "exec", "-d", "id", "sh", "-detach", "-c", "x"]),
            ["rcrun", "exec", "-d", "id", "sh", "-detach", "-c", "x"]
        );
        assert_eq!(
            norm(&["rcrun", "--log", "-debug", "create", "-pid-file=/p", "c"]),
            ["rcrun", "--log", "-debug", "create", "--pid-file=/p", "c"]
        );
        // Unknown words stay as they are, for clap to report.
        assert_eq!(
            norm(&["rcrun", "start", "-bogus", "c"]),
            ["rcrun", "start", "-bogus", "c"]
        );
    }
}
