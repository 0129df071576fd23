//! `lars-agent` on doorway: the balancer ([`crate::balance`]) behind the original agent's UDP
//! ports, with links to `lars-dns` and `lars-reporter`.
//!
//! ```text
//! API clients ──UDP 8888/8889/8890──▶ ┌───────── one doorway loop ─────────┐ ══link══▶ lars-dns
//!   GetHost(4) / Report(6) /           │ Agent: message map ─▶ Balancer    │ ══link══▶ lars-reporter
//!   API_GetRoute(7)  ◀── replies (5, 8)└───────────────────────────────────┘
//! ```
//!
//! # Placement
//!
//! By default one loop (one shard) owns the three UDP sockets, both links and one [`Balancer`]:
//! every module, whichever port asks for it, lives in one map, and the route replies and pushes
//! that arrive on the `lars-dns` link update it directly, with no hand-off. With `--shards 3`
//! each port gets its own loop, as the original runs one thread per port: the framework puts UDP
//! endpoint `i` and link `i` on shard `i % shards`, so shard 0 also holds the `lars-dns` link and
//! shard 1 the `lars-reporter` link; the other shards reach them through the server's inbox
//! (`send_link`), and every shard shares the one balancer behind its mutex (held for a lookup
//! and a few comparisons per request). Any shard's report timer takes the reports that are due.
//!
//! Which is better was measured (`lars/RESULTS.md`, "One loop or one per port"): under load the
//! single loop costs less CPU per get_host (its batches hold more datagrams); with one request
//! in flight on this 2-vCPU VM the per-port loops answer more, because a client that asks
//! the three ports in turn then wakes three threads in turn, which the kernel tends to run on
//! the client's own CPU (no cross-CPU wake-up) where one thread woken every time stays on the
//! other CPU. The original shows the same: asked through one port only, its round trips/s fall
//! to the single loop's.
//!
//! # What it does beyond the original
//!
//! - Keeps answering from what it has while `lars-dns` or `lars-reporter` is down; the links
//!   reconnect with backoff by themselves (the original gives up after one failed reconnect), and
//!   when `lars-dns` is back every module held is asked for again (`on_link_up`).
//! - Route requests: an unknown module costs one request per `update_timeout`, not one per call.
//! - Reports are aggregated per module per `report_interval` (`take_report`) and not taken while
//!   the reporter is down, so an outage holds one snapshot per module at most.
//! - Bad datagrams (a body that is not the message its msgid says) are counted and dropped.
//!
//! Metrics (`/metrics` with `--metrics-addr`, and STATS names): the balancer's counters
//! (`Stats::pairs`), `modules`, `modules_in_panic`, `bad_requests`, `route_requests_refused`,
//! `reports_refused`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorway_core::dispatch::{Context, LinkId, Outbox, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::wire::Lars;
use doorway_linux::{LinkOptions, Running, ServiceMetric};
use prost::Message;

use crate::balance::{self, Balancer, ModuleId};
use crate::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, MsgId, ReportRequest, RetCode,
};

/// How `refresh` reaches a link from whichever context it runs in.
type SendLink<'a> = dyn FnMut(LinkId, &[u8]) -> Result<(), SendError> + 'a;

/// The shard timer that takes the reports.
const REPORT_TIMER: u32 = 1;

/// The agent's metrics, registered with the server.
#[derive(Clone)]
struct Metrics {
    /// The balancer's own counters, by name.
    balance: Vec<ServiceMetric>,
    modules: ServiceMetric,
    in_panic: ServiceMetric,
    bad_requests: ServiceMetric,
    route_requests_refused: ServiceMetric,
    reports_refused: ServiceMetric,
}

impl Metrics {
    fn new() -> Metrics {
        let balance =
            balance::Stats::default().pairs().iter().map(|(name, _)| ServiceMetric::gauge(name)).collect();
        Metrics {
            balance,
            modules: ServiceMetric::gauge("modules"),
            in_panic: ServiceMetric::gauge("modules_in_panic"),
            bad_requests: ServiceMetric::counter("bad_requests"),
            route_requests_refused: ServiceMetric::counter("route_requests_refused"),
            reports_refused: ServiceMetric::counter("reports_refused"),
        }
    }

    fn all(&self) -> impl Iterator<Item = &ServiceMetric> {
        self.balance.iter().chain([
            &self.modules,
            &self.in_panic,
            &self.bad_requests,
            &self.route_requests_refused,
            &self.reports_refused,
        ])
    }
}

/// The agent's service. Cloned once per shard by the server; the clones share the balancer (behind
/// a mutex, uncontended with one shard) and whether the reporter's link is up.
#[derive(Clone)]
pub struct Agent {
    balancer: Arc<Mutex<Balancer>>,
    dns: LinkId,
    reporter: LinkId,
    /// Set by the shard that owns the reporter's link, read by every shard's report timer.
    reporter_up: Arc<AtomicBool>,
    started: std::time::Instant,
    report_interval: Duration,
    metrics: Metrics,
}

impl Agent {
    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> balance::Instant {
        balance::Instant::from_millis(self.started.elapsed().as_millis() as u64)
    }

    /// Decodes a request body, counting a bad one (it is then dropped: a datagram has nobody to
    /// tell, and the original's clients retry on their own timeout).
    fn decode<M: Message + Default>(&self, req: &Request<'_>) -> Option<M> {
        match M::decode(req.body) {
            Ok(m) => Some(m),
            Err(e) => {
                self.metrics.bad_requests.add(1);
                log::debug!("msgid {}: a body that is not its message ({e}); dropped", req.kind);
                None
            }
        }
    }

    /// Sends the route requests the balancer queued, on the `lars-dns` link (queued there while
    /// the link is down; counted if even that queue is full).
    fn refresh(&self, send: &mut SendLink<'_>) {
        let modules = self.balancer().modules_to_refresh();
        for m in modules {
            let body = GetRouteRequest { modid: m.modid, cmdid: m.cmdid }.encode_to_vec();
            if send(self.dns, &body).is_err() {
                self.metrics.route_requests_refused.add(1);
            }
        }
    }

    fn get_host(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let Some(q) = self.decode::<GetHostRequest>(req) else { return Ok(()) };
        let module = ModuleId::new(q.modid, q.cmdid);
        let now = self.now();
        let choice = self.balancer().get_host(module, now);
        let (retcode, host) = match choice {
            Ok(choice) => (RetCode::Succ, Some(choice.host)),
            Err(e) => (e.retcode(), None),
        };
        let reply =
            GetHostResponse { seq: q.seq, modid: q.modid, cmdid: q.cmdid, retcode: retcode.into(), host };
        cx.reply(MsgId::GetHostResponse as u16, 0, &reply.encode_to_vec())?;
        self.refresh(&mut |link, body| cx.send_link(link, MsgId::GetRouteRequest as u16, 0, body));
        Ok(())
    }

    fn report(&mut self, _cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let Some(r) = self.decode::<ReportRequest>(req) else { return Ok(()) };
        let Some(host) = r.host else {
            self.metrics.bad_requests.add(1);
            return Ok(());
        };
        let latency = r.latency_us.map(|us| Duration::from_micros(u64::from(us)));
        let now = self.now();
        // A report for a module or node the agent does not hold is counted by the balancer.
        let _ = self.balancer().report(ModuleId::new(r.modid, r.cmdid), host, r.retcode, latency, now);
        Ok(())
    }

    fn api_get_route(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let Some(q) = self.decode::<GetRouteRequest>(req) else { return Ok(()) };
        let now = self.now();
        let host = self.balancer().get_route(ModuleId::new(q.modid, q.cmdid), now).unwrap_or_default();
        let reply = GetRouteResponse { modid: q.modid, cmdid: q.cmdid, host };
        cx.reply(MsgId::ApiGetRouteResponse as u16, 0, &reply.encode_to_vec())?;
        self.refresh(&mut |link, body| cx.send_link(link, MsgId::GetRouteRequest as u16, 0, body));
        Ok(())
    }

    /// A route from `lars-dns`: the reply to a request, or a push after a change.
    fn route(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        if cx.link() != Some(self.dns) {
            // Not from lars-dns (a client sending msgid 2 to a UDP port): not ours to believe.
            self.metrics.bad_requests.add(1);
            return Ok(());
        }
        let Some(r) = self.decode::<GetRouteResponse>(req) else { return Ok(()) };
        let now = self.now();
        if let Err(e) = self.balancer().update_route(ModuleId::new(r.modid, r.cmdid), &r.host, now) {
            log::warn!("route of [{}, {}] from lars-dns not applied: {e}", r.modid, r.cmdid);
        }
        Ok(())
    }

    fn publish_metrics(&self) {
        let b = self.balancer();
        for (metric, (_, value)) in self.metrics.balance.iter().zip(b.stats().pairs()) {
            metric.set(value);
        }
        self.metrics.modules.set(b.len() as u64);
        self.metrics.in_panic.set(b.modules_in_panic() as u64);
    }
}

message_map! {
    Agent {
        2 => route,
        4 => get_host,
        6 => report,
        7 => api_get_route,
    }
}

impl Service for Agent {
    fn on_start<O: Outbox>(&mut self, out: &mut O) {
        let ms = self.report_interval.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        if let Err(e) = out.set_timer(REPORT_TIMER, ms) {
            log::error!("cannot arm the report timer: {e}");
        }
    }

    fn on_shard_timer<O: Outbox>(&mut self, out: &mut O, token: u32) {
        if token != REPORT_TIMER {
            return;
        }
        // Relaxed: a flag with nothing published behind it; a report taken just after the link
        // fell is queued on the link (or counted as refused).
        if self.reporter_up.load(Ordering::Relaxed) {
            let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
            let now = self.now();
            let reports = self.balancer().take_report(now, unix);
            for r in reports {
                if out
                    .send_link(self.reporter, MsgId::ReportStatusRequest as u16, 0, &r.encode_to_vec())
                    .is_err()
                {
                    self.metrics.reports_refused.add(1);
                }
            }
        }
        self.publish_metrics();
        self.on_start(out);
    }

    fn on_link_up<C: Context>(&mut self, cx: &mut C, link: LinkId) {
        if link == self.reporter {
            self.reporter_up.store(true, Ordering::Relaxed);
        } else if link == self.dns {
            // lars-dns (re)started: ask again for every module held, so pushes resume too.
            let now = self.now();
            self.balancer().resubscribe_all(now);
            self.refresh(&mut |link, body| cx.send_link(link, MsgId::GetRouteRequest as u16, 0, body));
        }
    }

    fn on_link_down<O: Outbox>(&mut self, _out: &mut O, link: LinkId) {
        if link == self.reporter {
            self.reporter_up.store(false, Ordering::Relaxed);
        }
    }
}

/// Where the agent listens and whom it links to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The first UDP port's address; the agent binds it and the next two ports.
    pub udp_base: SocketAddr,
    /// `lars-dns`.
    pub dns: SocketAddr,
    /// `lars-reporter`.
    pub reporter: SocketAddr,
}

/// The most shards the agent runs: one per UDP port.
pub const MAX_SHARDS: usize = 3;

/// Starts the agent: the Lars wire, the three UDP endpoints, the two links, `server.shards` loops
/// (1 to [`MAX_SHARDS`]; see the module's placement notes); drains on SIGTERM/SIGINT when
/// `signals` (the binary).
pub fn start(
    server: doorway_linux::Config,
    endpoints: &Endpoints,
    balance: balance::Config,
    links: LinkOptions,
    signals: bool,
) -> std::io::Result<Running<Lars>> {
    let balancer = Balancer::new(balance.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if !(1..=MAX_SHARDS).contains(&server.shards) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "--shards {}: the agent runs 1 to {MAX_SHARDS} (one per UDP port at most)",
                server.shards
            ),
        ));
    }
    let cfg = doorway_linux::Config { idle_timeout: None, ..server };
    let metrics = Metrics::new();
    let mut builder =
        crate::service::lars_builder(&cfg, signals, metrics.all()).without_tcp().link_options(links);
    for i in 0..3u16 {
        let port = endpoints.udp_base.port().checked_add(i).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the UDP base port leaves no room for three ports",
            )
        })?;
        builder = builder.udp(SocketAddr::new(endpoints.udp_base.ip(), port));
    }
    let dns = builder.add_link("lars-dns", endpoints.dns);
    let reporter = builder.add_link("lars-reporter", endpoints.reporter);
    let agent = Agent {
        balancer: Arc::new(Mutex::new(balancer)),
        dns,
        reporter,
        reporter_up: Arc::new(AtomicBool::new(false)),
        started: std::time::Instant::now(),
        report_interval: balance.report_interval,
        metrics,
    };
    builder.start(agent)
}
