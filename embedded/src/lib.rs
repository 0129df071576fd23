//! doorway-embedded: the doorway access server (`PROTOCOL.md`) on embassy-net TCP sockets.
//!
//! `no_std`, no allocation: the buffers are in one [`Storage`] whose capacities are const
//! generics, and the rest (timing wheel, futures) is in the task that awaits [`serve`], so memory
//! use is known at link time. The same core pieces as the Linux server do the protocol work
//! (codec, message map, timing wheel); this crate only binds them to sockets and to embassy-time.
//!
//! ```text
//! socket bytes ─▶ frame::Decoder ─▶ dispatch::handle_frame ─▶ Service (message map) ─▶ Cx
//!                                                                          │
//! socket ◀── write ◀── out::OutBuf (per connection, whole frames) ◀────────┘ reply / broadcast
//! embassy-time ─▶ clock ─▶ wheel::Wheel (idle timeouts, service timers) ─▶ slot flags ─▶ session
//!                 write timeout, linger: per-session deadlines (rare states only)
//! ```
//!
//! - [`server`]: [`serve`], [`serve_until`], [`Config`], [`Storage`]; the per-connection session
//!   loop, admission and refusal (a connection beyond `max_connections` is accepted, sent ERROR 5
//!   and closed), and graceful shutdown.
//! - [`stack`]: [`new_stack`] and [`ServerStack`], the embassy-net stack sized from the storage,
//!   so that a miscount is a [`StartError`], never smoltcp's panic.
//! - [`hub`]: what connections share (output buffers, counters, timers) and [`hub::Cx`], the
//!   embedded [`Context`](doorway_core::dispatch::Context) handlers see.
//! - [`out`]: per-connection pending output, whole frames only.
//! - [`timers`]: idle and service timers on `doorway_core::wheel`.
//!
//! # Using it in your firmware
//!
//! Implement a [`Service`](doorway_core::dispatch::Service) with a message map, make the
//! embassy-net stack with [`new_stack`] (its `StackResources` sized from the storage type, see
//! [`Storage`]), give the server that [`ServerStack`] and a `Storage`, and await [`serve`] in a
//! task. The board crates (`boards/`) do exactly
//! this with the demo service. To be able to stop the server (before an OTA update, on a button),
//! await [`serve_until`] with a `stop` future instead: when it completes, the server stops
//! accepting, answers what each client already sent, sends ERROR 7 (SHUTTING_DOWN), closes every
//! connection within [`Config::drain_timeout`] and returns its final counters (see
//! [`server`], "Shutdown"). A custom service looks like this:
//!
//! ```no_run
//! use doorway_core::dispatch::{Context, Request, SendError, Service};
//! use doorway_core::message_map;
//! use doorway_embedded::{new_stack, serve, Config, ServerStack, StartError, Storage};
//! use embassy_net::{Runner, StackResources};
//!
//! /// Answers kind 100 with a running count.
//! struct Counter {
//!     n: u32,
//! }
//!
//! impl Counter {
//!     fn bump(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
//!         self.n = self.n.wrapping_add(1);
//!         cx.reply(req.kind, req.seq, &self.n.to_be_bytes())
//!     }
//! }
//!
//! message_map! {
//!     Counter {
//!         100 => bump,
//!     }
//! }
//!
//! impl Service for Counter {}
//!
//! /// 4 sockets for 2 connections, max_body 256 (frame buffer 268), 536 B output, 512 B socket
//! /// buffers.
//! type MyStorage = Storage<4, 268, 536, 512, 512>;
//! /// The stack's sockets, counted from the storage (a static address; DHCP needs one more).
//! type MyResources = StackResources<{ MyStorage::SOCKETS }>;
//!
//! // In firmware: `static STORAGE: StaticCell<MyStorage>` or `ConstStaticCell::new(MyStorage::new())`,
//! // the resources in a `StaticCell`, and an embassy task that runs the stack's runner.
//! fn make_stack<D: embassy_net::driver::Driver>(
//!     driver: D,
//!     resources: &'static mut MyResources,
//! ) -> Result<(ServerStack<'static>, Runner<'static, D>), StartError> {
//!     let address = embassy_net::Ipv4Cidr::new(embassy_net::Ipv4Address::new(10, 0, 2, 15), 24);
//!     let ip = embassy_net::StaticConfigV4 { address, gateway: None, dns_servers: Default::default() };
//!     new_stack(driver, embassy_net::Config::ipv4_static(ip), resources, 0x646f_6f72)
//! }
//!
//! async fn server_task(mut stack: ServerStack<'static>, storage: &'static mut MyStorage) {
//!     let config = Config { port: 7200, max_connections: 2, ..Config::new() };
//!     // Runs forever; returns only if the stack has no room for the storage's sockets.
//!     let _error: StartError = serve(&mut stack, storage, Counter { n: 0 }, config).await;
//! }
//!
//! /// The same, stopped by a signal another task raises; returns once every client is closed.
//! async fn stoppable_server_task(
//!     mut stack: ServerStack<'static>,
//!     storage: &'static mut MyStorage,
//!     stop: &'static embassy_sync::signal::Signal<
//!         embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex,
//!         (),
//!     >,
//! ) {
//!     let config = Config { port: 7200, max_connections: 2, ..Config::new() };
//!     let stopped = doorway_embedded::serve_until(&mut stack, storage, Counter { n: 0 }, config, stop.wait());
//!     if let Ok(counters) = stopped.await {
//!         let _served = counters.connections_accepted;
//!     }
//! }
//! # fn main() { let _ = (server_task, stoppable_server_task); }
//! ```
//!
//! # Logging
//!
//! Feature `defmt` logs connection events (TRACE) and anomalies (DEBUG) through defmt and
//! forwards to doorway-core and embassy-net. Nothing on the per-frame path logs or formats.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod fmt;

pub mod hub;
pub mod out;
pub mod server;
pub mod stack;
pub mod timers;

pub use server::{serve, serve_until, Config, DefaultStorage, Storage};
pub use stack::{new_stack, ServerStack, StartError};
