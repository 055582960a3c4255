//! `linux.memoryPolicy` (runtime-spec 1.3): set_mempolicy(2) in the container's first process
//! before exec; the policy is inherited across execve and by the program's children.

use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Spec};

/// Modes newer than libc 0.2's constants (include/uapi/linux/mempolicy.h, all architectures).
const MPOL_PREFERRED_MANY: i32 = 5;
const MPOL_WEIGHTED_INTERLEAVE: i32 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MempolicyError {
    #[error("linux.memoryPolicy.nodes {0:?}: not a node list like \"0-1,3\"")]
    Nodes(String),
    #[error("linux.memoryPolicy.mode {0}: needs nodes")]
    NeedsNodes(String),
    #[error("linux.memoryPolicy.mode {0}: takes no nodes")]
    NoNodes(String),
    #[error("linux.memoryPolicy (mode {mode}, nodes {nodes:?}): set_mempolicy: {err}")]
    Set {
        mode: String,
        nodes: String,
        err: String,
    },
}

/// Parse "0-1,3" into node numbers.
pub fn parse_nodes(s: &str) -> Result<Vec<u32>, MempolicyError> {
    let bad = || MempolicyError::Nodes(s.to_string());
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The (mode | flags, nodes) set_mempolicy takes for a spec's policy.
pub fn plan(p: &LinuxMemoryPolicy) -> Result<(i32, Vec<u32>), MempolicyError> {
    let mode_name = p.mode().to_string();
    let mode = match p.mode() {
        MemoryPolicyModeType::MpolDefault => libc::MPOL_DEFAULT,
        MemoryPolicyModeType::MpolBind => libc::MPOL_BIND,
        MemoryPolicyModeType::MpolInterleave => libc::MPOL_INTERLEAVE,
        MemoryPolicyModeType::MpolWeightedInterleave => MPOL_WEIGHTED_INTERLEAVE,
        MemoryPolicyModeType::MpolPreferred => libc::MPOL_PREFERRED,
        MemoryPolicyModeType::MpolPreferredMany => MPOL_PREFERRED_MANY,
        MemoryPolicyModeType::MpolLocal => libc::MPOL_LOCAL,
    };
    let nodes = match p
        .nodes()
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(n) => parse_nodes(n)?,
        None => Vec::new(),
    };
    let takes_none = matches!(
        p.mode(),
        MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal
    );
    // MPOL_PREFERRED with no nodes means "local"; the others need a node set.
    let may_be_empty = takes_none || p.mode() == MemoryPolicyModeType::MpolPreferred;
    if takes_none && !nodes.is_empty() {
        return Err(MempolicyError::NoNodes(mode_name));
    }
    if !may_be_empty && nodes.is_empty() {
        return Err(MempolicyError::NeedsNodes(mode_name));
    }
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => libc::MPOL_F_NUMA_BALANCING,
            MemoryPolicyFlagType::MpolFRelativeNodes => libc::MPOL_F_RELATIVE_NODES,
            MemoryPolicyFlagType::MpolFStaticNodes => libc::MPOL_F_STATIC_NODES,
        };
    }
    Ok((mode | flags, nodes))
}

/// Apply the spec's memory policy to the calling process (a no-op without one).
pub fn apply(spec: &Spec) -> Result<(), MempolicyError> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    else {
        return Ok(());
    };
    let (mode, nodes) = plan(p)?;
    let bits = libc::c_ulong::BITS;
    let mut mask: Vec<libc::c_ulong> =
        vec![0; (nodes.iter().max().copied().unwrap_or(0) / bits + 1) as usize];
    for n in &nodes {
        mask[(n / bits) as usize] |= 1 << (n % bits);
    }
    let (mptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (
            mask.as_ptr(),
            mask.len() as libc::c_ulong * bits as libc::c_ulong + 1,
        )
    };
    // SAFETY: the mask outlives the call; maxnode matches its size.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mptr, maxnode) };
    if rc != 0 {
        return Err(MempolicyError::Set {
            mode: p.mode().to_string(),
            nodes: p.nodes().clone().unwrap_or_default(),
            err: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(parse_nodes("0"), Ok(vec![0]));
        assert_eq!(parse_nodes("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_nodes("2-1").is_err());
        assert!(parse_nodes("x").is_err());
        assert!(parse_nodes("").is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn plans() {
        let p: LinuxMemoryPolicy = serde_json::from_str(
            r#"{"mode":"MPOL_BIND","nodes":"1","flags":["MPOL_F_STATIC_NODES"]}"#,
        )
        .unwrap();
        assert_eq!(
            plan(&p),
            Ok((libc::MPOL_BIND | libc::MPOL_F_STATIC_NODES, vec![1]))
        );
        let p: LinuxMemoryPolicy = serde_json::from_str(r#"{"mode":"MPOL_INTERLEAVE"}"#).unwrap();
        assert!(matches!(plan(&p), Err(MempolicyError::NeedsNodes(_))));
        let p: LinuxMemoryPolicy =
            serde_json::from_str(r#"{"mode":"MPOL_DEFAULT","nodes":"0"}"#).unwrap();
        assert!(matches!(plan(&p), Err(MempolicyError::NoNodes(_))));
    }

    /// On the host (one node): binding to node 0 works in a child process.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn apply_bind_node0_in_a_child() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.3.0",
            "linux": {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0"}}
        }))
        .unwrap();
        // SAFETY: fork in a test; the child only makes syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = apply(&spec).is_ok()
                && std::fs::read_to_string("/proc/self/status")
                    .is_ok_and(|s| s.lines().any(|l| l.starts_with("Mems_allowed_list")));
            let mut mode: libc::c_int = -1;
            // SAFETY: get_mempolicy with an out-int and no mask.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_mempolicy,
                    &mut mode,
                    std::ptr::null_mut::<libc::c_ulong>(),
                    0 as libc::c_ulong,
                    std::ptr::null_mut::<libc::c_void>(),
                    0 as libc::c_ulong,
                )
            };
            // SAFETY: leave the forked child without running the test harness.
            unsafe {
                libc::_exit(if ok && rc == 0 && mode == libc::MPOL_BIND {
                    0
                } else {
                    1
                })
            };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
    }
}
