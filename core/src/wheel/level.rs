//! One level of the timing wheel: 64 slots, each the head of an intrusive list, plus a bitmap of
//! the non-empty ones (tokio runtime/time/wheel/level.rs, with slab indices instead of pointers).
//!
//! Level `l` splits time into slots of `64^l` ticks; one rotation of the level covers `64^(l+1)`
//! ticks. A slot's entries are linked through `prev`/`next` indices stored in the wheel's entries,
//! so insert and unlink are O(1); `occupied` has bit `s` set exactly when slot `s` is non-empty,
//! so the next non-empty slot is one `rotate_right` plus `trailing_zeros`.

use super::NIL;

/// Bits of time per level.
pub(crate) const LEVEL_BITS: u32 = 6;
/// Slots per level.
pub(crate) const LEVEL_MULT: usize = 1 << LEVEL_BITS;
/// Levels: 11 x 6 bits covers all of `u64`, so every deadline has a level and none wraps.
pub(crate) const NUM_LEVELS: usize = 11;
const SLOT_MASK: u64 = (LEVEL_MULT as u64) - 1;

/// Where and when the wheel next has work: the earliest non-empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Expiration {
    /// The level of the slot.
    pub level: usize,
    /// The slot within the level.
    pub slot: usize,
    /// The first tick the slot covers: its entries are due at or after it.
    pub deadline: u64,
}

/// One level: list heads and the occupancy bitmap.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    level: usize,
    occupied: u64,
    heads: [u32; LEVEL_MULT],
}

impl Level {
    pub(crate) const fn new(level: usize) -> Level {
        Level { level, occupied: 0, heads: [NIL; LEVEL_MULT] }
    }

    pub(crate) fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    /// Sets the head of `slot`, keeping the bitmap in step.
    pub(crate) fn set_head(&mut self, slot: usize, head: u32) {
        self.heads[slot] = head;
        if head == NIL {
            self.occupied &= !(1 << slot);
        } else {
            self.occupied |= 1 << slot;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// The earliest non-empty slot at or after `now`'s slot in this rotation, with its deadline.
    ///
    /// The wheel keeps every entry of level `l` in a slot after `now`'s slot in the same rotation
    /// (the entry's deadline shares `now`'s bits above level `l`), so the deadline found is always
    /// `>= now`; a debug assertion checks it.
    pub(crate) fn next_expiration(&self, now: u64) -> Option<Expiration> {
        let slot = self.next_occupied_slot(now)?;
        let level_start = match level_range(self.level) {
            Some(range) => now & !(range - 1),
            None => 0,
        };
        let deadline = level_start + slot as u64 * slot_range(self.level);
        debug_assert!(deadline >= now, "level {} slot {slot} behind now {now}", self.level);
        Some(Expiration { level: self.level, slot, deadline })
    }

    fn next_occupied_slot(&self, now: u64) -> Option<usize> {
        if self.occupied == 0 {
            return None;
        }
        let now_slot = slot_for(now, self.level);
        let zeros = self.occupied.rotate_right(now_slot as u32).trailing_zeros() as usize;
        Some((zeros + now_slot) % LEVEL_MULT)
    }
}

/// Ticks covered by one slot of `level`.
pub(crate) const fn slot_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

/// Ticks covered by one rotation of `level`, or `None` for the top level (all of `u64`).
pub(crate) const fn level_range(level: usize) -> Option<u64> {
    let shift = LEVEL_BITS as usize * (level + 1);
    if shift >= 64 {
        None
    } else {
        Some(1 << shift)
    }
}

/// The level for a deadline `when` seen from `elapsed`: the 6-bit group of the highest bit in
/// which they differ (tokio's `level_for`). Level 0 when they differ only in the lowest 6 bits.
pub(crate) const fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros() as usize;
    significant / LEVEL_BITS as usize
}

/// The slot of tick `when` at `level`.
pub(crate) const fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS as usize * level)) & SLOT_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_for_small_domain_exhaustive() {
        // Every (elapsed, when) pair in a small domain against the definition.
        for elapsed in 0..300u64 {
            for when in elapsed..elapsed + 5000 {
                let level = level_for(elapsed, when);
                let expected = if when >> 6 == elapsed >> 6 {
                    0
                } else if when >> 12 == elapsed >> 12 {
                    1
                } else {
                    2
                };
                assert_eq!(level, expected, "elapsed {elapsed} when {when}");
            }
        }
        assert_eq!(level_for(0, u64::MAX), NUM_LEVELS - 1);
        assert_eq!(level_for(u64::MAX - 1, u64::MAX), 0);
    }

    #[test]
    fn slots_and_ranges() {
        assert_eq!(slot_for(0b11_000101, 0), 0b000101);
        assert_eq!(slot_for(0b11_000101, 1), 0b11);
        assert_eq!(slot_range(0), 1);
        assert_eq!(slot_range(2), 4096);
        assert_eq!(level_range(0), Some(64));
        assert_eq!(level_range(NUM_LEVELS - 1), None);
        assert_eq!(slot_for(u64::MAX, NUM_LEVELS - 1), 15);
    }

    #[test]
    fn next_expiration_finds_earliest_slot_after_now() {
        let mut level = Level::new(1);
        level.set_head(5, 0);
        level.set_head(40, 1);
        // now = 3 * 64 + 10: slot 3 of level 1; next occupied is 5.
        let exp = level.next_expiration(3 * 64 + 10).unwrap();
        assert_eq!((exp.slot, exp.deadline), (5, 5 * 64));
        level.set_head(5, NIL);
        assert_eq!(level.next_expiration(3 * 64 + 10).unwrap().deadline, 40 * 64);
        level.set_head(40, NIL);
        assert!(level.is_empty());
        assert_eq!(level.next_expiration(0), None);
    }
}
