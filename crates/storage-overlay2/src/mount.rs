//! Mount a container's rootfs: overlayfs with the image's layers as lower dirs (top first,
//! as the store's `l/<id>` short links), the container's own `upper` and `work`, and
//! `index=off` where the kernel has that parameter (reusing an upper against other lowers
//! fails with the index on).
//!
//! Two ways to pass the layers:
//! - the new mount API (fsopen/fsconfig/fsmount/move_mount), one `lowerdir+` per layer
//!   (Linux >= 6.8): no length limit;
//! - `mount(2)` with one option string, which the kernel cuts at a page (4095 bytes + NUL)
//!   without an error, mounting the wrong layers: the length is checked and a string that
//!   does not fit is never passed.
//!
//! [`MountMethod::Auto`] uses the first where the kernel has it. Either way the paths are
//! relative to the store (short options, no escaping of the store path), resolved in a helper
//! thread that unshared its cwd (`unshare(CLONE_FS)`) and chdir'ed into the store, so the
//! caller's threads keep their cwd.

use crate::store::{Store, StoreError, MOUNTPOINT_FILE};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use rustix::fd::OwnedFd;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// overlayfs refuses more lower layers than this (`OVL_MAX_STACK`).
pub const MAX_LOWER_LAYERS: usize = 500;

const INDEX_PARAM: &str = "/sys/module/overlay/parameters/index";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountMethod {
    /// New API when the kernel has `lowerdir+`, else `mount(2)` if the options fit.
    #[default]
    Auto,
    /// fsopen/fsconfig `lowerdir+` only.
    NewApi,
    /// `mount(2)` only.
    Legacy,
}

#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    pub method: MountMethod,
    /// Where to mount; default `containers/<id>/merged`. Must exist.
    pub target: Option<PathBuf>,
}

/// A mounted rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub target: PathBuf,
    /// `NewApi` or `Legacy`: what was used.
    pub method: MountMethod,
    pub layers: usize,
    pub index_off: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("container {id}: its image has no layers; overlayfs needs at least one lower dir")]
    NoLayers { id: String },
    #[error("container {id}: its image has {layers} layers; overlayfs stacks at most {max}")]
    TooManyLayers {
        id: String,
        layers: usize,
        max: usize,
    },
    #[error("container {id}: an overlay of {layers} layers needs {len} bytes of mount(2) options, over the {max}-byte limit (the kernel would silently truncate them); the fsconfig \"lowerdir+\" parameter of Linux >= 6.8 has no such limit{why}")]
    OptionsTooLong {
        id: String,
        layers: usize,
        len: usize,
        max: usize,
        /// Why the new API was not used.
        why: String,
    },
    #[error("container {id}: the new mount API cannot mount this overlay: {reason}")]
    NewApiUnsupported { id: String, reason: String },
    #[error("container {id}: {op} {arg}: {source}{log}")]
    Syscall {
        id: String,
        op: &'static str,
        arg: String,
        #[source]
        source: io::Error,
        /// Messages the kernel left in the fs context (new API).
        log: String,
    },
    #[error("container {id}: {target} is already a mount point")]
    AlreadyMounted { id: String, target: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: the mount helper thread panicked")]
    Thread { id: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Mount container `id`'s rootfs (its record must exist: [`Store::create_container`]).
pub fn mount(store: &Store, id: &str, opts: &MountOptions) -> Result<Mounted, MountError> {
    let _span = tracing::info_span!("mount", id).entered();
    let paths = store.container_paths(id)?;
    // Shared: rm/prune cannot delete layers between reading the record and mounting.
    let _held = store.lock_shared()?;
    let rec = store.container(id)?;
    if rec.layers.is_empty() {
        return Err(MountError::NoLayers { id: id.to_string() });
    }
    if rec.layers.len() > MAX_LOWER_LAYERS {
        return Err(MountError::TooManyLayers {
            id: id.to_string(),
            layers: rec.layers.len(),
            max: MAX_LOWER_LAYERS,
        });
    }
    let mut lowers = Vec::with_capacity(rec.layers.len());
    for chain_id in rec.layers.iter().rev() {
        lowers.push(format!("l/{}", store.layer(chain_id)?.link));
    }
    let target = opts.target.clone().unwrap_or(paths.merged.clone());
    let target = fs::canonicalize(&target).map_err(io_err("canonicalize", &target))?;
    if is_mounted(&target).map_err(io_err("read", Path::new("/proc/self/mountinfo")))? {
        return Err(MountError::AlreadyMounted {
            id: id.to_string(),
            target,
        });
    }
    let job = Job {
        id,
        lowers: &lowers,
        upper: format!("containers/{id}/upper"),
        work: format!("containers/{id}/work"),
        target: &target,
        method: opts.method,
    };
    let root = store.root();
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<(MountMethod, bool), MountError> {
            // Our own fs struct: chdir here does not move the caller's other threads.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| {
                MountError::Syscall {
                    id: id.to_string(),
                    op: "unshare",
                    arg: "CLONE_FS".to_string(),
                    source: e.into(),
                    log: String::new(),
                }
            })?;
            std::env::set_current_dir(root).map_err(io_err("chdir", root))?;
            job.run()
        })
        .join()
    });
    let (method, index_off) = res.map_err(|_| MountError::Thread { id: id.to_string() })??;
    let mp = paths.dir.join(MOUNTPOINT_FILE);
    if let Err(e) = fs::write(&mp, target.as_os_str().as_bytes()) {
        let _ = unmount(&target);
        return Err(io_err("write", &mp)(e));
    }
    tracing::info!(target = %target.display(), ?method, layers = lowers.len(), "rootfs mounted");
    Ok(Mounted {
        target,
        method,
        layers: lowers.len(),
        index_off,
    })
}

struct Job<'a> {
    id: &'a str,
    /// Relative to the store, top layer first.
    lowers: &'a [String],
    upper: String,
    work: String,
    target: &'a Path,
    method: MountMethod,
}

enum NewApiFailure {
    /// The kernel lacks it (or `lowerdir+`): another method may work.
    Unsupported(String),
    Failed(MountError),
}

impl Job<'_> {
    /// Runs with the store as cwd.
    fn run(&self) -> Result<(MountMethod, bool), MountError> {
        let why = match self.method {
            MountMethod::Legacy => String::from(" (mount(2) was asked for)"),
            MountMethod::NewApi | MountMethod::Auto => match self.new_api() {
                Ok(index_off) => return Ok((MountMethod::NewApi, index_off)),
                Err(NewApiFailure::Failed(e)) => return Err(e),
                Err(NewApiFailure::Unsupported(reason)) => {
                    if self.method == MountMethod::NewApi {
                        return Err(MountError::NewApiUnsupported {
                            id: self.id.to_string(),
                            reason,
                        });
                    }
                    tracing::debug!(%reason, "new mount API unusable, falling back to mount(2)");
                    format!(" (new API: {reason})")
                }
            },
        };
        self.legacy(why)
            .map(|index_off| (MountMethod::Legacy, index_off))
    }

    fn syscall_err(
        &self,
        op: &'static str,
        arg: String,
        e: rustix::io::Errno,
        fs: Option<&OwnedFd>,
    ) -> MountError {
        MountError::Syscall {
            id: self.id.to_string(),
            op,
            arg,
            source: e.into(),
            log: fs.map(fs_context_log).unwrap_or_default(),
        }
    }

    fn new_api(&self) -> Result<bool, NewApiFailure> {
        use NewApiFailure::{Failed, Unsupported};
        let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOSYS) => {
                return Err(Unsupported("fsopen: ENOSYS (Linux < 5.2)".into()))
            }
            Err(e) => {
                return Err(Failed(self.syscall_err(
                    "fsopen",
                    "overlay".into(),
                    e,
                    None,
                )))
            }
        };
        let set = |key: &'static str, value: &str| {
            rustix::mount::fsconfig_set_string(&fs, key, value).map_err(|e| {
                Failed(self.syscall_err("fsconfig", format!("{key}={value}"), e, Some(&fs)))
            })
        };
        lowerdir_plus_supported().map_err(Unsupported)?;
        set("source", "overlay")?;
        let n = self.lowers.len();
        for (i, l) in self.lowers.iter().enumerate() {
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l).map_err(|e| {
                Failed(self.syscall_err(
                    "fsconfig",
                    format!("lowerdir+={l} (layer {} of {n} from the top)", i + 1),
                    e,
                    Some(&fs),
                ))
            })?;
        }
        set("upperdir", &self.upper)?;
        set("workdir", &self.work)?;
        // The module is loaded now (fsopen), so the parameter file tells.
        let index_off = Path::new(INDEX_PARAM).exists();
        if index_off {
            set("index", "off")?;
        }
        rustix::mount::fsconfig_create(&fs)
            .map_err(|e| Failed(self.syscall_err("fsconfig", "CMD_CREATE".into(), e, Some(&fs))))?;
        let mnt =
            rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
                .map_err(|e| Failed(self.syscall_err("fsmount", "overlay".into(), e, Some(&fs))))?;
        rustix::mount::move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            self.target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| {
            Failed(self.syscall_err("move_mount", self.target.display().to_string(), e, None))
        })?;
        Ok(index_off)
    }

    fn legacy(&self, why: String) -> Result<bool, MountError> {
        let index_off = overlay_has_index_param();
        let data = legacy_options(self.lowers, &self.upper, &self.work, index_off);
        let max = legacy_options_max();
        if data.len() > max {
            return Err(MountError::OptionsTooLong {
                id: self.id.to_string(),
                layers: self.lowers.len(),
                len: data.len(),
                max,
                why,
            });
        }
        nix::mount::mount(
            Some("overlay"),
            self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| MountError::Syscall {
            id: self.id.to_string(),
            op: "mount overlay",
            arg: format!("{} ({} layers)", self.target.display(), self.lowers.len()),
            source: e.into(),
            log: String::new(),
        })?;
        Ok(index_off)
    }
}

/// Whether overlayfs takes `lowerdir+` through fsconfig; `Err` says why not. Probed once: a
/// path that cannot exist is rejected at once with ENOENT by overlay's own parser when it
/// knows `lowerdir+` (Linux >= 6.8), with EINVAL ("unknown parameter") by 6.5-6.7, and
/// accepted by the generic wrapper of older kernels, which only collects a mount(2) option
/// string (with the same page limit) and fails at CMD_CREATE.
fn lowerdir_plus_supported() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
                .map_err(|e| format!("fsopen overlay: {e}"))?;
            match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", "/proc/self/fd/-1/probe") {
                Err(rustix::io::Errno::NOENT) => Ok(()),
                Ok(()) => Err(
                    "overlayfs has no fs_context of its own (Linux < 6.5): fsconfig \
                    only builds a mount(2) option string"
                        .into(),
                ),
                Err(e) => Err(format!(
                    "fsconfig lowerdir+: {e} (Linux < 6.8){}",
                    fs_context_log(&fs)
                )),
            }
        })
        .clone()
}

/// The `mount(2)` data for an overlay: `lowerdir=a:b,upperdir=u,workdir=w[,index=off]`.
pub fn legacy_options(lowers: &[String], upper: &str, work: &str, index_off: bool) -> String {
    let mut s = format!(
        "lowerdir={},upperdir={upper},workdir={work}",
        lowers.join(":")
    );
    if index_off {
        s.push_str(",index=off");
    }
    s
}

/// The longest `mount(2)` data the kernel takes whole: a page minus the NUL (4095 on x86).
pub fn legacy_options_max() -> usize {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    page.saturating_sub(1)
}

fn overlay_has_index_param() -> bool {
    if Path::new(INDEX_PARAM).exists() {
        return true;
    }
    // The module may not be loaded yet; fsopen loads it (mount(2) would too, but too late).
    let _ = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC);
    Path::new(INDEX_PARAM).exists()
}

/// The kernel's messages about a failed fsconfig (read from the fs context fd).
fn fs_context_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf[..]) {
            Ok(n) if n > 0 => {
                out.push_str("; kernel: ");
                out.push_str(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).trim());
            }
            _ => break,
        }
    }
    out
}

/// Detach the mount at `target`. `false` when nothing was mounted there.
pub fn unmount(target: &Path) -> Result<bool, MountError> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => {
            tracing::debug!(target = %target.display(), "unmounted");
            Ok(true)
        }
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(e) => Err(io_err("umount", target)(e.into())),
    }
}

/// Detach container `id`'s rootfs wherever [`mount`] put it. `false` when it was not mounted.
pub fn unmount_container(store: &Store, id: &str) -> Result<bool, MountError> {
    let paths = store.container_paths(id)?;
    let mp = paths.dir.join(MOUNTPOINT_FILE);
    let mut targets = vec![paths.merged.clone()];
    if let Ok(t) = fs::read(&mp) {
        let t = PathBuf::from(std::ffi::OsStr::from_bytes(&t));
        if t != paths.merged {
            targets.insert(0, t);
        }
    }
    let mut any = false;
    for t in &targets {
        // Only real mount points: never detach whatever happens to be mounted above them.
        if is_mounted(t).unwrap_or(false) {
            any |= unmount(t)?;
        }
    }
    match fs::remove_file(&mp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &mp)(e)),
        _ => {}
    }
    Ok(any)
}

/// Unmount, then either keep the container (record and upper; work emptied, so it can be
/// mounted again with its changes) or delete it with its upper and work.
pub fn teardown(store: &Store, id: &str, keep_upper: bool) -> Result<(), MountError> {
    unmount_container(store, id)?;
    if keep_upper {
        store.reset_work(id)?;
    } else {
        store.remove_container(id)?;
    }
    Ok(())
}

/// Whether `path` is a mount point in this mount namespace (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    let p = match fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        r => r?,
    };
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == p))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                let v = o.iter().fold(0u16, |acc, c| acc * 8 + u16::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c\011d"), "/a b\\c\td");
        assert_eq!(unescape_mountinfo(r"/plain\09"), r"/plain\09");
    }

    #[test]
    fn legacy_options_format() {
        let l = vec!["l/A".to_string(), "l/B".to_string()];
        assert_eq!(
            legacy_options(&l, "containers/c/upper", "containers/c/work", true),
            "lowerdir=l/A:l/B,upperdir=containers/c/upper,workdir=containers/c/work,index=off"
        );
        assert!(!legacy_options(&l, "u", "w", false).contains("index"));
    }
}
