//! doorway-core: the `no_std`, allocation-free heart of doorway.
//!
//! The crate knows no clock and no socket. Callers pass bytes and ticks in; the crate hands back
//! frames, dispatch decisions and expirations. Two homes bind it: `doorway-linux` (epoll threads)
//! and `doorway-embedded` (embassy-net / smoltcp sockets).
//!
//! The data path, layer by layer:
//!
//! ```text
//! bytes ─▶ frame (codec: cut, validate) ─▶ dispatch (message map) ─▶ handler ─▶ Context (reply)
//! ticks ─▶ wheel (timing wheel)         ─▶ door (once-only flag)  ─▶ queue (ready queue)
//! ```
//!
//! - [`frame`]: the wire format of `PROTOCOL.md`. The one seam where the byte layout lives.
//! - [`dispatch`]: the message map (`message_map!`), the [`dispatch::Context`] a binding
//!   implements, and [`dispatch::handle_frame`], the protocol's control rules in one place.
//! - [`demo`]: the demo service (ECHO, BROADCAST, STATS) both servers run by default.
//! - [`slab`]: connection storage with generation-tagged [`slab::ConnId`]s.
//! - [`queue`], [`door`], [`wheel`], [`pool`]: fixed-capacity machinery for the threads.
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
pub mod frame;
pub mod json;
pub mod slab;
