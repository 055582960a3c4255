//! Shared-memory channels between containers: a region file (tmpfs or hugetlbfs, optionally
//! bound to a NUMA node) mapped by both sides, one lock-free single-producer single-consumer
//! ring per direction, framed messages, zero-copy reserve/commit, spin-then-futex waiting and
//! peer-death detection through robust futexes.
//!
//! - [`region`]: create (runtime side) and map a region file.
//! - [`channel`]: [`listen`] / [`connect`], [`Channel`], [`Sender`], [`Receiver`].
//! - [`ring`], [`layout`]: the shared data structures; [`liveness`]: the death watch.
//! - [`size`]: "64MiB"-style sizes; [`ffi`]: the C ABI (`include/rcrun_shm.h`).

pub mod channel;
pub mod ffi;
pub mod layout;
pub mod liveness;
pub mod region;
pub mod ring;
pub mod size;
mod sys;

pub use channel::{
    connect, connect_with, listen, listen_with, resolve, valid_name, Channel, Error, Options,
    Receiver, RecvBuf, SendBuf, Sender, WaitPolicy, DEFAULT_DIR, DIR_ENV,
};
pub use region::{create as create_region, RegionError, RegionSpec};
