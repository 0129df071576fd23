//! Counters: one set per thread, written only by its thread, summed on demand.
//!
//! A counter bump is a relaxed load plus a relaxed store of the thread's own cell: no locked
//! read-modify-write and no cache line shared between threads on the per-message path. Readers
//! (STATS, `/metrics`) sum every thread's cells; a sum may be a few events stale, never torn.
//! `connections_open` is derived: accepted minus closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use doorway_core::frame::ErrorCode;

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Connections admitted.
    Accepted,
    /// Connections refused with ERROR 5.
    Refused,
    /// Admitted connections closed.
    Closed,
    /// Whole frames received.
    FramesIn,
    /// Frames queued for sending.
    FramesOut,
    /// Bytes read.
    BytesIn,
    /// Bytes written.
    BytesOut,
    /// Service hooks that panicked (each closed its connection, or aborted the process).
    HandlerPanics,
    /// Connections ended with ERROR 6 because the memory limit was reached.
    MemoryLimitCloses,
    /// Frames of an unknown kind skipped without an answer (a wire such as Lars's).
    UnknownSkipped,
    /// Upstream link connects attempted.
    LinkAttempts,
    /// Upstream link connects that failed.
    LinkFailures,
    /// Upstream link connects that succeeded.
    LinkConnects,
    /// Datagrams received and handled.
    DatagramsIn,
    /// Datagrams sent.
    DatagramsOut,
    /// Datagrams dropped: not exactly one frame, truncated, or refused by a full socket buffer.
    DatagramsDropped,
    /// ERROR frames sent, code 1 (the next six follow in order).
    Errors1,
}

const N_COUNTERS: usize = Counter::Errors1 as usize + 7;

impl Counter {
    /// The counter for ERROR frames of `code`.
    pub fn error(code: ErrorCode) -> usize {
        Counter::Errors1 as usize + code.code() as usize - 1
    }
}

/// One thread's counters, cache-line aligned.
#[repr(align(128))]
pub struct Counters {
    cells: [AtomicU64; N_COUNTERS],
    max_out: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters { cells: [const { AtomicU64::new(0) }; N_COUNTERS], max_out: AtomicU64::new(0) }
    }
}

impl Counters {
    /// Adds `n` to counter `c` (owner thread only).
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.add_index(c as usize, n);
    }

    #[inline]
    fn add_index(&self, i: usize, n: u64) {
        let cell = &self.cells[i];
        cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Counts one ERROR frame of `code`.
    #[inline]
    pub fn error_sent(&self, code: ErrorCode) {
        self.add_index(Counter::error(code), 1);
    }

    /// Records a connection's pending output, keeping the maximum.
    #[inline]
    pub fn output_level(&self, bytes: usize) {
        if bytes as u64 > self.max_out.load(Ordering::Relaxed) {
            self.max_out.store(bytes as u64, Ordering::Relaxed);
        }
    }

    fn get(&self, i: usize) -> u64 {
        self.cells[i].load(Ordering::Relaxed)
    }
}

/// A figure a service keeps (queries served, subscribers, table version), registered with
/// [`crate::Builder::metric`]: it appears in STATS under its name and on `/metrics` as
/// `doorway_service_<name>` (with `_total` for a counter), beside the server's own.
///
/// Cheap to clone and to share with the service's threads; updates are single relaxed atomics.
#[derive(Clone, Debug)]
pub struct ServiceMetric {
    name: Arc<str>,
    kind: MetricKind,
    value: Arc<AtomicU64>,
}

/// Whether a [`ServiceMetric`] only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows (Prometheus `counter`).
    Counter,
    /// Goes up and down (Prometheus `gauge`).
    Gauge,
}

impl ServiceMetric {
    /// A counter named `name` (lower-case letters, digits and `_`; checked at server start).
    pub fn counter(name: &str) -> ServiceMetric {
        ServiceMetric { name: name.into(), kind: MetricKind::Counter, value: Arc::default() }
    }

    /// A gauge named `name`.
    pub fn gauge(name: &str) -> ServiceMetric {
        ServiceMetric { name: name.into(), kind: MetricKind::Gauge, value: Arc::default() }
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        // Relaxed: a statistic; nothing is published through it.
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the value (a gauge).
    #[inline]
    pub fn set(&self, v: u64) {
        // Relaxed: as in `add`.
        self.value.store(v, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        // Relaxed: as in `add`.
        self.value.load(Ordering::Relaxed)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the name cannot be used, if it cannot.
    pub(crate) fn name_error(&self, taken: &mut dyn FnMut(&str) -> bool) -> Option<String> {
        let ok = !self.name.is_empty()
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Some(format!("service metric `{}`: use lower-case letters, digits and `_`", self.name));
        }
        taken(&self.name).then(|| format!("service metric `{}`: the name is already taken", self.name))
    }
}

/// Every thread's counters, for summing.
#[derive(Default, Clone)]
pub struct Stats {
    all: Vec<Arc<Counters>>,
    queues: Vec<(String, Arc<dyn Fn() -> u64 + Send + Sync>)>,
    service: Vec<ServiceMetric>,
}

impl Stats {
    /// A new cell set registered for summing.
    pub fn register(&mut self) -> Arc<Counters> {
        let c = Arc::new(Counters::default());
        self.all.push(c.clone());
        c
    }

    /// Registers a service's metric (its name checked against the STATS keys and the others').
    pub fn register_service(&mut self, metric: ServiceMetric) -> Result<(), String> {
        let mut keys = Vec::new();
        self.visit(&mut |k, _| keys.push(k.to_string()));
        if let Some(e) = metric.name_error(&mut |n| keys.iter().any(|k| k == n)) {
            return Err(e);
        }
        self.service.push(metric);
        Ok(())
    }

    /// Registers a queue high-water gauge.
    pub fn register_queue(&mut self, name: String, read: Arc<dyn Fn() -> u64 + Send + Sync>) {
        self.queues.push((name, read));
    }

    /// The sum of counter `c` over threads.
    pub fn sum(&self, c: Counter) -> u64 {
        self.sum_index(c as usize)
    }

    fn sum_index(&self, i: usize) -> u64 {
        self.all.iter().map(|t| t.get(i)).fold(0, u64::wrapping_add)
    }

    /// A snapshot summed over every thread.
    pub fn snapshot(&self) -> doorway_core::stats::Counters {
        let accepted = self.sum(Counter::Accepted);
        let closed = self.sum(Counter::Closed);
        doorway_core::stats::Counters {
            connections_open: accepted.saturating_sub(closed),
            connections_accepted: accepted,
            connections_refused: self.sum(Counter::Refused),
            frames_in: self.sum(Counter::FramesIn),
            frames_out: self.sum(Counter::FramesOut),
            bytes_in: self.sum(Counter::BytesIn),
            bytes_out: self.sum(Counter::BytesOut),
            errors_sent: core::array::from_fn(|k| self.sum_index(Counter::Errors1 as usize + k)),
        }
    }

    /// Visits the STATS keys (doorway-core's `stats::Counters`) in order.
    pub fn visit(&self, visit: &mut dyn FnMut(&str, u64)) {
        self.snapshot().visit(visit);
        // The Linux server's own counters follow the common keys.
        visit("handler_panics", self.sum(Counter::HandlerPanics));
        visit("memory_limit_closes", self.sum(Counter::MemoryLimitCloses));
        visit("unknown_kinds_skipped", self.sum(Counter::UnknownSkipped));
        visit("link_attempts", self.sum(Counter::LinkAttempts));
        visit("link_failures", self.sum(Counter::LinkFailures));
        visit("link_connects", self.sum(Counter::LinkConnects));
        visit("datagrams_in", self.sum(Counter::DatagramsIn));
        visit("datagrams_out", self.sum(Counter::DatagramsOut));
        visit("datagrams_dropped", self.sum(Counter::DatagramsDropped));
        for m in &self.service {
            visit(m.name(), m.get());
        }
    }

    /// The counters as Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(2048);
        let accepted = self.sum(Counter::Accepted);
        let closed = self.sum(Counter::Closed);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "doorway_connections_open",
            "gauge",
            "Admitted connections not yet closed.",
            accepted - closed.min(accepted),
        );
        metric("doorway_connections_accepted_total", "counter", "Connections admitted.", accepted);
        metric(
            "doorway_connections_refused_total",
            "counter",
            "Connections refused with ERROR 5.",
            self.sum(Counter::Refused),
        );
        metric("doorway_frames_in_total", "counter", "Whole frames received.", self.sum(Counter::FramesIn));
        metric(
            "doorway_frames_out_total",
            "counter",
            "Frames queued for sending.",
            self.sum(Counter::FramesOut),
        );
        metric("doorway_bytes_in_total", "counter", "Bytes read from clients.", self.sum(Counter::BytesIn));
        metric(
            "doorway_bytes_out_total",
            "counter",
            "Bytes written to clients.",
            self.sum(Counter::BytesOut),
        );
        metric(
            "doorway_handler_panics_total",
            "counter",
            "Service hooks that panicked.",
            self.sum(Counter::HandlerPanics),
        );
        for (name, help, c) in [
            ("doorway_link_attempts_total", "Upstream link connects attempted.", Counter::LinkAttempts),
            ("doorway_link_failures_total", "Upstream link connects that failed.", Counter::LinkFailures),
            ("doorway_link_connects_total", "Upstream link connects that succeeded.", Counter::LinkConnects),
            ("doorway_datagrams_in_total", "Datagrams received and handled.", Counter::DatagramsIn),
            ("doorway_datagrams_out_total", "Datagrams sent.", Counter::DatagramsOut),
            (
                "doorway_datagrams_dropped_total",
                "Datagrams dropped (malformed, truncated, or a full socket).",
                Counter::DatagramsDropped,
            ),
        ] {
            metric(name, "counter", help, self.sum(c));
        }
        metric(
            "doorway_unknown_kinds_skipped_total",
            "counter",
            "Frames of an unknown kind skipped without an answer.",
            self.sum(Counter::UnknownSkipped),
        );
        metric(
            "doorway_memory_limit_closes_total",
            "counter",
            "Connections ended with ERROR 6 because the memory limit was reached.",
            self.sum(Counter::MemoryLimitCloses),
        );
        let _ = writeln!(s, "# HELP doorway_errors_sent_total ERROR frames sent, by code.");
        let _ = writeln!(s, "# TYPE doorway_errors_sent_total counter");
        for code in ErrorCode::ALL {
            let _ = writeln!(
                s,
                "doorway_errors_sent_total{{code=\"{}\"}} {}",
                code.code(),
                self.sum_index(Counter::error(code))
            );
        }
        for m in &self.service {
            let (kind, suffix) = match m.kind {
                MetricKind::Counter => ("counter", "_total"),
                MetricKind::Gauge => ("gauge", ""),
            };
            let name = format!("doorway_service_{}{suffix}", m.name());
            let _ =
                writeln!(s, "# HELP {name} Kept by the service.\n# TYPE {name} {kind}\n{name} {}", m.get());
        }
        let _ =
            writeln!(s, "# HELP doorway_queue_high_water Most entries a queue held at once (output: bytes).");
        let _ = writeln!(s, "# TYPE doorway_queue_high_water gauge");
        let max_out = self.all.iter().map(|t| t.max_out.load(Ordering::Relaxed)).max().unwrap_or(0);
        let _ = writeln!(s, "doorway_queue_high_water{{queue=\"output_bytes\"}} {max_out}");
        let mut names: Vec<&str> = self.queues.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let v = self.queues.iter().filter(|(n, _)| n == name).map(|(_, f)| f()).max().unwrap_or(0);
            let _ = writeln!(s, "doorway_queue_high_water{{queue=\"{name}\"}} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_threads() {
        let mut stats = Stats::default();
        let a = stats.register();
        let b = stats.register();
        a.add(Counter::Accepted, 3);
        b.add(Counter::Closed, 1);
        b.error_sent(ErrorCode::ServerFull);
        let mut seen = Vec::new();
        stats.visit(&mut |k, v| seen.push((k.to_string(), v)));
        assert_eq!(seen[0], ("connections_open".to_string(), 2));
        assert_eq!(seen[11], ("errors_sent_5".to_string(), 1));
        assert_eq!(seen.len(), 23);
        let text = stats.prometheus();
        assert!(text.contains("doorway_errors_sent_total{code=\"5\"} 1"), "{text}");
        assert!(text.contains("doorway_connections_open 2"), "{text}");
    }

    #[test]
    fn service_metrics_show_beside_the_servers_and_bad_names_are_refused() {
        let mut stats = Stats::default();
        let queries = ServiceMetric::counter("queries");
        let version = ServiceMetric::gauge("table_version");
        stats.register_service(queries.clone()).unwrap();
        stats.register_service(version.clone()).unwrap();
        queries.add(3);
        version.set(7);
        let mut seen = Vec::new();
        stats.visit(&mut |k, v| seen.push((k.to_string(), v)));
        assert!(
            seen.contains(&("queries".to_string(), 3)) && seen.contains(&("table_version".to_string(), 7))
        );
        let text = stats.prometheus();
        assert!(
            text.contains("# TYPE doorway_service_queries_total counter\ndoorway_service_queries_total 3"),
            "{text}"
        );
        assert!(text.contains("doorway_service_table_version 7"), "{text}");
        for bad in ["frames_in", "queries", "Bad-Name", ""] {
            assert!(stats.register_service(ServiceMetric::counter(bad)).is_err(), "{bad:?}");
        }
    }
}
