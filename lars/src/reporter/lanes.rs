//! Lanes: the bounded queues between the receiving shards and the writer threads.
//!
//! One lane per writer. A report's rows all go to the lane of its module ([`lane_of`]), so a
//! module's rows are written by one writer, in the order they arrived. A lane holds at most
//! `capacity` rows (plus the rows of one report, so a report larger than the whole lane is still
//! taken when the lane is empty); when a report does not fit, [`Lane::offer`] records the
//! connection and refuses, and the handler pauses that connection (`Context::pause`: the report
//! is kept and delivered again, reading stops, the sender is held back by TCP). The writer, each
//! time it takes a batch out (which makes room), hands the paused connections back to be resumed.
//!
//! Both sides hold the lane's mutex only to move rows in or out (never while writing to the
//! database), so a shard waits at most for one `Vec` append or drain.
//!
//! ```text
//!  shard handler ── offer(rows) ──▶ Lane { rows ≤ capacity, paused: [ConnId] } ── take(batch) ──▶ writer
//!        ▲  Full: pause the connection                 │ room again: the paused ids
//!        └──────────────── Handle::resume ◀────────────┘
//! ```

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use doorway_core::slab::ConnId;

use crate::store::{Module, StatusRow};

/// The lane of `module` among `lanes` (a fixed mix of both halves, so neighbouring modids spread).
pub fn lane_of(module: Module, lanes: usize) -> usize {
    let key = (u64::from(module.modid as u32) << 32) | u64::from(module.cmdid as u32);
    // Fibonacci hashing: the top bits of the product are well mixed.
    let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as usize) % lanes.max(1)
}

/// What [`Lane::offer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The rows are queued.
    Queued,
    /// The lane is full; the connection is recorded and must pause.
    Full,
}

#[derive(Debug, Default)]
struct State {
    rows: Vec<StatusRow>,
    paused: Vec<ConnId>,
    closing: bool,
}

/// One writer's queue.
#[derive(Debug)]
pub struct Lane {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

/// A batch taken out of a lane, and the connections that may read again.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows to write, in arrival order.
    pub rows: Vec<StatusRow>,
    /// Connections paused on this lane, to resume.
    pub resume: Vec<ConnId>,
}

impl Lane {
    /// A lane holding at most `capacity` rows.
    pub fn new(capacity: usize) -> Lane {
        Lane { state: Mutex::new(State::default()), ready: Condvar::new(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can panic half-way through a change (appends and drains).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `rows` for `conn`, or records `conn` as paused when they do not fit.
    pub fn offer(&self, conn: ConnId, rows: &[StatusRow]) -> Offer {
        let mut state = self.lock();
        if !state.rows.is_empty() && state.rows.len() + rows.len() > self.capacity {
            if !state.paused.contains(&conn) {
                state.paused.push(conn);
            }
            return Offer::Full;
        }
        let was_empty = state.rows.is_empty();
        state.rows.extend_from_slice(rows);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Offer::Queued
    }

    /// Waits for rows (or the close), then takes up to `max` of them. `None`: closed and empty.
    pub fn take(&self, max: usize) -> Option<Batch> {
        let mut state = self.lock();
        while state.rows.is_empty() && !state.closing {
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.rows.is_empty() {
            return None;
        }
        let n = state.rows.len().min(max.max(1));
        let rows = if n == state.rows.len() {
            std::mem::take(&mut state.rows)
        } else {
            state.rows.drain(..n).collect()
        };
        Some(Batch { rows, resume: std::mem::take(&mut state.paused) })
    }

    /// No more rows will come: the writer drains what is queued, then [`Lane::take`] answers `None`.
    pub fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_all();
    }

    /// Whether [`Lane::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Rows queued now.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether no row is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<StatusRow> {
        let row = StatusRow {
            module: Module { modid: 1, cmdid: 1 },
            ip: 1,
            port: 1,
            caller: 1,
            succ: 1,
            err: 0,
            ts: 0,
            overload: false,
        };
        vec![row; n]
    }

    #[test]
    fn a_full_lane_refuses_and_hands_the_paused_connection_back_when_a_batch_is_taken() {
        let lane = Lane::new(10);
        let (a, b) = (ConnId::from_u64(1), ConnId::from_u64(2));
        assert_eq!(lane.offer(a, &rows(8)), Offer::Queued);
        assert_eq!(lane.offer(b, &rows(3)), Offer::Full);
        assert_eq!(lane.offer(b, &rows(3)), Offer::Full, "a second refusal records it once");
        assert_eq!(lane.len(), 8);
        let batch = lane.take(5).unwrap();
        assert_eq!((batch.rows.len(), batch.resume), (5, vec![b]));
        assert_eq!(lane.offer(b, &rows(3)), Offer::Queued);
        assert_eq!(lane.take(100).unwrap().rows.len(), 6);
    }

    #[test]
    fn a_report_larger_than_the_lane_is_taken_when_the_lane_is_empty() {
        let lane = Lane::new(4);
        assert_eq!(lane.offer(ConnId::from_u64(1), &rows(9)), Offer::Queued);
        assert_eq!(lane.len(), 9);
    }

    #[test]
    fn a_closed_lane_gives_what_it_holds_then_none() {
        let lane = Lane::new(4);
        lane.offer(ConnId::from_u64(1), &rows(2));
        lane.close();
        assert_eq!(lane.take(10).unwrap().rows.len(), 2);
        assert!(lane.take(10).is_none());
    }

    #[test]
    fn every_lane_gets_modules_and_one_module_always_the_same_lane() {
        let mut seen = [0usize; 3];
        for modid in 0..300 {
            let m = Module { modid, cmdid: 1 };
            let lane = lane_of(m, 3);
            assert_eq!(lane, lane_of(m, 3));
            seen[lane] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(lane_of(Module { modid: -5, cmdid: i32::MIN }, 1), 0);
    }
}
