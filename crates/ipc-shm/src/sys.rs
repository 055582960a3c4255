//! Thin wrappers over the system calls the channel needs and libc does not wrap: futex,
//! futex_waitv, set_robust_list, mbind, set_mempolicy.
//!
//! The numeric constants that libc 0.2 lacks are kernel uapi values, identical on every
//! architecture (include/uapi/linux/futex.h, mempolicy.h).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// `FUTEX2_SIZE_U32` (futex_waitv flags): a 32-bit futex word, shared (no FUTEX2_PRIVATE).
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `MPOL_MF_STRICT` / `MPOL_MF_MOVE` (mbind flags).
pub const MPOL_MF_STRICT: u32 = 1 << 0;
pub const MPOL_MF_MOVE: u32 = 1 << 1;

/// `struct futex_waitv` of the futex_waitv(2) ABI.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `struct robust_list` / `struct robust_list_head` of set_robust_list(2).
#[repr(C)]
pub struct RobustList {
    pub next: *mut RobustList,
}

#[repr(C)]
pub struct RobustListHead {
    pub list: RobustList,
    pub futex_offset: libc::c_long,
    pub list_op_pending: *mut RobustList,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// FUTEX_WAIT on a word shared between processes (no FUTEX_PRIVATE_FLAG): returns when woken,
/// when the word no longer holds `val`, on a signal, or after `timeout`.
pub fn futex_wait(word: &AtomicU32, val: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the word is a live, aligned u32 in a mapping we hold; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// FUTEX_WAKE up to `n` waiters of a shared word.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: as above.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Sleep until either word changes from its expected value (futex_waitv, Linux 5.16+).
/// Returns false when the kernel lacks futex_waitv (the caller then falls back to a timed
/// FUTEX_WAIT on the first word).
pub fn futex_wait2(a: (&AtomicU32, u32), b: (&AtomicU32, u32), timeout: Option<Duration>) -> bool {
    let w = [
        FutexWaitv {
            val: a.1 as u64,
            uaddr: a.0.as_ptr() as usize as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        },
        FutexWaitv {
            val: b.1 as u64,
            uaddr: b.0.as_ptr() as usize as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        },
    ];
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let deadline = timeout.and_then(|d| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime fills the struct we pass.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return None;
        }
        let ns = now.tv_nsec as u64 + d.subsec_nanos() as u64;
        Some(libc::timespec {
            tv_sec: now
                .tv_sec
                .saturating_add(d.as_secs().min(i32::MAX as u64) as libc::time_t)
                .saturating_add((ns / 1_000_000_000) as libc::time_t),
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        })
    });
    let tsp = deadline
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: two valid futex_waitv entries pointing at live aligned words; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            w.as_ptr(),
            2u32,
            0u32,
            tsp,
            libc::CLOCK_MONOTONIC,
        )
    };
    !(rc < 0 && errno() == libc::ENOSYS)
}

pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Register the calling thread's robust futex list (the kernel walks it when the thread dies).
pub fn set_robust_list(head: *mut RobustListHead) -> std::io::Result<()> {
    // SAFETY: the head stays valid for as long as it is registered (the caller's contract).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_robust_list,
            head,
            std::mem::size_of::<RobustListHead>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A node mask with bit `node` set, in the unsigned-long words mbind/set_mempolicy take.
pub fn nodemask(nodes: &[u32]) -> Vec<libc::c_ulong> {
    let bits = libc::c_ulong::BITS;
    let max = nodes.iter().copied().max().unwrap_or(0);
    let mut mask = vec![0 as libc::c_ulong; (max / bits + 1) as usize];
    for n in nodes {
        mask[(n / bits) as usize] |= 1 << (n % bits);
    }
    mask
}

/// mbind(2) a range to `nodes` with `mode` (MPOL_BIND...).
///
/// # Safety
/// `addr..addr+len` must be a mapping the caller owns.
pub unsafe fn mbind(
    addr: *mut u8,
    len: usize,
    mode: i32,
    nodes: &[u32],
    flags: u32,
) -> std::io::Result<()> {
    let mask = nodemask(nodes);
    // maxnode counts bits; the kernel wants one more than the highest bit it may read.
    let maxnode = mask.len() as libc::c_ulong * libc::c_ulong::BITS as libc::c_ulong + 1;
    // SAFETY: the caller owns the range; the mask outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            mode,
            mask.as_ptr(),
            maxnode,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
