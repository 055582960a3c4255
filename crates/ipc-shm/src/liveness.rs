//! Peer-death detection across pid namespaces through the kernel's robust-futex list.
//!
//! Each endpoint runs one small thread that registers a robust list whose only entry is the
//! endpoint's word in the shared region, writes its tid there, and blocks. When the process
//! dies (SIGKILL included) the kernel walks that list: the word gets `FUTEX_OWNER_DIED` and,
//! since `FUTEX_WAITERS` is set, a sleeping peer is woken. tids are compared in the dying
//! task's own pid namespace, so this works between containers. No pid of the peer is needed,
//! and an idle endpoint costs nothing (no polling timer).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};

use crate::sys::{self, RobustList, RobustListHead};

#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("start the liveness thread: {0}")]
    Spawn(std::io::Error),
    #[error("set_robust_list: {0}")]
    Register(std::io::Error),
}

/// The word's address, sent to the thread (a raw pointer is not Send).
struct WordAddr(usize);

pub(crate) struct Liveness {
    stop: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The value the endpoint writes into its word: the thread's tid with FUTEX_WAITERS.
    pub value: u32,
}

impl Liveness {
    /// Start the thread for `word` (which must stay mapped until [`Liveness::stop`]).
    pub(crate) fn start(word: &AtomicU32) -> Result<Liveness, LivenessError> {
        let stop = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel::<Result<u32, std::io::Error>>();
        let addr = WordAddr(word.as_ptr() as usize);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rcrun-shm-live".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let addr = addr;
                let mut entry = RobustList {
                    next: std::ptr::null_mut(),
                };
                let entry_ptr: *mut RobustList = &mut entry;
                let mut head = RobustListHead {
                    list: RobustList { next: entry_ptr },
                    // The kernel finds the futex word at entry + futex_offset: the word lives
                    // in the shared mapping, the entry on this thread's stack.
                    futex_offset: (addr.0 as isize).wrapping_sub(entry_ptr as isize)
                        as libc::c_long,
                    list_op_pending: std::ptr::null_mut(),
                };
                let head_ptr: *mut RobustListHead = &mut head;
                // SAFETY: the list is circular: the entry points back to the head.
                unsafe { (*entry_ptr).next = std::ptr::addr_of_mut!((*head_ptr).list) };
                if let Err(e) = sys::set_robust_list(head_ptr) {
                    let _ = tx.send(Err(e));
                    return;
                }
                let _ = tx.send(Ok(sys::gettid()));
                while stop2.load(Ordering::Acquire) == 0 {
                    sys::futex_wait(&stop2, 0, None);
                }
                // Unregister before the stack frame holding the list goes away; the word no
                // longer holds our tid by now, so the list would be ignored anyway.
                // SAFETY: the head stays valid for the duration of the call; empty list.
                unsafe { (*head_ptr).list.next = std::ptr::addr_of_mut!((*head_ptr).list) };
                let _ = sys::set_robust_list(head_ptr);
            })
            .map_err(LivenessError::Spawn)?;
        match rx.recv() {
            Ok(Ok(tid)) => Ok(Liveness {
                stop,
                thread: Some(thread),
                value: (tid & crate::layout::TID_MASK) | crate::layout::WAITERS,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(LivenessError::Register(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(LivenessError::Spawn(std::io::Error::other(
                    "liveness thread exited early",
                )))
            }
        }
    }

    /// Stop and join the thread (after the endpoint marked its word closed).
    pub(crate) fn stop(&mut self) {
        self.stop.store(1, Ordering::Release);
        sys::futex_wake(&self.stop, 1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.stop();
    }
}
