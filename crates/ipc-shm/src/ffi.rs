//! The C ABI (`include/rcrun_shm.h`): opaque channel handles, negative error codes, and a
//! per-thread message for the last error. Every function is safe to call with NULL handles
//! (it fails with `RCRUN_SHM_EINVAL`).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;

use crate::channel::{self, Channel, Error, Options, WaitPolicy};
use crate::ring::{Frame, Reserved};

pub const RCRUN_SHM_OK: c_int = 0;
pub const RCRUN_SHM_EPEER_DIED: c_int = -1;
pub const RCRUN_SHM_EPEER_CLOSED: c_int = -2;
pub const RCRUN_SHM_ETIMEOUT: c_int = -3;
pub const RCRUN_SHM_ETOOBIG: c_int = -4;
pub const RCRUN_SHM_EINVAL: c_int = -5;
pub const RCRUN_SHM_EBUSY: c_int = -6;
pub const RCRUN_SHM_EIO: c_int = -7;
pub const RCRUN_SHM_ECORRUPT: c_int = -8;
pub const RCRUN_SHM_ESTATE: c_int = -9;

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = c);
}

fn code(e: &Error) -> c_int {
    set_last(&e.to_string());
    match e {
        Error::PeerDied(_) => RCRUN_SHM_EPEER_DIED,
        Error::PeerClosed(_) => RCRUN_SHM_EPEER_CLOSED,
        Error::Timeout(_) => RCRUN_SHM_ETIMEOUT,
        Error::TooLarge { .. } => RCRUN_SHM_ETOOBIG,
        Error::BadName(_) => RCRUN_SHM_EINVAL,
        Error::Busy(..) => RCRUN_SHM_EBUSY,
        Error::Ring(..) => RCRUN_SHM_ECORRUPT,
        Error::Region(_) | Error::Liveness(_) => RCRUN_SHM_EIO,
    }
}

fn einval(what: &str) -> c_int {
    set_last(what);
    RCRUN_SHM_EINVAL
}

/// An open channel plus the in-flight reservation / received frame of the two-call APIs.
pub struct RcrunShm {
    ch: Channel,
    reserved: Option<Reserved>,
    frame: Option<Frame>,
    buf: Vec<u8>,
}

fn options(spin_us: i64, timeout_ms: i64) -> Options {
    Options {
        wait: WaitPolicy {
            spin: if spin_us < 0 {
                Duration::MAX
            } else {
                Duration::from_micros(spin_us as u64)
            },
        },
        timeout: (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64)),
    }
}

/// # Safety
/// `name` must be NULL or a NUL-terminated string.
unsafe fn open(
    name: *const c_char,
    spin_us: i64,
    timeout_ms: i64,
    f: fn(&str, &Options) -> Result<Channel, Error>,
) -> *mut RcrunShm {
    if name.is_null() {
        einval("name is NULL");
        return std::ptr::null_mut();
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
        einval("name is not UTF-8");
        return std::ptr::null_mut();
    };
    match f(name, &options(spin_us, timeout_ms)) {
        Ok(ch) => Box::into_raw(Box::new(RcrunShm {
            ch,
            reserved: None,
            frame: None,
            buf: Vec::new(),
        })),
        Err(e) => {
            code(&e);
            std::ptr::null_mut()
        }
    }
}

/// Listen on `name` and wait for the connector. `spin_us`: spin before sleeping (-1: never
/// sleep); `timeout_ms`: -1 waits forever. NULL on error (see rcrun_shm_last_error).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_listen(
    name: *const c_char,
    spin_us: i64,
    timeout_ms: i64,
) -> *mut RcrunShm {
    // SAFETY: forwarded contract.
    unsafe { open(name, spin_us, timeout_ms, channel::listen_with) }
}

/// Connect to `name`, waiting for its listener. As rcrun_shm_listen.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_connect(
    name: *const c_char,
    spin_us: i64,
    timeout_ms: i64,
) -> *mut RcrunShm {
    // SAFETY: forwarded contract.
    unsafe { open(name, spin_us, timeout_ms, channel::connect_with) }
}

/// # Safety
/// `ch` must be NULL or a handle from listen/connect not yet closed, used by one thread at
/// a time.
unsafe fn handle<'a>(ch: *mut RcrunShm) -> Option<&'a mut RcrunShm> {
    // SAFETY: the caller's contract.
    unsafe { ch.as_mut() }
}

/// Send one message of any length (copied; fragmented above rcrun_shm_max_frame).
///
/// # Safety
/// `ch` as for every call; `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_send(
    ch: *mut RcrunShm,
    buf: *const c_void,
    len: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        return einval("channel is NULL");
    };
    if buf.is_null() && len > 0 {
        return einval("buf is NULL");
    }
    let msg: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees len readable bytes.
        unsafe { std::slice::from_raw_parts(buf.cast(), len) }
    };
    match h.ch.send(msg) {
        Ok(()) => RCRUN_SHM_OK,
        Err(e) => code(&e),
    }
}

/// Receive one whole message into `buf`; returns its length. A message longer than `cap`
/// is truncated to `cap` bytes (its full length is still returned, as with MSG_TRUNC).
///
/// # Safety
/// `ch` as for every call; `buf` points to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_recv(ch: *mut RcrunShm, buf: *mut c_void, cap: usize) -> isize {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        return einval("channel is NULL") as isize;
    };
    if h.frame.is_some() {
        set_last("a frame from rcrun_shm_recv_ref is not released");
        return RCRUN_SHM_ESTATE as isize;
    }
    let mut tmp = std::mem::take(&mut h.buf);
    let r = h.ch.recv(&mut tmp);
    let out = match r {
        Ok(n) => {
            if !buf.is_null() {
                // SAFETY: the caller guarantees cap writable bytes.
                unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), buf.cast(), n.min(cap)) };
            }
            n as isize
        }
        Err(e) => code(&e) as isize,
    };
    h.buf = tmp;
    out
}

/// Reserve `len` bytes in the ring for one message written in place; NULL on error.
/// Publish with rcrun_shm_commit.
///
/// # Safety
/// `ch` as for every call.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_reserve(ch: *mut RcrunShm, len: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        einval("channel is NULL");
        return std::ptr::null_mut();
    };
    if h.reserved.is_some() {
        set_last("a reservation is already open");
        return std::ptr::null_mut();
    }
    match h.ch.tx.reserve_raw(len) {
        Ok((p, r)) => {
            h.reserved = Some(r);
            p.cast()
        }
        Err(e) => {
            code(&e);
            std::ptr::null_mut()
        }
    }
}

/// Publish the first `len` bytes of the open reservation as one message.
///
/// # Safety
/// `ch` as for every call.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_commit(ch: *mut RcrunShm, len: usize) -> c_int {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        return einval("channel is NULL");
    };
    let Some(r) = h.reserved.take() else {
        set_last("no open reservation");
        return RCRUN_SHM_ESTATE;
    };
    if len > r.max {
        h.reserved = Some(r);
        set_last("commit longer than the reservation");
        return RCRUN_SHM_ETOOBIG;
    }
    h.ch.tx.commit_raw(r, len);
    RCRUN_SHM_OK
}

/// The next frame, in place: returns its bytes (valid until rcrun_shm_release), its length
/// in `*len` and in `*more` whether it is a fragment with more to come. NULL on error.
///
/// # Safety
/// `ch` as for every call; `len` and `more` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_recv_ref(
    ch: *mut RcrunShm,
    len: *mut usize,
    more: *mut c_int,
) -> *const c_void {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        einval("channel is NULL");
        return std::ptr::null();
    };
    if h.frame.is_some() {
        set_last("the previous frame is not released");
        return std::ptr::null();
    }
    match h.ch.rx.peek_raw() {
        Ok((p, f)) => {
            // SAFETY: out-pointers are NULL or writable (the caller's contract).
            unsafe {
                if let Some(l) = len.as_mut() {
                    *l = f.len;
                }
                if let Some(m) = more.as_mut() {
                    *m = c_int::from(f.more);
                }
            }
            h.frame = Some(f);
            p.cast()
        }
        Err(e) => {
            code(&e);
            std::ptr::null()
        }
    }
}

/// Release the frame of rcrun_shm_recv_ref.
///
/// # Safety
/// `ch` as for every call.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_release(ch: *mut RcrunShm) -> c_int {
    // SAFETY: the caller's contract.
    let Some(h) = (unsafe { handle(ch) }) else {
        return einval("channel is NULL");
    };
    match h.frame.take() {
        Some(f) => {
            h.ch.rx.release_raw(f);
            RCRUN_SHM_OK
        }
        None => {
            set_last("no frame to release");
            RCRUN_SHM_ESTATE
        }
    }
}

/// Largest message rcrun_shm_reserve takes.
///
/// # Safety
/// `ch` as for every call.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_max_frame(ch: *mut RcrunShm) -> usize {
    // SAFETY: the caller's contract.
    unsafe { handle(ch) }.map_or(0, |h| h.ch.max_frame())
}

/// Close the channel (the peer sees RCRUN_SHM_EPEER_CLOSED once it has read everything).
///
/// # Safety
/// `ch` NULL or a handle not yet closed; not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_close(ch: *mut RcrunShm) {
    if !ch.is_null() {
        // SAFETY: the handle came from Box::into_raw in open.
        drop(unsafe { Box::from_raw(ch) });
    }
}

/// Create a region file (host side; rcrun does this for annotated containers). `numa_node`
/// -1 for none; `mode` e.g. 0660.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn rcrun_shm_create_region(
    path: *const c_char,
    ring_size: u64,
    numa_node: c_int,
    mode: u32,
) -> c_int {
    if path.is_null() {
        return einval("path is NULL");
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let Ok(p) = unsafe { CStr::from_ptr(path) }.to_str() else {
        return einval("path is not UTF-8");
    };
    let spec = crate::region::RegionSpec {
        ring_cap: ring_size,
        numa_node: u32::try_from(numa_node).ok(),
        owner: None,
        mode,
    };
    match crate::region::create(std::path::Path::new(p), &spec) {
        Ok(()) => RCRUN_SHM_OK,
        Err(e) => {
            set_last(&e.to_string());
            RCRUN_SHM_EIO
        }
    }
}

/// The calling thread's last error message ("" if none); valid until its next failing call.
#[no_mangle]
pub extern "C" fn rcrun_shm_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}
