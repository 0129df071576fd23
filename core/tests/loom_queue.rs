//! Loom models of the queues: every interleaving and weak-memory outcome of small scenarios.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p doorway-core --release --test 'loom*'`
//! (`cargo xtask ci loom`). Loom's `UnsafeCell` also checks that no slot is read while written.
#![cfg(loom)]

use doorway_core::queue::mpsc::{ArrayQueue, Queue, Slot};
use doorway_core::queue::Full;
use loom::sync::Arc;
use loom::thread;

/// Waits (yielding to the model) until `n` values came out of `queue`.
fn take<S: AsRef<[Slot<u32>]>>(queue: &Queue<u32, S>, n: usize) -> Vec<u32> {
    let mut rx = queue.consumer().expect("one consumer at a time");
    let mut got = Vec::new();
    while got.len() < n {
        match rx.dequeue() {
            Some(v) => got.push(v),
            None => thread::yield_now(),
        }
    }
    got
}

/// MPSC: two producers, one value each, the consumer waiting for them at the same time: each
/// value comes out exactly once, and the consumer never reads a slot before its write is
/// visible (loom's cell checks fire if the stamp's Release/Acquire pairing is broken).
///
/// The consumer waits for values rather than draining after `join`: a join would synchronise the
/// threads and hide a missing ordering.
#[test]
fn mpsc_two_producers_exactly_once() {
    loom::model(|| {
        let queue: Arc<ArrayQueue<u32, 2>> = Arc::new(ArrayQueue::new_array());
        let producers: Vec<_> = (1..=2)
            .map(|v| {
                let queue = queue.clone();
                thread::spawn(move || queue.enqueue(v).unwrap())
            })
            .collect();
        let mut got = take(&queue, 2);
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert_eq!(queue.consumer().unwrap().dequeue(), None);
    });
}

/// MPSC through ONE slot across two lap hand-overs: the producer retries on `Full` while the
/// consumer frees the slot. Values come out once, in order, and the producer never overwrites a
/// value the consumer has not read yet (loom's cell checks fire if the consumer's Release or the
/// producer's Acquire on the stamp is missing).
#[test]
fn mpsc_single_slot_lap_handover() {
    loom::model(|| {
        let queue: Arc<Queue<u32, [Slot<u32>; 1]>> = Arc::new(ArrayQueue::new_array());
        queue.enqueue(0).unwrap();
        let producer = {
            let queue = queue.clone();
            thread::spawn(move || {
                for v in 1..=2 {
                    let mut v = v;
                    while let Err(Full(back)) = queue.enqueue(v) {
                        v = back;
                        thread::yield_now();
                    }
                }
            })
        };
        let got = take(&queue, 3);
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
    });
}

/// Two producers race for the last free slot: exactly one wins, the other gets its value back.
#[test]
fn mpsc_race_for_last_slot() {
    loom::model(|| {
        let queue: Arc<Queue<u32, [Slot<u32>; 1]>> = Arc::new(ArrayQueue::new_array());
        let other = {
            let queue = queue.clone();
            thread::spawn(move || queue.enqueue(1))
        };
        let here = queue.enqueue(2);
        let there = other.join().unwrap();
        match (here, there) {
            (Ok(()), Err(Full(1))) => assert_eq!(take(&queue, 1), [2]),
            (Err(Full(2)), Ok(())) => assert_eq!(take(&queue, 1), [1]),
            outcome => panic!("both or neither won: {outcome:?}"),
        }
        assert_eq!(queue.consumer().unwrap().dequeue(), None);
    });
}
