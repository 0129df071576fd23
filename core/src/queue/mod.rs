//! Fixed-capacity queues: allocated once, never grown; a full queue is an answer, not a panic.
//!
//! - [`mpsc`]: the ready queue, many producers and one consumer, with inline or caller-provided
//!   storage (Dmitry Vyukov's bounded queue with crossbeam's lap stamps). Needs compare-and-swap,
//!   so it exists only where the target has it (`cfg(target_has_atomic = "32")`) or the
//!   `portable-atomic` feature supplies it.
//!
//! It hands a value back when full ([`Full`]), report emptiness with `None`, and never block:
//! neither side ever waits for the other. This is the one module where `unsafe` is allowed:
//! slots are `UnsafeCell<MaybeUninit<T>>` whose ownership moves between the producer and the
//! consumer through the atomic indices or stamps. Each file says who owns each slot when, and
//! every non-`Relaxed` ordering names the operation it pairs with.
#![allow(unsafe_code)]

#[cfg(any(target_has_atomic = "32", feature = "portable-atomic"))]
pub mod mpsc;

pub use crate::Full;

/// Pads and aligns a value to a cache line so the producer's and consumer's indices do not share
/// one (false sharing costs a cache-line transfer per operation across cores).
#[derive(Debug, Default)]
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), repr(align(32)))]
#[cfg_attr(not(any(target_has_atomic = "32", feature = "portable-atomic")), allow(dead_code))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
