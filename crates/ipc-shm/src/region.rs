//! The region file: create it (the runtime, on the host), map it (each endpoint).
//!
//! A region is a plain file on tmpfs or hugetlbfs: named files survive checkpoint/restore
//! and can be bind-mounted into containers, which a memfd cannot.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::layout::{self, Header};
use crate::sys;

/// `HUGETLBFS_MAGIC` from statfs(2) (linux/magic.h).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("region {path}: {what}: {source}")]
    Sys {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("region {path}: ring size {size} is not a power of two between 4 KiB and 1 GiB")]
    RingSize { path: PathBuf, size: u64 },
    #[error("region {path}: not an rcrun shm region ({why})")]
    Invalid { path: PathBuf, why: String },
    #[error("region {path}: bind to NUMA node {node}: {source}")]
    Bind {
        path: PathBuf,
        node: u32,
        source: std::io::Error,
    },
}

/// What the creator decides about a region.
#[derive(Debug, Clone, Default)]
pub struct RegionSpec {
    /// Capacity of each direction's ring in bytes (power of two, 4 KiB .. 1 GiB).
    pub ring_cap: u64,
    /// Bind the pages to this node (mbind MPOL_BIND) and allocate them now.
    pub numa_node: Option<u32>,
    /// Owner of the file (host ids); `None` keeps the creator's.
    pub owner: Option<(u32, u32)>,
    /// Permission bits of the file.
    pub mode: u32,
}

pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed through atomics and raw copies only.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, path: &Path) -> Result<Mapping, RegionError> {
        // SAFETY: a fresh shared mapping of a file we hold open; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(sys_err(path, "mmap")(std::io::Error::last_os_error()));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr
    }
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least MIN_HEADER bytes (checked at open/create) and
        // page-aligned; Header is plain data and atomics.
        unsafe { &*(self.ptr as *const Header) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap gave us.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn sys_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> RegionError + 'a {
    move |source| RegionError::Sys {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn open_fd(path: &Path, flags: i32, mode: u32) -> Result<OwnedFd, RegionError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| RegionError::Invalid {
        path: path.to_path_buf(),
        why: "path contains a NUL byte".into(),
    })?;
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(sys_err(path, "open")(std::io::Error::last_os_error()));
    }
    // SAFETY: we own the new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Header size for the file system `fd` lives on: the huge page size on hugetlbfs.
fn header_size_for(fd: &OwnedFd, path: &Path) -> Result<u64, RegionError> {
    // SAFETY: fstatfs fills the zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(sys_err(path, "fstatfs")(std::io::Error::last_os_error()));
    }
    if st.f_type as i64 == HUGETLBFS_MAGIC {
        Ok((st.f_bsize as u64).max(layout::MIN_HEADER))
    } else {
        Ok(layout::MIN_HEADER)
    }
}

pub fn valid_ring_cap(cap: u64) -> bool {
    cap.is_power_of_two() && (layout::MIN_RING..=layout::MAX_RING).contains(&cap)
}

/// Create a region file at `path` (which must not exist), size it, bind and allocate its
/// pages on the requested node, and write its header. On failure the file is removed.
pub fn create(path: &Path, spec: &RegionSpec) -> Result<(), RegionError> {
    let _span = tracing::debug_span!("shm_region_create", path = %path.display()).entered();
    if !valid_ring_cap(spec.ring_cap) {
        return Err(RegionError::RingSize {
            path: path.to_path_buf(),
            size: spec.ring_cap,
        });
    }
    let fd = open_fd(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)?;
    let made = init(&fd, path, spec);
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

fn init(fd: &OwnedFd, path: &Path, spec: &RegionSpec) -> Result<(), RegionError> {
    let header_size = header_size_for(fd, path)?;
    let total = layout::total_size(header_size, spec.ring_cap);
    // SAFETY: plain syscalls on our descriptor.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), total as libc::off_t) } != 0 {
        return Err(sys_err(path, "ftruncate")(std::io::Error::last_os_error()));
    }
    let map = Mapping::new(fd, total as usize, path)?;
    if let Some(node) = spec.numa_node {
        // On tmpfs this sets the file's shared policy (every later fault, in any process,
        // allocates on the node); pages allocated now are moved.
        // SAFETY: the whole mapping is ours.
        unsafe {
            sys::mbind(
                map.base(),
                total as usize,
                libc::MPOL_BIND,
                &[node],
                sys::MPOL_MF_STRICT | sys::MPOL_MF_MOVE,
            )
        }
        .map_err(|source| RegionError::Bind {
            path: path.to_path_buf(),
            node,
            source,
        })?;
    }
    populate(&map, total as usize);
    let h = map.base();
    // SAFETY: writing the creator-owned header fields before the magic publishes them; the
    // mapping is fresh and at least header_size bytes.
    unsafe {
        let hdr = h as *mut Header;
        std::ptr::addr_of_mut!((*hdr).version).write(layout::VERSION);
        std::ptr::addr_of_mut!((*hdr).header_size).write(header_size as u32);
        std::ptr::addr_of_mut!((*hdr).ring_cap).write(spec.ring_cap);
        std::ptr::addr_of_mut!((*hdr).total_size).write(total);
        std::ptr::addr_of_mut!((*hdr).numa_node).write(spec.numa_node.map_or(-1, |n| n as i32));
    }
    map.header().magic.store(layout::MAGIC, Ordering::Release);
    if let Some((uid, gid)) = spec.owner {
        // SAFETY: fchown on our descriptor.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
            return Err(sys_err(path, "fchown")(std::io::Error::last_os_error()));
        }
    }
    // SAFETY: fchmod on our descriptor (after fchown, which may clear set-id bits).
    if unsafe { libc::fchmod(fd.as_raw_fd(), spec.mode as libc::mode_t) } != 0 {
        return Err(sys_err(path, "fchmod")(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Allocate every page now (on the bound node): MADV_POPULATE_WRITE (5.14+), else a write
/// per page.
fn populate(map: &Mapping, len: usize) {
    // SAFETY: madvise on our own mapping.
    let rc = unsafe { libc::madvise(map.base().cast(), len, libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        return;
    }
    let step = 4096;
    let mut off = 0;
    while off < len {
        // SAFETY: inside the mapping; the region is still private to its creator.
        unsafe { std::ptr::write_volatile(map.base().add(off), 0) };
        off += step;
    }
}

/// A mapped, validated region, with the values read once from its header (the peer can
/// write the header; these copies are what the endpoint trusts).
pub(crate) struct Region {
    pub map: Mapping,
    pub ring_cap: u64,
    pub header_size: u64,
    pub path: PathBuf,
}

impl Region {
    pub(crate) fn open(path: &Path) -> Result<Region, RegionError> {
        let fd = open_fd(path, libc::O_RDWR, 0)?;
        // SAFETY: fstat fills the zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(sys_err(path, "fstat")(std::io::Error::last_os_error()));
        }
        let size = st.st_size as u64;
        let invalid = |why: String| RegionError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        if size < layout::MIN_HEADER + 2 * layout::MIN_RING {
            return Err(invalid(format!("{size} bytes is too small")));
        }
        let map = Mapping::new(&fd, size as usize, path)?;
        let h = map.header();
        if h.magic.load(Ordering::Acquire) != layout::MAGIC {
            return Err(invalid("bad magic".into()));
        }
        // SAFETY: plain reads of header fields published before the magic.
        let (version, header_size, ring_cap, total) = unsafe {
            let p = map.base() as *const Header;
            (
                std::ptr::addr_of!((*p).version).read_volatile(),
                std::ptr::addr_of!((*p).header_size).read_volatile() as u64,
                std::ptr::addr_of!((*p).ring_cap).read_volatile(),
                std::ptr::addr_of!((*p).total_size).read_volatile(),
            )
        };
        if version != layout::VERSION {
            return Err(invalid(format!(
                "version {version}, expected {}",
                layout::VERSION
            )));
        }
        if header_size < layout::MIN_HEADER
            || !valid_ring_cap(ring_cap)
            || total != size
            || layout::total_size(header_size, ring_cap) != size
        {
            return Err(invalid(format!(
                "inconsistent sizes: header {header_size}, ring {ring_cap}, total {total}, file {size}"
            )));
        }
        Ok(Region {
            map,
            ring_cap,
            header_size,
            path: path.to_path_buf(),
        })
    }

    /// Start of a ring's data area.
    pub(crate) fn data(&self, ring: usize) -> *mut u8 {
        // SAFETY: within the validated mapping.
        unsafe {
            self.map
                .base()
                .add((self.header_size + ring as u64 * self.ring_cap) as usize)
        }
    }
}
