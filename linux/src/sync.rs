//! Synchronisation: spin locks plus eventfd notification, as seed 000 prescribes.
//!
//! - [`Lock`]: a spin lock (`spin::SpinMutex`) that yields the CPU after a short spin, so a holder
//!   preempted on this 2-core box is not starved by a spinning waiter. Critical sections are a
//!   connection's role step or a queue swap: short, and never nested except by the deal role (see
//!   `shard.rs`, "Lock order").
//! - [`Waker`]: parks a role thread on an eventfd and wakes it once per batch, never per message.
//! - [`ReadyQueue`] and [`Doors`]: seed 000's door design. A connection enters a ready queue only
//!   if it flips its door bit from 0 to 1; the consumer clears the bit before it processes the
//!   connection, so a later event queues it again. A queue therefore holds each slot at most once
//!   and never exceeds the slot count.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sys::eventfd::EventFd;

/// How a waiter for a [`Lock`] relaxes: spin a little, then yield the CPU.
pub struct Backoff;

impl spin::relax::RelaxStrategy for Backoff {
    #[inline]
    fn relax() {
        for _ in 0..32 {
            core::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}

/// The spin lock used everywhere in doorway-linux.
pub type Lock<T> = spin::mutex::SpinMutex<T, Backoff>;

/// Wakes a parked thread through an eventfd, at most once per park.
///
/// Protocol (the classic "sleeping flag" pairing): the parker stores `sleeping = true` (SeqCst),
/// re-checks its work sources, and only then blocks; a producer publishes work first, then swaps
/// `sleeping` to false (SeqCst) and notifies only if it was true. Both sides use SeqCst so that at
/// least one of them sees the other's write: either the parker sees the work, or the producer sees
/// the flag and writes the eventfd. A stale notification only costs one spurious wake-up.
pub struct Waker {
    fd: EventFd,
    sleeping: AtomicBool,
}

impl Waker {
    /// A waker; `blocking` for a thread that parks in `read`, non-blocking for one in epoll.
    pub fn new(blocking: bool) -> std::io::Result<Waker> {
        Ok(Waker { fd: EventFd::new(blocking)?, sleeping: AtomicBool::new(false) })
    }

    /// Wakes the owner if it is parked (or about to park).
    #[inline]
    pub fn wake(&self) {
        // SeqCst pairs with the SeqCst store in `prepare_park` (see the type's doc).
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.fd.notify();
        }
    }

    /// Wakes the owner unconditionally (stop requests).
    pub fn force_wake(&self) {
        self.fd.notify();
    }

    /// Announces that the owner is about to park. Re-check work after this, then park or cancel.
    #[inline]
    pub fn prepare_park(&self) {
        // SeqCst pairs with the swap in `wake`.
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// The owner found work after `prepare_park` or woke up.
    #[inline]
    pub fn cancel_park(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Blocks in `read` until notified (blocking wakers only), then clears the flag.
    pub fn park(&self) {
        self.fd.wait();
        self.cancel_park();
    }

    /// Consumes a pending notification without blocking (non-blocking wakers).
    pub fn drain(&self) {
        self.fd.wait();
    }

    /// The eventfd, for epoll registration.
    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.raw()
    }
}

/// A ready queue of slot indices, swapped out whole by its consumer.
pub struct ReadyQueue {
    items: Lock<Vec<u32>>,
    waker: Arc<Waker>,
    high_water: AtomicUsize,
}

impl ReadyQueue {
    /// A queue that can hold `capacity` indices without growing (the slot count).
    pub fn new(capacity: usize, waker: Arc<Waker>) -> ReadyQueue {
        ReadyQueue { items: Lock::new(Vec::with_capacity(capacity)), waker, high_water: AtomicUsize::new(0) }
    }

    /// Appends an index (the caller won its door).
    #[inline]
    pub fn push(&self, idx: u32) {
        self.items.lock().push(idx);
    }

    /// Moves every queued index into `out` (cleared first) and records the high-water mark.
    #[inline]
    pub fn drain_into(&self, out: &mut Vec<u32>) {
        out.clear();
        {
            let mut items = self.items.lock();
            if items.is_empty() {
                return;
            }
            std::mem::swap(&mut *items, out);
        }
        if out.len() > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(out.len(), Ordering::Relaxed);
        }
    }

    /// Whether anything is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.lock().is_empty()
    }

    /// Wakes the consumer (once per batch of pushes).
    #[inline]
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// The consumer's waker.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The most indices ever taken in one batch.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }
}

/// Door bits, one byte per slot.
pub mod door {
    /// Queued for the receive role.
    pub const READ: u8 = 1;
    /// Queued for the deal role.
    pub const DEAL: u8 = 2;
    /// Queued for the send role.
    pub const SEND: u8 = 4;
    /// The send role met a full kernel buffer and waits for an EPOLLOUT edge.
    pub const WANT_WRITE: u8 = 8;
    /// The last readable edge said the peer may have shut down (read until EOF or EAGAIN).
    pub const RDHUP: u8 = 16;
}

/// The per-slot door flags.
pub struct Doors {
    bits: Box<[AtomicU8]>,
}

impl Doors {
    /// `n` closed doors.
    pub fn new(n: usize) -> Doors {
        Doors { bits: (0..n).map(|_| AtomicU8::new(0)).collect() }
    }

    /// Sets `bit`; true if this call flipped it from 0 (the caller then enqueues).
    #[inline]
    pub fn enter(&self, idx: u32, bit: u8) -> bool {
        // AcqRel: the winner's enqueue happens after every earlier holder's `leave` (Release there),
        // so the consumer that cleared the bit has finished reading the state it covers.
        self.bits[idx as usize].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Clears `bit`; true if it was set.
    #[inline]
    pub fn leave(&self, idx: u32, bit: u8) -> bool {
        // AcqRel pairs with `enter`: see there.
        self.bits[idx as usize].fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Whether `bit` is set.
    #[inline]
    pub fn is_set(&self, idx: u32, bit: u8) -> bool {
        self.bits[idx as usize].load(Ordering::Acquire) & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_admits_once() {
        let doors = Doors::new(2);
        assert!(doors.enter(1, door::READ));
        assert!(!doors.enter(1, door::READ));
        assert!(doors.enter(1, door::SEND));
        assert!(doors.leave(1, door::READ));
        assert!(doors.enter(1, door::READ));
        assert!(!doors.is_set(0, door::READ));
    }

    #[test]
    fn queue_swaps_and_wakes_a_parked_thread() {
        let waker = Arc::new(Waker::new(true).unwrap());
        let q = Arc::new(ReadyQueue::new(4, waker.clone()));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut out = Vec::new();
                while got.len() < 3 {
                    q.drain_into(&mut out);
                    if out.is_empty() {
                        q.waker().prepare_park();
                        if q.is_empty() {
                            q.waker().park();
                        } else {
                            q.waker().cancel_park();
                        }
                    }
                    got.extend_from_slice(&out);
                }
                got
            })
        };
        for i in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            q.push(i);
            q.wake();
        }
        assert_eq!(consumer.join().unwrap(), vec![0, 1, 2]);
    }
}
