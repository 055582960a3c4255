//! CVE-2019-5736: nothing in a container may be able to overwrite the runtime's binary.
//!
//! The container's first process and every `exec`'d process are forks of the rcrun command
//! (no re-exec, see docs/architecture.md), so until their execve `/proc/PID/exe` is rcrun's
//! binary. Worse, a program that is a `#!/proc/self/exe` script makes the kernel run that binary
//! *inside* the container, as an ordinary dumpable process whose `/proc/PID/exe` any container
//! process can open and, once no process runs the binary any more (ETXTBSY until then), write
//! through. So the commands that start container processes (`create`, `run`, `exec`) first
//! re-execute themselves, once, from a read-only clone of their binary: a bind mount of the file
//! that belongs to no mount namespace (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(RDONLY)`).
//! Every path to it, `/proc/PID/exe` included, then refuses writes with EROFS, and nothing in a
//! container can make it writable again (a detached mount cannot be remounted or cloned). No
//! copy of the binary is made; where the clone is not allowed (no CAP_SYS_ADMIN in rootless
//! mode, kernels before 5.12) the binary is copied into a sealed memfd instead.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

#[derive(Debug, thiserror::Error)]
pub enum ExeSealError {
    #[error("protect the runtime binary against overwriting (CVE-2019-5736): {what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "protect the runtime binary against overwriting (CVE-2019-5736): re-executed from a \
         read-only copy, but /proc/self/exe is still writable"
    )]
    StillWritable,
    #[error(
        "protect the runtime binary against overwriting (CVE-2019-5736): {0:?} contains a NUL byte"
    )]
    Nul(OsString),
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> ExeSealError {
    move |source| ExeSealError::Sys { what, source }
}

/// Set in the environment of the re-executed command, so that a clone that somehow is not
/// read-only fails instead of re-executing forever. Removed again at once.
const MARKER: &str = "_RCRUN_SEALED_EXE";

// uapi/linux/mount.h, uapi/linux/memfd.h (libc lacks some of them on some targets).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MFD_EXEC: libc::c_uint = 0x10;

/// Returns when this process already runs from a binary that cannot be written through
/// `/proc/self/exe`; otherwise re-executes it (same argv, environment and descriptors) from a
/// read-only clone and does not return. Call it first thing, while single-threaded.
pub fn ensure_sealed() -> Result<(), ExeSealError> {
    let _span = tracing::debug_span!("seal_exe").entered();
    let reexecuted = std::env::var_os(MARKER).is_some();
    if reexecuted {
        // Single-threaded at this point; the variable must not reach hooks or containers.
        std::env::remove_var(MARKER);
    }
    if is_sealed()? {
        if reexecuted {
            restore_comm();
        }
        return Ok(());
    }
    if reexecuted {
        return Err(ExeSealError::StillWritable);
    }
    let exe = match read_only_clone() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("read-only clone of the binary refused ({e}); copying it to a memfd");
            sealed_memfd()?
        }
    };
    Err(reexec(&exe))
}

/// Whether `/proc/self/exe` refuses writes: it is on a read-only mount (our clone, or a
/// binary installed on a read-only filesystem), or a memfd sealed against writing.
pub fn is_sealed() -> Result<bool, ExeSealError> {
    let st = nix::sys::statvfs::statvfs("/proc/self/exe").map_err(|e| ExeSealError::Sys {
        what: "statvfs /proc/self/exe",
        source: e.into(),
    })?;
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Ok(true);
    }
    let f = std::fs::File::open("/proc/self/exe").map_err(sys("open /proc/self/exe"))?;
    // SAFETY: fcntl on a descriptor we own; EINVAL means "not a memfd".
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    Ok(seals > 0 && seals & libc::F_SEAL_WRITE != 0)
}

/// A bind mount of our binary that is in no mount namespace, made read-only; an O_PATH fd.
fn read_only_clone() -> Result<OwnedFd, std::io::Error> {
    // SAFETY: open_tree(2) with a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we are its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    crate::mounts::set_attrs_empty_path(fd.as_raw_fd(), crate::mounts::MOUNT_ATTR_RDONLY, 0)?;
    Ok(fd)
}

/// A copy of our binary in a memfd sealed against any change (rootless, old kernels).
fn sealed_memfd() -> Result<OwnedFd, ExeSealError> {
    let mut src = std::fs::File::open("/proc/self/exe").map_err(sys("open /proc/self/exe"))?;
    let create = |extra: libc::c_uint| {
        // SAFETY: memfd_create with a NUL-terminated name.
        unsafe {
            libc::memfd_create(
                c"rcrun".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra,
            )
        }
    };
    // MFD_EXEC keeps the memfd executable where vm.memfd_noexec defaults to noexec (6.3+);
    // older kernels do not know the flag.
    let mut raw = create(MFD_EXEC);
    if raw < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        raw = create(0);
    }
    if raw < 0 {
        return Err(sys("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor; we are its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(sys("copy the binary to a memfd"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(sys("seal the memfd copy")(std::io::Error::last_os_error()));
    }
    Ok(dst.into())
}

/// execveat(fd, "", argv, envp + MARKER, AT_EMPTY_PATH); returns only on failure.
fn reexec(exe: &OwnedFd) -> ExeSealError {
    let cstr = |s: OsString| CString::new(s.into_vec()).map_err(|e| e.into_vec());
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match cstr(a) {
            Ok(c) => args.push(c),
            Err(v) => return ExeSealError::Nul(OsString::from_vec(v)),
        }
    }
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        match cstr(kv) {
            Ok(c) => env.push(c),
            Err(v) => return ExeSealError::Nul(OsString::from_vec(v)),
        }
    }
    match CString::new(format!("{MARKER}=1")) {
        Ok(c) => env.push(c),
        Err(_) => return ExeSealError::Nul(MARKER.into()),
    }
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|c| c.as_ptr())
        .chain(Some(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated vectors of C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    sys("re-execute from the read-only copy")(std::io::Error::last_os_error())
}

/// Kernels before 6.13 name a process exec'd through a descriptor after the descriptor's
/// number; give it back the name `ps` and `pgrep` expect.
fn restore_comm() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let name = std::path::Path::new(&arg0)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}
