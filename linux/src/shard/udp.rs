//! UDP endpoints: one more source of frames for the deal role, not a second runtime.
//!
//! Each endpoint's socket belongs to one shard (endpoint `i` to shard `i % shards`), so one loop
//! and one service instance own it and no lock sits between endpoints. The monitor's epoll reports
//! it readable (edge-triggered) and flags it; the deal role then reads it in batches of
//! `recvmmsg`, runs each datagram through the wire and the message map with a datagram context
//! (`crate::cx::UdpCx`: a reply goes to the datagram's source), and sends the batch's replies with
//! `sendmmsg`.
//!
//! A datagram is exactly one frame of the endpoint's wire. One the wire cannot cut as a whole frame
//! of exactly its length (short, longer than its head says, a refused head, truncated) is counted
//! as dropped and nothing else happens. A pass reads at most [`PASS_BATCHES`] batches per endpoint,
//! then leaves the endpoint flagged, so a flood on one socket cannot starve the TCP connections.

use super::*;

use crate::cx::UdpCx;
use crate::sys::udp::{RecvBatch, SendBatch, MAX_BATCH};

/// Batches read from one endpoint in one pass of the deal role.
pub const PASS_BATCHES: usize = 8;

/// Epoll tokens of UDP endpoints: below the fixed tokens, far above any connection's.
pub const TOKENS: TokenRange = TokenRange { first: u64::MAX - 16, len: 4096 };

/// One bound UDP socket and its readiness flag.
pub struct Endpoint {
    /// The endpoint's number among all of the server's (as `Builder::udp` declared them).
    pub id: u32,
    fd: OwnedFd,
    /// Readable since the deal role last drained it (set by the monitor).
    pub ready: AtomicBool,
}

impl Endpoint {
    /// Endpoint `id` on the bound socket `fd`.
    pub fn new(id: u32, fd: OwnedFd) -> Endpoint {
        // Readable from the start: datagrams may have arrived before the socket joined epoll.
        Endpoint { id, fd, ready: AtomicBool::new(true) }
    }

    /// The socket.
    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The deal role's datagram buffers (allocated only by shards that own endpoints).
pub struct Buffers {
    recv: RecvBatch,
    /// Replies of the batch being handled.
    pub send: SendBatch,
}

impl<W: Wire> Shard<W> {
    /// Whether an endpoint waits to be read.
    pub fn udp_pending(&self) -> bool {
        self.udp.iter().any(|e| e.ready.load(Ordering::Acquire))
    }

    /// Deal role: reads the flagged endpoints and answers their datagrams (inlined down to one
    /// test where the shard has none, as on every TCP-only server).
    #[inline]
    pub fn run_udp<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        if !self.udp.is_empty() {
            self.read_endpoints(service, env);
        }
    }

    fn read_endpoints<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let wire = &io.p.wire;
        // A slot one byte longer than the largest frame, so a longer datagram is seen as such.
        let slot = (wire.max_body() as usize + W::HEAD_LEN + 1).min(65_536);
        let mut bufs = env
            .udp
            .take()
            .unwrap_or_else(|| Box::new(Buffers { recv: RecvBatch::new(slot), send: SendBatch::default() }));
        for (i, endpoint) in self.udp.iter().enumerate() {
            // Acquire pairs with the monitor's Release: the edge it saw is ours to drain.
            if !endpoint.ready.swap(false, Ordering::AcqRel) {
                continue;
            }
            let mut batches = 0;
            loop {
                let n = match bufs.recv.recv(endpoint.raw()) {
                    Ok(n) => n,
                    Err(e) => {
                        log::warn!("udp endpoint {}: receive failed: {e}", endpoint.id);
                        0
                    }
                };
                for d in 0..n {
                    let Buffers { recv, send } = &mut *bufs;
                    let Some((from, bytes)) = recv.get(d) else {
                        counters.add(Counter::DatagramsDropped, 1);
                        continue;
                    };
                    let Some(head) = wire.whole_frame(bytes) else {
                        counters.add(Counter::DatagramsDropped, 1);
                        continue;
                    };
                    counters.add(Counter::DatagramsIn, 1);
                    let body = &bytes[W::HEAD_LEN..];
                    let mut cx = UdpCx::new(self, env, &io, i as u32, Some(from), send);
                    let ctl = self.guarded(&io, Hook::Datagram(endpoint.id, head.kind), || {
                        wire.handle(service, &mut cx, head, body)
                    });
                    if let Some(Control::Skipped) = ctl {
                        counters.add(Counter::UnknownSkipped, 1);
                    }
                }
                self.flush_udp(endpoint, &mut bufs.send, &counters);
                batches += 1;
                if n < MAX_BATCH {
                    break;
                }
                if batches == PASS_BATCHES {
                    // More may wait: come back on the next pass, after the connections.
                    endpoint.ready.store(true, Ordering::Release);
                    env.touched |= DEAL;
                    break;
                }
            }
        }
        env.udp = Some(bufs);
    }

    /// Sends the replies queued for `endpoint`, counting what went and what the kernel refused.
    pub(super) fn flush_udp(&self, endpoint: &Endpoint, send: &mut SendBatch, counters: &Counters) {
        if send.is_empty() {
            return;
        }
        let (sent, dropped) = send.flush(endpoint.raw());
        counters.add(Counter::DatagramsOut, sent as u64);
        counters.add(Counter::DatagramsDropped, dropped as u64);
    }
}
