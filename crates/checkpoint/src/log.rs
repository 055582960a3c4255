//! Reading CRIU's log: the line that made it fail, and whether it failed because it does not
//! know the running kernel.
//!
//! CRIU logs many `Error` lines that it recovers from (probes of kernel features, a failed
//! optional step), so the first error is often not the cause. The cause is the last error before
//! CRIU's closing summary (`Dumping FAILED.`, `Restoring FAILED.`), or the summary itself when
//! nothing precedes it.

/// The summaries CRIU prints once an action has failed: they say that, not why.
const SUMMARIES: [&str; 5] = [
    "Dumping FAILED.",
    "Pre-dumping FAILED.",
    "Restoring FAILED.",
    "Lazy pages FAILED",
    "Page server FAILED",
];

/// Kernel-feature detection (`kerndat`) failing is how a CRIU older than the kernel fails: it
/// meets a layout it does not know (the vDSO on 6.x kernels for CRIU 3.17) before doing anything.
const KERNDAT_FAILED: &str = "Could not initialize kernel features detection";

/// One error line without its timestamp and source location:
/// `(00.040521) Error (criu/crtools.c:260): Could not ...` -> `Could not ...`.
fn message(line: &str) -> Option<&str> {
    let i = line.find("Error (")?;
    let rest = &line[i + "Error (".len()..];
    let j = rest.find("): ")?;
    Some(rest[j + 3..].trim())
}

/// A line that only passes a failure up: `Dump files (pid: 166) failed with -1`,
/// `Namespaces dumping finished with error 59904`.
fn is_wrapper(m: &str) -> bool {
    let ends_in_code = |sep: &str| {
        m.rsplit_once(sep)
            .is_some_and(|(_, n)| n.trim_end_matches('.').parse::<i64>().is_ok())
    };
    SUMMARIES.iter().any(|s| m.starts_with(s))
        || ends_in_code("failed with ")
        || ends_in_code("finished with error ")
}

/// The error that ended the action: the last `Error` line that is neither a closing summary nor
/// a wrapper passing a failure up (or the last line when there is nothing else). `None` if the
/// log has no error at all.
pub fn fatal_line(log: &str) -> Option<String> {
    let errors: Vec<&str> = log.lines().filter_map(message).collect();
    errors
        .iter()
        .rev()
        .find(|m| !is_wrapper(m))
        .or(errors.last())
        .map(|m| m.to_string())
}

/// Why kernel-feature detection failed, when it did: the first error of the log (the probe that
/// broke), e.g. `vdso: Unexpected rt vDSO area bounds`.
pub fn kernel_too_new(log: &str) -> Option<String> {
    if !log.contains(KERNDAT_FAILED) {
        return None;
    }
    log.lines()
        .filter_map(message)
        .find(|m| !m.contains("kerndat") && !m.starts_with(KERNDAT_FAILED))
        .map(str::to_string)
        .or(Some("kernel feature detection failed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRIU 3.17.1's log on kernel 6.18 (verbatim, shortened).
    const OLD_CRIU: &str = "\
(00.000043) Version: 3.17.1 (gitid 0)
(00.010769) Dirty tracking support is OFF
(00.040474) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
(00.040476) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
(00.040478) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
(00.040519) files stat: fs/nr_open 1048576
(00.040521) Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    #[test]
    fn fatal_line_is_the_last_error_not_the_first() {
        assert_eq!(
            fatal_line(OLD_CRIU).as_deref(),
            Some("Could not initialize kernel features detection.")
        );
        assert_eq!(
            kernel_too_new(OLD_CRIU).as_deref(),
            Some("vdso: Unexpected rt vDSO area bounds")
        );
    }

    #[test]
    fn summary_is_skipped_when_a_cause_precedes_it() {
        let log = "\
(00.001) Error (criu/net.c:1): iptables-restore failed (ignored)
(00.002) Warn  (criu/x.c:2): something
(00.003) Error (criu/mount.c:3): mnt: 97:./sys/fs/cgroup doesn't have a proper root mount
(00.0035) Error (criu/cr-dump.c:1635): Dump files (pid: 166) failed with -1
(00.0036) Error (criu/namespaces.c:1171): Namespaces dumping finished with error 59904
(00.004) Error (criu/cr-dump.c:4): Dumping FAILED.
";
        assert_eq!(
            fatal_line(log).as_deref(),
            Some("mnt: 97:./sys/fs/cgroup doesn't have a proper root mount")
        );
        assert_eq!(kernel_too_new(log), None);
        let only = "(00.4) Error (criu/cr-restore.c:1): Restoring FAILED.\n";
        assert_eq!(fatal_line(only).as_deref(), Some("Restoring FAILED."));
        assert_eq!(fatal_line("(00.1) Version: 3.17\n"), None);
    }
}
