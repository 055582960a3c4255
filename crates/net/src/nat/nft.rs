//! Running Debian's `nft` binary: JSON batches in (`nft -j -f -`), JSON listings out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::NatError;

/// Where `nft` is looked for, in order.
const NFT_PATHS: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

pub(super) fn find_nft() -> Result<PathBuf, NatError> {
    NFT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| NatError::NftMissing(NFT_PATHS.join(", ")))
}

fn classify(nft: &Path, what: &str, stderr: &str) -> NatError {
    let s = stderr.trim().to_string();
    // What nft says when the kernel has no nf_tables at all, and (ENOENT on a batch that creates
    // its own table and nat chains) when the nat chain type or NAT expressions are missing.
    let no_nft = s.contains("not supported");
    let no_nat = s.contains("No such file or directory") && what.contains("\"type\":\"nat\"");
    if no_nft || no_nat {
        let need = "nf_tables with nat chains, nft_nat, nft_masq and nft_fib (CONFIG_NFT_NAT, CONFIG_NFT_MASQ, CONFIG_NFT_FIB_IPV4/6)";
        NatError::KernelLacksNfTables(format!("{need}; nft said: {}", first_line(&s)))
    } else {
        tracing::debug!(input = what, "nft input");
        let what: String = what.chars().take(160).collect();
        NatError::Nft {
            nft: nft.to_path_buf(),
            what,
            stderr: s,
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s)
}

/// Applies one batch atomically (nft sends it as a single netlink transaction).
pub(super) fn apply(nft: &Path, cmds: Vec<Value>) -> Result<(), NatError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let doc = serde_json::json!({ "nftables": cmds }).to_string();
    let mut child = Command::new(nft)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NatError::Spawn {
            nft: nft.to_path_buf(),
            source: e,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(doc.as_bytes())
            .map_err(|e| NatError::Spawn {
                nft: nft.to_path_buf(),
                source: e,
            })?;
    }
    let out = child.wait_with_output().map_err(|e| NatError::Spawn {
        nft: nft.to_path_buf(),
        source: e,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(classify(nft, &doc, &String::from_utf8_lossy(&out.stderr)))
    }
}

/// A rule as listed by `nft -j`.
#[derive(Debug, Clone)]
pub(super) struct ListedRule {
    pub chain: String,
    pub handle: u64,
    pub comment: String,
}

/// Rules of `table <family> <name>`; `None` when the table does not exist.
pub(super) fn list_rules(
    nft: &Path,
    family: &str,
    table: &str,
) -> Result<Option<Vec<ListedRule>>, NatError> {
    let out = Command::new(nft)
        .args(["-j", "list", "table", family, table])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NatError::Spawn {
            nft: nft.to_path_buf(),
            source: e,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(classify(
            nft,
            &format!("list table {family} {table}"),
            &stderr,
        ));
    }
    let doc: Value = serde_json::from_slice(&out.stdout).map_err(|e| NatError::Nft {
        nft: nft.to_path_buf(),
        what: format!("list table {family} {table}"),
        stderr: format!("unparsable JSON output: {e}"),
    })?;
    let mut rules = Vec::new();
    for item in doc
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let (Some(chain), Some(handle)) = (
            rule.get("chain").and_then(Value::as_str),
            rule.get("handle").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        rules.push(ListedRule {
            chain: chain.to_string(),
            handle,
            comment,
        });
    }
    Ok(Some(rules))
}
