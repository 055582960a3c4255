//! `ps`: the container's processes, from its cgroup (without one: from its pid namespace). `json` is the list of host pids; `table`
//! runs the host's ps(1) and keeps its header and the lines whose PID column is one of them
//! (runc's approach: the PID column is found by name in the header).

use std::path::Path;

use super::Error;
use crate::cgroups::Cgroup;
use crate::state;

/// Host pids of every process in the container's cgroup (sub-cgroups included).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>, Error> {
    state::validate_id(id)?;
    let st = state::load_state(&root.join(id), id)?;
    let cg = match st.cgroup.as_deref() {
        Some(cg) => Some(Cgroup::open(cg, st.systemd_cgroup)?),
        None => None,
    };
    match cg {
        Some(cg) if cg.hierarchies().next().is_some() => {
            Ok(cg.pids()?.into_iter().map(|p| p.as_raw()).collect())
        }
        // Rootless without a delegated cgroup (runc fails here): find the processes through
        // the container's pid namespace, or as the init's descendants when it has none.
        _ if st.status(&root.join(id)) == state::Status::Stopped => Ok(Vec::new()),
        _ => Ok(without_cgroup(st.pid)),
    }
}

/// The container's processes without a cgroup: those in the pid namespace of `init` when it
/// has its own, else `init` and its descendants.
pub(crate) fn without_cgroup(init: i32) -> Vec<i32> {
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(init_ns) = ns(init) else {
        return Vec::new();
    };
    let procs: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, ppid_of(pid)?)))
        .collect();
    if ns(std::process::id() as i32).as_ref() != Some(&init_ns) {
        return procs
            .iter()
            .map(|(pid, _)| *pid)
            .filter(|pid| ns(*pid).as_ref() == Some(&init_ns))
            .collect();
    }
    let mut found = vec![init];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            procs
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

/// The parent pid from /proc/PID/stat (the field after the parenthesised command name).
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `ps --format table`: run `ps ARGS` (default `-ef`) on the host and filter its output.
pub fn table(root: &Path, id: &str, ps_args: &[String]) -> Result<String, Error> {
    state::validate_id(id)?;
    let pids = pids(root, id)?;
    let default = ["-ef".to_string()];
    let args = if ps_args.is_empty() {
        &default[..]
    } else {
        ps_args
    };
    let out = std::process::Command::new("ps")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Ps(format!("exec: \"ps\": {e}")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let status = match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "signal: killed".to_string(),
        };
        return Err(Error::Ps(format!("{status}: {text}")));
    }
    filter_table(&text, &pids)
}

/// Keep ps(1)'s header and the lines whose PID column is in `pids`.
pub fn filter_table(output: &str, pids: &[i32]) -> Result<String, Error> {
    let mut lines = output.split('\n');
    let header = lines.next().unwrap_or("");
    let idx = header
        .split_whitespace()
        .position(|f| f == "PID")
        .ok_or_else(|| Error::Ps("couldn't find PID field in ps output".into()))?;
    let mut out = String::new();
    out.push_str(header);
    out.push('\n');
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let field = line.split_whitespace().nth(idx).unwrap_or("");
        let pid: i32 = field
            .parse()
            .map_err(|e| Error::Ps(format!("unable to parse pid: {field:?}: {e}")))?;
        if pids.contains(&pid) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_matching_pids() {
        let ps = "UID   PID  PPID CMD\nroot    1     0 init\nroot   42     1 sleep 10\n\n";
        let t = filter_table(ps, &[42]).unwrap();
        assert_eq!(t, "UID   PID  PPID CMD\nroot   42     1 sleep 10\n");
    }

    #[test]
    fn pid_column_found_by_name() {
        let ps = "  PID TTY          TIME CMD\n  7 ?        00:00:00 sh\n";
        assert_eq!(filter_table(ps, &[7]).unwrap().lines().count(), 2);
        assert!(filter_table("USER CMD\nroot x\n", &[1]).is_err());
    }
}
