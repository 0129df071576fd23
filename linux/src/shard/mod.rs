//! A shard: one independent set of the four roles (docs/ARCHITECTURE.md) and the connections they
//! serve.
//!
//! ```text
//!            epoll (ET) ──▶ monitor ──READ door──▶ read_q ──▶ receive ──DEAL door──▶ deal_q
//!  timerfd ─┘  accept/close/tick          ▲                                            │
//!                                         └────READ (resume)── send ◀──SEND door── deal (map)
//! ```
//!
//! The shard owns its connection table (`slots`, one spin lock per connection), the door byte of
//! every slot, the three ready queues, the inbox for cross-shard messages, the block pools and the
//! epoll set. The role functions here are called by whichever thread runs the role: in the fused
//! model one thread calls all of them in turn, in the pipeline model each has its own thread.
//!
//! # Files
//!
//! One `impl Shard` block per role, as smoltcp splits its interface: `monitor` (epoll events,
//! admission, the stop flag), `receive` (reading and cutting), `deal` (the wire's rules, the
//! message map, the service hooks, freeing), `send` (gathered writes), `timers` (the wheel: checks,
//! connection and shard timers) and `inbox` (messages from other shards and from `Handle`s). This
//! file holds what they share: the server-wide state, the shard's table and its scheduling.
//!
//! # Ids
//!
//! Slots are allocated by `doorway_core::slab::Slab` (a free list with generations). The id a
//! handler sees is `ConnId { index: shard << 24 | slot, generation }`; epoll tokens carry the local
//! id. Ready queues carry bare slot indices: the door belongs to the slot, so a queued index is
//! processed for whoever occupies the slot then (a spurious look at a new connection is harmless;
//! a lost wake-up of it would not be).
//!
//! # Lock order
//!
//! Receive, send and monitor hold at most one connection lock at a time. Only the deal role holds
//! two: the connection it serves, then another one of the same shard (`send_to`, `broadcast`).
//! One deal thread per shard means no two threads ever wait on each other's second lock; across
//! shards, messages go through inboxes, never locks.
//!
//! # Shutdown
//!
//! `stopping` closes the listener, asks receive to read every socket until it is drained, deal to
//! answer every whole request and then queue ERROR 7 and close, and send to flush. The shard is
//! done when no slot is occupied or the drain deadline has passed.

mod deal;
mod inbox;
pub(crate) mod link;
mod monitor;
mod receive;
mod send;
mod timers;
pub(crate) mod udp;

pub use deal::DealEnv;
use deal::Hook;
pub use inbox::{Inbox, Remote, INBOX_CAP_BYTES};
pub use timers::{TimerEntry, TimerKind, TimerWheel};

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use doorway_core::dispatch::{Control, LinkId, SendError, Service};
use doorway_core::frame::ErrorCode;
use doorway_core::slab::{self, ConnId, Slab};
use doorway_core::wire::{Wire, MAX_CLOSE_FRAME};

use crate::buf::Pool;
use crate::config::{Config, OnPanic};
use crate::conn::{Conn, ConnState, Io, Params, Phase, Sched, DEAL, READ, SEND};
use crate::cx::{Cx, ShardCx};
use crate::stats::{Counter, Counters, Stats};
use crate::sync::{door, Doors, Lock, ReadyQueue, RwLock, Waker};
use crate::sys::epoll::{self, Epoll, Event};
use crate::sys::signalfd::SignalFd;
use crate::sys::socket;
use crate::sys::timerfd::TimerFd;
use doorway_core::time::Instant as Tick;
use doorway_core::wheel::{Entry, Wheel};

/// Bits of a global index that hold the slot; the shard number sits above them.
pub const SHARD_SHIFT: u32 = 24;
const LOCAL_MASK: usize = (1 << SHARD_SHIFT) - 1;

/// Epoll token of the listening socket.
pub const TOKEN_LISTENER: u64 = u64::MAX;
/// Epoll token of the tick timer.
pub const TOKEN_TIMER: u64 = u64::MAX - 1;
/// Epoll token of the monitor's eventfd.
pub const TOKEN_WAKE: u64 = u64::MAX - 2;
/// Epoll token of the signalfd.
pub const TOKEN_SIGNAL: u64 = u64::MAX - 3;

/// A block of epoll tokens counting down from `first`, one per item of a shard's list (UDP
/// endpoints, connecting links): far above any connection's token, below the fixed ones.
#[derive(Debug, Clone, Copy)]
pub struct TokenRange {
    first: u64,
    /// How many items the range has room for.
    pub len: usize,
}

impl TokenRange {
    /// The range of the same size just below `other`.
    pub const fn below(other: TokenRange) -> TokenRange {
        TokenRange { first: other.first - other.len as u64, len: other.len }
    }

    /// The token of item `i`.
    pub fn token(&self, i: usize) -> u64 {
        self.first - i as u64
    }

    /// The item of `token`, if the token is in this range.
    pub fn index(&self, token: u64) -> Option<usize> {
        let i = self.first.checked_sub(token)?;
        (i < self.len as u64).then_some(i as usize)
    }
}

/// (shard, slot) of a global connection index.
pub fn split_index(global: usize) -> (usize, u32) {
    (global >> SHARD_SHIFT, (global & LOCAL_MASK) as u32)
}

/// What one server's shards share.
pub struct ServerShared<W> {
    /// The validated configuration.
    pub cfg: Config,
    /// Derived settings, the wire among them.
    pub params: Params<W>,
    /// Admission limit (the configured one, capped by the fd limit).
    pub max_conns: usize,
    /// Admitted connections not yet freed, over all shards.
    pub admitted: AtomicUsize,
    /// Every shard's connection buffers against `--memory-limit` (two pools per shard).
    pub mem: Arc<crate::buf::MemoryBudget>,
    /// Refused connections that may linger at once (their descriptors count against the limit).
    pub max_refusing: usize,
    /// Refused connections lingering now, over all shards.
    pub refusing: AtomicUsize,
    /// The spare descriptor for running out of descriptors, and the gate that keeps its use
    /// atomic: every `accept` holds it shared, the out-of-descriptors path holds it exclusively
    /// (see `Shard::accept_all`).
    pub spare: RwLock<Option<File>>,
    /// SIGTERM/SIGINT or [`crate::server::Handle::stop`] was called.
    pub stopping: AtomicBool,
    /// When draining must end (ms since start).
    pub drain_deadline: AtomicU64,
    pub(crate) shards: OnceLock<Vec<Weak<Shard<W>>>>,
    pub(crate) stats: OnceLock<Stats>,
    /// The first server thread that died (a panic outside any service hook): the server drains
    /// and `Running::wait` returns it as an error.
    pub(crate) died: std::sync::Mutex<Option<String>>,
    start: Instant,
}

impl<W: Wire> ServerShared<W> {
    /// Shared state for a server with this config speaking `wire` (its body limit set from the
    /// config).
    pub fn new(cfg: Config, wire: W, max_conns: usize, max_refusing: usize) -> ServerShared<W> {
        let wire = wire.with_max_body(cfg.max_body);
        let high = cfg.high_watermark;
        let mem = crate::buf::MemoryBudget::new(cfg.memory_limit, 2 * cfg.shards);
        let params = Params {
            high,
            low: cfg.low_watermark,
            hard_cap: high.saturating_mul(2).saturating_add(wire.max_body() as usize + 2 * W::HEAD_LEN),
            wire,
            idle_ms: cfg.idle_timeout.map(|d| d.as_millis() as u64),
            write_ms: cfg.write_timeout.as_millis() as u64,
            linger_ms: cfg.linger.as_millis() as u64,
        };
        ServerShared {
            cfg,
            params,
            max_conns,
            admitted: AtomicUsize::new(0),
            mem,
            max_refusing,
            refusing: AtomicUsize::new(0),
            spare: RwLock::new(File::open("/dev/null").ok()),
            stopping: AtomicBool::new(false),
            drain_deadline: AtomicU64::new(u64::MAX),
            shards: OnceLock::new(),
            stats: OnceLock::new(),
            died: std::sync::Mutex::new(None),
            start: Instant::now(),
        }
    }

    /// Milliseconds since the server started.
    #[inline]
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Every thread's counters.
    pub fn stats(&self) -> &Stats {
        static EMPTY: OnceLock<Stats> = OnceLock::new();
        self.stats.get().unwrap_or_else(|| EMPTY.get_or_init(Stats::default))
    }

    /// Whether every shard's threads were told to exit.
    pub fn all_exited(&self) -> bool {
        self.shards
            .get()
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .all(|s| s.exit.load(Ordering::Acquire))
    }

    fn shard(&self, index: usize) -> Option<Arc<Shard<W>>> {
        self.shards.get().and_then(|s| s.get(index)).and_then(Weak::upgrade)
    }

    /// Queues `msg` in the inbox of shard `shard` for its deal role. A message for a connection
    /// that is already gone answers `Closed` here (from the slot's published generation); one
    /// that dies while the message is on its way is dropped by the target's deal role.
    pub(crate) fn deliver(&self, shard: usize, msg: Remote) -> Result<(), SendError> {
        let Some(target) = self.shard(shard) else { return Err(SendError::Closed) };
        if let Remote::SendTo { to, .. } | Remote::Resume { to } = &msg {
            let (_, local) = split_index(to.index());
            // Acquire pairs with the Release stores in `admit` and `free`.
            let generation = target.gens.get(local as usize).map(|g| g.load(Ordering::Acquire));
            if generation != Some(to.generation()) {
                return Err(SendError::Closed);
            }
        }
        target.inbox.lock().push(msg).map_err(|_| SendError::Full)?;
        target.deal_waker.wake();
        Ok(())
    }

    /// Queues a frame on upstream link `link` from outside its shard (another shard's handler, a
    /// `Handle`): into the link's queue at once while it is not up (so a full queue is answered
    /// here), else through the owning shard's inbox onto its connection.
    pub(crate) fn send_link(&self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let owner = usize::from(link.0) % self.cfg.shards;
        let Some(shard) = self.shard(owner) else { return Err(SendError::Closed) };
        let Some(l) = shard.links.iter().find(|l| l.id == link) else { return Err(SendError::Closed) };
        let mut head = [0u8; doorway_core::wire::MAX_HEAD_LEN];
        let n = self.params.wire.encode_head(&mut head, kind, seq, body.len());
        match l.queue_unless_up(&head[..n], body, false) {
            Some(queued) => queued,
            None => self.deliver(owner, Remote::SendLink { link, kind, seq, body: body.to_vec() }),
        }
    }

    /// Queues a broadcast on every shard but `except`; returns their open connections. A shard
    /// whose inbox is full (see [`INBOX_CAP_BYTES`]) is not counted: its connections are closed
    /// with ERROR 6 instead.
    pub(crate) fn broadcast(&self, except: Option<usize>, kind: u16, seq: u32, body: &[u8]) -> usize {
        let Some(shards) = self.shards.get() else { return 0 };
        let mut n = 0;
        for (i, shard) in shards.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            if let Some(t) = shard.upgrade() {
                let queued = t.inbox.lock().push(Remote::Broadcast { kind, seq, body: body.to_vec() });
                t.deal_waker.wake();
                if queued.is_err() {
                    log::warn!("shard {i}: inbox full; its connections miss a broadcast and are closed");
                    continue;
                }
                n += t.live();
            }
        }
        n
    }

    /// A server thread died: remember the first death and drain the whole server, so the process
    /// ends (with an error from `Running::wait`) instead of serving half-alive.
    pub fn thread_died(&self, thread: &str, why: &str) {
        log::error!("server thread {thread} died: {why}; stopping the server");
        if let Ok(mut died) = self.died.lock() {
            died.get_or_insert_with(|| format!("server thread {thread} died: {why}"));
        }
        self.stop();
    }

    /// Starts the graceful drain on every shard (idempotent).
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = self.now() + self.cfg.drain_timeout.as_millis() as u64;
        self.drain_deadline.store(deadline, Ordering::Release);
        log::info!("stopping: draining connections (deadline {} ms)", self.cfg.drain_timeout.as_millis());
        for shard in self.shards.get().into_iter().flatten().filter_map(Weak::upgrade) {
            shard.monitor_waker.force_wake();
        }
    }
}

/// What a shard serves: its TCP listener (if any), its UDP endpoints, its upstream links, and the
/// signalfd (shard 0 of a server that handles signals).
pub struct Sources {
    /// The listening socket.
    pub listener: Option<OwnedFd>,
    /// UDP endpoints.
    pub udp: Vec<udp::Endpoint>,
    /// Upstream links.
    pub links: Vec<link::Link>,
    /// SIGTERM/SIGINT.
    pub signal: Option<SignalFd>,
}

/// Wakers of the role threads (all the same non-blocking one in the fused model).
pub struct Wakers {
    /// The monitor (its eventfd is in the epoll set).
    pub monitor: Arc<Waker>,
    /// Receive.
    pub receive: Arc<Waker>,
    /// Deal (also woken by ticks and the inbox).
    pub deal: Arc<Waker>,
    /// Send.
    pub send: Arc<Waker>,
}

/// One shard.
pub struct Shard<W> {
    /// Shard number.
    pub index: usize,
    /// What all shards share.
    pub server: Arc<ServerShared<W>>,
    slots: Box<[Lock<Option<Conn>>]>,
    gens: Box<[AtomicU32]>,
    /// Door bits per slot.
    pub doors: Doors,
    ids: Lock<Slab<(), Box<[slab::Slot<()>]>>>,
    high: AtomicU32,
    live: AtomicUsize,
    /// Slots for the receive role.
    pub read_q: ReadyQueue,
    /// Slots for the deal role.
    pub deal_q: ReadyQueue,
    /// Slots for the send role.
    pub send_q: ReadyQueue,
    inbox: Lock<Inbox>,
    /// Input blocks.
    pub in_pool: Pool,
    /// Output blocks.
    pub out_pool: Pool,
    /// The epoll set (listener, connections, UDP sockets, timer, wake, signal).
    pub epoll: Epoll,
    listener: Lock<Option<OwnedFd>>,
    /// The UDP endpoints this shard owns.
    pub(crate) udp: Box<[udp::Endpoint]>,
    /// The upstream links this shard owns.
    pub(crate) links: Box<[link::Link]>,
    timer: TimerFd,
    /// The monitor's wake-up (registered in `epoll`).
    pub monitor_waker: Arc<Waker>,
    /// The deal role's wake-up.
    pub deal_waker: Arc<Waker>,
    signal: Option<SignalFd>,
    /// A tick arrived for the deal role.
    pub tick_pending: AtomicBool,
    stop_seen: AtomicBool,
    /// The role threads must exit.
    pub exit: AtomicBool,
    /// Connections may still be queued on the listener after running out of descriptors: the
    /// monitor's next tick accepts again.
    accept_retry: AtomicBool,
    /// (last trim check in ms, pool drops seen then).
    trim_state: Lock<(u64, u64)>,
}

impl<W: Wire> Shard<W> {
    /// A shard serving `sources`, with `capacity` slots.
    pub fn new(
        index: usize,
        server: Arc<ServerShared<W>>,
        sources: Sources,
        capacity: usize,
        wakers: Wakers,
    ) -> io::Result<Shard<W>> {
        let Sources { listener, udp, links, signal } = sources;
        let epoll = Epoll::new()?;
        let timer = TimerFd::periodic(std::time::Duration::from_millis(crate::conn::TICK_MS))?;
        if let Some(listener) = &listener {
            epoll.add(listener.as_raw_fd(), epoll::IN | epoll::ET, TOKEN_LISTENER)?;
        }
        for (i, endpoint) in udp.iter().enumerate() {
            epoll.add(endpoint.raw(), epoll::IN | epoll::ET, udp::TOKENS.token(i))?;
        }
        epoll.add(timer.raw(), epoll::IN | epoll::ET, TOKEN_TIMER)?;
        epoll.add(wakers.monitor.raw(), epoll::IN | epoll::ET, TOKEN_WAKE)?;
        if let Some(sig) = &signal {
            epoll.add(sig.raw(), epoll::IN | epoll::ET, TOKEN_SIGNAL)?;
        }
        // Blocks kept for reuse: enough for the active connections' bursts, not a hoard after a spike.
        let max_free = 128;
        let large_size = server.params.wire.max_body() as usize + W::HEAD_LEN + crate::buf::BLOCK;
        let mem = server.mem.clone();
        Ok(Shard {
            index,
            server,
            slots: (0..capacity).map(|_| Lock::new(None)).collect(),
            gens: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            doors: Doors::new(capacity),
            ids: Lock::new(Slab::new((0..capacity).map(|_| slab::Slot::VACANT).collect())),
            high: AtomicU32::new(0),
            live: AtomicUsize::new(0),
            read_q: ReadyQueue::new(capacity, door::READ, wakers.receive),
            deal_q: ReadyQueue::new(capacity, door::DEAL, wakers.deal.clone()),
            send_q: ReadyQueue::new(capacity, door::SEND, wakers.send),
            inbox: Lock::new(Inbox::default()),
            in_pool: Pool::new(true, max_free, large_size).with_budget(mem.clone(), 2 * index),
            out_pool: Pool::new(false, max_free, 0).with_budget(mem, 2 * index + 1),
            epoll,
            listener: Lock::new(listener),
            udp: udp.into_boxed_slice(),
            links: links.into_boxed_slice(),
            timer,
            monitor_waker: wakers.monitor,
            deal_waker: wakers.deal,
            signal,
            tick_pending: AtomicBool::new(false),
            stop_seen: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            accept_retry: AtomicBool::new(false),
            trim_state: Lock::new((0, 0)),
        })
    }

    /// One past the highest slot ever used.
    #[inline]
    pub fn high_index(&self) -> u32 {
        self.high.load(Ordering::Acquire)
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Occupied slots.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The step environment for a thread counting into `c`.
    #[inline]
    pub fn io<'a>(&'a self, c: &'a Counters) -> Io<'a, W> {
        Io {
            p: &self.server.params,
            in_pool: &self.in_pool,
            out_pool: &self.out_pool,
            c,
            now: self.server.now(),
            stopping: self.stop_seen.load(Ordering::Acquire),
            drain_deadline: self.server.drain_deadline.load(Ordering::Acquire),
            mem: &self.server.mem,
            admitted: &self.server.admitted,
        }
    }

    fn global(&self, local: ConnId) -> ConnId {
        ConnId::new(((self.index << SHARD_SHIFT) | local.index()) as u32, local.generation())
    }

    /// Queues slot `idx` for the roles in `s` (door-guarded); `touched` collects queues to wake.
    #[inline]
    pub fn schedule(&self, idx: u32, s: Sched, touched: &mut Sched) {
        if s & READ != 0 && self.read_q.open(&self.doors, idx) {
            *touched |= READ;
        }
        if s & DEAL != 0 && self.deal_q.open(&self.doors, idx) {
            *touched |= DEAL;
        }
        if s & SEND != 0 && self.send_q.open(&self.doors, idx) {
            *touched |= SEND;
        }
    }

    /// Wakes the consumers of the queues in `touched` (once per batch).
    #[inline]
    pub fn wake(&self, touched: Sched) {
        if touched & READ != 0 {
            self.read_q.wake();
        }
        if touched & DEAL != 0 {
            self.deal_q.wake();
        }
        if touched & SEND != 0 {
            self.send_q.wake();
        }
    }

    /// Closes every remaining connection without the service (a backstop after the threads ended).
    pub fn close_all(&self) {
        for slot in self.slots.iter() {
            slot.lock().take();
        }
    }
}

/// Takes one of `limit` tickets counted by `held`; false (and nothing taken) when none is left.
fn take_ticket(held: &AtomicUsize, limit: usize) -> bool {
    if held.fetch_add(1, Ordering::AcqRel) < limit {
        return true;
    }
    held.fetch_sub(1, Ordering::AcqRel);
    false
}
