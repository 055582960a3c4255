//! The region's layout: one header page, then the two rings' data.
//!
//! ```text
//! 0      magic, version, sizes, NUMA node           (written once by the creator)
//! 64     listener word, connector word, conn_state  (endpoints' liveness, connection state)
//! 128    ring 0: producer line, consumer line, two sleeping-flag lines (listener -> connector)
//! 640    ring 1: the same                                               (connector -> listener)
//! header_size              ring 0 data (ring_cap bytes)
//! header_size + ring_cap   ring 1 data (ring_cap bytes)
//! ```
//!
//! Each line is 128 bytes so that the producer's and the consumer's hot words never share a
//! cache line (nor an adjacent-line prefetch pair).

use std::sync::atomic::{AtomicU32, AtomicU64};

/// "RCRUNSHM", written last by the creator (with Release): a reader that sees it sees the rest.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RCRUNSHM");
pub const VERSION: u32 = 2;
/// Smallest header; hugetlbfs regions round it up to the huge page size.
pub const MIN_HEADER: u64 = 4096;
pub const MIN_RING: u64 = 4096;
/// Message lengths travel in a u32 and positions are compared with `cap`: stay well inside.
pub const MAX_RING: u64 = 1 << 30;

/// Frame header: u32 length, u32 flags, then the payload, padded to 8 bytes.
pub const FRAME_HDR: u64 = 8;
/// A filler frame up to the end of the data area (the next frame starts at offset 0).
pub const FLAG_PAD: u32 = 1;
/// One fragment of a message larger than a frame; the last fragment lacks it.
pub const FLAG_MORE: u32 = 2;

/// Endpoint word values. An alive endpoint holds its liveness thread's tid with
/// `FUTEX_WAITERS` set, so that the kernel's robust-futex handling marks it
/// `FUTEX_OWNER_DIED` and wakes a sleeping peer when the process dies.
pub const WORD_EMPTY: u32 = 0;
pub const TID_MASK: u32 = libc::FUTEX_TID_MASK;
pub const WAITERS: u32 = libc::FUTEX_WAITERS;
pub const OWNER_DIED: u32 = libc::FUTEX_OWNER_DIED;
/// Closed cleanly: all tid bits set, a value no tid can take, so the kernel leaves it alone.
pub const WORD_CLOSED: u32 = TID_MASK;

/// Connection state, low 2 bits of `conn_state`; the rest is a generation bumped by each listen.
pub const ST_IDLE: u32 = 0;
pub const ST_LISTENING: u32 = 1;
pub const ST_CONNECTED: u32 = 2;
pub const ST_RESETTING: u32 = 3;

pub fn word_alive(w: u32) -> bool {
    let tid = w & TID_MASK;
    tid != 0 && tid != WORD_CLOSED && w & OWNER_DIED == 0
}

#[repr(C, align(128))]
pub struct ProducerLine {
    /// Bytes published by the producer (monotonic; offset = head % cap).
    pub head: AtomicU64,
    /// Bumped (then woken) when the producer publishes while the consumer sleeps.
    pub data_seq: AtomicU32,
}

#[repr(C, align(128))]
pub struct ConsumerLine {
    /// Bytes released by the consumer.
    pub tail: AtomicU64,
    /// Bumped (then woken) when the consumer frees space while the producer sleeps.
    pub space_seq: AtomicU32,
}

/// A sleeping flag on a line of its own: written only around a sleep, read on every
/// publish/release by the other side, so that read stays a cache hit.
#[repr(C, align(128))]
pub struct FlagLine {
    pub sleeping: AtomicU32,
}

#[repr(C)]
pub struct RingCtl {
    pub prod: ProducerLine,
    pub cons: ConsumerLine,
    pub producer_sleeping: FlagLine,
    pub consumer_sleeping: FlagLine,
}

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: u32,
    pub header_size: u32,
    pub ring_cap: u64,
    pub total_size: u64,
    /// The node the creator bound the region to, -1 for none (informational).
    pub numa_node: i32,
    pub _pad0: [u8; 28],
    pub listener: AtomicU32,
    pub connector: AtomicU32,
    pub conn_state: AtomicU32,
    /// The connector's word value of the current connection (the listener's peer identity,
    /// even if the connector is already gone when the listener wakes up).
    pub connector_val: AtomicU32,
    pub _pad1: [u8; 48],
    pub rings: [RingCtl; 2],
}

/// Ring 0 carries listener -> connector, ring 1 connector -> listener.
pub const RING_L2C: usize = 0;
pub const RING_C2L: usize = 1;

pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// The whole file's size for a ring capacity and header size.
pub fn total_size(header_size: u64, ring_cap: u64) -> u64 {
    header_size + 2 * ring_cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fits_in_the_smallest_header_page() {
        assert!(std::mem::size_of::<Header>() as u64 <= MIN_HEADER);
        assert_eq!(std::mem::offset_of!(Header, listener), 64);
        assert_eq!(std::mem::offset_of!(Header, rings), 128);
        assert_eq!(std::mem::size_of::<RingCtl>(), 512);
    }

    #[test]
    fn word_states() {
        assert!(word_alive(1234 | WAITERS));
        assert!(!word_alive(1234 | WAITERS | OWNER_DIED));
        assert!(!word_alive(WORD_CLOSED));
        assert!(!word_alive(WORD_EMPTY));
    }
}
