//! Loom proof of the door rule: "never twice, never lost".
//!
//! Two producers each record news for the same connection (a relaxed flag, so only the door's own
//! orderings can make it visible) and open its door; a consumer drains concurrently; after the
//! producers finish, a final drain runs. Over every interleaving and weak-memory outcome:
//!
//! - never twice: the ready queue has ONE slot, and `open` never reports it full, so the
//!   connection is never queued while already queued;
//! - never lost: every producer's news is seen by some drain that follows a dequeue.
#![cfg(loom)]

use doorway_core::door::{ArrayDoorQueue, Door, Flags};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Conn {
    door: [Door; 1],
    news: [AtomicBool; 2],
}

/// Closes-and-drains once if the connection is queued; marks which news it saw.
fn drain_once(ready: &ArrayDoorQueue<1>, conn: &Conn, seen: &mut [bool; 2]) -> bool {
    let mut rx = ready.consumer().expect("one consumer at a time");
    match rx.dequeue(&conn.door) {
        Some(index) => {
            assert_eq!(index, 0);
            for (p, news) in conn.news.iter().enumerate() {
                // Relaxed on purpose: visibility must come from the door.
                if news.load(Ordering::Relaxed) {
                    seen[p] = true;
                }
            }
            true
        }
        None => false,
    }
}

#[test]
fn door_never_twice_never_lost() {
    loom::model(|| {
        let conn =
            Arc::new(Conn { door: [Door::new()], news: [AtomicBool::new(false), AtomicBool::new(false)] });
        let ready = Arc::new(ArrayDoorQueue::<1>::new_array(Flags::DEAL_READY));
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let (conn, ready) = (conn.clone(), ready.clone());
                thread::spawn(move || {
                    conn.news[p].store(true, Ordering::Relaxed);
                    // Never twice: a one-slot queue is never full.
                    ready.open(&conn.door[0], 0).expect("connection queued twice");
                })
            })
            .collect();
        let consumer = {
            let (conn, ready) = (conn.clone(), ready.clone());
            thread::spawn(move || {
                let mut seen = [false; 2];
                drain_once(&ready, &conn, &mut seen);
                seen
            })
        };
        for p in producers {
            p.join().unwrap();
        }
        let mut seen = consumer.join().unwrap();
        // Final drain: whatever is still queued. If some news was neither seen nor left queued,
        // it was lost.
        while drain_once(&ready, &conn, &mut seen) {}
        assert_eq!(seen, [true, true], "news lost");
        assert!(ready.is_empty());
        assert!(!conn.door[0].is_open(Flags::DEAL_READY));
    });
}

/// Two flags of one door feed two queues independently: opening one never suppresses the other.
#[test]
fn door_flags_are_independent() {
    loom::model(|| {
        let door = Arc::new([Door::new()]);
        let reads = Arc::new(ArrayDoorQueue::<1>::new_array(Flags::READ_READY));
        let sends = Arc::new(ArrayDoorQueue::<1>::new_array(Flags::SEND_READY));
        let t = {
            let (door, reads) = (door.clone(), reads.clone());
            thread::spawn(move || reads.open(&door[0], 0).unwrap())
        };
        let queued_send = sends.open(&door[0], 0).unwrap();
        let queued_read = t.join().unwrap();
        assert!(queued_send && queued_read);
        assert_eq!(sends.consumer().unwrap().dequeue(&door[..]), Some(0));
        assert_eq!(reads.consumer().unwrap().dequeue(&door[..]), Some(0));
        assert!(door[0].flags().is_empty());
    });
}
