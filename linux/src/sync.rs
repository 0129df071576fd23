//! Synchronisation: spin locks plus eventfd notification, as seed 000 prescribes.
//!
//! - [`Lock`]: a spin lock (`spin::SpinMutex`) that yields the CPU after a short spin, so a holder
//!   preempted on this 2-core box is not starved by a spinning waiter. Critical sections are a
//!   connection's role step or a queue swap: short, and never nested except by the deal role (see
//!   `shard.rs`, "Lock order").
//! - [`Waker`]: parks a role thread on an eventfd and wakes it once per batch, never per message.
//! - [`ReadyQueue`] and [`Doors`]: seed 000's door design, from `doorway_core::door`. A connection
//!   enters a ready queue only if it flips its door flag from 0 to 1; the consumer clears the flag
//!   when it takes the slot, before it looks at the connection, so a later event queues it again.
//!   A queue therefore holds each slot at most once and never exceeds the slot count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use doorway_core::door::{Door, DoorConsumer, DoorQueue, Flags};
use doorway_core::queue::mpsc::Slot;

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

/// A spin reader-writer lock, for state read by every shard and written rarely.
pub type RwLock<T> = spin::rwlock::RwLock<T, Backoff>;

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

/// Door flags of a slot: core's `doorway_core::door::Flags` under the roles' names.
pub mod door {
    use doorway_core::door::Flags;
    /// Queued for the receive role.
    pub const READ: Flags = Flags::READ_READY;
    /// Queued for the deal role.
    pub const DEAL: Flags = Flags::DEAL_READY;
    /// Queued for the send role.
    pub const SEND: Flags = Flags::SEND_READY;
    /// The send role met a full kernel buffer and waits for an EPOLLOUT edge.
    pub const WANT_WRITE: Flags = Flags::SPARE_4;
    /// The last readable edge said the peer may have shut down (read until EOF or EAGAIN).
    pub const RDHUP: Flags = Flags::SPARE_5;
}

/// The doors of every slot of a shard (`doorway_core::door::Door`, one byte each).
pub struct Doors {
    doors: Box<[Door]>,
}

impl Doors {
    /// `n` closed doors.
    pub fn new(n: usize) -> Doors {
        Doors { doors: (0..n).map(|_| Door::new()).collect() }
    }

    /// Sets `flag` on slot `idx`; true if this call set it.
    #[inline]
    pub fn enter(&self, idx: u32, flag: Flags) -> bool {
        self.doors[idx as usize].open(flag)
    }

    /// Clears `flag` on slot `idx`; true if it was set.
    #[inline]
    pub fn leave(&self, idx: u32, flag: Flags) -> bool {
        self.doors[idx as usize].close(flag)
    }

    /// All doors, indexed by slot.
    pub fn as_slice(&self) -> &[Door] {
        &self.doors
    }
}

/// The consumer role of a [`ReadyQueue`] (one per queue at a time).
pub type Consumer<'a> = DoorConsumer<'a, Box<[Slot<u32>]>>;

/// A ready queue of slot indices: core's door queue (lock-free, bounded, one consumer) plus the
/// consumer's waker and a high-water mark.
pub struct ReadyQueue {
    queue: DoorQueue<Box<[Slot<u32>]>>,
    waker: Arc<Waker>,
    high_water: AtomicUsize,
}

impl ReadyQueue {
    /// A queue for `flag` holding up to `capacity` indices (the slot count: never full).
    pub fn new(capacity: usize, flag: Flags, waker: Arc<Waker>) -> ReadyQueue {
        ReadyQueue { queue: DoorQueue::with_capacity(capacity, flag), waker, high_water: AtomicUsize::new(0) }
    }

    /// Opens the slot's door and queues it if this call opened it; true if queued.
    #[inline]
    pub fn open(&self, doors: &Doors, idx: u32) -> bool {
        match self.queue.open(&doors.as_slice()[idx as usize], idx) {
            Ok(queued) => queued,
            Err(_) => {
                // Cannot happen with one queue slot per door (core::door's invariant).
                log::error!("ready queue full (sizing bug); slot {idx} will be retried");
                false
            }
        }
    }

    /// Takes the consumer role.
    pub fn consumer(&self) -> Option<Consumer<'_>> {
        self.queue.consumer()
    }

    /// Moves the queued indices into `out` (cleared first), closing each door before its slot is
    /// looked at, and records the high-water mark.
    #[inline]
    pub fn drain_into(&self, consumer: &mut Consumer<'_>, doors: &Doors, out: &mut Vec<u32>) {
        out.clear();
        let limit = self.queue.capacity();
        while out.len() < limit {
            match consumer.dequeue(doors.as_slice()) {
                Some(idx) => out.push(idx),
                None => break,
            }
        }
        if out.len() > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(out.len(), Ordering::Relaxed);
        }
    }

    /// Whether nothing is queued (a snapshot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
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
        assert!(!doors.as_slice()[0].is_open(door::READ), "another slot's door stays shut");
    }

    #[test]
    fn queue_wakes_a_parked_consumer_once_per_slot() {
        let waker = Arc::new(Waker::new(true).unwrap());
        let doors = Arc::new(Doors::new(4));
        let q = Arc::new(ReadyQueue::new(4, door::READ, waker));
        let consumer = {
            let (q, doors) = (q.clone(), doors.clone());
            std::thread::spawn(move || {
                let mut rx = q.consumer().unwrap();
                let mut got = Vec::new();
                let mut out = Vec::new();
                while got.len() < 3 {
                    q.drain_into(&mut rx, &doors, &mut out);
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
            assert!(q.open(&doors, i));
            q.wake();
        }
        assert_eq!(consumer.join().unwrap(), vec![0, 1, 2]);
    }
}
