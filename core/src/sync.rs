//! The atomics and cells the concurrent pieces use: `core`'s, or loom's under `cfg(loom)`.
//!
//! [`queue`](crate::queue) and [`door`](crate::door) import atomics only from here (tokio's
//! `loom` shim, tokio/src/loom/mod.rs), so the same code runs in production and under the loom
//! model checker (`RUSTFLAGS="--cfg loom"`, `core/tests/loom_*.rs`), which explores every
//! interleaving and every weak-memory outcome the orderings allow.
//!
//! [`UnsafeCell`] has loom's closure API (`with`, `with_mut`) in both builds, so loom can check
//! that no slot is read while another thread writes it. The wrapper itself is safe: only
//! dereferencing the raw pointer it hands out is unsafe, and that happens in `queue/` alone.
//!
//! With the `portable-atomic` feature the atomics come from that crate instead, which provides
//! compare-and-swap on targets without it (`thumbv6m-none-eabi`), through a critical section or a
//! single-core assumption the application picks.
//!
//! `spin_loop` is the busy-wait hint; under loom it yields so the checker can schedule the thread
//! being waited for.
//!
//! On a target without compare-and-swap and without `portable-atomic`, no user of this module is
//! compiled (the door and the ready queue need CAS), hence the `allow` below.
#![cfg_attr(
    not(any(loom, target_has_atomic = "32", feature = "portable-atomic")),
    allow(dead_code, unused_imports)
)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

#[cfg(all(loom, target_has_atomic = "32"))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8};

#[cfg(all(not(loom), not(feature = "portable-atomic")))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};

// Compare-and-swap users only (`door`, `queue::mpsc`): absent on `thumbv6m-none-eabi` unless the
// `portable-atomic` feature supplies them.
#[cfg(all(not(loom), not(feature = "portable-atomic"), target_has_atomic = "32"))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU8};

#[cfg(all(not(loom), feature = "portable-atomic"))]
pub(crate) use portable_atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` with loom's access API.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a shared pointer to the contents.
    #[inline(always)]
    #[allow(dead_code)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Busy-wait hint.
#[cfg(not(loom))]
#[inline(always)]
#[allow(dead_code)]
pub(crate) fn spin_loop() {
    core::hint::spin_loop();
}

/// Busy-wait hint: under loom, let another thread run.
#[cfg(loom)]
#[allow(dead_code)]
pub(crate) fn spin_loop() {
    loom::thread::yield_now();
}
