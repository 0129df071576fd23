//! A shard: one independent set of the four roles (seed 000) and the connections they serve.
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

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use doorway_core::dispatch::{Control, SendError, Service};
use doorway_core::frame::ErrorCode;
use doorway_core::slab::{self, ConnId, Slab};
use doorway_core::wire::{Cut, Wire, MAX_CLOSE_FRAME};

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

/// Bytes of bodies one shard's inbox may hold. The inbox is drained on every pass of the deal
/// role, so only a shard starved of CPU while others keep sending to it comes near this; past it,
/// memory stays bounded: `send_to` answers `Full`, and a broadcast that does not fit marks the
/// inbox, which then closes every open connection of that shard as a slow consumer (ERROR 6), since
/// each of them missed a message (PROTOCOL.md: nothing is silently dropped).
pub const INBOX_CAP_BYTES: usize = 16 << 20;

/// Messages for a shard's deal role from other shards, with their size kept against
/// [`INBOX_CAP_BYTES`].
#[derive(Default)]
pub struct Inbox {
    msgs: Vec<Remote>,
    bytes: usize,
    missed_broadcast: bool,
}

impl Inbox {
    /// Queues `msg`, or hands it back when the inbox is full (a broadcast is then remembered as
    /// missed).
    pub fn push(&mut self, msg: Remote) -> Result<(), Remote> {
        let cost = msg.body().len() + std::mem::size_of::<Remote>();
        if self.bytes + cost > INBOX_CAP_BYTES && !self.msgs.is_empty() {
            self.missed_broadcast |= matches!(msg, Remote::Broadcast { .. });
            return Err(msg);
        }
        self.bytes += cost;
        self.msgs.push(msg);
        Ok(())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && !self.missed_broadcast
    }

    /// Moves every waiting message into `out` (which should be empty; its capacity is reused);
    /// returns whether a broadcast was missed since the last call.
    pub fn take_into(&mut self, out: &mut Vec<Remote>) -> bool {
        std::mem::swap(&mut self.msgs, out);
        self.bytes = 0;
        std::mem::take(&mut self.missed_broadcast)
    }
}

/// A message for another shard's deal role.
pub enum Remote {
    /// `send_to` a connection of that shard.
    SendTo {
        /// The target.
        to: ConnId,
        /// Kind.
        kind: u16,
        /// Seq.
        seq: u32,
        /// Body.
        body: Vec<u8>,
    },
    /// Resume reading a connection its service paused (`Handle::resume`).
    Resume {
        /// The connection.
        to: ConnId,
    },
    /// A broadcast to every connection of that shard.
    Broadcast {
        /// Kind.
        kind: u16,
        /// Seq.
        seq: u32,
        /// Body.
        body: Vec<u8>,
    },
}

impl Remote {
    fn body(&self) -> &[u8] {
        match self {
            Remote::SendTo { body, .. } | Remote::Broadcast { body, .. } => body,
            Remote::Resume { .. } => &[],
        }
    }
}

/// What a wheel entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The connection's deadline check (idle, write, closing and linger deadlines).
    Check,
    /// A service timer.
    Service {
        /// The service's token.
        token: u32,
    },
    /// A shard timer of the service (`Outbox::set_timer`); the entry's id means nothing.
    Shard {
        /// The service's token.
        token: u32,
    },
}

/// A service hook, named in the log when it panics.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Open(ConnId),
    Frame(ConnId, Option<u16>),
    Timer(ConnId, u32),
    Close(ConnId),
    Start(usize),
    ShardTimer(usize, u32),
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Open(id) => write!(f, "{id}: on_open"),
            Hook::Frame(id, Some(kind)) => write!(f, "{id}: the handler of kind {kind}"),
            Hook::Frame(id, None) => write!(f, "{id}: a frame's handling"),
            Hook::Timer(id, token) => write!(f, "{id}: on_timer (token {token})"),
            Hook::Close(id) => write!(f, "{id}: on_close"),
            Hook::Start(shard) => write!(f, "shard {shard}: on_start"),
            Hook::ShardTimer(shard, token) => write!(f, "shard {shard}: on_shard_timer (token {token})"),
        }
    }
}

/// One wheel entry: a connection (global id) and what to do.
#[derive(Debug, Clone, Copy)]
pub struct TimerEntry {
    /// The connection.
    pub id: ConnId,
    /// What for.
    pub kind: TimerKind,
}

/// The timing wheel of a deal role: `doorway_core::wheel`, one tick per millisecond.
pub type TimerWheel = Wheel<TimerEntry, Box<[Entry<TimerEntry>]>>;

/// The deal role's private state besides the service: the wheel and this thread's counters.
pub struct DealEnv {
    /// Every timer of this shard's connections: one check timer per slot at most, plus service
    /// timers up to `service_budget`.
    pub wheel: TimerWheel,
    /// Service timers armed.
    pub service_timers: usize,
    /// Most service timers at once (the wheel's capacity beyond one check timer per slot).
    pub service_budget: usize,
    /// Armed shard timers of the service: (token, timer), at most [`crate::cx::MAX_SHARD_TIMERS`].
    pub shard_timers: Vec<(u32, doorway_core::wheel::TimerId)>,
    /// Queues pushed to in this batch (wake once at the end).
    pub touched: Sched,
    /// This thread's counters.
    pub counters: Arc<Counters>,
    remote: Vec<Remote>,
}

impl DealEnv {
    /// A deal environment for `slots` connections, counting into `counters`.
    pub fn new(counters: Arc<Counters>, slots: usize) -> DealEnv {
        let service_budget = slots + 1024;
        DealEnv {
            wheel: Wheel::with_capacity(slots + service_budget + crate::cx::MAX_SHARD_TIMERS),
            service_timers: 0,
            service_budget,
            shard_timers: Vec::new(),
            touched: 0,
            counters,
            remote: Vec::new(),
        }
    }
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
    /// The epoll set (listener, connections, timer, wake, signal).
    pub epoll: Epoll,
    listener: Lock<Option<OwnedFd>>,
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
    /// A shard serving `listener`, with `capacity` slots.
    pub fn new(
        index: usize,
        server: Arc<ServerShared<W>>,
        listener: OwnedFd,
        capacity: usize,
        wakers: Wakers,
        signal: Option<SignalFd>,
    ) -> io::Result<Shard<W>> {
        let epoll = Epoll::new()?;
        let timer = TimerFd::periodic(std::time::Duration::from_millis(crate::conn::TICK_MS))?;
        epoll.add(listener.as_raw_fd(), epoll::IN | epoll::ET, TOKEN_LISTENER)?;
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
            listener: Lock::new(Some(listener)),
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

    // ----- monitor -----

    /// Handles one epoll event (monitor role).
    pub fn monitor_event(&self, ev: Event, c: &Counters, touched: &mut Sched) {
        match ev.token {
            TOKEN_LISTENER => self.accept_all(c, touched),
            TOKEN_TIMER => {
                // Acquire pairs with the Release in `accept_all`'s out-of-descriptors path.
                if self.accept_retry.swap(false, Ordering::Acquire) {
                    self.accept_all(c, touched);
                }
                if self.timer.expirations() > 0 {
                    self.tick_pending.store(true, Ordering::Release);
                    *touched |= DEAL;
                    self.maybe_trim();
                }
            }
            TOKEN_WAKE => self.monitor_waker.drain(),
            TOKEN_SIGNAL => {
                if let Some(sig) = &self.signal {
                    while let Some(signo) = sig.read() {
                        log::info!("signal {signo} received");
                        self.server.stop();
                    }
                }
            }
            token => {
                let id = ConnId::from_u64(token);
                let idx = id.index() as u32;
                if self.gens.get(id.index()).map(|g| g.load(Ordering::Acquire)) != Some(id.generation()) {
                    return;
                }
                let mut s = 0;
                if ev.events & (epoll::IN | epoll::RDHUP | epoll::HUP | epoll::ERR) != 0 {
                    if ev.events & (epoll::RDHUP | epoll::HUP | epoll::ERR) != 0 {
                        self.doors.enter(idx, door::RDHUP);
                    }
                    s |= READ;
                }
                if ev.events & epoll::OUT != 0 && self.doors.leave(idx, door::WANT_WRITE) {
                    s |= SEND;
                }
                self.schedule(idx, s, touched);
            }
        }
    }

    /// Once a second at most: if the pools freed blocks since the last look (a burst), hand the
    /// freed heap back to the OS so an idle server's RSS falls back (monitor role).
    fn maybe_trim(&self) {
        let now = self.server.now();
        let mut last = self.trim_state.lock();
        if now < last.0 + 1000 {
            return;
        }
        let dropped = self.in_pool.dropped() + self.out_pool.dropped();
        if dropped != last.1 {
            crate::sys::mem::trim();
        }
        *last = (now, dropped);
    }

    /// Polls the stop flag: on the first sight, closes the listener and asks every connection to
    /// be read out, answered and closed with ERROR 7 (monitor role).
    pub fn poll_stop(&self, touched: &mut Sched) {
        if !self.server.stopping.load(Ordering::Acquire) || self.stop_seen.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(l) = self.listener.lock().take() {
            let _ = self.epoll.delete(l.as_raw_fd());
        }
        for idx in 0..self.high_index() {
            self.schedule(idx, READ | DEAL, touched);
        }
        self.tick_pending.store(true, Ordering::Release);
        *touched |= DEAL;
    }

    /// Whether the shard has finished draining.
    pub fn drained(&self) -> bool {
        self.stop_seen.load(Ordering::Acquire)
            && (self.live() == 0 || self.server.now() >= self.server.drain_deadline.load(Ordering::Acquire))
    }

    fn accept_all(&self, c: &Counters, touched: &mut Sched) {
        let listener = match self.listener.lock().as_ref() {
            Some(l) => l.as_raw_fd(),
            None => return,
        };
        loop {
            let accepted = {
                let _shared = self.server.spare.read();
                socket::accept(listener)
            };
            match accepted {
                Ok(fd) => self.admit(fd, c, touched),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors (accept4 says so even with nothing queued): free the
                    // spare, accept one connection, refuse it and close it at once, take the spare
                    // back. The gate is held exclusively throughout, so no other shard's accept can
                    // take the freed descriptor in between (it would leave this queue stuck with
                    // the spare lost until some connection closes). An empty queue ends the loop;
                    // the next connection brings a new edge.
                    let mut spare = self.server.spare.write();
                    spare.take();
                    let (refused_one, empty) = match socket::accept(listener) {
                        Ok(fd) => {
                            self.refuse_now(&fd, c);
                            (true, false)
                        }
                        Err(e) => (false, e.kind() == io::ErrorKind::WouldBlock),
                    };
                    *spare = File::open("/dev/null").ok();
                    if empty {
                        break;
                    }
                    if !refused_one || spare.is_none() {
                        // A descriptor went elsewhere (a file outside the gate, or the system
                        // table is full): the monitor's next tick tries again, since an
                        // edge-triggered listener reports no new edge for connections queued now.
                        log::warn!("out of file descriptors; refusing connections until some close");
                        self.accept_retry.store(true, Ordering::Release);
                        break;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn admit(&self, fd: OwnedFd, c: &Counters, touched: &mut Sched) {
        let now = self.server.now();
        let admitted = take_ticket(&self.server.admitted, self.server.max_conns);
        // A refusal lingers only within its descriptor budget; past it, it is closed at once.
        if !admitted && !take_ticket(&self.server.refusing, self.server.max_refusing) {
            self.refuse_now(&fd, c);
            return;
        }
        let local = match self.ids.lock().insert(()) {
            Ok(id) => id,
            Err(_) => {
                // No slot to linger in: refuse on the spot.
                let tickets = if admitted { &self.server.admitted } else { &self.server.refusing };
                tickets.fetch_sub(1, Ordering::AcqRel);
                self.refuse_now(&fd, c);
                return;
            }
        };
        let idx = local.index() as u32;
        let raw = fd.as_raw_fd();
        let mut conn = Conn::new(self.global(local), fd, now);
        if admitted {
            c.add(Counter::Accepted, 1);
        } else {
            c.add(Counter::Refused, 1);
            conn.st.admitted = false;
            let io = self.io(c);
            conn.st.begin_close(&io, Some((ErrorCode::ServerFull, 0)));
        }
        *self.slots[idx as usize].lock() = Some(conn);
        self.gens[idx as usize].store(local.generation(), Ordering::Release);
        self.high.fetch_max(idx + 1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.epoll.add(raw, epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET, local.to_u64())
        {
            log::warn!("epoll add failed: {e}");
        }
        log::trace!("accepted {} (admitted: {admitted})", self.global(local));
        self.schedule(idx, if admitted { DEAL } else { SEND | DEAL }, touched);
    }

    fn refuse_now(&self, fd: &OwnedFd, c: &Counters) {
        let mut frame = [0u8; MAX_CLOSE_FRAME];
        let n = self.server.params.wire.close_frame(ErrorCode::ServerFull, 0, &mut frame);
        if n > 0 {
            let _ = crate::sys::write(fd.as_raw_fd(), &frame[..n]);
            c.add(Counter::FramesOut, 1);
            c.error_sent(ErrorCode::ServerFull);
        }
        let _ = socket::shutdown_write(fd.as_raw_fd());
        c.add(Counter::Refused, 1);
    }

    // ----- receive -----

    /// The receive role over a batch of slots.
    pub fn receive_batch(&self, batch: &[u32], c: &Counters, touched: &mut Sched) {
        let io = self.io(c);
        for &idx in batch {
            let s = self.receive_one(idx, &io);
            self.schedule(idx, s, touched);
        }
    }

    /// Reads one slot's socket (receive role); returns the roles to run next.
    #[inline]
    fn receive_one(&self, idx: u32, io: &Io<'_, W>) -> Sched {
        let rdhup = self.doors.leave(idx, door::RDHUP);
        match self.slots[idx as usize].lock().as_mut() {
            Some(conn) => conn.receive(io, rdhup),
            None => 0,
        }
    }

    /// The fused model's receive: each connection read is dealt with at once, under the same
    /// thread, so its input block goes back to the pool before the next connection is read.
    pub fn receive_deal_batch<S: Service>(&self, batch: &[u32], service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        for &idx in batch {
            let s = self.receive_one(idx, &io);
            if s & DEAL != 0 {
                self.deal_one(idx, service, env, &io, true);
            }
            self.schedule(idx, s & !DEAL, &mut env.touched);
        }
    }

    // ----- send -----

    /// The send role over a batch of slots.
    pub fn send_batch(&self, batch: &[u32], c: &Counters, touched: &mut Sched) {
        let io = self.io(c);
        for &idx in batch {
            let s = match self.slots[idx as usize].lock().as_mut() {
                Some(conn) => conn.send(&io, &self.doors, idx),
                None => 0,
            };
            self.schedule(idx, s, touched);
        }
    }

    // ----- deal -----

    /// The deal role over a batch of slots.
    pub fn deal_batch<S: Service>(&self, batch: &[u32], service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        for &idx in batch {
            self.deal_one(idx, service, env, &io, false);
        }
    }

    fn deal_one<S: Service>(
        &self,
        idx: u32,
        service: &mut S,
        env: &mut DealEnv,
        io: &Io<'_, W>,
        inline_send: bool,
    ) {
        let mut slot = self.slots[idx as usize].lock();
        let Some(conn) = slot.as_mut() else { return };
        if conn.st.phase == Phase::Dead {
            let conn = slot.take();
            drop(slot);
            if let Some(conn) = conn {
                self.free(idx, conn, service, env);
            }
            return;
        }
        let Conn { inb, st } = &mut *conn;
        let id = st.id;
        let mut sched = 0;
        if !st.opened && st.admitted && st.phase == Phase::Open {
            st.opened = true;
            let mut cx = Cx { shard: self, idx, st: &mut *st, env: &mut *env, io, sched: 0 };
            let ran = self.guarded(io, Hook::Open(id), || service.on_open(&mut cx));
            sched |= cx.sched;
            if ran.is_none() {
                sched |= st.begin_close(io, None);
            }
        }
        if st.phase == Phase::Open {
            let wire = &io.p.wire;
            while inb.has_frames() && st.phase == Phase::Open && st.out.len() <= io.p.high && !st.held {
                let bytes = inb.frames();
                // The receive role cut these bytes already: a whole, valid frame is at their head.
                let Cut::Frame(len) = wire.cut(bytes) else { break };
                let head = wire.head(bytes);
                let body = &bytes[W::HEAD_LEN..len];
                let mut cx = Cx { shard: self, idx, st: &mut *st, env: &mut *env, io, sched: 0 };
                let ctl = self
                    .guarded(io, Hook::Frame(id, head.kind), || wire.handle(service, &mut cx, head, body));
                sched |= cx.sched;
                if st.held && ctl.is_some() {
                    // Declined for now (`Context::pause`): the frame stays for the resume.
                    break;
                }
                inb.consume(len);
                match ctl {
                    None => sched |= st.begin_close(io, None),
                    Some(Control::Continue) => {}
                    Some(Control::Skipped) => io.c.add(Counter::UnknownSkipped, 1),
                    Some(Control::Bye) => sched |= st.begin_close(io, None),
                    Some(Control::SendFailed(SendError::Full)) => sched |= st.slow_consumer(io),
                    Some(Control::SendFailed(e)) => {
                        log::debug!("{}: reply not queued ({e}), closing", st.id);
                        sched |= st.begin_close(io, None);
                    }
                }
            }
            if st.phase == Phase::Open && !inb.has_frames() && !st.held {
                if let Some(r) = st.refusal.take() {
                    log::debug!("{}: refusing header ({:?})", st.id, r.code);
                    sched |= st.begin_close(io, Some((r.code, r.seq)));
                } else if st.peer_eof {
                    let error = io.stopping.then_some((ErrorCode::ShuttingDown, 0));
                    sched |= st.begin_close(io, error);
                } else if io.stopping && st.stop_read_done {
                    sched |= st.begin_close(io, Some((ErrorCode::ShuttingDown, 0)));
                }
            }
        }
        if st.phase != Phase::Open {
            inb.clear();
        } else if st.more_input && !st.paused && !st.held && !inb.has_frames() {
            st.more_input = false;
            sched |= READ;
        }
        inb.release_if_empty(io.in_pool);
        st.after_output(io);
        if !st.out.is_empty() {
            sched |= SEND;
        }
        self.arm_check(st, env);
        if inline_send && sched & SEND != 0 {
            // Fused: write this connection's replies now, with its lock still held, so its output
            // block returns to the pool before the next connection is served.
            sched = (sched & !SEND) | conn.send(io, &self.doors, idx);
        }
        drop(slot);
        self.schedule(idx, sched, &mut env.touched);
    }

    /// Runs a service hook, catching a panic: `None` when it panicked (logged with the connection
    /// and the hook, counted as `handler_panics`; the caller closes the connection). With
    /// `--on-panic abort` the process aborts instead.
    fn guarded<R>(&self, io: &Io<'_, W>, hook: Hook, f: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(a non-text panic payload)");
                io.c.add(Counter::HandlerPanics, 1);
                if self.server.cfg.on_panic == OnPanic::Abort {
                    log::error!("{hook} panicked: {msg}; aborting (--on-panic abort)");
                    std::process::abort();
                }
                log::error!("{hook} panicked: {msg}; closing the connection it ran for, if any");
                None
            }
        }
    }

    fn arm_check(&self, st: &mut ConnState, env: &mut DealEnv) {
        let Some(at) = st.next_check(&self.server.params) else { return };
        if let Some((timer, armed)) = st.check {
            if at >= armed {
                // Lazy: the earlier timer fires, finds nothing due and re-arms for `at`.
                return;
            }
            if env.wheel.reset(timer, Tick::from_ticks(at)) {
                st.check = Some((timer, at));
                return;
            }
        }
        match env.wheel.insert(Tick::from_ticks(at), TimerEntry { id: st.id, kind: TimerKind::Check }) {
            Ok(timer) => st.check = Some((timer, at)),
            Err(_) => log::error!("{}: timer wheel full (sizing bug)", st.id),
        }
    }

    fn free<S: Service>(&self, idx: u32, conn: Conn, service: &mut S, env: &mut DealEnv) {
        let id = conn.st.id;
        if let Some((timer, _)) = conn.st.check {
            env.wheel.cancel(timer);
        }
        for &(_, timer) in &conn.st.timers {
            if env.wheel.cancel(timer).is_some() {
                env.service_timers -= 1;
            }
        }
        let local = ConnId::new(idx, id.generation());
        self.ids.lock().remove(local);
        // The slab bumped the slot's generation: publish it, so stale ids stop matching here and
        // in other shards' `send_remote`.
        self.gens[idx as usize].store(id.generation().wrapping_add(1), Ordering::Release);
        self.live.fetch_sub(1, Ordering::AcqRel);
        if conn.st.admitted {
            self.server.admitted.fetch_sub(1, Ordering::AcqRel);
            env.counters.add(Counter::Closed, 1);
        } else {
            self.server.refusing.fetch_sub(1, Ordering::AcqRel);
        }
        let opened = conn.st.opened;
        drop(conn);
        log::trace!("closed {id}");
        if opened {
            let io = self.io(&env.counters);
            let _ = self.guarded(&io, Hook::Close(id), || service.on_close(id));
        }
    }

    /// Queues a frame on slot `local` of this shard (for `send_to`/`broadcast` from a handler of
    /// another connection). `to` checks the generation; `None` means "whoever is open there".
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_local(
        &self,
        local: u32,
        to: Option<ConnId>,
        kind: u16,
        seq: u32,
        body: &[u8],
        io: &Io<'_, W>,
        env: &mut DealEnv,
    ) -> Result<(), SendError> {
        let Some(slot) = self.slots.get(local as usize) else { return Err(SendError::Closed) };
        let mut slot = slot.lock();
        let Some(conn) = slot.as_mut() else { return Err(SendError::Closed) };
        let st = &mut conn.st;
        if to.is_some_and(|to| to != st.id) || st.phase != Phase::Open || !st.admitted {
            return Err(SendError::Closed);
        }
        let mut sched = 0;
        let result = match st.push_frame(io, kind, seq, body) {
            Ok(()) => {
                st.after_output(io);
                sched |= SEND;
                Ok(())
            }
            Err(e) => {
                sched |= st.slow_consumer(io);
                Err(e)
            }
        };
        self.arm_check(st, env);
        drop(slot);
        self.schedule(local, sched, &mut env.touched);
        result
    }

    /// Whether messages from other shards wait.
    pub fn inbox_pending(&self) -> bool {
        !self.inbox.lock().is_empty()
    }

    /// Deal role: delivers inbox messages from other shards.
    pub fn run_inbox(&self, env: &mut DealEnv) {
        let missed_broadcast = {
            let mut inbox = self.inbox.lock();
            if inbox.is_empty() {
                return;
            }
            inbox.take_into(&mut env.remote)
        };
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let mut msgs = std::mem::take(&mut env.remote);
        for msg in msgs.drain(..) {
            match msg {
                Remote::SendTo { to, kind, seq, body } => {
                    let (_, local) = split_index(to.index());
                    let _ = self.push_local(local, Some(to), kind, seq, &body, &io, env);
                }
                Remote::Broadcast { kind, seq, body } => {
                    for local in 0..self.high_index() {
                        let _ = self.push_local(local, None, kind, seq, &body, &io, env);
                    }
                }
                Remote::Resume { to } => {
                    let (_, local) = split_index(to.index());
                    let Some(slot) = self.slots.get(local as usize) else { continue };
                    let mut slot = slot.lock();
                    let Some(conn) = slot.as_mut().filter(|c| c.st.id == to) else { continue };
                    let sched = conn.st.resume(&io);
                    self.arm_check(&mut conn.st, env);
                    drop(slot);
                    self.schedule(local, sched, &mut env.touched);
                }
            }
        }
        env.remote = msgs;
        if missed_broadcast {
            for local in 0..self.high_index() {
                let Some(slot) = self.slots.get(local as usize) else { continue };
                let mut slot = slot.lock();
                let Some(conn) = slot.as_mut() else { continue };
                if !conn.st.admitted {
                    continue;
                }
                let sched = conn.st.slow_consumer(&io);
                self.arm_check(&mut conn.st, env);
                drop(slot);
                self.schedule(local, sched, &mut env.touched);
            }
        }
    }

    /// Deal role: advances the wheel to now and runs what expired.
    pub fn run_timers<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        if !self.tick_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let now = Tick::from_ticks(io.now);
        while let Some((timer, entry)) = env.wheel.next_expired(now) {
            if let TimerKind::Service { .. } = entry.kind {
                env.service_timers -= 1;
            }
            if let TimerKind::Shard { token } = entry.kind {
                let Some(pos) = env.shard_timers.iter().position(|t| t.1 == timer) else { continue };
                env.shard_timers.swap_remove(pos);
                let mut out = ShardCx { shard: self, env: &mut *env, io: &io };
                let _ = self.guarded(&io, Hook::ShardTimer(self.index, token), || {
                    service.on_shard_timer(&mut out, token)
                });
                continue;
            }
            let (_, idx) = split_index(entry.id.index());
            let Some(slot) = self.slots.get(idx as usize) else { continue };
            let mut slot = slot.lock();
            let Some(conn) = slot.as_mut() else { continue };
            if conn.st.id != entry.id || conn.st.phase == Phase::Dead {
                continue;
            }
            let mut sched = 0;
            match entry.kind {
                TimerKind::Check => {
                    if conn.st.check.map(|c| c.0) != Some(timer) {
                        continue;
                    }
                    conn.st.check = None;
                    sched |= conn.check(&io);
                }
                TimerKind::Service { token } => {
                    let Some(pos) = conn.st.timers.iter().position(|t| t.1 == timer) else { continue };
                    conn.st.timers.swap_remove(pos);
                    let id = conn.st.id;
                    let mut cx = Cx { shard: self, idx, st: &mut conn.st, env: &mut *env, io: &io, sched: 0 };
                    let ran = self.guarded(&io, Hook::Timer(id, token), || service.on_timer(&mut cx, token));
                    sched |= cx.sched;
                    if ran.is_none() {
                        sched |= conn.st.begin_close(&io, None);
                    }
                    conn.st.after_output(&io);
                }
                // Handled before the slot lookup.
                TimerKind::Shard { .. } => continue,
            }
            if conn.st.phase != Phase::Dead {
                self.arm_check(&mut conn.st, env);
            }
            drop(slot);
            self.schedule(idx, sched, &mut env.touched);
        }
    }

    /// The deal role's first act: the service's `on_start` for this shard.
    pub fn start_service<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let mut out = ShardCx { shard: self, env: &mut *env, io: &io };
        let _ = self.guarded(&io, Hook::Start(self.index), || service.on_start(&mut out));
    }

    /// The deal role's last act, once the shard is done: frees every connection the drain left,
    /// running `on_close` for those the service opened (so each `on_open` gets its `on_close`).
    pub fn close_remaining<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        for idx in 0..self.high_index() {
            let conn = self.slots[idx as usize].lock().take();
            if let Some(conn) = conn {
                self.free(idx, conn, service, env);
            }
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

#[cfg(test)]
mod tests {
    use super::{Inbox, Remote, INBOX_CAP_BYTES};
    use doorway_core::slab::ConnId;

    fn note(len: usize) -> Remote {
        Remote::SendTo { to: ConnId::new(1, 0), kind: 1, seq: 0, body: vec![0; len] }
    }

    #[test]
    fn an_inbox_refuses_past_its_byte_cap_and_takes_again_once_drained() {
        let mut inbox = Inbox::default();
        let mut accepted = 0;
        while inbox.push(note(64 << 10)).is_ok() {
            accepted += 1;
            assert!(accepted <= INBOX_CAP_BYTES / (64 << 10), "the cap is not enforced");
        }
        assert!(accepted >= INBOX_CAP_BYTES / (64 << 10) - 1);
        let mut out = Vec::new();
        assert!(!inbox.take_into(&mut out), "a refused send_to is answered, not a missed broadcast");
        assert_eq!(out.len(), accepted);
        assert!(inbox.is_empty());
        assert!(inbox.push(note(64 << 10)).is_ok(), "a drained inbox takes messages again");
    }

    #[test]
    fn a_broadcast_that_does_not_fit_is_remembered_as_missed() {
        let mut inbox = Inbox::default();
        assert!(inbox.push(note(INBOX_CAP_BYTES)).is_ok());
        assert!(inbox.push(Remote::Broadcast { kind: 65, seq: 0, body: vec![1] }).is_err());
        assert!(!inbox.is_empty());
        let mut out = Vec::new();
        assert!(inbox.take_into(&mut out), "the missed broadcast is reported");
        assert!(inbox.is_empty());
        out.clear();
        assert!(!inbox.take_into(&mut out), "and reported once");
    }

    #[test]
    fn an_empty_inbox_takes_even_an_oversized_message() {
        let mut inbox = Inbox::default();
        assert!(inbox.push(note(INBOX_CAP_BYTES + 1)).is_ok());
        assert!(inbox.push(note(1)).is_err());
    }
}
