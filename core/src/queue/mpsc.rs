//! The ready queue: bounded, many producers, one consumer, inline or caller-provided storage.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue", 1024cores.net), specialised to one
//! consumer, with crossbeam's `ArrayQueue` encoding of positions (crossbeam-queue
//! src/array_queue.rs): a position is `lap | index`, where `index < capacity` and `lap` counts
//! wraps in units of `one_lap`, the smallest power of two above the capacity. Positions therefore
//! wrap cleanly at `usize::MAX` for any capacity, which matters on 32-bit devices.
//!
//! Every slot carries a `stamp`:
//!
//! - `stamp == pos`: the slot is free for the producer that claims position `pos`.
//! - `stamp == pos + 1`: the slot holds the value written at position `pos`, ready for the consumer.
//!
//! A producer loads `tail`, checks the slot's stamp, claims the position with a compare-and-swap
//! on `tail`, writes the value and publishes it by storing `stamp = pos + 1`. The single consumer
//! reads the slot at `head` when its stamp says ready, advances `head` (a plain store: only the
//! consumer touches `head`) and frees the slot for the next lap with `stamp = pos + one_lap`.
//!
//! # Never blocks
//!
//! Unlike crossbeam (and Vyukov's original) no side ever waits for another:
//!
//! - A producer retries only when its view of `tail` is stale, which means another producer made
//!   progress (lock-free). When the slot at `tail` still belongs to the previous lap (not yet
//!   consumed, or claimed by a producer that has not published yet), it answers [`Full`] instead
//!   of spinning, so an interrupt handler that preempts a producer or the consumer cannot deadlock.
//! - The consumer answers `None` when the slot at `head` is not published yet, even if later
//!   slots are; the value is delayed (until its producer, which wakes the consumer after
//!   publishing, resumes), never lost.
//!
//! With [`door`](crate::door)s in front, a connection is queued at most once, so a queue with one
//! slot per connection never reports `Full` (see the door module for the argument).
//!
//! # Who is the consumer
//!
//! [`Queue::consumer`] hands out the consumer role to one [`Consumer`] at a time (a flag taken with
//! compare-and-swap and released on drop), so the queue can be shared by reference, `Arc` or
//! `static` with no `&mut` needed, and the role can move between threads.
//!
//! ```
//! use doorway_core::queue::{mpsc::ArrayQueue, Full};
//! let queue: ArrayQueue<u32, 2> = ArrayQueue::new_array();
//! queue.enqueue(7).unwrap();
//! queue.enqueue(8).unwrap();
//! assert_eq!(queue.enqueue(9), Err(Full(9)));
//! let mut rx = queue.consumer().unwrap();
//! assert!(queue.consumer().is_none(), "one consumer at a time");
//! assert_eq!(rx.dequeue(), Some(7));
//! assert_eq!(rx.dequeue(), Some(8));
//! assert_eq!(rx.dequeue(), None);
//! ```

use super::{CachePadded, Full};
use crate::sync::{spin_loop, AtomicBool, AtomicUsize, Ordering, UnsafeCell};
use core::mem::MaybeUninit;

/// One storage slot. Build storage with [`Slot::new`] (or `Default`); [`Queue::new`] stamps it.
pub struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// An unstamped slot, for building storage.
    pub fn new() -> Slot<T> {
        Slot { stamp: AtomicUsize::new(0), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

/// A bounded multi-producer single-consumer queue over the slots in `S`.
pub struct Queue<T, S: AsRef<[Slot<T>]>> {
    /// Next position to claim; compare-and-swapped by producers.
    tail: CachePadded<AtomicUsize>,
    /// Next position to read; touched only by the current consumer.
    head: CachePadded<AtomicUsize>,
    /// Whether a [`Consumer`] exists.
    consumer_taken: AtomicBool,
    /// The smallest power of two greater than the capacity.
    one_lap: usize,
    slots: S,
    _marker: core::marker::PhantomData<T>,
}

// SAFETY: values move from producer threads to the consumer's (so `T: Send`); each slot's value is
// accessed by one party at a time, handed over through its stamp (module doc); the storage itself
// is only read through `&`.
unsafe impl<T: Send, S: AsRef<[Slot<T>]> + Send> Sync for Queue<T, S> {}

/// A queue with inline storage for `N` values.
pub type ArrayQueue<T, const N: usize> = Queue<T, [Slot<T>; N]>;

impl<T, const N: usize> Queue<T, [Slot<T>; N]> {
    /// An empty queue with inline storage.
    pub fn new_array() -> Self {
        Queue::new(core::array::from_fn(|_| Slot::new()))
    }
}

#[cfg(feature = "std")]
impl<T> Queue<T, Box<[Slot<T>]>> {
    /// An empty queue with heap storage for `capacity` values (host only).
    pub fn with_capacity(capacity: usize) -> Self {
        Queue::new((0..capacity).map(|_| Slot::new()).collect())
    }
}

impl<T, S: AsRef<[Slot<T>]>> Queue<T, S> {
    /// An empty queue over `slots`; the capacity is `slots.len()` (at most `usize::MAX / 4`).
    pub fn new(slots: S) -> Self {
        let capacity = slots.as_ref().len();
        assert!(capacity <= usize::MAX / 4, "mpsc capacity too large");
        for (i, slot) in slots.as_ref().iter().enumerate() {
            // Relaxed: we own `slots` by value; publishing the queue to other threads (moving or
            // sharing it) synchronises these stores.
            slot.stamp.store(i, Ordering::Relaxed);
        }
        Queue {
            tail: CachePadded(AtomicUsize::new(0)),
            head: CachePadded(AtomicUsize::new(0)),
            consumer_taken: AtomicBool::new(false),
            one_lap: (capacity + 1).next_power_of_two(),
            slots,
            _marker: core::marker::PhantomData,
        }
    }

    /// How many values fit.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// The position after `pos`.
    #[inline(always)]
    fn next(&self, pos: usize) -> usize {
        let index = pos & (self.one_lap - 1);
        if index + 1 < self.capacity() {
            pos + 1
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Appends `value` from any thread, or hands it back when the slot at the tail has not been
    /// freed for this lap (the queue is full, or the consumer or a producer is mid-operation on
    /// it). Never waits.
    pub fn enqueue(&self, value: T) -> Result<(), Full<T>> {
        let slots = self.slots.as_ref();
        // Relaxed: `tail` is only a hint to find a slot; the slot's stamp carries the
        // synchronisation, and the compare-and-swap below rejects a stale hint.
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let Some(slot) = slots.get(tail & (self.one_lap - 1)) else {
                return Err(Full(value)); // Zero capacity.
            };
            // Acquire pairs with the Release store of the stamp in `Consumer::dequeue`: the
            // consumer's read of the previous lap's value happened before our write.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                let new_tail = self.next(tail);
                // Relaxed: winning the swap only claims the slot (exactly one producer can move
                // `tail` from this value); the data is published by the stamp store below.
                match self.tail.compare_exchange_weak(tail, new_tail, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        slot.value.with_mut(|p| {
                            // SAFETY: the stamp said free for position `tail` and our swap claimed
                            // it, so no other producer writes this slot this lap, and the consumer
                            // will not read it until the stamp says `tail + 1`.
                            unsafe { p.write(MaybeUninit::new(value)) }
                        });
                        // Release pairs with the Acquire load of the stamp in
                        // `Consumer::dequeue`: the value is written before it is read.
                        slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => tail = current,
                }
            } else if stamp.wrapping_add(self.one_lap) == tail.wrapping_add(1)
                || stamp.wrapping_add(self.one_lap) == tail
            {
                // The slot still holds the previous lap's value, or a producer claimed it last lap
                // and has not published yet: not free, so the queue is full right now.
                return Err(Full(value));
            } else {
                // Our `tail` is stale: another producer moved on. Retry with the current one.
                spin_loop();
                // Relaxed: as above, a hint.
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// The number of values queued or being queued (a snapshot).
    pub fn len(&self) -> usize {
        // Relaxed: a statistic; never used to access a slot.
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Relaxed);
        let mask = self.one_lap - 1;
        let (tix, hix) = (tail & mask, head & mask);
        if hix < tix {
            tix - hix
        } else if hix > tix {
            self.capacity() - hix + tix
        } else if tail == head {
            0
        } else {
            self.capacity()
        }
    }

    /// Whether nothing is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the consumer role, unless a [`Consumer`] exists.
    pub fn consumer(&self) -> Option<Consumer<'_, T, S>> {
        // Acquire pairs with the Release store in `Consumer::drop`: the previous consumer's
        // `head` and slot reads happen before ours.
        self.consumer_taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Consumer { queue: self })
    }
}

impl<T, S: AsRef<[Slot<T>]>> Drop for Queue<T, S> {
    fn drop(&mut self) {
        if core::mem::needs_drop::<T>() {
            if let Some(mut consumer) = self.consumer() {
                while consumer.dequeue().is_some() {}
            }
        }
    }
}

/// The consumer role of a [`Queue`]: at most one exists at a time.
pub struct Consumer<'a, T, S: AsRef<[Slot<T>]>> {
    queue: &'a Queue<T, S>,
}

impl<T, S: AsRef<[Slot<T>]>> Consumer<'_, T, S> {
    /// Removes and returns the oldest published value, or `None` if the head slot is not
    /// published yet. Never waits.
    pub fn dequeue(&mut self) -> Option<T> {
        let queue = self.queue;
        // Relaxed: only the consumer stores `head`, and the role changes hands with
        // Acquire/Release (`Queue::consumer`, `Consumer::drop`).
        let head = queue.head.load(Ordering::Relaxed);
        let slot = &queue.slots.as_ref().get(head & (queue.one_lap - 1))?;
        // Acquire pairs with the Release store of the stamp in `Queue::enqueue`: the producer's
        // write of the value is visible.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if stamp != head.wrapping_add(1) {
            return None;
        }
        // Relaxed: producers never read `head`.
        queue.head.store(queue.next(head), Ordering::Relaxed);
        let value = slot.value.with(|p| {
            // SAFETY: the stamp says the value for position `head` is published, and only the
            // consumer (us, exclusively) reads it; we free the slot right after, so it is moved
            // out exactly once.
            unsafe { p.read().assume_init() }
        });
        // Release pairs with the Acquire load of the stamp in `Queue::enqueue`: our read finishes
        // before a producer of the next lap writes the slot.
        slot.stamp.store(head.wrapping_add(queue.one_lap), Ordering::Release);
        Some(value)
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &Queue<T, S> {
        self.queue
    }
}

impl<T, S: AsRef<[Slot<T>]>> Drop for Consumer<'_, T, S> {
    fn drop(&mut self) {
        // Release pairs with the Acquire swap in `Queue::consumer`.
        self.queue.consumer_taken.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_and_wrap_odd_capacity() {
        let queue: ArrayQueue<u32, 3> = ArrayQueue::new_array();
        let mut rx = queue.consumer().unwrap();
        let mut next_in = 0;
        let mut next_out = 0;
        for round in 0..40 {
            for _ in 0..(round % 5) {
                match queue.enqueue(next_in) {
                    Ok(()) => next_in += 1,
                    Err(Full(v)) => {
                        assert_eq!(v, next_in);
                        assert_eq!(queue.len(), 3);
                    }
                }
            }
            for _ in 0..(round % 3) {
                if let Some(v) = rx.dequeue() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
            assert_eq!(queue.len(), (next_in - next_out) as usize);
        }
    }

    proptest::proptest! {
        /// Against a `VecDeque` model, for capacities that are and are not powers of two.
        #[test]
        fn matches_vecdeque_model(
            capacity in 1usize..9,
            ops in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..400),
        ) {
            let queue: Queue<u32, Vec<Slot<u32>>> = Queue::new((0..capacity).map(|_| Slot::new()).collect());
            let mut rx = queue.consumer().unwrap();
            let mut model = std::collections::VecDeque::new();
            for (n, enqueue) in ops.into_iter().enumerate() {
                if enqueue {
                    let expected =
                        if model.len() < capacity { model.push_back(n as u32); Ok(()) } else { Err(Full(n as u32)) };
                    proptest::prop_assert_eq!(queue.enqueue(n as u32), expected);
                } else {
                    proptest::prop_assert_eq!(rx.dequeue(), model.pop_front());
                }
                proptest::prop_assert_eq!(queue.len(), model.len());
            }
        }
    }

    #[test]
    fn zero_capacity_is_always_full() {
        let queue: Queue<u8, [Slot<u8>; 0]> = Queue::new([]);
        assert_eq!(queue.enqueue(1), Err(Full(1)));
        assert_eq!(queue.consumer().unwrap().dequeue(), None);
    }

    #[test]
    fn positions_wrap_at_usize_max() {
        let queue: ArrayQueue<usize, 3> = ArrayQueue::new_array();
        // Start near the end of the position space: lap bits about to wrap.
        let start = usize::MAX & !(queue.one_lap - 1);
        queue.tail.store(start, Ordering::Relaxed);
        queue.head.store(start, Ordering::Relaxed);
        for (i, slot) in queue.slots.iter().enumerate() {
            slot.stamp.store(start + i, Ordering::Relaxed);
        }
        let mut rx = queue.consumer().unwrap();
        for i in 0..20 {
            queue.enqueue(i).unwrap();
            queue.enqueue(i + 100).unwrap();
            assert_eq!(rx.dequeue(), Some(i));
            assert_eq!(rx.dequeue(), Some(i + 100));
            assert_eq!(rx.dequeue(), None);
        }
    }

    #[test]
    fn consumer_role_moves() {
        let queue: ArrayQueue<u8, 2> = ArrayQueue::new_array();
        queue.enqueue(1).unwrap();
        let rx = queue.consumer().unwrap();
        assert!(queue.consumer().is_none());
        drop(rx);
        assert_eq!(queue.consumer().unwrap().dequeue(), Some(1));
    }

    #[test]
    fn drops_what_is_left() {
        let token = std::sync::Arc::new(());
        {
            let queue: ArrayQueue<std::sync::Arc<()>, 4> = ArrayQueue::new_array();
            queue.enqueue(token.clone()).unwrap();
            queue.enqueue(token.clone()).unwrap();
            assert_eq!(std::sync::Arc::strong_count(&token), 3);
        }
        assert_eq!(std::sync::Arc::strong_count(&token), 1);
    }

    #[test]
    fn many_producers_nothing_lost_or_duplicated() {
        const PRODUCERS: u64 = 3;
        const EACH: u64 = 50_000;
        let queue: ArrayQueue<u64, 16> = ArrayQueue::new_array();
        let mut seen = vec![false; (PRODUCERS * EACH) as usize];
        std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let queue = &queue;
                s.spawn(move || {
                    for i in 0..EACH {
                        let mut v = p * EACH + i;
                        while let Err(Full(back)) = queue.enqueue(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let mut rx = queue.consumer().unwrap();
            let mut last = [None::<u64>; PRODUCERS as usize];
            let mut got = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while got < PRODUCERS * EACH {
                assert!(std::time::Instant::now() < deadline, "timed out after {got}");
                match rx.dequeue() {
                    Some(v) => {
                        assert!(!seen[v as usize], "duplicate {v}");
                        seen[v as usize] = true;
                        // Per-producer FIFO.
                        let p = (v / EACH) as usize;
                        assert!(last[p].is_none_or(|l| l < v));
                        last[p] = Some(v);
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        assert!(seen.iter().all(|s| *s));
    }
}
