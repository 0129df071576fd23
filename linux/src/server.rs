//! The public API: build a server from a [`Config`], serve a [`Service`], stop it.
//!
//! ```no_run
//! use doorway_linux::{Config, Server};
//! let running = Server::builder().config(Config::default()).start(doorway_core::demo::Demo)?;
//! println!("listening on {}", running.local_addr());
//! running.wait()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Services and threads
//!
//! The service is cloned once per shard: each shard's deal role owns its clone and calls it from
//! one thread only, so handlers take `&mut self` with no locking. State that must be shared by all
//! shards lives behind the service's own `Arc` (see `examples/kv.rs`). With one shard (the
//! default) there is exactly one instance.
//!
//! # Threads per model
//!
//! - `fused`: one thread per shard runs monitor, receive, deal and send in turn around one
//!   `epoll_wait`. No cross-thread hand-off on the message path.
//! - `pipeline`: four threads per shard (seed 000's picture). Hand-offs go through door-guarded
//!   ready queues; a consumer is woken through its eventfd once per batch, after a short spin.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use doorway_core::dispatch::{LinkId, SendError, Service};
use doorway_core::slab::ConnId;
use doorway_core::wire::{Wire, V1};

use crate::config::{Config, Model};
use crate::conn::Sched;
use crate::shard::link::LinkOptions;
use crate::shard::{DealEnv, ServerShared, Shard, Sources, Wakers};
use crate::stats::{Counters, ServiceMetric, Stats};
use crate::sync::{ReadyQueue, Waker};
use crate::sys::epoll::Events;
use crate::sys::{rlimit, signalfd, socket};

/// Allocations from this size up are mapped directly (a block is 16 KiB, so blocks stay in the heap).
const LARGE_ALLOCATION: usize = 64 << 10;

/// The receive buffer asked for each UDP socket (the kernel caps it at `net.core.rmem_max`).
const UDP_RCVBUF: usize = 4 << 20;

/// Entry point of the API.
pub struct Server;

impl Server {
    /// A builder with the default configuration.
    pub fn builder() -> Builder {
        Builder {
            cfg: Config::default(),
            signals: false,
            metrics: Vec::new(),
            wire: V1::default(),
            tcp: true,
            udp: Vec::new(),
            links: Vec::new(),
            link_options: LinkOptions::default(),
        }
    }
}

/// Configures and starts a server.
pub struct Builder<W: Wire = V1> {
    cfg: Config,
    signals: bool,
    metrics: Vec<ServiceMetric>,
    wire: W,
    tcp: bool,
    udp: Vec<SocketAddr>,
    links: Vec<(String, SocketAddr)>,
    link_options: LinkOptions,
}

impl<W: Wire> Builder<W> {
    /// Speaks `wire` instead (v1, `docs/PROTOCOL.md`, by default); its body limit is set from the
    /// config's `max_body`.
    pub fn wire<W2: Wire>(self, wire: W2) -> Builder<W2> {
        let Builder { cfg, signals, metrics, tcp, udp, links, link_options, .. } = self;
        Builder { cfg, signals, metrics, wire, tcp, udp, links, link_options }
    }

    /// Declares an upstream link named `name` to `addr`: the server dials it at start and keeps it
    /// dialled (reconnecting with backoff), and the returned id stays valid across reconnects.
    /// Link `i` is owned by shard `i % shards`.
    pub fn add_link(&mut self, name: &str, addr: SocketAddr) -> LinkId {
        self.links.push((name.to_string(), addr));
        LinkId((self.links.len() - 1) as u16)
    }

    /// How links reconnect and how much they hold while down (all links).
    pub fn link_options(mut self, options: LinkOptions) -> Builder<W> {
        self.link_options = options;
        self
    }

    /// Also serves datagrams on a UDP socket bound to `addr` (any number of them; port 0 lets the
    /// OS choose, see [`Running::udp_addrs`]). Each datagram is one frame of the server's wire;
    /// `reply` answers its source. Endpoint `i` is owned by shard `i % shards`.
    pub fn udp(mut self, addr: SocketAddr) -> Builder<W> {
        self.udp.push(addr);
        self
    }

    /// Serves no TCP listener (`Config::listen` is then unused): UDP endpoints only, say.
    pub fn without_tcp(mut self) -> Builder<W> {
        self.tcp = false;
        self
    }

    /// Uses `cfg` (validated at start).
    pub fn config(mut self, cfg: Config) -> Builder<W> {
        self.cfg = cfg;
        self
    }

    /// Drain on SIGTERM/SIGINT (blocks them in the calling thread and every thread it spawns
    /// afterwards; the binary turns this on).
    pub fn handle_signals(mut self, on: bool) -> Builder<W> {
        self.signals = on;
        self
    }

    /// Shows a service's metric in STATS and on `/metrics` (names are checked at start).
    pub fn metric(mut self, metric: &ServiceMetric) -> Builder<W> {
        self.metrics.push(metric.clone());
        self
    }

    /// Binds, spawns the threads and returns once the server is accepting.
    pub fn start<S: Service + Clone + Send + 'static>(self, service: S) -> io::Result<Running<W>> {
        start(self, service)
    }

    /// Starts and waits until the server has stopped (after a signal or a handle's `stop`).
    pub fn serve<S: Service + Clone + Send + 'static>(self, service: S) -> io::Result<()> {
        self.start(service)?.wait()
    }
}

/// A running server.
pub struct Running<W: Wire = V1> {
    addr: Option<SocketAddr>,
    udp_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<ServerShared<W>>,
    threads: Vec<JoinHandle<()>>,
    shards: Vec<Arc<Shard<W>>>,
}

/// Reaches a running server from any thread: cheap to clone, `Send` and `Sync`.
///
/// A service's own threads (a database poller, an aggregator) push to connections through it:
/// every call goes through the target shard's inbox and is carried out by that shard's deal role,
/// so it never takes a connection's lock and never blocks on a handler. Each shard's inbox holds
/// at most [`crate::shard::INBOX_CAP_BYTES`] of bodies: past it a call answers `Full` (the caller
/// retries or drops, its choice), never growth.
#[derive(Clone)]
pub struct Handle<W: Wire = V1>(Arc<ServerShared<W>>);

impl<W: Wire> Handle<W> {
    /// Starts the graceful drain (like SIGTERM).
    pub fn stop(&self) {
        self.0.stop();
    }

    /// Queues a frame on connection `to`. A connection already gone answers `Closed`; one that
    /// goes while the frame is on its way drops it, as it drops a reply queued just before a
    /// close.
    pub fn send_to(&self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        if body.len() > crate::config::MAX_MAX_BODY as usize {
            return Err(SendError::TooLarge);
        }
        let (shard, _) = crate::shard::split_index(to.index());
        self.0.deliver(shard, crate::shard::Remote::SendTo { to, kind, seq, body: body.to_vec() })
    }

    /// Queues a frame on every connection still accepting requests, on every shard; returns how
    /// many connections were open on the shards that took it (a shard whose inbox is full closes
    /// its connections with ERROR 6 rather than leave them silently short).
    pub fn broadcast(&self, kind: u16, seq: u32, body: &[u8]) -> usize {
        self.0.broadcast(None, kind, seq, body)
    }

    /// Queues a frame on an upstream link (as `Context::send_link` does): straight onto its
    /// connection when it is up, else in its bounded queue (`Full` past it).
    pub fn send_link(&self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        self.0.send_link(link, kind, seq, body)
    }

    /// Resumes a connection its service paused with `Context::pause`: the kept request is
    /// delivered again and reading goes on. `Closed` if the connection is gone.
    pub fn resume(&self, conn: ConnId) -> Result<(), SendError> {
        let (shard, _) = crate::shard::split_index(conn.index());
        self.0.deliver(shard, crate::shard::Remote::Resume { to: conn })
    }
}

impl<W: Wire> Running<W> {
    /// The address the TCP listener is bound to (the real port when 0 was asked); the unspecified
    /// address `0.0.0.0:0` for a server built [`Builder::without_tcp`].
    pub fn local_addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The TCP listener's address, if the server has one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The value of the STATS counter `name` (summed over threads), if there is one.
    pub fn counter(&self, name: &str) -> Option<u64> {
        let mut found = None;
        self.shared.stats().visit(&mut |k, v| {
            if k == name {
                found = Some(v);
            }
        });
        found
    }

    /// The state of upstream link `link`, if the server has it.
    pub fn link_status(&self, link: LinkId) -> Option<crate::shard::link::LinkStatus> {
        let shard = self.shards.get(usize::from(link.0) % self.shards.len())?;
        shard.links.iter().find(|l| l.id == link).map(|l| l.status())
    }

    /// The UDP endpoints' addresses, in the order [`Builder::udp`] declared them.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// Where metrics are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The admission limit in force (configured, capped by the fd limit).
    pub fn max_connections(&self) -> usize {
        self.shared.max_conns
    }

    /// A handle that can stop the server.
    pub fn handle(&self) -> Handle<W> {
        Handle(self.shared.clone())
    }

    /// Starts the graceful drain.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Waits for every thread to finish (after a stop), then closes what is left.
    pub fn wait(mut self) -> io::Result<()> {
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                return Err(io::Error::other("a server thread panicked"));
            }
        }
        for shard in &self.shards {
            shard.close_all();
        }
        if let Some(why) = self.shared.died.lock().ok().and_then(|mut d| d.take()) {
            return Err(io::Error::other(why));
        }
        log::info!("stopped");
        Ok(())
    }
}

/// How the open-file limit is shared out between admitted connections and refusals.
///
/// A refused connection is answered with ERROR 5 and then closed the lingering way (PROTOCOL.md),
/// so it holds a descriptor for up to `linger-ms`. Admitted plus lingering-refused connections must
/// fit in the limit together, or a burst of refusals would run the process out of descriptors and
/// stall `accept` on every shard; past `refusing` lingering refusals, more are refused and closed
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FdBudget {
    /// Admitted connections at most (`max-connections`, capped).
    max_conns: usize,
    /// Refused connections lingering at once at most.
    refusing: usize,
}

impl FdBudget {
    /// Descriptors kept for the process itself: stdio, metrics, the log, plus each shard's epoll,
    /// listener, wakers, timer, signal and spare.
    fn reserve(shards: usize) -> u64 {
        32 + 8 * shards as u64
    }

    fn new(nofile: u64, shards: usize, max_connections: usize) -> FdBudget {
        let refusing_wanted = (max_connections / 4 + 16).min(4096);
        let fds = nofile.saturating_sub(Self::reserve(shards)).max(2) as usize;
        if max_connections.saturating_add(refusing_wanted) <= fds {
            return FdBudget { max_conns: max_connections, refusing: refusing_wanted };
        }
        let refusing = (fds / 8).clamp(1, refusing_wanted);
        FdBudget { max_conns: max_connections.min(fds - refusing), refusing }
    }
}

fn start<S: Service + Clone + Send + 'static, W: Wire>(
    builder: Builder<W>,
    service: S,
) -> io::Result<Running<W>> {
    let Builder { cfg, signals, metrics: service_metrics, wire, tcp, udp, links, link_options } = builder;
    if links.len() > u16::MAX as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many links"));
    }
    // Link `i` belongs to shard `i % shards`.
    let mut shard_links: Vec<Vec<crate::shard::link::Link>> = (0..cfg.shards).map(|_| Vec::new()).collect();
    for (i, (name, addr)) in links.into_iter().enumerate() {
        shard_links[i % cfg.shards].push(crate::shard::link::Link::new(
            LinkId(i as u16),
            name,
            addr,
            link_options,
        ));
    }
    cfg.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let nofile = rlimit::raise_nofile().unwrap_or(1024);
    // Buffers of large frames are mapped, not carved from the heap (see `sys::mem`), so the
    // resident memory follows the buffers that `--memory-limit` counts.
    crate::sys::mem::map_large_allocations(LARGE_ALLOCATION);
    let budget = FdBudget::new(nofile, cfg.shards, cfg.max_connections);
    if budget.max_conns < cfg.max_connections {
        log::warn!(
            "max-connections {} capped to {} by the open-file limit {nofile} ({} more kept for refusals)",
            cfg.max_connections,
            budget.max_conns,
            budget.refusing
        );
    }
    if signals {
        signalfd::block_term_signals()?;
    }
    // Bind: the first shard binds the asked address (port 0 resolves here); the others reuse it.
    let (addr, mut listeners) = if tcp {
        let reuse = cfg.shards > 1;
        let first = socket::listen(&cfg.listen, reuse, 4096)?;
        let addr = socket::local_addr(first.as_raw_fd())?;
        let mut listeners = vec![Some(first)];
        for _ in 1..cfg.shards {
            listeners.push(Some(socket::listen(&addr, true, 4096)?));
        }
        (Some(addr), listeners)
    } else {
        (None, (0..cfg.shards).map(|_| None).collect())
    };
    // UDP endpoint `i` belongs to shard `i % shards`.
    let mut endpoints: Vec<Vec<crate::shard::udp::Endpoint>> = (0..cfg.shards).map(|_| Vec::new()).collect();
    let mut udp_addrs = Vec::new();
    for (i, a) in udp.iter().enumerate() {
        let fd = crate::sys::udp::bind(a, UDP_RCVBUF)?;
        udp_addrs.push(crate::sys::udp::local_addr(fd.as_raw_fd())?);
        endpoints[i % cfg.shards].push(crate::shard::udp::Endpoint::new(i as u32, fd));
    }
    if endpoints.iter().any(|e| e.len() > crate::shard::udp::TOKENS.len) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many UDP endpoints for one shard"));
    }
    if shard_links.iter().any(|l| l.len() > crate::shard::link::TOKENS.len) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many links for one shard"));
    }
    let metrics = match cfg.metrics_addr {
        Some(a) => Some(TcpListener::bind(a)?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;

    let model = cfg.model;
    let n_shards = cfg.shards;
    let max_conns = budget.max_conns;
    let shared = Arc::new(ServerShared::new(cfg, wire, max_conns, budget.refusing));
    // A shard may receive every admitted connection (the kernel spreads them over the
    // listeners by hash) and every refusal.
    let capacity = max_conns + budget.refusing;
    let mut stats = Stats::default();
    let mut shards = Vec::new();
    let loops = RoleLoop::of(model);
    // Each thread counts into its own cells: (shard, loop, counters) for every thread to spawn.
    let mut to_spawn = Vec::new();
    for (i, ((listener, udp), links)) in listeners.drain(..).zip(endpoints).zip(shard_links).enumerate() {
        let signal = if signals && i == 0 { Some(signalfd::SignalFd::new()?) } else { None };
        let sources = Sources { listener, udp, links, signal };
        let shard = Arc::new(Shard::new(i, shared.clone(), sources, capacity, RoleLoop::wakers(loops)?)?);
        for &role in loops {
            to_spawn.push((shard.clone(), role, stats.register()));
        }
        for (name, pick) in [
            ("read", (|s: &Shard<W>| &s.read_q) as fn(&Shard<W>) -> &ReadyQueue),
            ("deal", |s: &Shard<W>| &s.deal_q),
            ("send", |s: &Shard<W>| &s.send_q),
        ] {
            let weak = Arc::downgrade(&shard);
            stats.register_queue(
                name.to_string(),
                Arc::new(move || weak.upgrade().map(|s| pick(&s).high_water() as u64).unwrap_or(0)),
            );
        }
        shards.push(shard);
    }
    for metric in service_metrics {
        stats.register_service(metric).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let _ = shared.shards.set(shards.iter().map(Arc::downgrade).collect::<Vec<Weak<Shard<W>>>>());
    let _ = shared.stats.set(stats);

    let mut threads = Vec::new();
    for (shard, role, counters) in to_spawn {
        let name = format!("doorway-s{}-{}", shard.index, role.name());
        // The service is cloned once per shard: for the one loop that runs its deal role.
        let svc = role.deals().then(|| service.clone());
        threads.push(spawn(&shared, name, move || role.run(&shard, svc, counters))?);
    }
    if let Some(listener) = metrics {
        let watched = shared.clone();
        spawn(&shared, "doorway-metrics".to_string(), move || serve_metrics(listener, &watched))?;
    }
    let tcp = addr.map_or("no TCP".to_string(), |a| format!("listening on {a}"));
    log::info!(
        "{tcp}, udp {udp_addrs:?} (model={} shards={n_shards}, max-connections {max_conns})",
        model.name()
    );
    Ok(Running { addr, udp_addrs, metrics_addr, shared, threads, shards })
}

/// Spawns a server thread under watch: if it dies of a panic (one outside the service hooks, which
/// are caught where they run), the whole server drains and `wait` reports it.
fn spawn<W: Wire>(
    shared: &Arc<ServerShared<W>>,
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let shared = shared.clone();
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".to_string());
            shared.thread_died(&name, &why);
        }
    })
}

/// The loop a server thread runs. A model is data: the loops of one shard's threads
/// ([`RoleLoop::of`]); everything else (wakers, counters, threads) follows from that list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleLoop {
    /// All four roles around one `epoll_wait`.
    Fused,
    /// epoll: accept, readiness, the tick, signals.
    Monitor,
    /// The read queue.
    Receive,
    /// The deal queue, the inbox and the timers: the service runs here.
    Deal,
    /// The send queue.
    Send,
}

impl RoleLoop {
    /// The loops of one shard's threads under `model`.
    fn of(model: Model) -> &'static [RoleLoop] {
        match model {
            Model::Fused => &[RoleLoop::Fused],
            Model::Pipeline => &[RoleLoop::Monitor, RoleLoop::Receive, RoleLoop::Deal, RoleLoop::Send],
        }
    }

    fn name(self) -> &'static str {
        match self {
            RoleLoop::Fused => "fused",
            RoleLoop::Monitor => "monitor",
            RoleLoop::Receive => "receive",
            RoleLoop::Deal => "deal",
            RoleLoop::Send => "send",
        }
    }

    /// Whether this loop runs the deal role (and so owns the shard's service instance).
    fn deals(self) -> bool {
        matches!(self, RoleLoop::Fused | RoleLoop::Deal)
    }

    /// The wakers of a shard whose threads run `loops`: a role with a thread of its own parks on
    /// its own eventfd; a role inside the fused loop is woken through the monitor's, which sits in
    /// the epoll set.
    fn wakers(loops: &[RoleLoop]) -> io::Result<Wakers> {
        let monitor = Arc::new(Waker::new(false)?);
        let own = |role: RoleLoop| -> io::Result<Arc<Waker>> {
            if loops.contains(&role) {
                Ok(Arc::new(Waker::new(true)?))
            } else {
                Ok(monitor.clone())
            }
        };
        Ok(Wakers {
            receive: own(RoleLoop::Receive)?,
            deal: own(RoleLoop::Deal)?,
            send: own(RoleLoop::Send)?,
            monitor,
        })
    }

    /// Runs the loop until the shard is done. `service` is `Some` exactly when [`RoleLoop::deals`].
    fn run<S: Service, W: Wire>(self, shard: &Shard<W>, service: Option<S>, counters: Arc<Counters>) {
        match (self, service) {
            (RoleLoop::Fused, Some(service)) => run_fused(shard, service, counters),
            (RoleLoop::Deal, Some(service)) => run_deal(shard, service, counters),
            (RoleLoop::Monitor, _) => run_monitor(shard, &counters),
            (RoleLoop::Receive, _) => run_queue_role(shard, &shard.read_q, &counters, Shard::receive_batch),
            (RoleLoop::Send, _) => run_queue_role(shard, &shard.send_q, &counters, Shard::send_batch),
            // Not built that way (`start` passes the service to exactly the loops that deal); were
            // it ever, the server stops rather than run a shard that answers nobody.
            (RoleLoop::Fused | RoleLoop::Deal, None) => {
                shard.server.thread_died(self.name(), "no service to run")
            }
        }
    }
}

/// Iterations a role thread polls its queue before parking (hand-offs that come within a few
/// microseconds avoid the ~20 us cross-core wake-up).
const SPIN: u32 = 200;

/// Parks on `waker` unless `ready()` becomes true while spinning or after announcing the park.
fn park_until(waker: &Waker, ready: impl Fn() -> bool) {
    for _ in 0..SPIN {
        if ready() {
            return;
        }
        core::hint::spin_loop();
    }
    waker.prepare_park();
    if ready() {
        waker.cancel_park();
        return;
    }
    waker.park();
}

fn run_fused<S: Service, W: Wire>(shard: &Shard<W>, mut service: S, counters: Arc<Counters>) {
    let c = &*counters;
    let mut events = Events::with_capacity(1024);
    // The fused thread counts everything into its one set of counters.
    let mut env = DealEnv::new(counters.clone(), shard.capacity());
    shard.start_service(&mut service, &mut env);
    let mut batch = Vec::new();
    let (Some(mut read_rx), Some(mut deal_rx), Some(mut send_rx)) =
        (shard.read_q.consumer(), shard.deal_q.consumer(), shard.send_q.consumer())
    else {
        log::error!("shard {}: a ready queue already has a consumer", shard.index);
        return;
    };
    loop {
        let mut touched: Sched = 0;
        shard.poll_stop(&mut touched);
        if shard.drained() {
            break;
        }
        let busy = || {
            !shard.read_q.is_empty()
                || !shard.deal_q.is_empty()
                || !shard.send_q.is_empty()
                || shard.inbox_pending()
                || shard.udp_pending()
                || shard.tick_pending.load(Ordering::Acquire)
        };
        let timeout = if busy() {
            0
        } else {
            shard.monitor_waker.prepare_park();
            if busy() {
                0
            } else {
                -1
            }
        };
        let waited = shard.epoll.wait(&mut events, timeout);
        shard.monitor_waker.cancel_park();
        if let Err(e) = waited {
            log::error!("epoll_wait failed: {e}");
            break;
        }
        for ev in events.iter() {
            shard.monitor_event(ev, c, &mut touched);
        }
        shard.read_q.drain_into(&mut read_rx, &shard.doors, &mut batch);
        shard.receive_deal_batch(&batch, &mut service, &mut env);
        shard.run_inbox(&mut env);
        shard.run_udp(&mut service, &mut env);
        shard.run_timers(&mut service, &mut env);
        shard.deal_q.drain_into(&mut deal_rx, &shard.doors, &mut batch);
        shard.deal_batch(&batch, &mut service, &mut env);
        env.touched = 0;
        shard.send_q.drain_into(&mut send_rx, &shard.doors, &mut batch);
        shard.send_batch(&batch, c, &mut touched);
    }
    shard.close_remaining(&mut service, &mut env);
    shard.exit.store(true, Ordering::Release);
}

fn run_monitor<W: Wire>(shard: &Shard<W>, c: &Counters) {
    let mut events = Events::with_capacity(1024);
    loop {
        let mut touched: Sched = 0;
        shard.poll_stop(&mut touched);
        shard.wake(touched);
        if shard.drained() {
            break;
        }
        touched = 0;
        if let Err(e) = shard.epoll.wait(&mut events, -1) {
            log::error!("epoll_wait failed: {e}");
            break;
        }
        for ev in events.iter() {
            shard.monitor_event(ev, c, &mut touched);
        }
        shard.wake(touched);
    }
    shard.exit.store(true, Ordering::Release);
    shard.read_q.waker().force_wake();
    shard.deal_q.waker().force_wake();
    shard.send_q.waker().force_wake();
}

/// The loop of a pipeline role fed by one ready queue (receive, send): drain the queue, run the
/// batch, wake the roles it touched; park while the queue is empty, leave on `exit`.
fn run_queue_role<W: Wire>(
    shard: &Shard<W>,
    queue: &ReadyQueue,
    c: &Counters,
    run: fn(&Shard<W>, &[u32], &Counters, &mut Sched),
) {
    let mut batch = Vec::new();
    let Some(mut rx) = queue.consumer() else { return };
    loop {
        queue.drain_into(&mut rx, &shard.doors, &mut batch);
        if batch.is_empty() {
            if shard.exit.load(Ordering::Acquire) {
                break;
            }
            park_until(queue.waker(), || !queue.is_empty() || shard.exit.load(Ordering::Acquire));
            continue;
        }
        let mut touched = 0;
        run(shard, &batch, c, &mut touched);
        shard.wake(touched);
    }
}

fn run_deal<S: Service, W: Wire>(shard: &Shard<W>, mut service: S, counters: Arc<Counters>) {
    let mut env = DealEnv::new(counters, shard.capacity());
    shard.start_service(&mut service, &mut env);
    let mut batch = Vec::new();
    let Some(mut rx) = shard.deal_q.consumer() else { return };
    loop {
        shard.run_inbox(&mut env);
        shard.run_udp(&mut service, &mut env);
        shard.run_timers(&mut service, &mut env);
        shard.deal_q.drain_into(&mut rx, &shard.doors, &mut batch);
        shard.deal_batch(&batch, &mut service, &mut env);
        shard.wake(env.touched);
        let did = !batch.is_empty() || env.touched != 0;
        env.touched = 0;
        if !did {
            if shard.exit.load(Ordering::Acquire) {
                break;
            }
            park_until(shard.deal_q.waker(), || {
                !shard.deal_q.is_empty()
                    || shard.inbox_pending()
                    || shard.udp_pending()
                    || shard.tick_pending.load(Ordering::Acquire)
                    || shard.exit.load(Ordering::Acquire)
            });
        }
    }
    shard.close_remaining(&mut service, &mut env);
}

/// A tiny HTTP/1.0 responder: `GET /metrics` answers the Prometheus text, anything else 404.
fn serve_metrics<W: Wire>(listener: TcpListener, shared: &ServerShared<W>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?");
                let (status, body) = if ok {
                    ("200 OK", shared.stats().prometheus())
                } else {
                    ("404 Not Found", "not found; try /metrics\n".to_string())
                };
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if shared.stopping.load(Ordering::Acquire) && shared.all_exited() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{spawn, FdBudget, Server};
    use crate::Config;

    /// A server thread that dies of a panic the hooks do not catch must not leave a half-alive
    /// server: the rest drains and `wait` returns the death as an error.
    #[test]
    fn a_dead_server_thread_makes_wait_fail_instead_of_serving_half_alive() {
        let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
        let mut running = Server::builder().config(cfg).start(doorway_core::demo::Demo).unwrap();
        let victim =
            spawn(&running.shared, "doorway-test-victim".into(), || panic!("injected failure")).unwrap();
        running.threads.push(victim);
        let started = std::time::Instant::now();
        let err = running.wait().expect_err("wait must report the dead thread");
        assert!(err.to_string().contains("doorway-test-victim died: injected failure"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the server did not stop");
    }

    #[test]
    fn a_roomy_limit_keeps_the_configured_figures() {
        let b = FdBudget::new(20_000, 2, 10_000);
        assert_eq!(b, FdBudget { max_conns: 10_000, refusing: 2_516 });
    }

    #[test]
    fn a_tight_limit_fits_admitted_and_lingering_refusals_together() {
        for (nofile, shards) in [(128, 1), (128, 2), (256, 4), (1024, 1), (40, 1), (0, 1)] {
            let b = FdBudget::new(nofile, shards, 10_000);
            let fds = (nofile.saturating_sub(FdBudget::reserve(shards))).max(2) as usize;
            assert!(b.max_conns >= 1 && b.refusing >= 1, "{nofile}/{shards}: {b:?}");
            assert!(b.max_conns + b.refusing <= fds, "{nofile}/{shards}: {b:?} over {fds}");
        }
        assert_eq!(FdBudget::new(128, 1, 10_000), FdBudget { max_conns: 77, refusing: 11 });
    }
}
