//! `lars-dns`, the route service: answers "which nodes serve (modid, cmdid)?" from memory,
//! remembers who asked, and pushes a module's new route to them when it changes in the database.
//!
//! ```text
//!  agents ──GetRouteRequest (1)──▶ shard: Dns::get_route ── subscribe (ConnId, module)
//!                                       │  table.load() (lock-free) ──▶ GetRouteResponse (2)
//!                                       ▼
//!  database ◀── every check_interval ── poller thread ── version moved? load aside, swap,
//!                                          Handle::send_to(subscriber, 2, new route)
//! ```
//!
//! - [`table`]: a whole route table, each module's answer encoded once; the table in place is an
//!   `ArcSwap<RouteTable>`, so a query never touches the database and never waits for a reload.
//! - [`subs`]: subscriptions, per shard, keyed by generation-safe [`ConnId`]s and dropped in
//!   `on_close`.
//! - [`poller`]: the thread that polls the version, reloads, pushes, and reloads in full every
//!   `reload_interval`.
//!
//! The service ([`Dns`]) is cloned once per shard; its clones share [`Shared`] (table, registry,
//! metrics) and each owns its shard's subscription set. Metrics (`doorway_service_*` on
//! `/metrics`): `queries`, `pushes`, `push_failures`, `subscribers`, `table_version`, `routes`,
//! `reloads`, `reload_us` (the last build and swap), `db_errors`, `bad_requests`.

pub mod poller;
pub mod subs;
pub mod table;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;
use doorway_core::wire::Lars;
use doorway_linux::config::{between, MAX_TIMEOUT};
use doorway_linux::{Config, Handle, Running, ServiceMetric};
use prost::Message as _;

pub use crate::service::StartError;
use crate::service::{default_db, lars_builder, lars_server, BadInput};
use crate::store::{self, DbUrl, Module};
use crate::{GetRouteRequest, MsgId};
use subs::{lock, Registry, Subs};
use table::RouteTable;

/// msgid 1, as the message map's kind.
pub const GET_ROUTE_REQUEST: u16 = MsgId::GetRouteRequest as u16;
/// msgid 2, as the message map's kind.
pub const GET_ROUTE_RESPONSE: u16 = MsgId::GetRouteResponse as u16;

doorway_linux::settings! {
    /// What `lars-dns` reads from its flags and its file.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DnsSettings {
        #[flatten]
        server: Config = lars_server(7778);
        /// The route database: sqlite://PATH (created with the schema if missing) or
        /// mysql://user:pass@host:port/db (the original's schema).
        db: DbUrl = default_db();
        /// How often RouteVersion is read; a change is pushed within one interval.
        check_interval: Duration = Duration::from_secs(1),
            check between(Duration::from_millis(10), MAX_TIMEOUT);
        /// How often the whole table is reloaded even when the version has not moved.
        reload_interval: Duration = Duration::from_secs(60),
            check between(Duration::from_millis(10), MAX_TIMEOUT);
    }
}

/// The figures `lars-dns` keeps.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    /// GetRouteRequests answered.
    pub queries: ServiceMetric,
    /// GetRouteResponses pushed after a change.
    pub pushes: ServiceMetric,
    /// Pushes that no shard would take within [`poller::PUSH_PATIENCE`].
    pub push_failures: ServiceMetric,
    /// Connections with at least one subscription (updated every check).
    pub subscribers: ServiceMetric,
    /// The version of the table in place.
    pub table_version: ServiceMetric,
    /// Nodes in the table in place.
    pub routes: ServiceMetric,
    /// Tables built and swapped in.
    pub reloads: ServiceMetric,
    /// Microseconds the last table took to build and swap in.
    pub reload_us: ServiceMetric,
    /// Failed database checks.
    pub db_errors: ServiceMetric,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        DnsMetrics {
            queries: ServiceMetric::counter("queries"),
            pushes: ServiceMetric::counter("pushes"),
            push_failures: ServiceMetric::counter("push_failures"),
            subscribers: ServiceMetric::gauge("subscribers"),
            table_version: ServiceMetric::gauge("table_version"),
            routes: ServiceMetric::gauge("routes"),
            reloads: ServiceMetric::counter("reloads"),
            reload_us: ServiceMetric::gauge("reload_us"),
            db_errors: ServiceMetric::counter("db_errors"),
        }
    }
}

impl DnsMetrics {
    fn all(&self) -> [&ServiceMetric; 9] {
        [
            &self.queries,
            &self.pushes,
            &self.push_failures,
            &self.subscribers,
            &self.table_version,
            &self.routes,
            &self.reloads,
            &self.reload_us,
            &self.db_errors,
        ]
    }
}

/// What every shard's instance and the poller share.
#[derive(Debug)]
pub struct Shared {
    /// The table in place.
    pub table: ArcSwap<RouteTable>,
    /// Every shard's subscriptions.
    pub subs: Registry,
    /// The figures.
    pub metrics: DnsMetrics,
    /// Bodies that are not protobuf.
    pub bad: BadInput,
}

/// The service: one instance per shard.
#[derive(Debug)]
pub struct Dns {
    shared: Arc<Shared>,
    /// This shard's subscriptions, registered on first use.
    subs: Option<Arc<Mutex<Subs>>>,
}

impl Clone for Dns {
    /// A new shard's instance: the same shared state, a subscription set of its own.
    fn clone(&self) -> Self {
        Dns { shared: self.shared.clone(), subs: None }
    }
}

impl Dns {
    fn get_route(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let request = match GetRouteRequest::decode(req.body) {
            Ok(request) => request,
            Err(e) => {
                self.shared.bad.refuse(cx, MsgId::GetRouteRequest, &e);
                return Ok(());
            }
        };
        let module = Module { modid: request.modid, cmdid: request.cmdid };
        // Subscribe before reading the table: a swap after this point is pushed to us, a swap
        // before it is in the table we read.
        let shared = &self.shared;
        let subs = self.subs.get_or_insert_with(|| shared.subs.add());
        lock(subs).subscribe(cx.conn(), module);
        shared.metrics.queries.add(1);
        shared.table.load().with_body(module, |body| cx.reply(GET_ROUTE_RESPONSE, 0, body))
    }
}

message_map! {
    Dns {
        GET_ROUTE_REQUEST => get_route,
    }
}

impl Service for Dns {
    fn on_close(&mut self, conn: ConnId) {
        if let Some(subs) = &self.subs {
            lock(subs).drop_conn(conn);
        }
    }
}

/// A running `lars-dns`: the server and its poller.
pub struct DnsServer {
    running: Running<Lars>,
    shared: Arc<Shared>,
    poller: JoinHandle<()>,
    stop_poller: Sender<()>,
}

impl DnsServer {
    /// Loads the table, starts the server and the poller. `signals`: drain on SIGTERM/SIGINT.
    pub fn start(settings: &DnsSettings, signals: bool) -> Result<DnsServer, StartError> {
        let mut store = store::open(&settings.db).map_err(StartError::Store)?;
        let snapshot = store.snapshot().map_err(StartError::Store)?;
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(RouteTable::build(&snapshot)),
            subs: Registry::default(),
            metrics: DnsMetrics::default(),
            bad: BadInput::default(),
        });
        let table = shared.table.load();
        shared.metrics.table_version.set(table.version().max(0) as u64);
        shared.metrics.routes.set(table.routes() as u64);
        drop(table);
        let builder = lars_builder(
            &settings.server,
            signals,
            shared.metrics.all().into_iter().chain([&shared.bad.metric]),
        );
        let service = Dns { shared: shared.clone(), subs: None };
        let running = builder.start(service).map_err(StartError::Server)?;
        let poller = poller::Poller::new(
            settings.db.clone(),
            store,
            shared.clone(),
            running.handle(),
            settings.check_interval,
            settings.reload_interval,
        );
        let (stop_poller, stop) = mpsc::channel();
        let poller = std::thread::Builder::new()
            .name("lars-dns-poller".into())
            .spawn(move || poller.run(stop))
            .map_err(StartError::Server)?;
        Ok(DnsServer { running, shared, poller, stop_poller })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.metrics_addr()
    }

    /// A handle that can stop the server.
    pub fn handle(&self) -> Handle<Lars> {
        self.running.handle()
    }

    /// The figures.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.shared.metrics
    }

    /// Bodies refused as not protobuf (`bad_requests`).
    pub fn bad_requests(&self) -> u64 {
        self.shared.bad.metric.get()
    }

    /// Waits for the server to stop (a signal or a handle's `stop`), then stops the poller.
    pub fn wait(self) -> std::io::Result<()> {
        let result = self.running.wait();
        let _ = self.stop_poller.send(());
        if self.poller.join().is_err() {
            return Err(std::io::Error::other("the poller panicked"));
        }
        result
    }
}
