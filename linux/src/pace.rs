//! [`Pace`]: a long background job gives its CPU back every [`Pace::SLICE`].
//!
//! A service's background thread (a reload building a table of a million routes, say) runs at
//! [`lower_thread_priority`](crate::lower_thread_priority), so a shard thread that wakes on its
//! CPU takes the CPU at once. That covers wake-ups, not a shard thread that is already runnable:
//! one preempted on that CPU (by a softirq thread it woke itself, say) goes back to the fair
//! scheduler's choice between the two, which may keep the background thread until the next tick
//! (4 ms at 250 Hz), however low its weight, while the shard's connections wait. Measured in
//! `lars/tests/dns_scale.rs` with `perf sched timehist`: the shard preempted in state R, the
//! reload thread then running 4.0 ms, the other CPU idle meanwhile.
//!
//! A job that calls [`Pace::step`] once per unit of work (a row, a table entry) yields
//! (`sched_yield`) every [`Pace::SLICE`] of work, a point where the scheduler picks again and a
//! waiting shard thread runs. A step costs a counter increment; every
//! [`Pace::CHECK_EVERY`] steps it reads the monotonic clock (vDSO, no system call). A yield with
//! nothing else runnable returns at once (about a microsecond), so a job alone on its CPU runs
//! at nearly full speed: at most one yield per [`Pace::SLICE`], under 2 %.

use std::time::{Duration, Instant};

/// Yields the calling thread's CPU every [`Pace::SLICE`] of steps.
#[derive(Debug)]
pub struct Pace {
    since: Instant,
    steps: u32,
    yields: u64,
}

impl Pace {
    /// The longest a paced job runs between two yields (give or take [`Pace::CHECK_EVERY`] steps).
    pub const SLICE: Duration = Duration::from_micros(50);
    /// Steps between two clock reads.
    pub const CHECK_EVERY: u32 = 64;

    /// Starts a job: its first slice begins now.
    pub fn new() -> Pace {
        Pace { since: Instant::now(), steps: 0, yields: 0 }
    }

    /// One unit of work done: yields the CPU when this slice is over.
    #[inline]
    pub fn step(&mut self) {
        self.steps(1);
    }

    /// `n` units of work done at once (a table entry of `n` nodes, say), so a job of uneven
    /// pieces still reads the clock every [`Pace::CHECK_EVERY`] units.
    #[inline]
    pub fn steps(&mut self, n: u32) {
        self.steps = self.steps.saturating_add(n);
        if self.steps >= Self::CHECK_EVERY {
            self.check();
        }
    }

    /// How many times the job has yielded.
    pub fn yields(&self) -> u64 {
        self.yields
    }

    #[cold]
    fn check(&mut self) {
        self.steps = 0;
        if self.since.elapsed() >= Self::SLICE {
            std::thread::yield_now();
            self.yields += 1;
            self.since = Instant::now();
        }
    }
}

impl Default for Pace {
    fn default() -> Pace {
        Pace::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_yields_about_once_a_slice_and_not_between() {
        let mut pace = Pace::new();
        let started = Instant::now();
        let mut steps = 0u64;
        while started.elapsed() < Pace::SLICE * 40 {
            pace.step();
            steps += 1;
        }
        // A yield ends each slice, never more often (fewer when this thread was descheduled: a
        // slice is timed on the wall clock).
        let slices = (started.elapsed().as_micros() / Pace::SLICE.as_micros()) as u64;
        assert!(
            (1..=slices).contains(&pace.yields()),
            "{} yields in {slices} slices ({steps} steps)",
            pace.yields()
        );

        let mut quick = Pace::new();
        for _ in 0..Pace::CHECK_EVERY * 4 {
            quick.step();
        }
        assert!(quick.yields() <= 1, "a job shorter than a slice yields at most once");

        // Heavy pieces: each counts for its weight, so the clock is read at every one of them.
        let mut heavy = Pace::new();
        let started = Instant::now();
        while started.elapsed() < Pace::SLICE * 4 {
            heavy.steps(Pace::CHECK_EVERY);
        }
        assert!(heavy.yields() >= 1, "{} yields", heavy.yields());
    }
}
