//! The poller: one thread that watches `RouteVersion`, swaps in new tables and pushes changes.
//!
//! Every `check_interval` it reads the version. When it moved: load every route and the version
//! in one transaction, read the `RouteChange` modules up to that version, build the new table
//! aside, swap it in, push each changed module's new answer to every connection subscribed to it
//! (through `Handle::send_to`, so the pushes are written by the shards' own threads), then delete
//! those `RouteChange` rows. Independently, every `reload_interval` it reloads the whole table
//! without pushing (a table edited without the rule is picked up that way).
//!
//! A query never waits for any of this: it reads whichever table is in place
//! (`ArcSwap::load`, lock-free), and the old table is freed here, not by the query that happened
//! to hold it last ([`Poller::retire`]), so freeing a million routes never lands on a shard.
//!
//! A database error is counted (`db_errors`), logged once per streak, and the connection is
//! opened again on the next check; the table in place keeps answering meanwhile.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_core::dispatch::SendError;
use doorway_core::slab::ConnId;
use doorway_core::wire::Lars;
use doorway_linux::Handle;

use super::table::RouteTable;
use super::{Shared, GET_ROUTE_RESPONSE};
use crate::store::{self, DbUrl, Module, Snapshot, Store, StoreError};

/// How long a push waits for a shard's full inbox to take it, all pushes of one change together.
pub const PUSH_PATIENCE: Duration = Duration::from_secs(5);
/// How long an old table waits for the queries still reading it before the poller lets it go.
const RETIRE_PATIENCE: Duration = Duration::from_secs(1);

/// The poller's state; [`Poller::run`] is its thread.
pub struct Poller {
    url: DbUrl,
    store: Option<Box<dyn Store>>,
    shared: Arc<Shared>,
    handle: Handle<Lars>,
    check: Duration,
    reload: Duration,
    last_reload: Instant,
    failing: bool,
}

impl Poller {
    /// A poller over `store` (already open, its table in place) for the server behind `handle`.
    pub fn new(
        url: DbUrl,
        store: Box<dyn Store>,
        shared: Arc<Shared>,
        handle: Handle<Lars>,
        check: Duration,
        reload: Duration,
    ) -> Poller {
        Poller {
            url,
            store: Some(store),
            shared,
            handle,
            check,
            reload,
            last_reload: Instant::now(),
            failing: false,
        }
    }

    /// Checks every `check` interval until `stop` says so (a message or the sender dropped).
    pub fn run(mut self, stop: Receiver<()>) {
        // Reloads build a whole table: on a small machine they must take only the CPU the server's
        // threads leave over, or queries wait behind them (measured in tests/dns_scale.rs).
        if let Err(e) = doorway_linux::lower_thread_priority() {
            log::warn!("the route poller keeps its priority ({e}): reloads may delay queries");
        }
        loop {
            match stop.recv_timeout(self.check) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let mut store = match self.store.take() {
                Some(store) => store,
                None => match store::open(&self.url) {
                    Ok(store) => store,
                    Err(e) => {
                        self.failed(e);
                        continue;
                    }
                },
            };
            match self.check(store.as_mut()) {
                Ok(()) => {
                    if self.failing {
                        log::info!("database {} answers again", self.url);
                        self.failing = false;
                    }
                    self.store = Some(store);
                }
                Err(e) => self.failed(e),
            }
            self.shared.metrics.subscribers.set(self.shared.subs.conns() as u64);
        }
    }

    fn failed(&mut self, e: StoreError) {
        self.shared.metrics.db_errors.add(1);
        if !self.failing {
            log::warn!("database {}: {e}; answering from the table in place, retrying every check", self.url);
            self.failing = true;
        }
    }

    /// One check: a new version is loaded and pushed; otherwise a due reload is done.
    pub fn check(&mut self, store: &mut dyn Store) -> Result<(), StoreError> {
        let version = store.version()?;
        if version != self.shared.table.load().version() {
            let snapshot = store.snapshot()?;
            let changed = store.changes(snapshot.version)?;
            let upto = snapshot.version;
            self.install(snapshot);
            self.push(&changed);
            store.delete_changes(upto)?;
        } else if self.last_reload.elapsed() >= self.reload {
            self.install(store.snapshot()?);
        }
        Ok(())
    }

    /// Builds the table of `snapshot` and swaps it in.
    fn install(&mut self, snapshot: Snapshot) {
        let started = Instant::now();
        let table = Arc::new(RouteTable::build(&snapshot));
        if snapshot.skipped > 0 {
            log::warn!("{} RouteData row(s) skipped: no node has that address or port", snapshot.skipped);
        }
        if !table.oversized().is_empty() {
            log::warn!(
                "module(s) {:?} left out: their route is over the wire's body limit",
                table.oversized()
            );
        }
        let metrics = &self.shared.metrics;
        metrics.table_version.set(table.version().max(0) as u64);
        metrics.routes.set(table.routes() as u64);
        let old = self.shared.table.swap(table);
        metrics.reloads.add(1);
        metrics.reload_us.set(started.elapsed().as_micros() as u64);
        self.last_reload = Instant::now();
        retire(old);
    }

    /// Sends each changed module's answer to its subscribers.
    fn push(&self, changed: &[Module]) {
        let table = self.shared.table.load_full();
        let deadline = Instant::now() + PUSH_PATIENCE;
        let mut conns = Vec::new();
        for module in changed {
            self.shared.subs.subscribers(*module, &mut conns);
            table.with_body(*module, |body| {
                for conn in &conns {
                    self.push_one(*conn, body, deadline);
                }
            });
        }
    }

    fn push_one(&self, conn: ConnId, body: &[u8], deadline: Instant) {
        let metrics = &self.shared.metrics;
        loop {
            match self.handle.send_to(conn, GET_ROUTE_RESPONSE, 0, body) {
                Ok(()) => return metrics.pushes.add(1),
                // Closed since the subscribers were read: its on_close ends the subscription.
                Err(SendError::Closed) => return,
                Err(SendError::Full) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => {
                    metrics.push_failures.add(1);
                    log::debug!("push to {conn:?}: {e}");
                    return;
                }
            }
        }
    }
}

/// Drops an old table here once no query holds it (or after [`RETIRE_PATIENCE`]).
fn retire(old: Arc<RouteTable>) {
    let deadline = Instant::now() + RETIRE_PATIENCE;
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(old);
}
