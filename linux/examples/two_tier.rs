//! Two tiers: an access server that forwards each client's ECHO upstream, over one link, to a
//! second doorway server, and returns each reply to the client that asked.
//!
//! ```text
//! clients ──TCP──▶ access (this example) ══link══▶ upstream doorway (the demo service)
//! ```
//!
//! - A request gets an upstream `seq` of its own; the table of requests in flight maps it back to
//!   the client's connection and `seq`, and the reply goes there with `send_to` (the client may sit
//!   on another shard than the link).
//! - While the link is down a request is answered at once with UPSTREAM_DOWN rather than left
//!   waiting, and the requests in flight when it went down are answered the same way in
//!   `on_link_down`, so no client waits in silence. The link reconnects by itself (backoff);
//!   `on_link_up` marks it usable again.
//!
//! Run: `cargo run -p doorway-linux --example two_tier -- --listen 127.0.0.1:7201 --upstream
//! 127.0.0.1:7200` beside `cargo xtask linux-server`. Tested in `tests/example_two_tier.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use doorway_core::demo::kind::ECHO;
use doorway_core::dispatch::{Context, LinkId, Outbox, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;

/// The answer to a request that could not be forwarded: the link to the upstream tier is down.
pub const UPSTREAM_DOWN: u16 = 90;

/// The access tier's service: forwards ECHO over `link`.
#[derive(Clone)]
pub struct Access {
    link: LinkId,
    up: Arc<AtomicBool>,
    next_seq: Arc<AtomicU32>,
    /// Upstream seq → (client connection, client seq).
    waiting: Arc<Mutex<HashMap<u32, (ConnId, u32)>>>,
}

impl Access {
    /// Forwards over `link` (from `Builder::add_link`).
    pub fn new(link: LinkId) -> Access {
        Access {
            link,
            up: Arc::new(AtomicBool::new(false)),
            next_seq: Arc::new(AtomicU32::new(0)),
            waiting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (ConnId, u32)>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn echo(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        if cx.link() == Some(self.link) {
            // A reply from upstream: back to the client that asked.
            if let Some((client, seq)) = self.waiting().remove(&req.seq) {
                // A client that left meanwhile answers Closed: nothing to do.
                let _ = cx.send_to(client, ECHO, seq, req.body);
            }
            return Ok(());
        }
        if !self.up.load(Ordering::Acquire) {
            return cx.reply(UPSTREAM_DOWN, req.seq, b"upstream down");
        }
        let upstream_seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.waiting().insert(upstream_seq, (cx.conn(), req.seq));
        if let Err(e) = cx.send_link(self.link, ECHO, upstream_seq, req.body) {
            self.waiting().remove(&upstream_seq);
            let reason = format!("upstream unavailable: {e}");
            return cx.reply(UPSTREAM_DOWN, req.seq, reason.as_bytes());
        }
        Ok(())
    }
}

message_map! {
    Access {
        ECHO => echo,
    }
}

impl Service for Access {
    fn on_link_up<C: Context>(&mut self, _cx: &mut C, link: LinkId) {
        if link == self.link {
            self.up.store(true, Ordering::Release);
        }
    }

    fn on_link_down<O: Outbox>(&mut self, out: &mut O, link: LinkId) {
        if link != self.link {
            return;
        }
        self.up.store(false, Ordering::Release);
        // Whatever was in flight on the dead connection will not be answered: say so.
        let lost: Vec<(ConnId, u32)> = self.waiting().drain().map(|(_, v)| v).collect();
        for (client, seq) in lost {
            let _ = out.send_to(client, UPSTREAM_DOWN, seq, b"upstream went down");
        }
    }
}

/// Starts the access tier on `cfg`, linked to `upstream`.
pub fn start(
    cfg: doorway_linux::Config,
    upstream: SocketAddr,
    options: doorway_linux::LinkOptions,
) -> std::io::Result<doorway_linux::Running> {
    let mut builder = doorway_linux::Server::builder().config(cfg).link_options(options);
    let link = builder.add_link("upstream", upstream);
    builder.start(Access::new(link))
}

#[derive(clap::Parser)]
struct Args {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:7201")]
    listen: SocketAddr,
    /// The upstream doorway server.
    #[arg(long, default_value = "127.0.0.1:7200")]
    upstream: SocketAddr,
}

fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = Args::parse();
    env_logger::Builder::new().filter_level(log::LevelFilter::Info).init();
    let cfg = doorway_linux::Config { listen: args.listen, ..doorway_linux::Config::default() };
    match start(cfg, args.upstream, doorway_linux::LinkOptions::default()) {
        Ok(running) => {
            println!("two_tier access listening on {}, upstream {}", running.local_addr(), args.upstream);
            match running.wait() {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("two_tier: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("two_tier: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
