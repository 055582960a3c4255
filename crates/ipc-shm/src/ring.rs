//! One direction of a channel: a single-producer single-consumer byte ring of frames.
//!
//! Positions are monotonic u64 byte counts (`offset = pos & (cap - 1)`). A frame is an 8-byte
//! header (u32 length, u32 flags) and the payload padded to 8 bytes; a frame never wraps: when
//! it does not fit before the end, a PAD frame fills the rest and the frame starts at 0. So a
//! reserved frame is one contiguous slice (zero-copy reserve/commit) and the largest frame is
//! half the ring.
//!
//! The peer is another container and is not trusted: every position and length read from the
//! shared lines is checked, and an impossible one is [`RingError::Corrupt`], never a wild
//! access.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::layout::{align8, RingCtl, FLAG_MORE, FLAG_PAD, FRAME_HDR};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("ring corrupted by the peer: {0}")]
    Corrupt(String),
}

/// Shared words of one ring plus the local view of its geometry.
pub(crate) struct RingRef {
    pub ctl: *const RingCtl,
    pub data: *mut u8,
    pub cap: u64,
}

// SAFETY: points into a mapping kept alive by the owning endpoint (an Arc).
unsafe impl Send for RingRef {}

impl RingRef {
    pub(crate) fn ctl(&self) -> &RingCtl {
        // SAFETY: the ctl block is inside the header of a live mapping.
        unsafe { &*self.ctl }
    }
    fn mask(&self) -> u64 {
        self.cap - 1
    }
    /// Largest payload of one frame.
    pub(crate) fn max_frame(&self) -> usize {
        (self.cap / 2 - FRAME_HDR) as usize
    }
    fn write_hdr(&self, off: u64, len: u32, flags: u32) {
        // SAFETY: off is 8-aligned and off + 8 <= cap (callers check).
        unsafe {
            let p = self.data.add(off as usize);
            std::ptr::write_volatile(p as *mut u32, len);
            std::ptr::write_volatile(p.add(4) as *mut u32, flags);
        }
    }
    fn read_hdr(&self, off: u64) -> (u32, u32) {
        // SAFETY: as above.
        unsafe {
            let p = self.data.add(off as usize);
            (
                std::ptr::read_volatile(p as *const u32),
                std::ptr::read_volatile(p.add(4) as *const u32),
            )
        }
    }
}

/// The producer's private state.
pub(crate) struct Producer {
    pub ring: RingRef,
    head: u64,
    tail_cache: u64,
}

/// A reserved frame: payload at `off + 8`, `pad` bytes of filler before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserved {
    pub off: u64,
    pub pad: u64,
    pub max: usize,
}

impl Producer {
    pub(crate) fn new(ring: RingRef) -> Producer {
        Producer {
            ring,
            head: 0,
            tail_cache: 0,
        }
    }

    /// Bytes needed for a frame of `len` at the current head (filler included).
    fn needed(&self, len: usize) -> (u64, u64) {
        let need = align8(FRAME_HDR + len as u64);
        let off = self.head & self.ring.mask();
        let till_end = self.ring.cap - off;
        if need <= till_end {
            (0, need)
        } else {
            (till_end, till_end + need)
        }
    }

    fn refresh_tail(&mut self) -> Result<(), RingError> {
        // SeqCst: with the flag store before it, the sleeping producer's half of the
        // store-then-load handshake (see commit/release).
        let t = self.ring.ctl().cons.tail.load(Ordering::SeqCst);
        if t > self.head || self.head - t > self.ring.cap || t < self.tail_cache {
            return Err(RingError::Corrupt(format!(
                "consumer position {t} outside [{}, {}]",
                self.tail_cache, self.head
            )));
        }
        self.tail_cache = t;
        Ok(())
    }

    /// Reserve a frame of up to `len` bytes if there is room now (None: ring too full).
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<Reserved>, RingError> {
        let (pad, total) = self.needed(len);
        if self.ring.cap - (self.head - self.tail_cache) < total {
            self.refresh_tail()?;
            if self.ring.cap - (self.head - self.tail_cache) < total {
                return Ok(None);
            }
        }
        let off = self.head & self.ring.mask();
        if pad > 0 {
            self.ring.write_hdr(off, (pad - FRAME_HDR) as u32, FLAG_PAD);
        }
        Ok(Some(Reserved {
            off: (self.head + pad) & self.ring.mask(),
            pad,
            max: len,
        }))
    }

    pub(crate) fn payload(&self, r: &Reserved) -> *mut u8 {
        // SAFETY: off + 8 + max <= cap by construction of the reservation.
        unsafe { self.ring.data.add((r.off + FRAME_HDR) as usize) }
    }

    /// Publish a reserved frame with `len <= r.max` bytes.
    pub(crate) fn commit(&mut self, r: Reserved, len: usize, more: bool) {
        let len = len.min(r.max);
        self.ring
            .write_hdr(r.off, len as u32, if more { FLAG_MORE } else { 0 });
        self.head += r.pad + align8(FRAME_HDR + len as u64);
        let p = &self.ring.ctl().prod;
        // SeqCst store then SeqCst load of the sleeping flag: with the consumer's SeqCst
        // flag store then head load, one of us sees the other (no lost wake-up).
        p.head.store(self.head, Ordering::SeqCst);
        let sleeping = &self.ring.ctl().consumer_sleeping.sleeping;
        // The waker clears the flag: until the sleeper is back on its feet (tens of us in a
        // VM) later publishes must not pay a futex_wake each. The sleeper re-arms it.
        if sleeping.load(Ordering::SeqCst) != 0 && sleeping.swap(0, Ordering::SeqCst) != 0 {
            p.data_seq.fetch_add(1, Ordering::SeqCst);
            crate::sys::futex_wake(&p.data_seq, i32::MAX);
        }
    }

    /// Whether `len` could ever fit (at most half the ring).
    pub(crate) fn fits(&self, len: usize) -> bool {
        len <= self.ring.max_frame()
    }

    /// The words a full producer sleeps on: its flag and the consumer's sequence.
    pub(crate) fn sleep_words(&self) -> (&AtomicU32, &AtomicU32) {
        let c = self.ring.ctl();
        (&c.producer_sleeping.sleeping, &c.cons.space_seq)
    }

    /// Whether a frame of `len` fits now (re-reads the consumer position).
    pub(crate) fn has_room(&mut self, len: usize) -> Result<bool, RingError> {
        self.refresh_tail()?;
        let (_, total) = self.needed(len);
        Ok(self.ring.cap - (self.head - self.tail_cache) >= total)
    }
}

/// A frame ready to read: payload at `off + 8`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub off: u64,
    pub len: usize,
    pub more: bool,
}

/// The consumer's private state.
pub(crate) struct Consumer {
    pub ring: RingRef,
    tail: u64,
    head_cache: u64,
}

impl Consumer {
    pub(crate) fn new(ring: RingRef) -> Consumer {
        Consumer {
            ring,
            tail: 0,
            head_cache: 0,
        }
    }

    fn head(&self) -> &AtomicU64 {
        &self.ring.ctl().prod.head
    }

    fn refresh_head(&mut self) -> Result<(), RingError> {
        let h = self.head().load(Ordering::Acquire);
        if h < self.tail || h - self.tail > self.ring.cap || h < self.head_cache {
            return Err(RingError::Corrupt(format!(
                "producer position {h} outside [{}, {}]",
                self.tail,
                self.tail + self.ring.cap
            )));
        }
        self.head_cache = h;
        Ok(())
    }

    /// Whether the producer published anything beyond what we consumed.
    pub(crate) fn has_data(&self) -> bool {
        self.head().load(Ordering::SeqCst) != self.tail
    }

    /// The next frame, skipping filler; None when the ring is empty.
    pub(crate) fn peek(&mut self) -> Result<Option<Frame>, RingError> {
        loop {
            if self.tail == self.head_cache {
                self.refresh_head()?;
                if self.tail == self.head_cache {
                    return Ok(None);
                }
            }
            let off = self.tail & self.ring.mask();
            if self.ring.cap - off < FRAME_HDR {
                return Err(RingError::Corrupt(format!("frame at offset {off}")));
            }
            let (len, flags) = self.ring.read_hdr(off);
            let size = align8(FRAME_HDR + len as u64);
            if flags & FLAG_PAD != 0 {
                if off + size != self.ring.cap || self.tail + size > self.head_cache {
                    return Err(RingError::Corrupt(format!(
                        "filler of {len} bytes at offset {off}"
                    )));
                }
                self.tail += size;
                continue;
            }
            if off + size > self.ring.cap || self.tail + size > self.head_cache {
                return Err(RingError::Corrupt(format!(
                    "frame of {len} bytes at offset {off} overruns the ring"
                )));
            }
            return Ok(Some(Frame {
                off,
                len: len as usize,
                more: flags & FLAG_MORE != 0,
            }));
        }
    }

    pub(crate) fn payload(&self, f: &Frame) -> *const u8 {
        // SAFETY: checked by peek: off + 8 + len <= cap.
        unsafe { self.ring.data.add((f.off + FRAME_HDR) as usize) }
    }

    /// Release a frame returned by [`Consumer::peek`].
    pub(crate) fn release(&mut self, f: Frame) {
        self.tail += align8(FRAME_HDR + f.len as u64);
        let c = &self.ring.ctl().cons;
        c.tail.store(self.tail, Ordering::SeqCst);
        let sleeping = &self.ring.ctl().producer_sleeping.sleeping;
        // As in commit: the waker clears the flag, the sleeper re-arms it.
        if sleeping.load(Ordering::SeqCst) != 0 && sleeping.swap(0, Ordering::SeqCst) != 0 {
            c.space_seq.fetch_add(1, Ordering::SeqCst);
            crate::sys::futex_wake(&c.space_seq, i32::MAX);
        }
    }

    /// The words an empty consumer sleeps on: its flag and the producer's sequence.
    pub(crate) fn sleep_words(&self) -> (&AtomicU32, &AtomicU32) {
        let c = self.ring.ctl();
        (&c.consumer_sleeping.sleeping, &c.prod.data_seq)
    }
}

/// Zero a ring's shared words (the listener, before a new connection).
pub(crate) fn reset(ctl: &RingCtl) {
    ctl.prod.head.store(0, Ordering::Relaxed);
    ctl.prod.data_seq.store(0, Ordering::Relaxed);
    ctl.producer_sleeping.sleeping.store(0, Ordering::Relaxed);
    ctl.cons.tail.store(0, Ordering::Relaxed);
    ctl.cons.space_seq.store(0, Ordering::Relaxed);
    ctl.consumer_sleeping.sleeping.store(0, Ordering::Release);
}
