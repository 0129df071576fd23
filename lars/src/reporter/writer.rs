//! A writer thread: takes batches from its lane, resumes the connections paused on it, and
//! commits each batch in one transaction.
//!
//! A batch that fails is kept and retried on a new connection, with a backoff from
//! [`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]; meanwhile the lane fills and its senders are
//! paused, so nothing is dropped and nothing grows. Only at exit (the lane closed) does a writer
//! give up, after [`GIVE_UP_AT_EXIT`] of failures, counting the rows as `rows_lost` and logging
//! them: a process asked to stop must stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_core::wire::Lars;
use doorway_linux::Handle;

use super::lanes::Lane;
use super::ReporterMetrics;
use crate::store::{self, DbUrl, StatusRow, Store};

/// The first wait after a failed transaction.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a closing writer keeps trying a failing database.
pub const GIVE_UP_AT_EXIT: Duration = Duration::from_secs(30);

/// One writer's state; [`Writer::run`] is its thread.
pub struct Writer {
    /// Its lane.
    pub lane: Arc<Lane>,
    /// Its connection (`None` after a failure, until reopened).
    pub store: Option<Box<dyn Store>>,
    /// Where to reopen it.
    pub url: DbUrl,
    /// The server, to resume paused connections.
    pub handle: Handle<Lars>,
    /// The figures.
    pub metrics: ReporterMetrics,
    /// Most rows per transaction.
    pub batch: usize,
}

impl Writer {
    /// Writes batches until the lane is closed and empty.
    pub fn run(mut self) {
        while let Some(batch) = self.lane.take(self.batch) {
            // The lane has room again: let the paused senders go on while this batch is written.
            for conn in batch.resume {
                // `Closed`: the connection went away while paused; nothing to resume.
                let _ = self.handle.resume(conn);
            }
            self.commit(&batch.rows);
            self.metrics.update_lag();
        }
    }

    fn commit(&mut self, rows: &[StatusRow]) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        loop {
            let result = match self.store.as_mut() {
                Some(store) => store.write_status(rows),
                None => store::open(&self.url).and_then(|mut store| {
                    let result = store.write_status(rows);
                    self.store = Some(store);
                    result
                }),
            };
            match result {
                Ok(()) => {
                    if failing_since.is_some() {
                        log::info!("database {} takes reports again", self.url);
                    }
                    self.metrics.rows_written.add(rows.len() as u64);
                    self.metrics.batches.add(1);
                    return;
                }
                Err(e) => {
                    self.metrics.db_errors.add(1);
                    self.store = None;
                    let since = *failing_since.get_or_insert_with(|| {
                        log::warn!("database {}: {e}; {} rows kept, retrying", self.url, rows.len());
                        Instant::now()
                    });
                    if self.lane.is_closing() && since.elapsed() >= GIVE_UP_AT_EXIT {
                        log::error!("database {}: {e}; giving up {} rows at exit", self.url, rows.len());
                        self.metrics.rows_lost.add(rows.len() as u64);
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
