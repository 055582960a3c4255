//! An image's `User` (`name`, `uid`, `uid:gid`, `name:group`, ...) to the uid, gid and
//! additional gids of the container process, as Docker does it (runc's `GetExecUser` on the
//! image's own /etc/passwd and /etc/group, then moby's `getUser`: the primary gid first in the
//! additional gids, then the groups listing the user as a member).
//!
//! The files are read from the mounted rootfs through openat2(RESOLVE_IN_ROOT): an image whose
//! /etc/passwd is a symlink to `/../../etc/shadow` gets its own file or nothing, never the
//! host's.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};
use rcrun_runtime::secure_path::Root;

/// The largest /etc/passwd or /etc/group read; a bigger one (or a device node, a FIFO) is an
/// image trying to stall us.
const ETC_LIMIT: u64 = 4 << 20;
/// runc's `maxID`: ids are non-negative int32.
const MAX_ID: i64 = (1 << 31) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// moby's `AdditionalGids`: the primary gid, then the supplementary groups.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: i64,
    gid: i64,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: i64,
    members: Vec<&'a str>,
}

/// Lines split on ':', comments and blank lines skipped (as runc's parser does).
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn field<'a>(r: &[&'a str], i: usize) -> &'a str {
    r.get(i).copied().unwrap_or("")
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry<'_>> {
    records(text)
        .map(|r| PasswdEntry {
            name: field(&r, 0),
            uid: field(&r, 2).parse().unwrap_or(-1),
            gid: field(&r, 3).parse().unwrap_or(-1),
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<GroupEntry<'_>> {
    records(text)
        .map(|r| GroupEntry {
            name: field(&r, 0),
            gid: field(&r, 2).parse().unwrap_or(-1),
            members: field(&r, 3)
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect(),
        })
        .collect()
}

fn id_in_range(what: &str, spec: &str, v: i64) -> Result<u32> {
    match u32::try_from(v) {
        Ok(id) if v <= MAX_ID => Ok(id),
        _ => bail!("image config User {spec:?}: {what} {v} is out of range (0-{MAX_ID})"),
    }
}

/// Resolve `spec` against the image's passwd and group files (`None`: the file is missing).
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let uid_num = user_arg.parse::<i64>().ok();
    let gid_num = group_arg.parse::<i64>().ok();
    let users = passwd.map(passwd_entries).unwrap_or_default();
    // No user given: root's entry, for its gid and groups.
    let found = users.iter().find(|u| match (user_arg, uid_num) {
        ("", _) => u.uid == 0,
        (_, Some(n)) => u.uid == n,
        (name, None) => u.name == name,
    });
    let (mut uid, mut gid, matched_name) = (0i64, 0i64, found.map(|u| u.name));
    if let Some(u) = found {
        uid = u.uid;
        gid = u.gid;
    } else if !user_arg.is_empty() {
        match uid_num {
            Some(n) => uid = n,
            None => {
                bail!("image config User {spec:?}: no user {user_arg:?} in the image's /etc/passwd")
            }
        }
    }
    let uid = id_in_range("uid", spec, uid)?;
    let mut sgids = Vec::new();
    if !group_arg.is_empty() || matched_name.is_some() {
        let groups = group.map(group_entries).unwrap_or_default();
        if !group_arg.is_empty() {
            let g = groups.iter().find(|g| match gid_num {
                Some(n) => g.gid == n,
                None => g.name == group_arg,
            });
            gid = match (g, gid_num) {
                (Some(g), _) => g.gid,
                (None, Some(n)) => n,
                (None, None) => bail!(
                    "image config User {spec:?}: no group {group_arg:?} in the image's /etc/group"
                ),
            };
        } else if let Some(name) = matched_name {
            // Supplementary groups only in the implicit form, as runc.
            for g in groups.iter().filter(|g| g.members.contains(&name)) {
                sgids.push(id_in_range("gid", spec, g.gid)?);
            }
        }
    }
    let gid = id_in_range("gid", spec, gid)?;
    let mut additional_gids = vec![gid];
    additional_gids.extend(sgids);
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Read `/etc/<name>` of a rootfs, scoped to it; `None` when it does not exist.
pub fn read_etc(root: &Root, name: &str) -> Result<Option<String>> {
    let rel = Path::new("/etc").join(name);
    let target = match root.open_in(&rel) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let shown = root.path().join("etc").join(name);
    let f = std::fs::File::open(target.proc_path())
        .map_err(|e| anyhow::anyhow!("open {}: {e}", shown.display()))?;
    let md = f
        .metadata()
        .map_err(|e| anyhow::anyhow!("stat {}: {e}", shown.display()))?;
    if !md.is_file() {
        bail!("{}: not a regular file", shown.display());
    }
    let mut buf = Vec::new();
    f.take(ETC_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow::anyhow!("read {}: {e}", shown.display()))?;
    if buf.len() as u64 > ETC_LIMIT {
        bail!("{}: larger than {ETC_LIMIT} bytes", shown.display());
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// [`resolve`] against the files of a mounted rootfs.
pub fn resolve_in(rootfs: &Path, spec: &str) -> Result<ExecUser> {
    let root = Root::open(rootfs)?;
    let passwd = read_etc(&root, "passwd")?;
    let group = read_etc(&root, "group")?;
    resolve(spec, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\n\
                          app:x:1000:1001:app:/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:root\nwheel:x:10:root,app\napp:x:1001:\n\
                         staff:x:50:app\nnogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ExecUser> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    fn u(uid: u32, gid: u32, add: &[u32]) -> ExecUser {
        ExecUser {
            uid,
            gid,
            additional_gids: add.to_vec(),
        }
    }

    #[test]
    fn empty_is_root_with_its_groups() {
        assert_eq!(r("").unwrap(), u(0, 0, &[0, 0, 10]));
        assert_eq!(resolve("", None, None).unwrap(), u(0, 0, &[0]));
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(r("app").unwrap(), u(1000, 1001, &[1001, 10, 50]));
        // A uid with a passwd entry takes its gid and groups.
        assert_eq!(r("1000").unwrap(), u(1000, 1001, &[1001, 10, 50]));
        // Unknown numeric uid: as is, gid 0.
        assert_eq!(r("4242").unwrap(), u(4242, 0, &[0]));
        // An explicit group drops the supplementary groups.
        assert_eq!(r("app:staff").unwrap(), u(1000, 50, &[50]));
        assert_eq!(r("app:777").unwrap(), u(1000, 777, &[777]));
        assert_eq!(r("5:6").unwrap(), u(5, 6, &[6]));
        assert_eq!(resolve("7:8", None, None).unwrap(), u(7, 8, &[8]));
    }

    #[test]
    fn unknown_names_fail_naming_them() {
        let e = r("ghost").unwrap_err().to_string();
        assert!(e.contains("\"ghost\"") && e.contains("/etc/passwd"), "{e}");
        let e = r("app:ghosts").unwrap_err().to_string();
        assert!(e.contains("\"ghosts\"") && e.contains("/etc/group"), "{e}");
        assert!(resolve("app", None, None).is_err());
        assert!(r("-1").is_err());
        assert!(r("4294967296").is_err());
    }
}
