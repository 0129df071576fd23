//! Upstream links: connections the server dials and keeps dialled, in the same loops as the
//! connections it accepts.
//!
//! A link is declared once (`Builder::link`) and keeps its [`LinkId`] across reconnects. Link `i`
//! belongs to shard `i % shards`. Its life:
//!
//! ```text
//! Down ──tick, retry time reached──▶ Connecting ──writable, SO_ERROR 0──▶ Opening ──deal──▶ Up
//!   ▲  ◀──refused / timed out (backoff)──┘                                                  │
//!   └───────────────────────────── the connection closes (on_link_down, backoff) ◀──────────┘
//! ```
//!
//! - The monitor starts connects on its tick (non-blocking `connect`, completed on writability,
//!   bounded by a connect timeout) and, once connected, admits the socket as a connection of the
//!   shard marked with its link: it is read, dealt with and written like any other, but it is not
//!   counted against `max_connections`, takes no broadcast, is never closed for being idle (a v1
//!   link sends PING instead), and gets no ERROR frame from this side.
//! - The deal role turns Opening into Up: it first moves the frames queued while the link was down
//!   onto the connection, in order, then runs `on_link_up`, so a frame sent later never overtakes
//!   one sent earlier. Only the deal role flushes and only it sees Up, so the order holds.
//! - `send_link` while the link is not Up queues the encoded frame, up to
//!   [`LinkOptions::queue_bytes`]: past it the answer is `Full`, never growth and never a silent
//!   drop.
//! - Backoff: each failure doubles the wait from [`LinkOptions::backoff_floor`] up to
//!   [`LinkOptions::backoff_ceiling`], with ±25 % jitter so many agents do not reconnect in step;
//!   a connection that came up resets it. Every attempt and failure is counted; failures are logged
//!   at most once per [`LOG_EVERY_MS`] per link, with how many were not.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use doorway_core::dispatch::LinkId;

use super::*;

/// A link's failures are logged at most this often (ms); the log line says how many were not.
pub const LOG_EVERY_MS: u64 = 10_000;

/// Epoll tokens of connecting links: the range below the UDP endpoints'.
pub const TOKENS: TokenRange = TokenRange::below(udp::TOKENS);

/// How links reconnect and how much they hold while down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// The first wait after a failure.
    pub backoff_floor: Duration,
    /// The longest wait between attempts.
    pub backoff_ceiling: Duration,
    /// How long a connect may take before it counts as failed.
    pub connect_timeout: Duration,
    /// Bytes of frames a link holds while it is down.
    pub queue_bytes: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            backoff_floor: Duration::from_millis(100),
            backoff_ceiling: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            queue_bytes: 4 << 20,
        }
    }
}

/// A link's state as `Running::link_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Connected, with its queue flushed.
    pub up: bool,
    /// Failed connects in a row.
    pub failures: u32,
    /// Frames waiting for the link.
    pub queued_frames: usize,
    /// Their bytes (at most `LinkOptions::queue_bytes`).
    pub queued_bytes: usize,
}

enum Phase {
    /// Not connected; the next attempt at this time (ms).
    Down { retry_at: u64 },
    /// A connect is under way since this time.
    Connecting { fd: OwnedFd, since: u64 },
    /// Connected; the deal role has not flushed the queue yet.
    Opening,
    /// Connected, queue flushed: frames go straight onto the connection.
    Up { conn: ConnId },
}

struct State {
    phase: Phase,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    failures: u32,
    last_log: Option<u64>,
    unlogged: u32,
    rng: u64,
}

/// One upstream link owned by this shard.
pub struct Link {
    /// Its id, stable across reconnects.
    pub id: LinkId,
    /// Its name (for logs).
    pub name: String,
    /// Where it dials.
    pub addr: SocketAddr,
    options: LinkOptions,
    state: Lock<State>,
}

impl Link {
    /// Link `id` to `addr`, down, to be dialled at once.
    pub fn new(id: LinkId, name: String, addr: SocketAddr, options: LinkOptions) -> Link {
        let rng = 0x9E37_79B9_7F4A_7C15 ^ (u64::from(id.0) << 32) ^ std::process::id() as u64;
        let state = State {
            phase: Phase::Down { retry_at: 0 },
            queue: VecDeque::new(),
            queued: 0,
            failures: 0,
            last_log: None,
            unlogged: 0,
            rng,
        };
        Link { id, name, addr, options, state: Lock::new(state) }
    }

    /// Queues a frame (`head` then `body`) unless the link is Up: `None` when it is (the caller
    /// puts the frame on the connection), else whether it fit the queue.
    pub fn queue_unless_up(&self, head: &[u8], body: &[u8], force: bool) -> Option<Result<(), SendError>> {
        let mut st = self.state.lock();
        if !force && matches!(st.phase, Phase::Up { .. }) {
            return None;
        }
        if st.queued + head.len() + body.len() > self.options.queue_bytes {
            return Some(Err(SendError::Full));
        }
        let mut frame = Vec::with_capacity(head.len() + body.len());
        frame.extend_from_slice(head);
        frame.extend_from_slice(body);
        st.queued += frame.len();
        st.queue.push_back(frame);
        Some(Ok(()))
    }

    /// What the link is doing now.
    pub fn status(&self) -> LinkStatus {
        let st = self.state.lock();
        LinkStatus {
            up: matches!(st.phase, Phase::Up { .. }),
            failures: st.failures,
            queued_frames: st.queue.len(),
            queued_bytes: st.queued,
        }
    }
}

impl State {
    /// The wait before the next attempt after `failures` failures in a row, with jitter.
    fn backoff(&mut self, o: &LinkOptions) -> u64 {
        let floor = o.backoff_floor.as_millis() as u64;
        let ceiling = (o.backoff_ceiling.as_millis() as u64).max(floor);
        let base = floor.saturating_mul(1u64 << self.failures.min(20)).min(ceiling);
        // xorshift64: cheap jitter, no shared generator.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = base / 4;
        (base - jitter + self.rng % (2 * jitter + 1)).max(1)
    }
}

impl<W: Wire> Shard<W> {
    fn link_at(&self, link: LinkId) -> Option<(usize, &Link)> {
        self.links.iter().enumerate().find(|(_, l)| l.id == link)
    }

    /// Monitor tick: starts the connects that are due and gives up on those taking too long.
    pub(super) fn tick_links(&self, c: &Counters, touched: &mut Sched) {
        if self.links.is_empty() || self.server.stopping.load(Ordering::Acquire) {
            return;
        }
        let now = self.server.now();
        for (i, link) in self.links.iter().enumerate() {
            let mut st = link.state.lock();
            match &st.phase {
                Phase::Down { retry_at } if *retry_at <= now => {}
                Phase::Connecting { since, .. }
                    if now >= since + link.options.connect_timeout.as_millis() as u64 =>
                {
                    let why = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    self.link_failed(link, &mut st, &why, now, c);
                    continue;
                }
                _ => continue,
            }
            c.add(Counter::LinkAttempts, 1);
            match socket::connect(&link.addr) {
                Ok((fd, true)) => {
                    drop(st);
                    self.link_connected(i, fd, c, touched);
                }
                Ok((fd, false)) => {
                    match self.epoll.add(fd.as_raw_fd(), epoll::OUT | epoll::ET, TOKENS.token(i)) {
                        Ok(()) => st.phase = Phase::Connecting { fd, since: now },
                        Err(e) => self.link_failed(link, &mut st, &e, now, c),
                    }
                }
                Err(e) => self.link_failed(link, &mut st, &e, now, c),
            }
        }
    }

    /// Monitor: the socket of connecting link `i` reported.
    pub(super) fn link_event(&self, i: usize, c: &Counters, touched: &mut Sched) {
        let Some(link) = self.links.get(i) else { return };
        let mut st = link.state.lock();
        let Phase::Connecting { fd, .. } = &st.phase else { return };
        let _ = self.epoll.delete(fd.as_raw_fd());
        match socket::take_error(fd.as_raw_fd()) {
            Ok(()) => {
                let Phase::Connecting { fd, .. } =
                    std::mem::replace(&mut st.phase, Phase::Down { retry_at: u64::MAX })
                else {
                    return;
                };
                drop(st);
                self.link_connected(i, fd, c, touched);
            }
            Err(e) => {
                let now = self.server.now();
                self.link_failed(link, &mut st, &e, now, c);
            }
        }
    }

    fn link_failed(&self, link: &Link, st: &mut State, why: &io::Error, now: u64, c: &Counters) {
        c.add(Counter::LinkFailures, 1);
        let wait = st.backoff(&link.options);
        st.failures = st.failures.saturating_add(1);
        st.phase = Phase::Down { retry_at: now + wait };
        if st.last_log.is_none_or(|at| now >= at + LOG_EVERY_MS) {
            let unlogged = std::mem::take(&mut st.unlogged);
            log::warn!(
                "{} ({}, {}): cannot connect: {why}; retrying in {wait} ms ({} failures in a row, {unlogged} not logged)",
                link.id,
                link.name,
                link.addr,
                st.failures
            );
            st.last_log = Some(now);
        } else {
            st.unlogged += 1;
        }
    }

    /// Admits link `i`'s connected socket as a connection of this shard (Opening).
    fn link_connected(&self, i: usize, fd: OwnedFd, c: &Counters, touched: &mut Sched) {
        let link = &self.links[i];
        let now = self.server.now();
        let Ok(local) = self.ids.lock().insert(()) else {
            let mut st = link.state.lock();
            let why = io::Error::new(io::ErrorKind::OutOfMemory, "no free connection slot");
            self.link_failed(link, &mut st, &why, now, c);
            return;
        };
        let idx = local.index() as u32;
        let raw = fd.as_raw_fd();
        let id = self.global(local);
        let mut conn = Conn::new(id, fd, now);
        conn.st.link = Some(link.id);
        link.state.lock().phase = Phase::Opening;
        *self.slots[idx as usize].lock() = Some(conn);
        self.gens[idx as usize].store(local.generation(), Ordering::Release);
        self.high.fetch_max(idx + 1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.epoll.add(raw, epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET, local.to_u64())
        {
            log::warn!("epoll add failed: {e}");
        }
        c.add(Counter::LinkConnects, 1);
        log::info!("{} ({}, {}): connected as {id}", link.id, link.name, link.addr);
        self.schedule(idx, DEAL | READ, touched);
    }

    /// Deal role, before `on_link_up`: the link's connection `st` is now Up; moves the frames
    /// queued while it was down onto it, in order.
    pub(super) fn link_opened(&self, st: &mut ConnState, io: &Io<'_, W>) {
        let Some((_, link)) = st.link.and_then(|l| self.link_at(l)) else { return };
        let mut ls = link.state.lock();
        ls.failures = 0;
        ls.phase = Phase::Up { conn: st.id };
        ls.queued = 0;
        for frame in ls.queue.drain(..) {
            st.out.push_encoded(io.out_pool, &frame);
            io.c.add(Counter::FramesOut, 1);
        }
        st.after_output(io);
    }

    /// Deal role, when a link's connection is freed: the link is down; the next attempt follows
    /// the backoff.
    pub(super) fn link_closed(&self, link: LinkId) {
        let Some((_, link)) = self.link_at(link) else { return };
        let now = self.server.now();
        let mut st = link.state.lock();
        let wait = st.backoff(&link.options);
        st.phase = Phase::Down { retry_at: now + wait };
        if self.server.stopping.load(Ordering::Acquire) {
            log::info!("{} ({}, {}): closed (stopping)", link.id, link.name, link.addr);
        } else {
            log::info!("{} ({}, {}): down; reconnecting in {wait} ms", link.id, link.name, link.addr);
        }
    }

    /// Queues a frame on link `link` of this shard: straight onto its connection when Up, else in
    /// its queue. `current` is the connection whose lock the caller holds, if any (a handler's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_link_local(
        &self,
        link: LinkId,
        kind: u16,
        seq: u32,
        body: &[u8],
        io: &Io<'_, W>,
        env: &mut DealEnv,
        current: Option<&mut ConnState>,
    ) -> Result<(), SendError> {
        let Some((_, l)) = self.link_at(link) else { return Err(SendError::Closed) };
        let mut head = [0u8; doorway_core::wire::MAX_HEAD_LEN];
        let n = io.p.wire.encode_head(&mut head, kind, seq, body.len());
        if let Some(queued) = l.queue_unless_up(&head[..n], body, false) {
            return queued;
        }
        let up = match l.state.lock().phase {
            Phase::Up { conn } => Some(conn),
            _ => None,
        };
        if let Some(conn) = up {
            let sent = match current {
                Some(st) if st.id == conn => {
                    st.push_frame(io, kind, seq, body).inspect(|_| st.after_output(io))
                }
                _ => self.push_local(split_index(conn.index()).1, Some(conn), kind, seq, body, io, env),
            };
            match sent {
                // Closing under us: the frame waits for the next connection instead.
                Err(SendError::Closed) => {}
                other => return other,
            }
        }
        // Up went away under us, or the connection is closing: wait for the next connection.
        l.queue_unless_up(&head[..n], body, true).unwrap_or(Err(SendError::Full))
    }
}
