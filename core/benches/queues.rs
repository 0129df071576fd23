//! Queue and door benchmarks beside well-known alternatives, measured in the same run.
//!
//! - `uncontended/*`: one thread, enqueue then dequeue one value; ns per push+pop.
//!   Ours: `mpsc` and a door-guarded `DoorQueue` (door open + enqueue + dequeue + door close).
//!   Theirs: `crossbeam_queue::ArrayQueue`.
//! - `two_threads/*`: a producer thread pushes values that the bench thread pops; ns per value
//!   moved across cores (both spin briefly, then yield, on full/empty). Noisy on a shared 2-core
//!   machine: other processes take the second core away.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue as CrossbeamQueue;
use doorway_core::door::{ArrayDoorQueue, Door, Flags};
use doorway_core::queue::mpsc;
use std::time::{Duration, Instant};

const CAP: usize = 1024;

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));

    let ours_mpsc: mpsc::ArrayQueue<u64, CAP> = mpsc::ArrayQueue::new_array();
    let mut mrx = ours_mpsc.consumer().unwrap();
    group.bench_function("doorway_mpsc", |b| {
        b.iter(|| {
            ours_mpsc.enqueue(black_box(1)).unwrap();
            black_box(mrx.dequeue())
        })
    });

    let crossbeam: CrossbeamQueue<u64> = CrossbeamQueue::new(CAP);
    group.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| {
            crossbeam.push(black_box(1)).unwrap();
            black_box(crossbeam.pop())
        })
    });

    let doors: Vec<Door> = (0..CAP).map(|_| Door::new()).collect();
    let ready: ArrayDoorQueue<CAP> = ArrayDoorQueue::new_array(Flags::READ_READY);
    let mut drx = ready.consumer().unwrap();
    group.bench_function("doorway_door_queue", |b| {
        b.iter(|| {
            ready.open(&doors[black_box(5)], 5).unwrap();
            black_box(drx.dequeue(&doors))
        })
    });
    group.bench_function("doorway_door_open_already_queued", |b| {
        ready.open(&doors[9], 9).unwrap();
        b.iter(|| black_box(ready.open(&doors[black_box(9)], 9)))
    });
    drop(drx);
    group.finish();
}

/// Spins briefly, then yields: on a shared machine a pure spin can hold the core the other side
/// needs for a whole time slice.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 100 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Moves `iters` values from a producer thread to this one through `push`/`pop`.
fn across<P, Q>(iters: u64, push: P, mut pop: Q) -> Duration
where
    P: FnMut(u64) -> bool + Send,
    Q: FnMut() -> Option<u64>,
{
    std::thread::scope(|s| {
        let mut push = push;
        let start = Instant::now();
        s.spawn(move || {
            for i in 0..iters {
                let mut spins = 0u32;
                while !push(i) {
                    backoff(&mut spins);
                }
            }
        });
        let mut got = 0;
        let mut spins = 0u32;
        while got < iters {
            match pop() {
                Some(_) => {
                    got += 1;
                    spins = 0;
                }
                None => backoff(&mut spins),
            }
        }
        start.elapsed()
    })
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("doorway_mpsc", CAP), |b| {
        b.iter_custom(|iters| {
            let queue: mpsc::ArrayQueue<u64, CAP> = mpsc::ArrayQueue::new_array();
            let mut rx = queue.consumer().unwrap();
            let q = &queue;
            across(iters, move |v| q.enqueue(v).is_ok(), || rx.dequeue())
        })
    });
    group.bench_function(BenchmarkId::new("crossbeam_array_queue", CAP), |b| {
        b.iter_custom(|iters| {
            let queue: CrossbeamQueue<u64> = CrossbeamQueue::new(CAP);
            let q = &queue;
            across(iters, move |v| q.push(v).is_ok(), || q.pop())
        })
    });
    group.finish();
}

criterion_group!(benches, uncontended, two_threads);
criterion_main!(benches);
