//! doorway-linux: the doorway access server on Linux epoll threads (seed 000).
//!
//! An application is a type with a message map (`doorway_core::message_map!`) served by
//! [`Server::builder`]. The server speaks `PROTOCOL.md` and runs seed 000's four roles:
//!
//! ```text
//! monitor: epoll (ET) ─ accept ─ close ─ timerfd tick ─ signalfd
//!    │ door-guarded ready queues (one entry per connection at most)
//!    ▼
//! receive: read until drained into pooled blocks ─▶ cut frames (codec)
//!    ▼
//! deal:    handle_frame ─▶ message map ─▶ handler ─▶ Context (reply, send_to, broadcast, timers)
//!    ▼
//! send:    one gathered write per connection per batch; EPOLLOUT only after a full kernel buffer
//! ```
//!
//! Module map:
//!
//! - [`sys`]: every `unsafe` libc call (epoll, sockets, eventfd, timerfd, signalfd, rlimit).
//! - [`config`]: [`Config`], the TOML file and the command line.
//! - The wire (`doorway_core::wire::Wire`, v1 by default, Lars with `Builder::wire`): the server
//!   is generic over it, and nothing here reads or writes head bytes itself.
//! - [`buf`]: pooled blocks; an idle connection holds none.
//! - [`conn`]: a connection's state machine and its receive/send/check steps.
//! - [`shard`]: a connection table plus the roles' batch functions; [`cx`]: the handler Context.
//! - [`sync`]: spin locks, eventfd wakers, ready queues and doors.
//! - [`stats`]: per-thread counters, STATS and Prometheus text.
//!
//! From `doorway_core` it uses the frame codec, the message map, the slab (slot ids), the doors
//! and door queues (ready queues) and the timing wheel.
//! - [`server`]: threads per model (`fused`, `pipeline`), shards, metrics, the public API.

pub mod buf;
pub mod config;
pub mod conn;
pub mod cx;
pub mod server;
pub mod shard;
pub mod stats;
pub mod sync;
pub mod sys;

pub use config::{Cli, Config, ConfigError, LogLevel, Model, OnPanic};
pub use server::{Builder, Handle, Running, Server};
pub use stats::{MetricKind, ServiceMetric};
