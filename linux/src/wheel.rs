//! A hashed timing wheel for the deal role (Varghese & Lauck, scheme 6), in ticks.
//!
//! `SLOTS` buckets of one tick each; an entry whose deadline is more than one rotation away stays
//! in its bucket and is skipped until its round comes. Insert is O(1); an expiry pass over one tick
//! visits one bucket. Cancellation is lazy: entries carry a generation the connection remembers,
//! and a fired entry whose generation no longer matches is ignored by the caller. That keeps the
//! wheel free of back-pointers, and makes a stale timer unable to reach a reused slot (the entry
//! also names the connection's `ConnId`).
//!
//! This is doorway-linux's private wheel; core's `wheel` module (hierarchical, fixed capacity) can
//! replace it without changing callers: they only `insert(deadline, entry)` and `advance(now)`.

/// Buckets per rotation (a power of two).
const SLOTS: usize = 1024;

/// The wheel. `T` is the caller's entry.
pub struct Wheel<T> {
    slots: Vec<Vec<(u64, T)>>,
    /// The last tick whose bucket was processed.
    now: u64,
    len: usize,
}

impl<T> Wheel<T> {
    /// An empty wheel at tick `now`.
    pub fn new(now: u64) -> Wheel<T> {
        Wheel { slots: (0..SLOTS).map(|_| Vec::new()).collect(), now, len: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `entry` for tick `deadline` (a deadline already past fires on the next advance).
    pub fn insert(&mut self, deadline: u64, entry: T) {
        let deadline = deadline.max(self.now + 1);
        self.slots[(deadline as usize) & (SLOTS - 1)].push((deadline, entry));
        self.len += 1;
    }

    /// Processes ticks up to `now`, appending expired entries to `out`.
    pub fn advance(&mut self, now: u64, out: &mut Vec<T>) {
        if now <= self.now {
            return;
        }
        // Past one rotation every bucket is visited once.
        let from = if now - self.now > SLOTS as u64 { now - SLOTS as u64 + 1 } else { self.now + 1 };
        for tick in from..=now {
            let bucket = &mut self.slots[(tick as usize) & (SLOTS - 1)];
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].0 <= now {
                    out.push(bucket.swap_remove(i).1);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.now = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_of_ticks() {
        let mut w = Wheel::new(0);
        w.insert(5, 'a');
        w.insert(2, 'b');
        w.insert(5 + SLOTS as u64, 'c');
        w.insert(0, 'd');
        let mut out = Vec::new();
        w.advance(1, &mut out);
        assert_eq!(out, ['d']);
        out.clear();
        w.advance(5, &mut out);
        out.sort();
        assert_eq!(out, ['a', 'b']);
        out.clear();
        w.advance(SLOTS as u64, &mut out);
        assert!(out.is_empty());
        w.advance(5 + SLOTS as u64, &mut out);
        assert_eq!(out, ['c']);
        assert!(w.is_empty());
    }

    #[test]
    fn long_jumps_visit_every_bucket() {
        let mut w = Wheel::new(0);
        for t in 1..3000u64 {
            w.insert(t, t);
        }
        let mut out = Vec::new();
        w.advance(10_000, &mut out);
        assert_eq!(out.len(), 2999);
    }
}
