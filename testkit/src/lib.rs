//! A blocking docs/PROTOCOL.md client and the protocol conformance suite shared by every server target.
//!
//! - [`client`]: a blocking client (frames whole, split or pipelined; raw bytes; reads with
//!   deadlines; EOF versus reset), decoding through `doorway_core::frame`, the project's one codec.
//! - [`suite`]: THE conformance suite, `run_suite(&Target) -> Report`, the executable definition of
//!   `docs/PROTOCOL.md` that the Linux server (from `linux/tests/`) and the embedded firmware (in QEMU,
//!   through the `doorway-conformance` binary) must both pass.
//! - [`process`]: a harness that runs the Linux `doorway` binary as a child process (startup line,
//!   SIGTERM, exit status, `/proc` memory and fd counts) and raises `RLIMIT_NOFILE`.
//! - [`json`]: a strict reader for STATS bodies; [`rng`]: a seeded generator for reproducible input.
//!
//! This crate is for tests and tools on a host with `std`; it never runs inside a server.
//!
//! Holding a server to the protocol, from a test or a tool:
//!
//! ```no_run
//! use std::time::Duration;
//! use doorway_testkit::{run_suite, Target};
//!
//! let mut target = Target::new("127.0.0.1:7200".parse().unwrap());
//! target.max_body = 1024; // what the server declares
//! target.idle_timeout = Some(Duration::from_millis(500)); // short enough to test
//! target.max_connections = Some(4); // run the SERVER_FULL case
//! target.max_concurrent = 4; // never hold more connections than this
//! let report = run_suite(&target);
//! println!("{report}");
//! assert!(report.passed());
//! ```
//!
//! The same from a shell: `cargo run -p doorway-testkit --bin doorway-conformance -- --addr
//! 127.0.0.1:7200 --max-body 1024 --idle-timeout-ms 500 --max-connections 4 --concurrent 4`.
#![deny(missing_docs)]

pub mod client;
pub mod json;
pub mod process;
pub mod rng;
pub mod suite;

pub use client::{Client, CloseKind, Frame, RecvError};
pub use process::{raise_nofile_limit, ServerProcess};
pub use suite::{run_suite, Report, Target};
