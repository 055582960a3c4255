//! Connection-oriented channels on a region: [`listen`] / [`connect`], then framed messages
//! both ways through [`Sender`] and [`Receiver`] (or a [`Channel`] holding both).
//!
//! A region carries one connection at a time: one listener and one connector. After both have
//! closed (or died), a new `listen` resets the rings and accepts again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::{self, word_alive, Header, RING_C2L, RING_L2C, WORD_CLOSED};
use crate::liveness::{Liveness, LivenessError};
use crate::region::{Region, RegionError};
use crate::ring::{Consumer, Frame, Producer, Reserved, RingError, RingRef};
use crate::sys;

/// Where channel names are looked up inside a container (the runtime mounts regions there).
pub const DEFAULT_DIR: &str = "/dev/rcrun-shm";
/// Overrides [`DEFAULT_DIR`].
pub const DIR_ENV: &str = "RCRUN_SHM_DIR";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    Liveness(#[from] LivenessError),
    #[error("channel {0}: {1}")]
    Ring(String, RingError),
    #[error("channel name {0:?}: use letters, digits, '-', '_' and '.' (not first), or a path")]
    BadName(String),
    #[error("channel {0}: already has a live {1}")]
    Busy(String, &'static str),
    #[error("channel {0}: peer died")]
    PeerDied(String),
    #[error("channel {0}: peer closed the channel")]
    PeerClosed(String),
    #[error("channel {0}: timed out")]
    Timeout(String),
    #[error("channel {name}: message of {len} bytes is larger than a frame ({max} bytes); use send() to fragment")]
    TooLarge {
        name: String,
        len: usize,
        max: usize,
    },
}

/// How a blocked endpoint waits: spin for `spin`, then sleep on a futex. `Duration::ZERO`
/// sleeps at once; `Duration::MAX` never sleeps (a core per waiting side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub spin: Duration,
}

impl Default for WaitPolicy {
    /// 20 us: long enough to catch a busy peer's reply, short enough that an idle channel
    /// sleeps almost at once.
    fn default() -> Self {
        WaitPolicy {
            spin: Duration::from_micros(20),
        }
    }
}

/// Options of [`listen_with`] / [`connect_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub wait: WaitPolicy,
    /// How long listen waits for a connector / connect for a listener (`None`: forever).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Listener,
    Connector,
}

/// What both halves share: the mapping, our liveness thread, and the peer's identity.
struct Endpoint {
    region: Region,
    name: String,
    role: Role,
    live: std::sync::Mutex<Option<Liveness>>,
    /// The peer word's value when the connection was made: any other value means it is gone.
    peer_val: u32,
}

impl Endpoint {
    fn hdr(&self) -> &Header {
        self.region.map.header()
    }
    fn words(hdr: &Header, role: Role) -> (&AtomicU32, &AtomicU32) {
        match role {
            Role::Listener => (&hdr.listener, &hdr.connector),
            Role::Connector => (&hdr.connector, &hdr.listener),
        }
    }
    fn peer_word(&self) -> &AtomicU32 {
        Self::words(self.hdr(), self.role).1
    }
    /// Ok while the peer is connected; the reason otherwise.
    fn check_peer(&self) -> Result<u32, Error> {
        let v = self.peer_word().load(Ordering::Acquire);
        if v == self.peer_val {
            return Ok(v);
        }
        // The kernel wakes one sleeper on death: pass it on to our other threads.
        sys::futex_wake(self.peer_word(), i32::MAX);
        Err(if v & layout::TID_MASK == WORD_CLOSED {
            Error::PeerClosed(self.name.clone())
        } else {
            Error::PeerDied(self.name.clone())
        })
    }
    fn ring(&self, idx: usize) -> RingRef {
        RingRef {
            ctl: &self.hdr().rings[idx],
            data: self.region.data(idx),
            cap: self.region.ring_cap,
        }
    }

    /// Spin, then sleep, until `ready` (or the peer goes, or the deadline passes).
    /// `flag`/`seq`: our sleeping flag and the sequence the other side bumps for us.
    fn wait(
        &self,
        policy: WaitPolicy,
        deadline: Option<Instant>,
        words: (&AtomicU32, &AtomicU32),
        mut ready: impl FnMut() -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let (flag, seq) = words;
        let start = Instant::now();
        let mut i: u32 = 0;
        // Spin only when asked to: WaitPolicy { spin: ZERO } goes to sleep at once.
        while !policy.spin.is_zero() {
            if ready()? {
                return Ok(());
            }
            i = i.wrapping_add(1);
            if i & 63 == 0 {
                self.check_peer()?;
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Error::Timeout(self.name.clone()));
                }
                if now.duration_since(start) >= policy.spin {
                    break;
                }
            }
            // PAUSE only every 16th poll: in a VM a tight PAUSE loop trips pause-loop
            // exiting and the host deschedules the spinning vCPU (measured here: 64 KiB
            // streaming between spinning peers 16-37 Gbit/s with PAUSE on every poll,
            // 76-128 Gbit/s like this; round trips unchanged).
            if i & 15 == 0 {
                std::hint::spin_loop();
            }
        }
        let r = self.sleep(deadline, flag, seq, &mut ready);
        flag.store(0, Ordering::SeqCst);
        r
    }

    fn sleep(
        &self,
        deadline: Option<Instant>,
        flag: &AtomicU32,
        seq: &AtomicU32,
        ready: &mut impl FnMut() -> Result<bool, Error>,
    ) -> Result<(), Error> {
        loop {
            // Sequence first, then arm: the waker clears the flag before it bumps the
            // sequence, so a flag cleared after we armed it always comes with a sequence
            // that differs from `s` (the wait returns at once and we re-arm).
            let s = seq.load(Ordering::SeqCst);
            flag.store(1, Ordering::SeqCst);
            if ready()? {
                return Ok(());
            }
            let pv = self.check_peer()?;
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Err(Error::Timeout(self.name.clone())),
                },
                None => None,
            };
            // Sleep on our sequence and on the peer's word: its death (the kernel's robust
            // futex handling) or close wakes us as data would.
            if !sys::futex_wait2((seq, s), (self.peer_word(), pv), left) {
                // No futex_waitv (Linux < 5.16): re-check the peer every 50 ms.
                let cap = Duration::from_millis(50);
                sys::futex_wait(seq, s, Some(left.map_or(cap, |l| l.min(cap))));
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let (mine, _) = Self::words(self.hdr(), self.role);
        mine.store(WORD_CLOSED, Ordering::SeqCst);
        sys::futex_wake(mine, i32::MAX);
        if let Ok(mut l) = self.live.lock() {
            if let Some(mut l) = l.take() {
                l.stop();
            }
        }
    }
}

/// The sending half.
pub struct Sender {
    ep: Arc<Endpoint>,
    prod: Producer,
    pub wait: WaitPolicy,
}

/// The receiving half.
pub struct Receiver {
    ep: Arc<Endpoint>,
    cons: Consumer,
    pub wait: WaitPolicy,
}

/// Both halves of one endpoint.
pub struct Channel {
    pub tx: Sender,
    pub rx: Receiver,
}

/// A reserved frame being written in place; [`SendBuf::commit`] publishes it, dropping it
/// publishes nothing.
pub struct SendBuf<'a> {
    tx: &'a mut Sender,
    r: Reserved,
}

/// A received frame read in place; dropping it releases the space. The bytes are in memory
/// the peer can write: a hostile peer can change them while you read (copy before you check).
pub struct RecvBuf<'a> {
    rx: &'a mut Receiver,
    f: Frame,
}

impl Sender {
    /// Largest message [`Sender::reserve`] can take (half the ring, minus the frame header).
    pub fn max_frame(&self) -> usize {
        self.prod.ring.max_frame()
    }

    fn reserve_until(&mut self, len: usize, deadline: Option<Instant>) -> Result<Reserved, Error> {
        if !self.prod.fits(len) {
            return Err(Error::TooLarge {
                name: self.ep.name.clone(),
                len,
                max: self.max_frame(),
            });
        }
        self.ep.check_peer()?;
        let name = &self.ep.name;
        let ring_err = |e| Error::Ring(name.clone(), e);
        if let Some(r) = self.prod.try_reserve(len).map_err(ring_err)? {
            return Ok(r);
        }
        let prod = &mut self.prod;
        let words = {
            let (f, s) = prod.sleep_words();
            // Raw pointers: the closure below borrows `prod` mutably while we wait on these.
            (f as *const AtomicU32, s as *const AtomicU32)
        };
        // SAFETY: both words are in the endpoint's mapping, alive as long as `self.ep`.
        let words = unsafe { (&*words.0, &*words.1) };
        self.ep.wait(self.wait, deadline, words, || {
            prod.has_room(len).map_err(|e| Error::Ring(name.clone(), e))
        })?;
        match self.prod.try_reserve(len).map_err(ring_err)? {
            Some(r) => Ok(r),
            None => Err(Error::Ring(
                name.clone(),
                RingError::Corrupt("room vanished".into()),
            )),
        }
    }

    /// Reserve `len` bytes in the ring to write a message in place (waits for room).
    pub fn reserve(&mut self, len: usize) -> Result<SendBuf<'_>, Error> {
        let r = self.reserve_until(len, None)?;
        Ok(SendBuf { tx: self, r })
    }

    /// Send one message of any size: copied into the ring, in fragments when larger than
    /// [`Sender::max_frame`] (the receiver's [`Receiver::recv`] reassembles it).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        self.send_until(msg, None)
    }

    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), Error> {
        self.send_until(msg, Instant::now().checked_add(timeout))
    }

    fn send_until(&mut self, msg: &[u8], deadline: Option<Instant>) -> Result<(), Error> {
        let max = self.max_frame();
        let mut rest = msg;
        loop {
            let n = rest.len().min(max);
            let r = self.reserve_until(n, deadline)?;
            // SAFETY: the reservation has room for n bytes; source and ring do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), self.prod.payload(&r), n) };
            let more = n < rest.len();
            self.prod.commit(r, n, more);
            rest = &rest[n..];
            if !more {
                return Ok(());
            }
        }
    }
}

/// Raw reserve/commit and peek/release for the C ABI, which cannot hold a borrow across calls.
impl Sender {
    pub(crate) fn reserve_raw(&mut self, len: usize) -> Result<(*mut u8, Reserved), Error> {
        let r = self.reserve_until(len, None)?;
        Ok((self.prod.payload(&r), r))
    }
    pub(crate) fn commit_raw(&mut self, r: Reserved, len: usize) {
        self.prod.commit(r, len, false);
    }
}

impl Receiver {
    pub(crate) fn peek_raw(&mut self) -> Result<(*const u8, Frame), Error> {
        let f = self.next_until(None)?;
        Ok((self.cons.payload(&f), f))
    }
    pub(crate) fn release_raw(&mut self, f: Frame) {
        self.cons.release(f);
    }
}

impl std::ops::Deref for SendBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the reserved area is ours until commit or drop.
        unsafe { std::slice::from_raw_parts(self.tx.prod.payload(&self.r), self.r.max) }
    }
}

impl std::ops::DerefMut for SendBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; the consumer does not read unpublished bytes.
        unsafe { std::slice::from_raw_parts_mut(self.tx.prod.payload(&self.r), self.r.max) }
    }
}

impl SendBuf<'_> {
    /// Publish the first `len` bytes (at most what was reserved) as one message.
    pub fn commit(self, len: usize) {
        self.tx.prod.commit(self.r, len, false);
    }
}

impl Receiver {
    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Frame, Error> {
        let name = self.ep.name.clone();
        let ring_err = |e| Error::Ring(name.clone(), e);
        if let Some(f) = self.cons.peek().map_err(ring_err)? {
            return Ok(f);
        }
        let cons = &self.cons;
        let words = {
            let (f, s) = cons.sleep_words();
            (f as *const AtomicU32, s as *const AtomicU32)
        };
        // SAFETY: both words are in the endpoint's mapping, alive as long as `self.ep`.
        let words = unsafe { (&*words.0, &*words.1) };
        // Data that arrived before the peer left is still delivered: `ready` first.
        self.ep
            .wait(self.wait, deadline, words, || Ok(cons.has_data()))?;
        match self.cons.peek().map_err(ring_err)? {
            Some(f) => Ok(f),
            None => Err(Error::Ring(
                name.clone(),
                RingError::Corrupt("data vanished".into()),
            )),
        }
    }

    /// The next frame, read in place (a fragment of a larger message has `more()`).
    pub fn recv_ref(&mut self) -> Result<RecvBuf<'_>, Error> {
        let f = self.next_until(None)?;
        Ok(RecvBuf { rx: self, f })
    }

    /// The next whole message into `buf` (replacing its contents); returns its length.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        self.recv_until(buf, None)
    }

    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize, Error> {
        self.recv_until(buf, Instant::now().checked_add(timeout))
    }

    fn recv_until(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<usize, Error> {
        buf.clear();
        loop {
            let f = self.next_until(deadline)?;
            let p = self.cons.payload(&f);
            // SAFETY: peek checked that the frame lies inside the ring.
            buf.extend_from_slice(unsafe { std::slice::from_raw_parts(p, f.len) });
            self.cons.release(f);
            if !f.more {
                return Ok(buf.len());
            }
        }
    }
}

impl std::ops::Deref for RecvBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the frame stays unreleased (the producer will not reuse it) while we live.
        unsafe { std::slice::from_raw_parts(self.rx.cons.payload(&self.f), self.f.len) }
    }
}

impl RecvBuf<'_> {
    /// Whether this frame is a fragment with more of the message to come.
    pub fn more(&self) -> bool {
        self.f.more
    }
}

impl Drop for RecvBuf<'_> {
    fn drop(&mut self) {
        self.rx.cons.release(self.f);
    }
}

impl Channel {
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        self.tx.send(msg)
    }
    pub fn reserve(&mut self, len: usize) -> Result<SendBuf<'_>, Error> {
        self.tx.reserve(len)
    }
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        self.rx.recv(buf)
    }
    pub fn recv_ref(&mut self) -> Result<RecvBuf<'_>, Error> {
        self.rx.recv_ref()
    }
    pub fn set_wait(&mut self, w: WaitPolicy) {
        self.tx.wait = w;
        self.rx.wait = w;
    }
    pub fn max_frame(&self) -> usize {
        self.tx.max_frame()
    }
    /// Separate halves, for a sending and a receiving thread.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }
    /// The NUMA node the region was bound to at creation, if any.
    pub fn numa_node(&self) -> Option<u32> {
        // SAFETY: creator-written header field, read once.
        let n = unsafe {
            std::ptr::addr_of!((*(self.tx.ep.region.map.base() as *const Header)).numa_node)
                .read_volatile()
        };
        u32::try_from(n).ok()
    }
    /// The region file this channel maps.
    pub fn path(&self) -> &Path {
        &self.tx.ep.region.path
    }
}

/// A channel name to a path: a name is looked up in `$RCRUN_SHM_DIR` (default
/// `/dev/rcrun-shm`), anything with a '/' is a path.
pub fn resolve(name: &str) -> Result<PathBuf, Error> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if !valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let dir = std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    Ok(dir.join(name))
}

/// Channel names: 1..=64 of `[A-Za-z0-9_.-]`, not starting with '.'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Listen on a channel and wait for its connector.
pub fn listen(name: &str) -> Result<Channel, Error> {
    listen_with(name, &Options::default())
}

/// Connect to a channel, waiting for its listener.
pub fn connect(name: &str) -> Result<Channel, Error> {
    connect_with(name, &Options::default())
}

fn state(gen: u32, st: u32) -> u32 {
    (gen << 2) | st
}

/// Take our endpoint word: it must not hold a live endpoint.
fn claim(word: &AtomicU32, value: u32, name: &str, what: &'static str) -> Result<(), Error> {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        if word_alive(cur) {
            return Err(Error::Busy(name.to_string(), what));
        }
        match word.compare_exchange(cur, value, Ordering::SeqCst, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(v) => cur = v,
        }
    }
}

fn deadline_of(o: &Options) -> Option<Instant> {
    o.timeout.and_then(|t| Instant::now().checked_add(t))
}

fn left(deadline: Option<Instant>, name: &str) -> Result<Option<Duration>, Error> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(l) if !l.is_zero() => Ok(Some(l)),
            _ => Err(Error::Timeout(name.to_string())),
        },
    }
}

fn open(name: &str) -> Result<(Region, String), Error> {
    let path = resolve(name)?;
    let region = Region::open(&path)?;
    Ok((region, path.display().to_string()))
}

fn finish(
    region: Region,
    live: Liveness,
    name: String,
    role: Role,
    peer_val: u32,
    o: &Options,
) -> Channel {
    let ep = Arc::new(Endpoint {
        region,
        name,
        role,
        live: std::sync::Mutex::new(Some(live)),
        peer_val,
    });
    let (out, inn) = match role {
        Role::Listener => (RING_L2C, RING_C2L),
        Role::Connector => (RING_C2L, RING_L2C),
    };
    Channel {
        tx: Sender {
            prod: Producer::new(ep.ring(out)),
            ep: Arc::clone(&ep),
            wait: o.wait,
        },
        rx: Receiver {
            cons: Consumer::new(ep.ring(inn)),
            ep,
            wait: o.wait,
        },
    }
}

/// Mark our word closed (a listen or connect that failed half-way).
fn abandon(word: &AtomicU32) {
    word.store(WORD_CLOSED, Ordering::SeqCst);
    sys::futex_wake(word, i32::MAX);
}

pub fn listen_with(name: &str, o: &Options) -> Result<Channel, Error> {
    let _span = tracing::debug_span!("shm_listen", name).entered();
    let (region, name) = open(name)?;
    let deadline = deadline_of(o);
    let hdr = region.map.header();
    let live = Liveness::start(&hdr.listener)?;
    claim(&hdr.listener, live.value, &name, "listener")?;
    let r = (|| {
        // A connector of an earlier connection may still be attached until it notices that
        // its listener went away; give it a moment, then refuse.
        let until = Instant::now() + Duration::from_millis(200);
        while word_alive(hdr.connector.load(Ordering::Acquire)) {
            if Instant::now() >= until {
                return Err(Error::Busy(
                    name.clone(),
                    "connector (of an earlier connection)",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let gen = (hdr.conn_state.load(Ordering::Acquire) >> 2).wrapping_add(1);
        hdr.conn_state
            .store(state(gen, layout::ST_RESETTING), Ordering::SeqCst);
        crate::ring::reset(&hdr.rings[0]);
        crate::ring::reset(&hdr.rings[1]);
        let listening = state(gen, layout::ST_LISTENING);
        hdr.conn_state.store(listening, Ordering::SeqCst);
        sys::futex_wake(&hdr.conn_state, i32::MAX);
        loop {
            let cs = hdr.conn_state.load(Ordering::Acquire);
            if cs == state(gen, layout::ST_CONNECTED) {
                break;
            }
            if cs != listening {
                return Err(Error::Busy(name.clone(), "listener (took over the region)"));
            }
            let l = match left(deadline, &name) {
                Ok(l) => l,
                Err(e) => {
                    // Withdraw, unless a connector got in just now.
                    if hdr
                        .conn_state
                        .compare_exchange(
                            listening,
                            state(gen, layout::ST_IDLE),
                            Ordering::SeqCst,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        return Err(e);
                    }
                    continue;
                }
            };
            sys::futex_wait(&hdr.conn_state, listening, l);
        }
        // A connector that already left is reported by the first call that needs it, after
        // whatever it sent has been read.
        Ok(hdr.connector_val.load(Ordering::Acquire))
    })();
    match r {
        Ok(peer) => Ok(finish(region, live, name, Role::Listener, peer, o)),
        Err(e) => {
            abandon(&hdr.listener);
            Err(e)
        }
    }
}

pub fn connect_with(name: &str, o: &Options) -> Result<Channel, Error> {
    let _span = tracing::debug_span!("shm_connect", name).entered();
    let (region, name) = open(name)?;
    let deadline = deadline_of(o);
    let hdr = region.map.header();
    let live = Liveness::start(&hdr.connector)?;
    loop {
        let cs = hdr.conn_state.load(Ordering::Acquire);
        let lw = hdr.listener.load(Ordering::Acquire);
        if cs & 3 != layout::ST_LISTENING || !word_alive(lw) {
            let l = left(deadline, &name)?;
            // Wake on a state change and on the listener's word (its death or arrival).
            if !sys::futex_wait2((&hdr.conn_state, cs), (&hdr.listener, lw), l) {
                let cap = Duration::from_millis(50);
                sys::futex_wait(&hdr.conn_state, cs, Some(l.map_or(cap, |l| l.min(cap))));
            }
            continue;
        }
        claim(&hdr.connector, live.value, &name, "connector")?;
        hdr.connector_val.store(live.value, Ordering::SeqCst);
        let connected = (cs & !3) | layout::ST_CONNECTED;
        if hdr
            .conn_state
            .compare_exchange(cs, connected, Ordering::SeqCst, Ordering::Acquire)
            .is_err()
        {
            // The listener withdrew or restarted meanwhile: let go and look again.
            abandon(&hdr.connector);
            continue;
        }
        sys::futex_wake(&hdr.conn_state, i32::MAX);
        return Ok(finish(region, live, name, Role::Connector, lw, o));
    }
}
