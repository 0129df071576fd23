//! doorway-core: the `no_std`, allocation-free heart of doorway.
//!
//! The crate knows no clock and no socket. Callers pass bytes and ticks in; the crate hands back
//! frames, dispatch decisions and expirations. Two homes bind it: `doorway-linux` (epoll threads)
//! and `doorway-embedded` (embassy-net / smoltcp sockets).
//!
//! The data path differs per home, since each home meets the core pieces in its own order:
//!
//! ```text
//! Linux (doorway-linux), threads handing connections to each other:
//!   epoll edge ─▶ door (once per connection) ─▶ queue::mpsc (ready queue) ─▶ receive: bytes
//!     ─▶ wire (cut, head) ─▶ door ─▶ ready queue ─▶ deal: wire rules ─▶ dispatch (message map)
//!     ─▶ handler ─▶ Context (reply, send_to, pause) ─▶ door ─▶ ready queue ─▶ send
//!   ticks ─▶ wheel (idle, write and linger checks; service and shard timers) ─▶ deal
//!
//! A device (doorway-embedded), one task per socket, no hand-off and so no doors or queues:
//!   socket bytes ─▶ wire (cut, head) ─▶ dispatch ─▶ handler ─▶ Context (reply)
//!   ticks ─▶ wheel (idle checks, service timers)
//! ```
//!
//! - [`wire`]: the [`wire::Wire`] trait, everything a byte protocol decides (cutting, heads,
//!   control kinds, the answer to an unknown kind, how a close is announced), with two
//!   implementations: [`wire::V1`] (`docs/PROTOCOL.md`) and [`wire::Lars`] (the original Lars's
//!   8-byte little-endian head).
//! - [`frame`]: the byte layout of `docs/PROTOCOL.md` version 1, under [`wire::V1`].
//! - [`dispatch`]: the message map (`message_map!`), the [`dispatch::Context`] a binding
//!   implements, and [`dispatch::handle_frame`], the protocol's control rules in one place.
//! - [`demo`]: the demo service (ECHO, BROADCAST, STATS) both servers run by default.
//! - [`stats`]: the counters every home reports, with their STATS names.
//! - [`slab`]: connection storage with generation-tagged [`slab::ConnId`]s.
//! - [`queue`]: the fixed-capacity ready queue ([`queue::mpsc`], many producers, one consumer). Full is an answer, never a panic.
//! - [`door`]: per-connection atomic flags; the first opener enqueues, so a connection sits in a
//!   ready queue at most once and a queue sized to the connections never overflows.
//! - [`wheel`]: a hierarchical timing wheel: O(1) insert, cancel and per-tick expiry, ticks passed
//!   in, generation-tagged [`wheel::TimerId`]s.
//! - [`time`]: [`time::Instant`] and [`time::Duration`] in ticks; the core reads no clock.
//!
//! Targets without compare-and-swap (`thumbv6m-none-eabi`) get everything except [`door`] and
//! [`queue::mpsc`], which need it (`cfg(target_has_atomic = "32")`), unless the `portable-atomic`
//! feature supplies it (through a critical section or a single-core assumption).
//!
//! `unsafe` is denied crate-wide and allowed only in [`queue`], whose slots hand values between
//! threads. Atomics come from a private `sync` shim that maps to loom's under `cfg(loom)`, so the
//! queues and doors are model-checked (`core/tests/loom_*.rs`).
//!
//! Storage is never allocated here: it is inline (const generics) or handed in by the caller.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` are mutually exclusive");

#[macro_use]
mod fmt;

pub mod demo;
pub mod dispatch;
#[cfg(any(target_has_atomic = "32", feature = "portable-atomic"))]
pub mod door;
pub mod frame;
pub mod json;
pub mod queue;
pub mod slab;
pub mod stats;
mod sync;
pub mod time;
pub mod wheel;
pub mod wire;

pub use slab::ConnId;

/// Fixed capacity is reached (a queue, the slab, the timing wheel): the value is handed back, never
/// dropped. One type for every container, re-exported as `queue::Full`, `slab::Full` and
/// `wheel::Full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full<T>(pub T);

impl<T> core::fmt::Display for Full<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("at capacity")
    }
}

impl<T: core::fmt::Debug> core::error::Error for Full<T> {}
