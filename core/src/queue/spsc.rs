//! A fixed-capacity single-producer single-consumer ring (Lamport 1983; heapless `spsc`).
//!
//! [`Queue::split`] hands out one [`Producer`] and one [`Consumer`]; each may move to its own
//! thread (or one to an interrupt handler). Capacity is exactly `N`.
//!
//! # Positions and slot ownership
//!
//! `head` (next slot to read) and `tail` (next slot to write) are positions in `0..2N`; the slot
//! of position `p` is `p mod N`, and `(tail - head) mod 2N` is the length, so a full ring
//! (`len == N`) and an empty one (`len == 0`) differ without wasting a slot.
//!
//! - Slots in `[head, tail)` hold values and are owned by the consumer.
//! - Slots in `[tail, head + N)` are empty and owned by the producer.
//! - Only the producer stores `tail`; only the consumer stores `head`. Each stores its own index
//!   with `Release` after touching the slot, and loads the other's with `Acquire` before touching
//!   a slot, so a slot changes hands only after its write (or read) is complete.
//!
//! Each handle caches the other side's index and reloads it only when the cached value says
//! "full" (producer) or "empty" (consumer), so an uncontended operation costs one atomic store
//! and no cross-core load.
//!
//! ```
//! use doorway_core::queue::{spsc::Queue, Full};
//! let mut queue: Queue<u32, 2> = Queue::new();
//! let (mut tx, mut rx) = queue.split();
//! assert_eq!(tx.enqueue(1), Ok(()));
//! assert_eq!(tx.enqueue(2), Ok(()));
//! assert_eq!(tx.enqueue(3), Err(Full(3)));
//! assert_eq!(rx.dequeue(), Some(1));
//! assert_eq!(rx.peek(), Some(&2));
//! ```

use super::{CachePadded, Full};
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use core::mem::MaybeUninit;

/// A single-producer single-consumer ring of capacity `N` (`N > 0`).
pub struct Queue<T, const N: usize> {
    /// Next position to read; stored by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next position to write; stored by the producer only.
    tail: CachePadded<AtomicUsize>,
    buffer: [UnsafeCell<MaybeUninit<T>>; N],
}

// SAFETY: the queue hands `T`s from one thread to another (so `T: Send`), and its slots are
// accessed by at most one handle at a time, as the module doc's ownership rules show.
unsafe impl<T: Send, const N: usize> Sync for Queue<T, N> {}

impl<T, const N: usize> Default for Queue<T, N> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<T, const N: usize> Queue<T, N> {
    const CAPACITY_OK: () = assert!(N > 0 && N <= usize::MAX / 4, "spsc capacity must be in 1..usize::MAX/4");

    /// An empty queue.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        Queue {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            buffer: core::array::from_fn(|_| UnsafeCell::new(MaybeUninit::uninit())),
        }
    }

    /// The capacity, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The number of values queued (a snapshot when the other side is running).
    pub fn len(&self) -> usize {
        // Relaxed: a statistic; neither load is used to access a slot.
        distance(self.head.load(Ordering::Relaxed), self.tail.load(Ordering::Relaxed), N)
    }

    /// Whether no value is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `N` values are queued (a snapshot).
    pub fn is_full(&self) -> bool {
        self.len() == N
    }

    /// Splits the queue into its producer and consumer handles.
    pub fn split(&mut self) -> (Producer<'_, T, N>, Consumer<'_, T, N>) {
        // Relaxed: `&mut self` proves no handle is alive, and creating the handles needs no
        // synchronisation beyond that exclusive borrow.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let queue = &*self;
        (Producer { queue, tail, cached_head: head }, Consumer { queue, head, cached_tail: tail })
    }

    /// Enqueues through a temporary producer.
    pub fn enqueue(&mut self, value: T) -> Result<(), Full<T>> {
        self.split().0.enqueue(value)
    }

    /// Dequeues through a temporary consumer.
    pub fn dequeue(&mut self) -> Option<T> {
        self.split().1.dequeue()
    }
}

impl<T, const N: usize> Drop for Queue<T, N> {
    fn drop(&mut self) {
        if core::mem::needs_drop::<T>() {
            while self.dequeue().is_some() {}
        }
    }
}

/// The number of positions from `head` to `tail` in the `0..2n` position space.
#[inline(always)]
fn distance(head: usize, tail: usize, n: usize) -> usize {
    if tail >= head {
        tail - head
    } else {
        tail + 2 * n - head
    }
}

/// The position after `pos` in `0..2n`.
#[inline(always)]
fn next(pos: usize, n: usize) -> usize {
    if pos + 1 == 2 * n {
        0
    } else {
        pos + 1
    }
}

/// The slot of position `pos`.
#[inline(always)]
fn slot(pos: usize, n: usize) -> usize {
    if pos >= n {
        pos - n
    } else {
        pos
    }
}

/// The writing end of a [`Queue`].
pub struct Producer<'a, T, const N: usize> {
    queue: &'a Queue<T, N>,
    /// Our own index: only we store `queue.tail`, so this copy is always current.
    tail: usize,
    /// The consumer's index as last loaded; the real one is never behind it.
    cached_head: usize,
}

/// The reading end of a [`Queue`].
pub struct Consumer<'a, T, const N: usize> {
    queue: &'a Queue<T, N>,
    /// Our own index: only we store `queue.head`.
    head: usize,
    /// The producer's index as last loaded; the real one is never behind it.
    cached_tail: usize,
}

impl<T, const N: usize> Producer<'_, T, N> {
    /// Appends `value`, or hands it back when the queue holds `N` values.
    #[inline]
    pub fn enqueue(&mut self, value: T) -> Result<(), Full<T>> {
        let tail = self.tail;
        if distance(self.cached_head, tail, N) == N {
            // Acquire pairs with the Release store of `head` in `Consumer::dequeue`: the
            // consumer's read of the slot we may now reuse happened before our write to it.
            self.cached_head = self.queue.head.load(Ordering::Acquire);
            if distance(self.cached_head, tail, N) == N {
                return Err(Full(value));
            }
        }
        self.queue.buffer[slot(tail, N)].with_mut(|p| {
            // SAFETY: the slot of `tail` is outside `[head, tail)`, so the producer owns it (module
            // doc), and we are the only producer (`split` takes `&mut`). Writing a
            // `MaybeUninit` never drops an old value; the slot's previous value was moved out.
            unsafe { p.write(MaybeUninit::new(value)) }
        });
        self.tail = next(tail, N);
        // Release pairs with the Acquire load of `tail` in `Consumer::dequeue`/`peek`: the value
        // written above is visible before the consumer may read the slot.
        self.queue.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Whether `enqueue` would fail right now (may reload the consumer's index).
    pub fn is_full(&mut self) -> bool {
        if distance(self.cached_head, self.tail, N) == N {
            // Acquire: same pairing as in `enqueue`.
            self.cached_head = self.queue.head.load(Ordering::Acquire);
        }
        distance(self.cached_head, self.tail, N) == N
    }

    /// The capacity, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize> Consumer<'_, T, N> {
    /// Whether a value is ready, reloading the producer's index if the cached one says empty.
    #[inline(always)]
    fn ready(&mut self) -> bool {
        if self.head == self.cached_tail {
            // Acquire pairs with the Release store of `tail` in `Producer::enqueue`: the write of
            // every slot before `tail` is visible to us.
            self.cached_tail = self.queue.tail.load(Ordering::Acquire);
        }
        self.head != self.cached_tail
    }

    /// Removes and returns the oldest value, or `None` when the queue is empty.
    #[inline]
    pub fn dequeue(&mut self) -> Option<T> {
        if !self.ready() {
            return None;
        }
        let head = self.head;
        let value = self.queue.buffer[slot(head, N)].with(|p| {
            // SAFETY: `head != tail`, so the slot of `head` is in `[head, tail)`: it holds an
            // initialised value written before the producer's Release store of `tail`, which our
            // Acquire load observed, and the consumer owns it. We move the value out and advance
            // `head` below, so it is never read twice.
            unsafe { p.read().assume_init() }
        });
        self.head = next(head, N);
        // Release pairs with the Acquire load of `head` in `Producer::enqueue`: our read of the
        // slot completes before the producer may overwrite it.
        self.queue.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// The oldest value, left in place.
    pub fn peek(&mut self) -> Option<&T> {
        if !self.ready() {
            return None;
        }
        let ptr = self.queue.buffer[slot(self.head, N)].with(|p| p);
        // SAFETY: as in `dequeue`, the slot holds an initialised value owned by the consumer. The
        // borrow is tied to `&mut self`, so no `dequeue` can move the value out while it lives,
        // and the producer does not touch slots in `[head, tail)`.
        Some(unsafe { (*ptr).assume_init_ref() })
    }

    /// The number of values ready (a snapshot).
    pub fn len(&mut self) -> usize {
        // Acquire: same pairing as in `ready`; always reload, the cache may be behind.
        self.cached_tail = self.queue.tail.load(Ordering::Acquire);
        distance(self.head, self.cached_tail, N)
    }

    /// Whether no value is ready (a snapshot).
    pub fn is_empty(&mut self) -> bool {
        !self.ready()
    }

    /// The capacity, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn exact_capacity_and_wrap() {
        let mut queue: Queue<u32, 3> = Queue::new();
        let (mut tx, mut rx) = queue.split();
        // Many laps around the ring, at every fill level.
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..50 {
            let fill = round % 4;
            for _ in 0..fill {
                match tx.enqueue(next_in) {
                    Ok(()) => next_in += 1,
                    Err(Full(v)) => {
                        assert_eq!(v, next_in);
                        assert_eq!(rx.len(), 3);
                    }
                }
            }
            assert!(rx.len() <= 3);
            while let Some(v) = rx.dequeue() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 50);
    }

    #[test]
    fn full_hands_value_back() {
        let mut queue: Queue<&str, 1> = Queue::new();
        assert_eq!(queue.enqueue("a"), Ok(()));
        assert!(queue.is_full());
        assert_eq!(queue.enqueue("b"), Err(Full("b")));
        assert_eq!(queue.dequeue(), Some("a"));
        assert_eq!(queue.dequeue(), None);
        assert!(queue.is_empty());
    }

    #[test]
    fn drops_what_is_left() {
        let token = Rc::new(());
        {
            let mut queue: Queue<Rc<()>, 4> = Queue::new();
            for _ in 0..3 {
                queue.enqueue(token.clone()).unwrap();
            }
            drop(queue.dequeue());
            assert_eq!(Rc::strong_count(&token), 3);
        }
        assert_eq!(Rc::strong_count(&token), 1);
    }

    proptest::proptest! {
        /// Against a `VecDeque` model with the same capacity, over random operation sequences.
        #[test]
        fn matches_vecdeque_model(ops in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..400)) {
            let mut queue: Queue<u32, 5> = Queue::new();
            let (mut tx, mut rx) = queue.split();
            let mut model = std::collections::VecDeque::new();
            for (n, enqueue) in ops.into_iter().enumerate() {
                if enqueue {
                    let expected = if model.len() < 5 { model.push_back(n as u32); Ok(()) } else { Err(Full(n as u32)) };
                    proptest::prop_assert_eq!(tx.enqueue(n as u32), expected);
                } else {
                    proptest::prop_assert_eq!(rx.peek().copied(), model.front().copied());
                    proptest::prop_assert_eq!(rx.dequeue(), model.pop_front());
                }
                proptest::prop_assert_eq!(rx.len(), model.len());
            }
        }
    }

    #[test]
    fn two_threads_keep_order() {
        const COUNT: u64 = 200_000;
        let mut queue: Queue<u64, 64> = Queue::new();
        let (mut tx, mut rx) = queue.split();
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..COUNT {
                    let mut v = i;
                    while let Err(Full(back)) = tx.enqueue(v) {
                        v = back;
                        std::thread::yield_now();
                    }
                }
            });
            let mut expected = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while expected < COUNT {
                assert!(std::time::Instant::now() < deadline, "consumer timed out at {expected}");
                match rx.dequeue() {
                    Some(v) => {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
    }
}
