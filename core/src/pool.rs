//! A fixed-block buffer pool: blocks handed out and taken back without allocation.
//!
//! The caller provides the memory (a `static` array on a device, one zeroed heap region on a
//! host) and room for the free list (inline `[_; N]` through [`ArrayPool`], or a boxed slice
//! through `Pool::with_capacity`). [`Pool::new`] cuts the memory into equal blocks and stacks them
//! on the free list; [`Pool::alloc`] pops one and [`Pool::free`] pushes it back, both O(1). An
//! empty free list is an answer ([`Exhausted`]), never a panic or a hidden allocation.
//!
//! # Ownership
//!
//! A [`Block`] is the exclusive borrow of its bytes (`&'a mut [u8]`, cut from the memory with
//! `chunks_exact_mut`: no `unsafe`). It borrows the memory, not the pool, so it can be held in
//! connection state, moved to another thread, and handed back to the pool's owner later. The pool
//! itself is used through `&mut` by one owner (one pool per thread, or behind the binding's
//! lock). A block that is never freed only shrinks the pool.
//!
//! # Use for connection buffers
//!
//! Give a connection a block when it has bytes to hold (a partial frame, unsent replies) and free
//! it when the buffer drains, so an idle connection holds no block: it costs its slab entry only
//! (docs/ARCHITECTURE.md#buffer-pool). LIFO reuse keeps recently used, cache-warm blocks in play.
//! On Linux the std constructor takes one zeroed region, which the kernel backs lazily, so
//! untouched blocks cost no resident memory.
//!
//! ```
//! use doorway_core::pool::{ArrayPool, Exhausted};
//! let mut memory = [0u8; 3 * 16];
//! let mut pool: ArrayPool<'_, 4> = ArrayPool::new_array(&mut memory, 16).unwrap();
//! assert_eq!(pool.capacity(), 3); // the memory holds 3 blocks of 16 bytes
//! let mut a = pool.alloc().unwrap();
//! a[..5].copy_from_slice(b"hello");
//! let _b = pool.alloc().unwrap();
//! let _c = pool.alloc().unwrap();
//! assert_eq!(pool.alloc().err(), Some(Exhausted));
//! pool.free(a).unwrap();
//! assert_eq!(pool.available(), 1);
//! ```

use core::fmt;
use core::ops::{Deref, DerefMut};

/// The pool has no free block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Exhausted;

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer pool exhausted")
    }
}

impl core::error::Error for Exhausted {}

/// Why a pool could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NewError {
    /// The block size is 0.
    ZeroBlockSize,
}

impl fmt::Display for NewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewError::ZeroBlockSize => f.write_str("block size must be at least 1 byte"),
        }
    }
}

impl core::error::Error for NewError {}

/// A block handed back to a pool it did not come from (or freed twice); the block is returned.
#[derive(Debug, PartialEq, Eq)]
pub struct Foreign<'a>(pub Block<'a>);

impl fmt::Display for Foreign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("block does not belong to this pool")
    }
}

impl core::error::Error for Foreign<'_> {}

/// One block of a [`Pool`]: exclusive access to `block_size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Block<'a> {
    bytes: &'a mut [u8],
}

impl Deref for Block<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl DerefMut for Block<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

/// The free-list storage of a pool: one `Option<&mut [u8]>` per block.
pub type FreeSlot<'a> = Option<&'a mut [u8]>;

/// A pool of equal blocks cut from `&'a mut [u8]`, its free list stored in `S`.
pub struct Pool<'a, S: AsMut<[FreeSlot<'a>]>> {
    free: S,
    n_free: usize,
    capacity: usize,
    block_size: usize,
    /// Address range of the memory, to refuse foreign blocks.
    start: usize,
    end: usize,
    _memory: core::marker::PhantomData<&'a mut [u8]>,
}

/// A pool whose free list holds up to `N` blocks inline.
pub type ArrayPool<'a, const N: usize> = Pool<'a, [FreeSlot<'a>; N]>;

impl<'a, const N: usize> Pool<'a, [FreeSlot<'a>; N]> {
    /// A pool of `block_size`-byte blocks cut from `memory`, at most `N` of them.
    pub fn new_array(memory: &'a mut [u8], block_size: usize) -> Result<Self, NewError> {
        Pool::new(memory, block_size, [const { None }; N])
    }
}

#[cfg(feature = "std")]
impl Pool<'static, Box<[FreeSlot<'static>]>> {
    /// A pool of `n_blocks` blocks of `block_size` bytes in one zeroed heap region that lives for
    /// the rest of the process (host only; meant for a server's lifetime pools).
    pub fn with_capacity(block_size: usize, n_blocks: usize) -> Result<Self, NewError> {
        let memory: &'static mut [u8] = Box::leak(vec![0u8; block_size * n_blocks].into_boxed_slice());
        Pool::new(memory, block_size, (0..n_blocks).map(|_| None).collect())
    }
}

impl<'a, S: AsMut<[FreeSlot<'a>]>> Pool<'a, S> {
    /// A pool of `block_size`-byte blocks cut from `memory`; as many as fit in both `memory` and
    /// `free` (a tail of `memory` shorter than a block is unused).
    pub fn new(memory: &'a mut [u8], block_size: usize, mut free: S) -> Result<Self, NewError> {
        if block_size == 0 {
            return Err(NewError::ZeroBlockSize);
        }
        let start = memory.as_ptr() as usize;
        let end = start + memory.len();
        let slots = free.as_mut();
        let mut capacity = 0;
        for (slot, block) in slots.iter_mut().zip(memory.chunks_exact_mut(block_size)) {
            *slot = Some(block);
            capacity += 1;
        }
        for slot in slots.iter_mut().skip(capacity) {
            *slot = None;
        }
        Ok(Pool {
            free,
            n_free: capacity,
            capacity,
            block_size,
            start,
            end,
            _memory: core::marker::PhantomData,
        })
    }

    /// Takes a free block (its contents are whatever its last user left).
    #[inline]
    pub fn alloc(&mut self) -> Result<Block<'a>, Exhausted> {
        if self.n_free == 0 {
            return Err(Exhausted);
        }
        self.n_free -= 1;
        match self.free.as_mut()[self.n_free].take() {
            Some(bytes) => Ok(Block { bytes }),
            None => unreachable!("free list slot below n_free is empty"),
        }
    }

    /// Puts a block back. A block of another pool (or of the wrong size) is refused and returned.
    #[inline]
    pub fn free(&mut self, block: Block<'a>) -> Result<(), Foreign<'a>> {
        let addr = block.bytes.as_ptr() as usize;
        let ours = addr >= self.start
            && addr < self.end
            && (addr - self.start) % self.block_size == 0
            && block.bytes.len() == self.block_size
            && self.n_free < self.capacity;
        if !ours {
            return Err(Foreign(block));
        }
        self.free.as_mut()[self.n_free] = Some(block.bytes);
        self.n_free += 1;
        Ok(())
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool, free or not.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Free blocks.
    pub fn available(&self) -> usize {
        self.n_free
    }

    /// Blocks handed out and not yet freed.
    pub fn in_use(&self) -> usize {
        self.capacity - self.n_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_disjoint_and_full_size() {
        let mut memory = [0u8; 100];
        let mut pool: ArrayPool<'_, 8> = ArrayPool::new_array(&mut memory, 30).unwrap();
        assert_eq!(pool.capacity(), 3);
        let mut blocks: Vec<Block<'_>> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        for (i, block) in blocks.iter_mut().enumerate() {
            assert_eq!(block.len(), 30);
            block.fill(i as u8 + 1);
        }
        for (i, block) in blocks.iter().enumerate() {
            assert!(block.iter().all(|b| *b == i as u8 + 1), "blocks overlap");
        }
        assert_eq!(pool.alloc().err(), Some(Exhausted));
        for block in blocks {
            pool.free(block).unwrap();
        }
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn refuses_foreign_blocks() {
        let mut mem_a = [0u8; 32];
        let mut mem_b = [0u8; 32];
        let mut a: ArrayPool<'_, 2> = ArrayPool::new_array(&mut mem_a, 16).unwrap();
        let mut b: ArrayPool<'_, 2> = ArrayPool::new_array(&mut mem_b, 16).unwrap();
        let from_b = b.alloc().unwrap();
        let Err(Foreign(back)) = a.free(from_b) else { panic!("foreign block accepted") };
        b.free(back).unwrap();
        assert_eq!(ArrayPool::<'_, 2>::new_array(&mut [0u8; 4], 0).err(), Some(NewError::ZeroBlockSize));
    }

    #[test]
    fn free_list_smaller_than_memory() {
        let mut memory = [0u8; 64];
        let mut pool: ArrayPool<'_, 2> = ArrayPool::new_array(&mut memory, 8).unwrap();
        assert_eq!(pool.capacity(), 2);
        assert!(pool.alloc().is_ok() && pool.alloc().is_ok());
        assert_eq!(pool.alloc().err(), Some(Exhausted));
    }

    proptest! {
        /// Against a model: alloc succeeds exactly while blocks are free, every block handed out
        /// is distinct and keeps what its holder wrote.
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..300)) {
            let mut memory = vec![0u8; 8 * 24];
            let mut pool: ArrayPool<'_, 8> = ArrayPool::new_array(&mut memory, 24).unwrap();
            let mut held: Vec<(Block<'_>, u8)> = Vec::new();
            for (n, (alloc, pick)) in ops.into_iter().enumerate() {
                if alloc {
                    match pool.alloc() {
                        Ok(mut block) => {
                            block.fill(n as u8);
                            held.push((block, n as u8));
                        }
                        Err(Exhausted) => prop_assert_eq!(held.len(), 8),
                    }
                } else if !held.is_empty() {
                    let (block, mark) = held.swap_remove(pick.index(held.len()));
                    prop_assert!(block.iter().all(|b| *b == mark));
                    prop_assert!(pool.free(block).is_ok());
                }
                prop_assert_eq!(pool.in_use(), held.len());
                for (block, mark) in &held {
                    prop_assert!(block.iter().all(|b| b == mark), "a held block was overwritten");
                }
            }
        }
    }
}
