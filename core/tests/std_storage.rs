//! The host-only (`std` feature) constructors: runtime capacities chosen at startup.
//!
//! `cargo test -p doorway-core --features std` (the workspace test run enables `std` through
//! doorway-linux). Each constructor must give exactly the asked capacity and behave like the
//! inline flavour.
#![cfg(all(feature = "std", not(loom)))]

use doorway_core::door::{Door, DoorQueue, Flags};
use doorway_core::queue::{mpsc, Full};
use doorway_core::time::Instant;
use doorway_core::wheel::Wheel;

#[test]
fn mpsc_with_runtime_capacity() {
    let queue: mpsc::Queue<u64, Box<[mpsc::Slot<u64>]>> = mpsc::Queue::with_capacity(10_000);
    assert_eq!(queue.capacity(), 10_000);
    for i in 0..10_000 {
        queue.enqueue(i).unwrap();
    }
    assert_eq!(queue.enqueue(7), Err(Full(7)));
    let mut rx = queue.consumer().unwrap();
    assert!((0..10_000).all(|i| rx.dequeue() == Some(i)));
}

#[test]
fn door_queue_sized_to_connections_never_full() {
    const CONNS: usize = 1_000;
    let doors: Vec<Door> = (0..CONNS).map(|_| Door::new()).collect();
    let ready = DoorQueue::with_capacity(CONNS, Flags::SEND_READY);
    for round in 0..3 {
        for index in 0..CONNS as u32 {
            assert_eq!(ready.open(&doors[index as usize], index), Ok(true), "round {round}");
            assert_eq!(ready.open(&doors[index as usize], index), Ok(false));
        }
        let mut rx = ready.consumer().unwrap();
        let mut n = 0;
        while rx.dequeue(&doors).is_some() {
            n += 1;
        }
        assert_eq!(n, CONNS);
    }
}

#[test]
fn wheel_with_runtime_capacity() {
    let mut wheel: Wheel<u32, _> = Wheel::with_capacity(50_000);
    for i in 0..50_000u32 {
        wheel.insert(Instant::from_ticks(60_000 + u64::from(i % 1000)), i).unwrap();
    }
    assert!(wheel.insert(Instant::from_ticks(1), 0).is_err());
    assert_eq!(wheel.poll(Instant::from_ticks(59_999), |_, _| {}), 0);
    assert_eq!(wheel.poll(Instant::from_ticks(61_000), |_, _| {}), 50_000);
    assert!(wheel.is_empty());
}
