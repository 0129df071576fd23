//! `lars-reporter`: receives agents' call statistics (ReportStatusRequest, msgid 3; no replies)
//! and writes them into `ServerCallStatus`.
//!
//! ```text
//!  agents ──ReportStatusRequest──▶ shard: Reporter::report ── rows ──▶ lanes[hash(modid, cmdid) % N]
//!                                      │ lane full: Context::pause          │ bounded
//!                                      ▲                                    ▼
//!                                      └──── Handle::resume ◀──── writer thread i: batch ─▶ one
//!                                                                 transaction of upserts
//! ```
//!
//! - [`lanes`]: the bounded queues, one per writer; a module always goes to the same one, so its
//!   rows are written in order.
//! - The writers ([`writer`]): each takes up to `batch` rows at a time and upserts them in one
//!   transaction (see `store`'s module docs for how counts add up). A failed transaction is
//!   retried on a new connection, with backoff, so nothing accepted is dropped while the database
//!   is away; the lanes fill meanwhile and the senders are paused.
//! - Backpressure: when a lane is full the handler pauses its connection (the report stays with
//!   the framework and is delivered again on resume), so a fast sender is slowed by TCP, never
//!   disconnected, and memory stays bounded by the lanes (`writers × (queue + batch)` rows).
//! - SIGTERM: the framework reads what the sockets hold and hands every whole report to the
//!   handler (paused connections are resumed as the writers make room, within `drain-timeout`);
//!   then every lane is closed and its writer writes what it holds before exiting.
//!
//! Metrics (`doorway_service_*`): `reports`, `rows_queued`, `rows_written`, `writer_lag` (rows
//! queued and not yet written), `batches`, `pauses`, `db_errors`, `rows_lost` (only at exit, if
//! the database stayed away past [`writer::GIVE_UP_AT_EXIT`]), `bad_requests`.

pub mod lanes;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::wire::Lars;
use doorway_linux::config::{at_least, between};
use doorway_linux::{Config, Handle, Running, ServiceMetric};
use prost::Message as _;

use crate::service::{default_db, lars_builder, lars_server, BadInput, StartError};
use crate::store::{self, DbUrl, Module, StatusRow};
use crate::{MsgId, ReportStatusRequest};
use lanes::{lane_of, Lane, Offer};

/// msgid 3, as the message map's kind.
pub const REPORT_STATUS_REQUEST: u16 = MsgId::ReportStatusRequest as u16;

doorway_linux::settings! {
    /// What `lars-reporter` reads from its flags and its file.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ReporterSettings {
        #[flatten]
        server: Config = lars_server(7779);
        /// The database: sqlite://PATH (created with the schema if missing) or
        /// mysql://user:pass@host:port/db (the original's schema).
        db: DbUrl = default_db();
        /// Writer threads, each with its own queue and database connection; a module always goes
        /// to the same writer.
        writers: usize = 3, check between(1, 64);
        /// Rows one writer's queue holds; past it the senders are paused until it has room.
        queue: usize = 65_536, check at_least(1);
        /// Most rows one transaction writes.
        batch: usize = 4_096, check at_least(1);
    }
}

/// The figures `lars-reporter` keeps.
#[derive(Clone, Debug)]
pub struct ReporterMetrics {
    /// ReportStatusRequests accepted.
    pub reports: ServiceMetric,
    /// Rows queued for the writers.
    pub rows_queued: ServiceMetric,
    /// Rows committed.
    pub rows_written: ServiceMetric,
    /// Rows queued and not yet committed.
    pub writer_lag: ServiceMetric,
    /// Transactions committed.
    pub batches: ServiceMetric,
    /// Times a connection was paused because its lane was full.
    pub pauses: ServiceMetric,
    /// Failed transactions (each retried).
    pub db_errors: ServiceMetric,
    /// Rows given up at exit because the database stayed away.
    pub rows_lost: ServiceMetric,
}

impl Default for ReporterMetrics {
    fn default() -> Self {
        ReporterMetrics {
            reports: ServiceMetric::counter("reports"),
            rows_queued: ServiceMetric::counter("rows_queued"),
            rows_written: ServiceMetric::counter("rows_written"),
            writer_lag: ServiceMetric::gauge("writer_lag"),
            batches: ServiceMetric::counter("batches"),
            pauses: ServiceMetric::counter("pauses"),
            db_errors: ServiceMetric::counter("db_errors"),
            rows_lost: ServiceMetric::counter("rows_lost"),
        }
    }
}

impl ReporterMetrics {
    fn all(&self) -> [&ServiceMetric; 8] {
        [
            &self.reports,
            &self.rows_queued,
            &self.rows_written,
            &self.writer_lag,
            &self.batches,
            &self.pauses,
            &self.db_errors,
            &self.rows_lost,
        ]
    }

    /// Sets `writer_lag` from the two counters.
    pub fn update_lag(&self) {
        self.writer_lag.set(self.rows_queued.get().saturating_sub(self.rows_written.get()));
    }
}

/// What every shard's instance and the writers share.
#[derive(Debug)]
pub struct Shared {
    /// One lane per writer.
    pub lanes: Vec<Arc<Lane>>,
    /// The figures.
    pub metrics: ReporterMetrics,
    /// Bodies that are not protobuf.
    pub bad: BadInput,
}

/// The service: one instance per shard.
#[derive(Clone, Debug)]
pub struct Reporter {
    shared: Arc<Shared>,
    /// Scratch space for one report's rows.
    rows: Vec<StatusRow>,
}

/// The rows of one report.
pub fn rows_of(report: &ReportStatusRequest, out: &mut Vec<StatusRow>) {
    let module = Module { modid: report.modid, cmdid: report.cmdid };
    // The original stores the wire's int32 addresses and ports as unsigned (`%u`).
    out.extend(report.results.iter().map(|r| StatusRow {
        module,
        ip: r.ip as u32,
        port: r.port as u32,
        caller: report.caller as u32,
        succ: r.succ,
        err: r.err,
        ts: report.ts,
        overload: r.overload,
    }));
}

impl Reporter {
    fn report(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let report = match ReportStatusRequest::decode(req.body) {
            Ok(report) => report,
            Err(e) => {
                self.shared.bad.refuse(cx, MsgId::ReportStatusRequest, &e);
                return Ok(());
            }
        };
        self.rows.clear();
        rows_of(&report, &mut self.rows);
        let metrics = &self.shared.metrics;
        let lane = &self.shared.lanes
            [lane_of(Module { modid: report.modid, cmdid: report.cmdid }, self.shared.lanes.len())];
        while lane.offer(cx.conn(), &self.rows) == Offer::Full {
            metrics.pauses.add(1);
            if cx.pause() {
                // Delivered again once the writer has made room.
                return Ok(());
            }
            // A binding that cannot pause: wait here for the writer (never on Linux).
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        metrics.reports.add(1);
        metrics.rows_queued.add(self.rows.len() as u64);
        Ok(())
    }
}

message_map! {
    Reporter {
        REPORT_STATUS_REQUEST => report,
    }
}

impl Service for Reporter {}

/// What a stopped reporter did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Reports accepted.
    pub reports: u64,
    /// Rows committed.
    pub rows_written: u64,
    /// Rows given up (the database stayed away at exit).
    pub rows_lost: u64,
}

/// A running `lars-reporter`: the server and its writers.
pub struct ReporterServer {
    running: Running<Lars>,
    shared: Arc<Shared>,
    writers: Vec<JoinHandle<()>>,
}

impl ReporterServer {
    /// Opens one database connection per writer, starts the server and the writers.
    /// `signals`: drain on SIGTERM/SIGINT.
    pub fn start(settings: &ReporterSettings, signals: bool) -> Result<ReporterServer, StartError> {
        let stores = (0..settings.writers)
            .map(|_| store::open(&settings.db))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Store)?;
        let shared = Arc::new(Shared {
            lanes: (0..settings.writers).map(|_| Arc::new(Lane::new(settings.queue))).collect(),
            metrics: ReporterMetrics::default(),
            bad: BadInput::default(),
        });
        let builder = lars_builder(
            &settings.server,
            signals,
            shared.metrics.all().into_iter().chain([&shared.bad.metric]),
        );
        let running = builder
            .start(Reporter { shared: shared.clone(), rows: Vec::new() })
            .map_err(StartError::Server)?;
        let mut writers = Vec::with_capacity(stores.len());
        for (n, store) in stores.into_iter().enumerate() {
            let writer = writer::Writer {
                lane: shared.lanes[n].clone(),
                store: Some(store),
                url: settings.db.clone(),
                handle: running.handle(),
                metrics: shared.metrics.clone(),
                batch: settings.batch,
            };
            let spawned =
                std::thread::Builder::new().name(format!("lars-writer-{n}")).spawn(move || writer.run());
            match spawned {
                Ok(thread) => writers.push(thread),
                Err(e) => {
                    running.stop();
                    let _ = running.wait();
                    return Err(StartError::Server(e));
                }
            }
        }
        Ok(ReporterServer { running, shared, writers })
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
    pub fn metrics(&self) -> &ReporterMetrics {
        &self.shared.metrics
    }

    /// Bodies refused as not protobuf (`bad_requests`).
    pub fn bad_requests(&self) -> u64 {
        self.shared.bad.metric.get()
    }

    /// Waits for the server to stop (after its drain), then lets every writer write what its
    /// lane holds.
    pub fn wait(self) -> std::io::Result<Totals> {
        let result = self.running.wait();
        for lane in &self.shared.lanes {
            lane.close();
        }
        let mut panicked = false;
        for writer in self.writers {
            panicked |= writer.join().is_err();
        }
        result?;
        if panicked {
            return Err(std::io::Error::other("a writer panicked"));
        }
        let m = &self.shared.metrics;
        Ok(Totals {
            reports: m.reports.get(),
            rows_written: m.rows_written.get(),
            rows_lost: m.rows_lost.get(),
        })
    }
}
