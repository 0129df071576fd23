//! A hierarchical timing wheel with fixed capacity (Varghese & Lauck 1987; tokio
//! runtime/time/wheel/).
//!
//! # Shape
//!
//! [`NUM_LEVELS`](Wheel::NUM_LEVELS) = 11 levels of 64 slots. Level `l`'s slots are `64^l` ticks
//! wide, so 11 levels cover all of `u64` and no deadline ever needs clamping or wraps around:
//!
//! ```text
//! level 0: 64 slots of 1 tick        (the next 64 ticks)
//! level 1: 64 slots of 64 ticks      (the next ~4 K ticks)
//! level 2: 64 slots of 4 K ticks     (~262 K ticks: 4.4 minutes of ms)
//! ...
//! level 10: 16 slots of 2^60 ticks   (the rest of u64)
//! ```
//!
//! A timer due at `when` lives at [`level_for`](level)`(elapsed, when)`, the 6-bit group of the
//! highest bit where `when` differs from `elapsed` (the wheel's current tick), in slot
//! `slot_for(when, level)`. Timers already due when inserted go to a `due` list.
//!
//! # Storage and ids
//!
//! Timers live in caller-provided storage (`[Entry<T>; N]` inline through [`ArrayWheel`], or a
//! boxed slice through `Wheel::with_capacity` on hosts), like the [slab](crate::slab): a free
//! list threads the vacant entries, and each slot's list is doubly linked through entry indices,
//! so insert, cancel and reset are O(1) and never allocate. Tokio boxes its levels and links
//! timers by pointer; we keep its math (`level_for`, the `occupied` bitmap) but not its storage.
//!
//! A [`TimerId`] carries the entry's generation, bumped every time the entry is freed, so an id
//! kept after its timer fired or was cancelled misses (`cancel` returns `None`) instead of
//! cancelling whichever timer reused the entry.
//!
//! # Time is passed in
//!
//! The wheel reads no clock. [`Wheel::poll`] (or [`Wheel::next_expired`], one timer at a time)
//! takes `now`, finds the earliest non-empty slot with [`Wheel::next_expiration`], and if it is
//! due moves the wheel's `elapsed` to the slot's start and empties the slot: entries that are due
//! fire, the rest cascade to a lower level (at most once per level, so at most 10 moves in a
//! timer's life). Slots are found by bitmap scans, never by walking ticks, so a jump of time of
//! any length costs O(levels + timers processed), not O(ticks). [`Wheel::poll_at`] says when to
//! call again (the earliest slot start, never later than the earliest deadline).
//!
//! # Invariants
//!
//! - Every entry in a level's lists has `deadline > elapsed`, and shares `elapsed`'s bits above
//!   its level, so its slot is after `elapsed`'s slot in the same rotation. Hence the first
//!   non-empty level holds the earliest slot.
//! - Timers fire in order of deadline (ties in no particular order), and never before their
//!   deadline; a timer inserted with a deadline already past fires at the next poll.
//!
//! ```
//! use doorway_core::time::Instant;
//! use doorway_core::wheel::ArrayWheel;
//! let mut wheel: ArrayWheel<&str, 4> = ArrayWheel::new_array();
//! let idle = wheel.insert(Instant::from_ticks(5_000), "idle").unwrap();
//! let ping = wheel.insert(Instant::from_ticks(1_000), "ping").unwrap();
//! // The start of the earliest non-empty slot: 960 = 15 * 64, the level-1 slot holding 1000.
//! assert_eq!(wheel.poll_at(), Some(Instant::from_ticks(960)));
//! assert_eq!(wheel.cancel(idle), Some("idle"));
//! let mut fired = Vec::new();
//! wheel.poll(Instant::from_ticks(10_000), |id, what| fired.push((id, what)));
//! assert_eq!(fired, [(ping, "ping")]);
//! assert_eq!(wheel.cancel(ping), None, "a fired id is stale");
//! ```

pub(crate) mod level;

use crate::time::Instant;
use core::fmt;
use level::{level_for, slot_for, Level, LEVEL_MULT, NUM_LEVELS};

pub use level::Expiration;

const NIL: u32 = u32::MAX;

/// `Entry::place` for an entry in the `due` list.
const PLACE_DUE: u16 = u16::MAX - 1;
/// `Entry::place` for a vacant entry.
const PLACE_FREE: u16 = u16::MAX;

/// A generation-tagged handle to a scheduled timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimerId {
    index: u32,
    generation: u32,
}

impl TimerId {
    /// The storage index.
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// The entry's generation when the timer was inserted.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timer {}v{}", self.index, self.generation)
    }
}

pub use crate::Full;

/// One timer's storage. Build storage with [`Entry::VACANT`] or `Default`.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    deadline: u64,
    prev: u32,
    next: u32,
    generation: u32,
    /// `level * 64 + slot`, [`PLACE_DUE`] or [`PLACE_FREE`].
    place: u16,
    payload: Option<T>,
}

impl<T> Entry<T> {
    /// A vacant entry, for building storage.
    pub const VACANT: Entry<T> =
        Entry { deadline: 0, prev: NIL, next: NIL, generation: 0, place: PLACE_FREE, payload: None };
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Entry::VACANT
    }
}

/// A hierarchical timing wheel of timers carrying a `T`, stored in `S`.
pub struct Wheel<T, S: AsRef<[Entry<T>]> + AsMut<[Entry<T>]>> {
    entries: S,
    free_head: u32,
    len: usize,
    /// The wheel's current tick: every timer at or before it has been moved to `due`.
    elapsed: u64,
    levels: [Level; NUM_LEVELS],
    /// Bit `l` set when level `l` has a non-empty slot.
    levels_occupied: u16,
    due_head: u32,
    due_tail: u32,
    _marker: core::marker::PhantomData<T>,
}

/// A wheel with inline storage for `N` timers.
pub type ArrayWheel<T, const N: usize> = Wheel<T, [Entry<T>; N]>;

impl<T, const N: usize> Wheel<T, [Entry<T>; N]> {
    /// An empty wheel with inline storage, at tick 0.
    pub fn new_array() -> Self {
        Wheel::new([const { Entry::VACANT }; N])
    }
}

#[cfg(feature = "std")]
impl<T> Wheel<T, Box<[Entry<T>]>> {
    /// An empty wheel with heap storage for `capacity` timers, at tick 0 (host only).
    pub fn with_capacity(capacity: usize) -> Self {
        Wheel::new((0..capacity).map(|_| Entry::VACANT).collect())
    }
}

impl<T, S: AsRef<[Entry<T>]> + AsMut<[Entry<T>]>> Wheel<T, S> {
    /// Levels in the hierarchy.
    pub const NUM_LEVELS: usize = NUM_LEVELS;

    /// An empty wheel over `entries` (every entry is reset), at tick 0. Capacity is
    /// `entries.len()`, at most `u32::MAX - 1`.
    pub fn new(entries: S) -> Self {
        Self::new_at(entries, Instant::ZERO)
    }

    /// An empty wheel over `entries` whose current tick is `now`.
    pub fn new_at(mut entries: S, now: Instant) -> Self {
        let n = entries.as_ref().len();
        assert!(n < NIL as usize, "wheel capacity must fit a u32 index");
        for (i, entry) in entries.as_mut().iter_mut().enumerate() {
            *entry = Entry { next: if i + 1 < n { (i + 1) as u32 } else { NIL }, ..Entry::VACANT };
        }
        Wheel {
            entries,
            free_head: if n > 0 { 0 } else { NIL },
            len: 0,
            elapsed: now.ticks(),
            levels: core::array::from_fn(Level::new),
            levels_occupied: 0,
            due_head: NIL,
            due_tail: NIL,
            _marker: core::marker::PhantomData,
        }
    }

    /// How many timers fit.
    pub fn capacity(&self) -> usize {
        self.entries.as_ref().len()
    }

    /// How many timers are scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wheel's current tick: the latest `now` it was polled with (or a slot start on the way
    /// there, while [`next_expired`](Self::next_expired) is being drained).
    pub fn elapsed(&self) -> Instant {
        Instant::from_ticks(self.elapsed)
    }

    /// Schedules `payload` for `deadline`, or hands it back when every entry is in use. A deadline
    /// at or before [`elapsed`](Self::elapsed) fires at the next poll.
    pub fn insert(&mut self, deadline: Instant, payload: T) -> Result<TimerId, Full<T>> {
        let index = self.free_head;
        let Some(entry) = self.entries.as_mut().get_mut(index as usize) else {
            return Err(Full(payload));
        };
        self.free_head = entry.next;
        entry.payload = Some(payload);
        entry.deadline = deadline.ticks();
        let id = TimerId { index, generation: entry.generation };
        self.len += 1;
        self.schedule(index);
        Ok(id)
    }

    /// Cancels a scheduled timer and returns its payload; `None` if `id` already fired, was
    /// cancelled, or names a reused entry.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.find(id)?;
        self.unlink(id.index);
        Some(self.release(id.index))
    }

    /// Moves a scheduled timer to `deadline`, keeping its id; `false` if `id` is stale.
    pub fn reset(&mut self, id: TimerId, deadline: Instant) -> bool {
        if self.find(id).is_none() {
            return false;
        }
        self.unlink(id.index);
        self.entries.as_mut()[id.index as usize].deadline = deadline.ticks();
        self.schedule(id.index);
        true
    }

    /// The deadline of a scheduled timer; `None` if `id` is stale.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.find(id).map(|entry| Instant::from_ticks(entry.deadline))
    }

    /// The payload of a scheduled timer; `None` if `id` is stale.
    pub fn get(&self, id: TimerId) -> Option<&T> {
        self.find(id)?.payload.as_ref()
    }

    /// The earliest non-empty slot of the levels (not counting timers already due).
    pub fn next_expiration(&self) -> Option<Expiration> {
        let level = self.levels_occupied.trailing_zeros() as usize;
        let expiration = self.levels.get(level)?.next_expiration(self.elapsed);
        #[cfg(debug_assertions)]
        {
            // The first non-empty level holds the earliest slot (module invariant).
            let earliest =
                self.levels.iter().filter_map(|l| l.next_expiration(self.elapsed)).map(|e| e.deadline).min();
            debug_assert_eq!(expiration.map(|e| e.deadline), earliest);
        }
        expiration
    }

    /// When to poll next: now if timers are due, else the start of the earliest non-empty slot
    /// (never later than the earliest deadline). `None` when no timer is scheduled.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.due_head != NIL {
            return Some(Instant::from_ticks(self.elapsed));
        }
        self.next_expiration().map(|e| Instant::from_ticks(e.deadline))
    }

    /// Fires every timer due at or before `now`, in deadline order, calling `fire(id, payload)`
    /// for each; returns how many fired. `fire` cannot touch the wheel: to re-arm from a timer,
    /// drain with [`next_expired`](Self::next_expired) instead.
    pub fn poll(&mut self, now: Instant, mut fire: impl FnMut(TimerId, T)) -> usize {
        let mut fired = 0;
        while let Some((id, payload)) = self.next_expired(now) {
            fire(id, payload);
            fired += 1;
        }
        fired
    }

    /// The next timer due at or before `now`, removed from the wheel; `None` when there is none
    /// (the wheel's tick is then `now`). Timers come out in deadline order.
    pub fn next_expired(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let now = now.ticks();
        loop {
            if self.due_head != NIL {
                let index = self.due_head;
                self.unlink(index);
                let generation = self.entries.as_ref()[index as usize].generation;
                return Some((TimerId { index, generation }, self.release(index)));
            }
            match self.next_expiration() {
                Some(expiration) if expiration.deadline <= now => self.process(expiration),
                _ => {
                    self.elapsed = self.elapsed.max(now);
                    return None;
                }
            }
        }
    }

    /// Empties the slot of `expiration`: entries due at its start fire, the rest cascade down.
    fn process(&mut self, expiration: Expiration) {
        self.elapsed = self.elapsed.max(expiration.deadline);
        let mut index = self.levels[expiration.level].head(expiration.slot);
        self.levels[expiration.level].set_head(expiration.slot, NIL);
        if self.levels[expiration.level].is_empty() {
            self.levels_occupied &= !(1 << expiration.level);
        }
        while index != NIL {
            let next = self.entries.as_ref()[index as usize].next;
            self.schedule(index);
            index = next;
        }
    }

    /// Links entry `index` (unlinked, payload set) where its deadline belongs.
    fn schedule(&mut self, index: u32) {
        let deadline = self.entries.as_ref()[index as usize].deadline;
        if deadline <= self.elapsed {
            // Append to `due`, keeping deadline order among what fires next.
            let tail = self.due_tail;
            let entry = &mut self.entries.as_mut()[index as usize];
            entry.place = PLACE_DUE;
            entry.prev = tail;
            entry.next = NIL;
            if tail == NIL {
                self.due_head = index;
            } else {
                self.entries.as_mut()[tail as usize].next = index;
            }
            self.due_tail = index;
        } else {
            let level = level_for(self.elapsed, deadline);
            let slot = slot_for(deadline, level);
            let head = self.levels[level].head(slot);
            let entry = &mut self.entries.as_mut()[index as usize];
            entry.place = (level * LEVEL_MULT + slot) as u16;
            entry.prev = NIL;
            entry.next = head;
            if head != NIL {
                self.entries.as_mut()[head as usize].prev = index;
            }
            self.levels[level].set_head(slot, index);
            self.levels_occupied |= 1 << level;
        }
    }

    /// Unlinks entry `index` from the list it is in.
    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, place, .. } = self.entries.as_ref()[index as usize];
        if prev != NIL {
            self.entries.as_mut()[prev as usize].next = next;
        }
        if next != NIL {
            self.entries.as_mut()[next as usize].prev = prev;
        }
        if place == PLACE_DUE {
            if prev == NIL {
                self.due_head = next;
            }
            if next == NIL {
                self.due_tail = prev;
            }
        } else if prev == NIL {
            let (level, slot) = (place as usize / LEVEL_MULT, place as usize % LEVEL_MULT);
            self.levels[level].set_head(slot, next);
            if self.levels[level].is_empty() {
                self.levels_occupied &= !(1 << level);
            }
        }
    }

    /// Frees unlinked entry `index` (its generation moves on) and returns its payload.
    fn release(&mut self, index: u32) -> T {
        let free_head = self.free_head;
        let entry = &mut self.entries.as_mut()[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.place = PLACE_FREE;
        entry.prev = NIL;
        entry.next = free_head;
        self.free_head = index;
        self.len -= 1;
        // A scheduled entry always holds its payload (`insert` sets it; only this takes it).
        match entry.payload.take() {
            Some(payload) => payload,
            None => unreachable!("scheduled timer without payload"),
        }
    }

    /// The scheduled entry `id` names, if it is current.
    fn find(&self, id: TimerId) -> Option<&Entry<T>> {
        let entry = self.entries.as_ref().get(id.index as usize)?;
        (entry.generation == id.generation && entry.place != PLACE_FREE).then_some(entry)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
