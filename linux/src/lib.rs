//! doorway-linux: the doorway access server on Linux epoll threads.
//!
//! An application is a type with a message map (`doorway_core::message_map!`) served by
//! [`Server::builder`]. The server speaks a [`doorway_core::wire::Wire`] (`docs/PROTOCOL.md` v1 by
//! default, the original Lars's wire with `Builder::wire`) and runs the four roles of
//! `docs/ARCHITECTURE.md` (monitor, receive, deal, send):
//!
//! ```text
//! monitor: epoll (ET) ─ accept ─ close ─ timerfd tick ─ signalfd
//!    │ door-guarded ready queues (one entry per connection at most)
//!    ▼
//! receive: read until drained into pooled blocks ─▶ door ─▶ the wire cuts frames
//!    ▼
//! deal:    the wire's rules ─▶ message map ─▶ handler ─▶ Context (reply, send_to, broadcast,
//!          pause, timers); shard hooks (on_start, shard timers); the inbox (Handle, other shards)
//!    ▼
//! send:    one gathered write per connection per batch; EPOLLOUT only after a full kernel buffer
//! ```
//!
//! The public surface is a facade: [`Server`], [`Builder`], [`Running`], [`Handle`] (reach the
//! server from any thread), [`Config`] and the command line ([`Cli`]), [`ServiceMetric`]. The
//! machinery behind it is private:
//!
//! - `sys`: every `unsafe` libc call (epoll, sockets, eventfd, timerfd, signalfd, rlimit, malloc
//!   tuning); the only module where `unsafe` is allowed.
//! - `config`: [`Config`], the TOML file and the command line.
//! - `buf`: pooled blocks and the process-wide memory budget; an idle connection holds none.
//! - `conn`: a connection's state machine and its receive/send/check steps.
//! - `shard`: a connection table plus the roles' batch functions; `cx`: the handler contexts.
//! - `sync`: spin locks, eventfd wakers, ready queues and doors.
//! - `stats`: per-thread counters, service metrics, STATS and Prometheus text.
//! - `pace`: [`Pace`], yield points for a service's long background jobs.
//! - `server`: threads per model (`fused`, `pipeline`), shards, metrics, the public API.
//!
//! From `doorway_core` it uses the wire, the message map, the slab (slot ids), the doors and door
//! queues (ready queues) and the timing wheel.

#![deny(unsafe_code)]

mod buf;
pub mod config;
mod conn;
mod cx;
mod pace;
mod server;
mod shard;
mod stats;
mod sync;
#[allow(unsafe_code)]
mod sys;

pub use config::{Cli, Config, ConfigError, LogLevel, Model, OnPanic};
pub use doorway_core::dispatch::LinkId;
pub use pace::Pace;
pub use server::{Builder, Handle, Running, Server};
pub use shard::link::{LinkOptions, LinkStatus};
pub use shard::{INBOX_CAP_BYTES, SHARD_SHIFT};
pub use stats::{MetricKind, ServiceMetric};
pub use sys::lower_thread_priority;
