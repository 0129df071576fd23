//! Doors: per-connection atomic flags that let a connection into each ready queue at most once.
//!
//! A [`Door`] is a byte of [`Flags`], one per kind of readiness (`READ_READY`, `DEAL_READY`,
//! `SEND_READY`, ...) plus `CLOSING`. The rule (the door design, 门设计, of
//! docs/ARCHITECTURE.md#the-door-design; embassy's `STATE_RUN_QUEUED`,
//! embassy-executor/src/raw/state_atomics.rs `run_enqueue`/`run_dequeue`):
//!
//! 1. **First opener enqueues.** Whoever has news for a connection first records it (pushes the
//!    frame, marks the socket readable), then calls [`Door::open`]: a `fetch_or` of the flag.
//!    Only the caller that flips the flag from 0 to 1 gets `true` and enqueues the connection;
//!    everyone else knows it is already queued and that the consumer will see their news.
//! 2. **The consumer closes before it drains.** After taking the connection from the queue, the
//!    consumer clears the flag with [`Door::close`] and only then looks at the connection's state.
//!    News recorded after the clear re-opens the door and re-queues the connection; news recorded
//!    before it is seen by this drain.
//!
//! # Invariants ("never twice, never lost")
//!
//! - Only the opener that set a flag enqueues, and the flag stays set until the consumer has
//!   popped the connection. So while a flag is set its connection is in the matching queue at most
//!   once (being enqueued, queued, or popped and not yet closed), and a queue with one slot per
//!   connection can never be full. [`DoorQueue`] pairs a flag with an
//!   [`mpsc`](crate::queue::mpsc) queue and keeps this invariant by construction.
//! - News is never lost: if an opener's `fetch_or` comes after the consumer's clear, the opener
//!   wins and re-queues; if it comes before, the consumer's clear (an `Acquire` read-modify-write
//!   later in the flag's modification order) synchronises with the opener's `Release`, so the
//!   drain that follows sees the news.
//!
//! Both properties are checked by the loom model checker in `core/tests/loom_door.rs` over every
//! interleaving of two producers and a consumer.
//!
//! Doors need compare-and-swap class atomics (`fetch_or`), so this module exists only where the
//! target has them (`cfg(target_has_atomic = "32")`; not on `thumbv6m-none-eabi`) or the
//! `portable-atomic` feature supplies them.
//!
//! ```
//! use doorway_core::door::{Door, DoorQueue, Flags};
//! use doorway_core::queue::mpsc::Slot;
//! let doors: [Door; 2] = [Door::new(), Door::new()];
//! let ready = DoorQueue::new([Slot::new(), Slot::new()], Flags::READ_READY);
//! assert_eq!(ready.open(&doors[1], 1), Ok(true)); // first opener enqueues
//! assert_eq!(ready.open(&doors[1], 1), Ok(false)); // already queued
//! let mut rx = ready.consumer().unwrap();
//! assert_eq!(rx.dequeue(&doors), Some(1)); // closes READ_READY on door 1
//! assert_eq!(rx.dequeue(&doors), None);
//! assert_eq!(ready.open(&doors[1], 1), Ok(true)); // new news queues it again
//! ```

use crate::queue::mpsc::{self, Slot};
use crate::queue::Full;
use crate::sync::{AtomicU8, Ordering};

bitflags::bitflags! {
    /// The readiness flags of one connection.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Flags: u8 {
        /// Bytes are waiting in the socket (receive role).
        const READ_READY = 1 << 0;
        /// Frames are waiting in the connection's receive queue (deal role).
        const DEAL_READY = 1 << 1;
        /// Replies are waiting in the connection's send queue (send role).
        const SEND_READY = 1 << 2;
        /// The connection is being closed (monitor role).
        const CLOSING = 1 << 3;
        /// Free for a binding's own use.
        const SPARE_4 = 1 << 4;
        /// Free for a binding's own use.
        const SPARE_5 = 1 << 5;
        /// Free for a binding's own use.
        const SPARE_6 = 1 << 6;
        /// Free for a binding's own use.
        const SPARE_7 = 1 << 7;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Flags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Flags({=u8:#x})", self.bits())
    }
}

/// One connection's flags.
#[derive(Debug, Default)]
pub struct Door(AtomicU8);

impl Door {
    /// A door with every flag closed.
    pub fn new() -> Door {
        Door(AtomicU8::new(0))
    }

    /// Sets `flag`; `true` if this call set it (the caller must enqueue), `false` if it was
    /// already set (someone else enqueued, and the consumer will see what the caller recorded).
    /// Pass one flag; with several, `true` means at least one was newly set.
    #[inline]
    pub fn open(&self, flag: Flags) -> bool {
        // AcqRel. Release pairs with the Acquire of `close`: what the caller recorded before
        // opening is visible to the consumer that clears the flag after us. Acquire pairs with the
        // Release of `close`: the winner sees the previous drain's effects before re-queueing.
        let prev = self.0.fetch_or(flag.bits(), Ordering::AcqRel);
        prev & flag.bits() != flag.bits()
    }

    /// Clears `flag` (the consumer, before it drains); `true` if it was set.
    #[inline]
    pub fn close(&self, flag: Flags) -> bool {
        // AcqRel. Acquire pairs with the Release of every `open` before this clear in the flag's
        // modification order: their news is visible to the drain that follows. Release pairs with
        // the Acquire of the next winning `open`.
        let prev = self.0.fetch_and(!flag.bits(), Ordering::AcqRel);
        prev & flag.bits() != 0
    }

    /// The flags now set (a snapshot).
    pub fn flags(&self) -> Flags {
        // Acquire pairs with the Release of `open`: news behind a flag seen set is visible.
        Flags::from_bits_retain(self.0.load(Ordering::Acquire))
    }

    /// Whether `flag` is set (a snapshot).
    pub fn is_open(&self, flag: Flags) -> bool {
        self.flags().contains(flag)
    }

    /// Clears every flag, for a slot that gets a new connection. Only call it when no queue holds
    /// the slot's index any more.
    pub fn reset(&self) {
        // Release pairs with the Acquire of the next `open`.
        self.0.store(0, Ordering::Release);
    }
}

/// A ready queue of connection indexes guarded by one door flag.
///
/// Size it to the number of doors that feed it (the connection capacity) and [`open`](Self::open)
/// never fails: each index is in the queue at most once (module doc).
pub struct DoorQueue<S: AsRef<[Slot<u32>]>> {
    queue: mpsc::Queue<u32, S>,
    flag: Flags,
}

/// A door queue with inline storage for `N` connections.
pub type ArrayDoorQueue<const N: usize> = DoorQueue<[Slot<u32>; N]>;

impl<const N: usize> DoorQueue<[Slot<u32>; N]> {
    /// A door queue with inline storage.
    pub fn new_array(flag: Flags) -> Self {
        DoorQueue::new(core::array::from_fn(|_| Slot::new()), flag)
    }
}

#[cfg(feature = "std")]
impl DoorQueue<Box<[Slot<u32>]>> {
    /// A door queue with heap storage for `capacity` connections (host only).
    pub fn with_capacity(capacity: usize, flag: Flags) -> Self {
        DoorQueue { queue: mpsc::Queue::with_capacity(capacity), flag }
    }
}

impl<S: AsRef<[Slot<u32>]>> DoorQueue<S> {
    /// A door queue over `slots` for `flag`.
    pub fn new(slots: S, flag: Flags) -> Self {
        DoorQueue { queue: mpsc::Queue::new(slots), flag }
    }

    /// The flag this queue is for.
    pub fn flag(&self) -> Flags {
        self.flag
    }

    /// How many indexes fit.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// How many indexes are queued (a snapshot).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records readiness of connection `index` behind `door`: `Ok(true)` if this call queued it,
    /// `Ok(false)` if it was already queued. `Err(Full)` only when the queue is smaller than the
    /// number of doors feeding it (a sizing bug): the flag is closed again so a later `open`
    /// retries, and openers racing with this one may have their news delayed until then.
    #[inline]
    pub fn open(&self, door: &Door, index: u32) -> Result<bool, Full<u32>> {
        if !door.open(self.flag) {
            return Ok(false);
        }
        match self.queue.enqueue(index) {
            Ok(()) => Ok(true),
            Err(full) => {
                door.close(self.flag);
                Err(full)
            }
        }
    }

    /// Takes the consumer role, unless a [`DoorConsumer`] exists.
    pub fn consumer(&self) -> Option<DoorConsumer<'_, S>> {
        self.queue.consumer().map(|inner| DoorConsumer { inner, flag: self.flag })
    }
}

/// The consumer role of a [`DoorQueue`].
pub struct DoorConsumer<'a, S: AsRef<[Slot<u32>]>> {
    inner: mpsc::Consumer<'a, u32, S>,
    flag: Flags,
}

impl<S: AsRef<[Slot<u32>]>> DoorConsumer<'_, S> {
    /// Takes the next ready index and closes its flag on `doors[index]` (close before drain);
    /// drain the connection after this returns. An index outside `doors` is returned unclosed.
    #[inline]
    pub fn dequeue(&mut self, doors: &[Door]) -> Option<u32> {
        let index = self.inner.dequeue()?;
        if let Some(door) = doors.get(index as usize) {
            door.close(self.flag);
        }
        Some(index)
    }

    /// Like [`dequeue`](Self::dequeue) for doors that live elsewhere (say, inside connection
    /// state): `door_of` finds the door of an index.
    #[inline]
    pub fn dequeue_with<'d>(&mut self, door_of: impl FnOnce(u32) -> &'d Door) -> Option<u32> {
        let index = self.inner.dequeue()?;
        door_of(index).close(self.flag);
        Some(index)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn first_opener_wins_per_flag() {
        let door = Door::new();
        assert!(door.open(Flags::READ_READY));
        assert!(!door.open(Flags::READ_READY));
        assert!(door.open(Flags::SEND_READY), "flags are independent");
        assert_eq!(door.flags(), Flags::READ_READY | Flags::SEND_READY);
        assert!(door.close(Flags::READ_READY));
        assert!(!door.close(Flags::READ_READY));
        assert!(door.open(Flags::READ_READY));
        door.reset();
        assert_eq!(door.flags(), Flags::empty());
    }

    #[test]
    fn queue_sized_to_doors_never_full() {
        const CONNS: usize = 5;
        let doors: [Door; CONNS] = core::array::from_fn(|_| Door::new());
        let ready = ArrayDoorQueue::<CONNS>::new_array(Flags::DEAL_READY);
        let mut rx = ready.consumer().unwrap();
        // Every connection gets many events between drains; the queue never overflows and each
        // index comes out once per drain.
        for round in 0..20u32 {
            for event in 0..(3 * CONNS as u32) {
                let index = (event * 7 + round) % CONNS as u32;
                assert!(ready.open(&doors[index as usize], index).is_ok());
            }
            let mut seen = [false; CONNS];
            while let Some(index) = rx.dequeue(&doors) {
                assert!(!seen[index as usize], "index {index} queued twice");
                seen[index as usize] = true;
            }
            assert!(seen.iter().all(|s| *s));
            assert!(doors.iter().all(|d| !d.is_open(Flags::DEAL_READY)));
        }
    }

    #[test]
    fn undersized_queue_reports_full_and_recovers() {
        let doors = [Door::new(), Door::new()];
        let ready = ArrayDoorQueue::<1>::new_array(Flags::READ_READY);
        assert_eq!(ready.open(&doors[0], 0), Ok(true));
        assert_eq!(ready.open(&doors[1], 1), Err(Full(1)));
        assert!(!doors[1].is_open(Flags::READ_READY), "flag closed again so a later open retries");
        let mut rx = ready.consumer().unwrap();
        assert_eq!(rx.dequeue_with(|i| &doors[i as usize]), Some(0));
        assert_eq!(ready.open(&doors[1], 1), Ok(true));
    }
}
