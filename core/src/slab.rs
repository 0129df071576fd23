//! Connection storage with generation-tagged ids.
//!
//! A [`Slab`] holds up to `capacity` values in caller-provided storage (an inline array on
//! devices, a boxed slice on hosts) and hands out a [`ConnId`] `{ index, generation }` per value.
//! Vacant slots form an intrusive LIFO free list through their `next_free` field, so insert and
//! remove are O(1) and never allocate.
//!
//! # Invariant: a stale id never reaches a new occupant
//!
//! Every slot carries a generation that is bumped when its occupant is removed. An id matches a
//! slot only if both index and generation agree, so a `ConnId` kept after its connection closed
//! (a late timer, a queued broadcast) misses with `None` instead of reaching whoever took the slot
//! next: the "reused session id" hazard of docs/ARCHITECTURE.md#slab-generations. Generations wrap
//! after 2^32 reuses of one slot; an id would have to be held across four billion reconnects on the
//! same slot to alias.
//!
//! `ConnId` packs into a `u64` ([`ConnId::to_u64`]) so it can ride in an epoll event's data field
//! or an atomic ready queue.

use core::fmt;

/// A generation-tagged handle to a slab entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// An id from its parts. Ids normally come from [`Slab::insert`].
    pub const fn new(index: u32, generation: u32) -> ConnId {
        ConnId { index, generation }
    }

    /// The slot index.
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// The slot generation at insertion.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the id into a `u64`: generation in the high half, index in the low half.
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// Unpacks an id packed by [`to_u64`](Self::to_u64).
    pub const fn from_u64(packed: u64) -> ConnId {
        ConnId { index: packed as u32, generation: (packed >> 32) as u32 }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

pub use crate::Full;

/// One storage slot. Create storage with [`Slot::VACANT`] or [`Default`]; [`Slab::new`] links it.
#[derive(Debug, Clone)]
pub struct Slot<T> {
    generation: u32,
    state: State<T>,
}

#[derive(Debug, Clone)]
enum State<T> {
    Vacant { next_free: u32 },
    Occupied(T),
}

const NIL: u32 = u32::MAX;

impl<T> Slot<T> {
    /// An unlinked vacant slot, for building storage.
    pub const VACANT: Slot<T> = Slot { generation: 0, state: State::Vacant { next_free: NIL } };
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::VACANT
    }
}

/// Fixed-capacity storage of `T` addressed by [`ConnId`].
pub struct Slab<T, S: AsRef<[Slot<T>]> + AsMut<[Slot<T>]>> {
    slots: S,
    free_head: u32,
    len: usize,
    _marker: core::marker::PhantomData<T>,
}

/// A slab with inline storage for `N` entries.
pub type ArraySlab<T, const N: usize> = Slab<T, [Slot<T>; N]>;

impl<T, const N: usize> Slab<T, [Slot<T>; N]> {
    /// An empty slab with inline storage.
    pub fn new_array() -> Self {
        Slab::new([const { Slot::VACANT }; N])
    }
}

#[cfg(feature = "std")]
impl<T> Slab<T, Box<[Slot<T>]>> {
    /// An empty slab with heap storage for `capacity` entries (host only).
    pub fn with_capacity(capacity: usize) -> Self {
        Slab::new((0..capacity).map(|_| Slot::VACANT).collect())
    }
}

impl<T, S: AsRef<[Slot<T>]> + AsMut<[Slot<T>]>> Slab<T, S> {
    /// A slab over `slots`. Every slot is reset to vacant; capacity is `slots.len()` (at most
    /// `u32::MAX - 1`).
    pub fn new(mut slots: S) -> Self {
        let n = slots.as_ref().len();
        assert!(n < NIL as usize, "slab capacity must fit a u32 index");
        for (i, slot) in slots.as_mut().iter_mut().enumerate() {
            let next_free = if i + 1 < n { (i + 1) as u32 } else { NIL };
            slot.state = State::Vacant { next_free };
        }
        Slab { slots, free_head: if n > 0 { 0 } else { NIL }, len: 0, _marker: core::marker::PhantomData }
    }

    /// How many entries the slab can hold.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds `capacity` entries.
    pub fn is_full(&self) -> bool {
        self.free_head == NIL
    }

    /// Stores `value`, or hands it back when full.
    pub fn insert(&mut self, value: T) -> Result<ConnId, Full<T>> {
        self.insert_with(|_| value).map_err(|f| Full(f.0(ConnId::new(0, 0))))
    }

    /// Stores the value `make` builds from its future id, or hands `make` back when full.
    pub fn insert_with<F: FnOnce(ConnId) -> T>(&mut self, make: F) -> Result<ConnId, Full<F>> {
        if self.free_head == NIL {
            return Err(Full(make));
        }
        let index = self.free_head;
        let slot = &mut self.slots.as_mut()[index as usize];
        let State::Vacant { next_free } = slot.state else {
            unreachable!("free list points at an occupied slot");
        };
        let id = ConnId::new(index, slot.generation);
        slot.state = State::Occupied(make(id));
        self.free_head = next_free;
        self.len += 1;
        Ok(id)
    }

    /// The entry for `id`, unless it was removed (whoever holds the slot now).
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.as_ref().get(id.index()) {
            Some(Slot { generation, state: State::Occupied(value) }) if *generation == id.generation => {
                Some(value)
            }
            _ => None,
        }
    }

    /// Mutable access to the entry for `id`, unless it was removed.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.as_mut().get_mut(id.index()) {
            Some(Slot { generation, state: State::Occupied(value) }) if *generation == id.generation => {
                Some(value)
            }
            _ => None,
        }
    }

    /// Whether `id` names a live entry.
    pub fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Removes and returns the entry for `id`; the slot's generation moves on, so `id` (and any
    /// copy of it) never matches again.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let free_head = self.free_head;
        let slot = self.slots.as_mut().get_mut(id.index())?;
        if slot.generation != id.generation || matches!(slot.state, State::Vacant { .. }) {
            return None;
        }
        let State::Occupied(value) =
            core::mem::replace(&mut slot.state, State::Vacant { next_free: free_head })
        else {
            unreachable!("checked occupied above");
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = id.index;
        self.len -= 1;
        Some(value)
    }

    /// Live entries with their ids, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slots.as_ref().iter().enumerate().filter_map(|(i, slot)| match &slot.state {
            State::Occupied(value) => Some((ConnId::new(i as u32, slot.generation), value)),
            State::Vacant { .. } => None,
        })
    }

    /// Mutable live entries with their ids, in index order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        self.slots.as_mut().iter_mut().enumerate().filter_map(|(i, slot)| match &mut slot.state {
            State::Occupied(value) => Some((ConnId::new(i as u32, slot.generation), value)),
            State::Vacant { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stale_id_misses_new_occupant() {
        let mut slab = ArraySlab::<&str, 1>::new_array();
        let old = slab.insert("old").unwrap();
        assert_eq!(slab.insert("x"), Err(Full("x")));
        assert_eq!(slab.remove(old), Some("old"));
        let new = slab.insert("new").unwrap();
        assert_eq!(new.index(), old.index());
        assert_ne!(new, old);
        assert_eq!(slab.get(old), None);
        assert_eq!(slab.remove(old), None);
        assert_eq!(slab.get(new), Some(&"new"));
    }

    #[test]
    fn pack_round_trip() {
        let id = ConnId::new(0xdead_beef, 7);
        assert_eq!(ConnId::from_u64(id.to_u64()), id);
    }

    proptest! {
        /// Against a model: every live id reaches its value, every removed id misses.
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..200)) {
            let mut slab = ArraySlab::<u32, 8>::new_array();
            let mut live: Vec<(ConnId, u32)> = Vec::new();
            let mut dead: Vec<ConnId> = Vec::new();
            for (n, (insert, pick)) in ops.into_iter().enumerate() {
                if insert {
                    match slab.insert(n as u32) {
                        Ok(id) => live.push((id, n as u32)),
                        Err(Full(v)) => { prop_assert_eq!(v, n as u32); prop_assert_eq!(live.len(), 8); }
                    }
                } else if !live.is_empty() {
                    let (id, v) = live.swap_remove(pick.index(live.len()));
                    prop_assert_eq!(slab.remove(id), Some(v));
                    dead.push(id);
                }
                prop_assert_eq!(slab.len(), live.len());
                for (id, v) in &live { prop_assert_eq!(slab.get(*id), Some(v)); }
                for id in &dead { prop_assert_eq!(slab.get(*id), None); }
            }
        }
    }
}
