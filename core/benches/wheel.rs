//! Timing wheel benchmarks beside a `BinaryHeap` timer queue, measured in the same run.
//!
//! The heap is the usual alternative: a min-heap of `(deadline, id, generation)` with lazy
//! cancellation (bump the id's generation; stale entries are skipped when popped, and the heap is
//! compacted when more than half of it is stale), so neither side gets a free lunch.
//!
//! - `insert_cancel`: with 10 000 live background timers, insert one timer and cancel it (an idle
//!   timeout re-armed on every message); ns per insert+cancel.
//! - `lifecycle`: insert 1 000 timers over the next 10 000 ticks, cancel 900 of them, then advance
//!   time past all of them and expire the rest; ns per timer.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use doorway_core::time::Instant;
use doorway_core::wheel::{Entry, TimerId, Wheel};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const BACKGROUND: usize = 10_000;

/// A heap timer queue with generation-tagged ids and lazy cancellation.
struct HeapTimers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    stale: usize,
}

impl HeapTimers {
    fn with_capacity(n: usize) -> Self {
        HeapTimers {
            heap: BinaryHeap::with_capacity(n),
            generations: vec![0; n],
            free: (0..n as u32).rev().collect(),
            stale: 0,
        }
    }

    fn insert(&mut self, deadline: u64) -> Option<(u32, u32)> {
        let id = self.free.pop()?;
        let generation = self.generations[id as usize];
        self.heap.push(Reverse((deadline, id, generation)));
        Some((id, generation))
    }

    fn cancel(&mut self, (id, generation): (u32, u32)) -> bool {
        if self.generations[id as usize] != generation {
            return false;
        }
        self.generations[id as usize] += 1;
        self.free.push(id);
        self.stale += 1;
        if self.stale > self.heap.len() / 2 {
            let generations = &self.generations;
            self.heap.retain(|Reverse((_, id, g))| generations[*id as usize] == *g);
            self.stale = 0;
        }
        true
    }

    fn expire(&mut self, now: u64, mut fire: impl FnMut(u32)) {
        while let Some(Reverse((deadline, id, generation))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.generations[id as usize] == generation {
                self.generations[id as usize] += 1;
                self.free.push(id);
                fire(id);
            } else {
                self.stale = self.stale.saturating_sub(1);
            }
        }
    }
}

/// A wheel with heap storage for `n` timers.
fn new_wheel(n: usize) -> Wheel<u32, Box<[Entry<u32>]>> {
    Wheel::new((0..n).map(|_| Entry::VACANT).collect())
}

/// A small deterministic generator (xorshift) so both sides see the same deadlines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn insert_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(1));

    let mut wheel = new_wheel(BACKGROUND + 16);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..BACKGROUND {
        wheel.insert(Instant::from_ticks(1 + rng.next() % 60_000), 0u32).unwrap();
    }
    group.bench_function("insert_cancel/wheel", |b| {
        b.iter(|| {
            let id = wheel.insert(Instant::from_ticks(1 + rng.next() % 60_000), 1).unwrap();
            black_box(wheel.cancel(black_box(id)))
        })
    });

    let mut heap = HeapTimers::with_capacity(BACKGROUND + 16);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..BACKGROUND {
        heap.insert(1 + rng.next() % 60_000).unwrap();
    }
    group.bench_function("insert_cancel/binary_heap", |b| {
        b.iter(|| {
            let id = heap.insert(1 + rng.next() % 60_000).unwrap();
            black_box(heap.cancel(black_box(id)))
        })
    });

    const BATCH: u64 = 1_000;
    group.throughput(Throughput::Elements(BATCH));
    let mut wheel = new_wheel(BATCH as usize);
    let mut rng = Rng(7);
    let mut now = 0u64;
    let mut ids: Vec<TimerId> = Vec::with_capacity(BATCH as usize);
    group.bench_function("lifecycle/wheel", |b| {
        b.iter(|| {
            ids.clear();
            for _ in 0..BATCH {
                ids.push(wheel.insert(Instant::from_ticks(now + 1 + rng.next() % 10_000), 0u32).unwrap());
            }
            for id in ids.iter().take(900) {
                wheel.cancel(*id);
            }
            now += 10_001;
            let mut fired = 0;
            wheel.poll(Instant::from_ticks(now), |_, _| fired += 1);
            black_box(fired)
        })
    });

    let mut heap = HeapTimers::with_capacity(BATCH as usize);
    let mut rng = Rng(7);
    let mut now = 0u64;
    let mut hids: Vec<(u32, u32)> = Vec::with_capacity(BATCH as usize);
    group.bench_function("lifecycle/binary_heap", |b| {
        b.iter(|| {
            hids.clear();
            for _ in 0..BATCH {
                hids.push(heap.insert(now + 1 + rng.next() % 10_000).unwrap());
            }
            for id in hids.iter().take(900) {
                heap.cancel(*id);
            }
            now += 10_001;
            let mut fired = 0;
            heap.expire(now, |_| fired += 1);
            black_box(fired)
        })
    });
    group.finish();
}

criterion_group!(benches, insert_cancel);
criterion_main!(benches);
