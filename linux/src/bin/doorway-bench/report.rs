//! What a run measured: per-worker [`Stats`] merged into one [`Report`], printed for people and
//! as one flat JSON line for machines (`cargo xtask bench` parses it).
//!
//! Messages and latencies count only replies that arrive inside the measured window; errors count
//! over the whole run. Server figures come from `/proc/PID/stat` (utime + stime, all threads) and
//! `/proc/PID/status` (VmRSS) sampled at the window's edges.
//!
//! UDP runs add [`Datagrams`]: requests sent, lost and late. A lost request fails a closed-loop run
//! (it counts in `errors`, [`Report::failures`]); in an open-loop run the loss rate is the figure.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::args::{Config, Mode};
use crate::sys;

/// Errors by kind. Any non-zero count makes the run fail (exit status 1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Errors {
    /// A connect failed or timed out.
    pub connect: u64,
    /// A read or write failed (reset, refused, ...).
    pub io: u64,
    /// The server closed a connection that still owed replies.
    pub closed: u64,
    /// A reply with the wrong kind, seq, length or body.
    pub mismatch: u64,
    /// A request still unanswered when the run's time bound ran out.
    pub timeout: u64,
    /// ERROR frames received, by code (index 0: unknown codes).
    pub error_frames: [u64; 8],
}

impl Errors {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect
            + self.io
            + self.closed
            + self.mismatch
            + self.timeout
            + self.error_frames.iter().sum::<u64>()
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.io += other.io;
        self.closed += other.closed;
        self.mismatch += other.mismatch;
        self.timeout += other.timeout;
        for (a, b) in self.error_frames.iter_mut().zip(other.error_frames) {
            *a += b;
        }
    }

    /// Counts an ERROR frame by its code.
    pub fn error_frame(&mut self, code: u16) {
        let slot = if (1..=7).contains(&code) { code as usize } else { 0 };
        self.error_frames[slot] += 1;
    }
}

/// UDP request accounting (all zero in TCP modes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Datagrams {
    /// Requests sent (open loop: those sent inside the measured window).
    pub sent: u64,
    /// Every request sent over the run, warm-up and drain included (the span of `client_drops`).
    pub sent_all: u64,
    /// Of those, requests with no verified reply within the reply timeout.
    pub lost: u64,
    /// Replies to a request no longer awaited (after its timeout, or a duplicate).
    pub late: u64,
    /// Datagrams the kernel dropped at the client's sockets (full receive buffers, from
    /// `/proc/net/udp`): replies the client lost, not the server.
    pub client_drops: u64,
}

impl Datagrams {
    fn add(&mut self, other: &Datagrams) {
        self.sent += other.sent;
        self.sent_all += other.sent_all;
        self.lost += other.lost;
        self.late += other.late;
        self.client_drops += other.client_drops;
    }

    /// Lost over sent (0 when nothing was sent).
    pub fn loss_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }
}

/// One worker's measurements.
pub struct Stats {
    /// Replies verified inside the measured window.
    pub messages: u64,
    /// Replies verified over the whole run.
    pub total: u64,
    /// Round-trip latency in nanoseconds, inside the window.
    pub latency: Histogram<u64>,
    /// Errors by kind.
    pub errors: Errors,
    /// UDP: requests sent, lost and late.
    pub datagrams: Datagrams,
}

impl Stats {
    /// Empty statistics (latency from 1 ns to 100 s, 3 significant digits).
    pub fn new() -> Stats {
        let latency =
            Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid");
        Stats { messages: 0, total: 0, latency, errors: Errors::default(), datagrams: Datagrams::default() }
    }

    /// Adds another worker's measurements.
    pub fn add(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.total += other.total;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.errors.add(&other.errors);
        self.datagrams.add(&other.datagrams);
    }
}

/// A server's CPU time and RSS at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSample {
    /// utime + stime of all its threads, in nanoseconds.
    pub cpu_ns: u64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Time its threads spent runnable but waiting for a CPU, in nanoseconds (the sum of
    /// `/proc/PID/task/*/schedstat` field 2): large values mean the machine was contended.
    pub wait_ns: u64,
}

impl ServerSample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; None if the process is gone.
    pub fn read(pid: u32) -> Option<ServerSample> {
        let cpu_ns = process_cpu_ns(&pid.to_string())?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let wait_ns = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        Some(ServerSample { cpu_ns, rss_kib, wait_ns })
    }
}

/// utime + stime of a process (`"self"` or a PID), all threads, in nanoseconds.
pub fn process_cpu_ns(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime).saturating_mul(1_000_000_000) / sys::clock_ticks_per_second())
}

/// Datagrams the kernel dropped at the UDP socket bound to local `port` (the `drops` column of
/// `/proc/net/udp` or `/proc/net/udp6`), if there is one.
pub fn udp_drops(port: u16) -> Option<u64> {
    let wanted = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1)?.ends_with(&wanted).then(|| fields.last()?.parse().ok())?
        })
    })
}

/// The one CPU a process (`"self"` or a PID) may run on, if its affinity is a single CPU.
pub fn pinned_cpu(pid: &str) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim();
    list.parse().ok()
}

/// Busy time of one CPU (user + nice + system + steal from `/proc/stat`), in nanoseconds.
pub fn core_busy_ns(cpu: usize) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let ticks = f.first()? + f.get(1)? + f.get(2)? + f.get(7).copied().unwrap_or(0);
    Some(ticks.saturating_mul(1_000_000_000) / sys::clock_ticks_per_second())
}

/// What other processes did on the server's and the client's cores: each core's busy time minus
/// the time of the process pinned to it. Only for a core a process is pinned to, alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreSample {
    server: Option<(u64, u64)>,
    client: Option<(u64, u64)>,
}

impl CoreSample {
    /// Samples the server's core (if `server` is `(pid, cpu)`) and the client's (if pinned).
    pub fn read(server: Option<(u32, usize)>, client_cpu: Option<usize>) -> CoreSample {
        let server =
            server.and_then(|(pid, cpu)| Some((core_busy_ns(cpu)?, process_cpu_ns(&pid.to_string())?)));
        let client = client_cpu.and_then(|cpu| Some((core_busy_ns(cpu)?, process_cpu_ns("self")?)));
        CoreSample { server, client }
    }

    /// Foreign busy time on (the server's core, the client's core) between two samples.
    pub fn foreign(first: &CoreSample, last: &CoreSample) -> (Option<u64>, Option<u64>) {
        let delta = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| {
            let ((busy0, own0), (busy1, own1)) = (a?, b?);
            Some(busy1.saturating_sub(busy0).saturating_sub(own1.saturating_sub(own0)))
        };
        (delta(first.server, last.server), delta(first.client, last.client))
    }
}

/// A finished run.
pub struct Report {
    /// The configuration it ran.
    pub config: Config,
    /// Merged measurements.
    pub stats: Stats,
    /// Length of the measured window.
    pub window: Duration,
    /// Idle connections that were open and answered their echo.
    pub idle_open: usize,
    /// Server CPU time spent inside the window, if a PID was given and could be read.
    pub server_cpu_ns: Option<u64>,
    /// Server RSS at the end of the window.
    pub server_rss_kib: Option<u64>,
    /// Time the server's threads waited for a CPU inside the window.
    pub server_wait_ns: Option<u64>,
    /// UDP: datagrams the kernel dropped at the server's socket inside the window (requests lost
    /// before the server read them), if the socket is on this machine.
    pub server_drops: Option<u64>,
    /// CPU time other processes took on the server's core inside the window (if it is pinned).
    pub server_core_foreign_ns: Option<u64>,
    /// CPU time other processes took on the client's core inside the window (if it is pinned).
    pub client_core_foreign_ns: Option<u64>,
}

impl Report {
    /// Verified replies per second inside the window.
    pub fn rate(&self) -> f64 {
        self.stats.messages as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// What fails the run: every error, and in a UDP closed loop every lost request.
    pub fn failures(&self) -> u64 {
        let lost = if self.config.mode == Mode::Udp { self.stats.datagrams.lost } else { 0 };
        self.stats.errors.total() + lost
    }

    /// UDP open loop: requests sent per second inside the window (the offered load).
    pub fn offered_rate(&self) -> f64 {
        self.stats.datagrams.sent as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Body megabytes (10^6) per second in each direction.
    pub fn mb_per_s(&self) -> f64 {
        self.rate() * self.config.body_size as f64 / 1e6
    }

    /// Server CPU nanoseconds per verified message in the window.
    pub fn cpu_per_msg_ns(&self) -> Option<f64> {
        let cpu = self.server_cpu_ns?;
        (self.stats.messages > 0).then(|| cpu as f64 / self.stats.messages as f64)
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.stats.latency.is_empty() {
            0
        } else {
            self.stats.latency.value_at_quantile(q)
        }
    }

    /// The human report.
    pub fn human(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let mode = match c.mode {
            Mode::Load => format!("load connections={} in_flight={}", c.connections, c.in_flight),
            Mode::ConnectRate => format!("connect-rate loops={}", c.connections),
            Mode::Udp => format!("udp sockets={} in_flight={}", c.connections, c.in_flight),
            Mode::UdpOpen => {
                format!("udp-open sockets={} rate={:.0}/s", c.connections, c.rate.unwrap_or(0.0))
            }
        };
        let unit = if c.mode == Mode::ConnectRate { "conns/s" } else { "msgs/s" };
        let _ = writeln!(
            s,
            "doorway-bench {} {mode} body={} idle={} threads={} window={:.2}s",
            c.addr,
            c.body_size,
            c.idle,
            c.threads,
            self.window.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  messages  {} in window, {} in all: {:.0} {unit}, {:.1} MB/s each way",
            self.stats.messages,
            self.stats.total,
            self.rate(),
            self.mb_per_s()
        );
        let _ = writeln!(
            s,
            "  latency   p50 {}  p99 {}  p999 {}  max {}",
            show_ns(self.quantile(0.5)),
            show_ns(self.quantile(0.99)),
            show_ns(self.quantile(0.999)),
            show_ns(self.stats.latency.max())
        );
        let d = &self.stats.datagrams;
        if matches!(c.mode, Mode::Udp | Mode::UdpOpen) {
            let which = if c.mode == Mode::UdpOpen { " in window" } else { "" };
            let _ = writeln!(
                s,
                "  datagrams {} sent{which} ({:.0}/s), {} lost ({:.3}%), {} late; reply timeout {:.3}s",
                d.sent,
                d.sent as f64 / self.window.as_secs_f64().max(1e-9),
                d.lost,
                d.loss_rate() * 100.0,
                d.late,
                c.reply_timeout.as_secs_f64()
            );
            let server = self.server_drops.map_or("n/a".to_string(), |n| n.to_string());
            let _ = writeln!(
                s,
                "  drops     by the kernel: {server} at the server's socket in the window, {} at the client's",
                d.client_drops
            );
        }
        let e = &self.stats.errors;
        if self.failures() == 0 {
            let _ = writeln!(s, "  errors    none");
        } else {
            let _ = write!(
                s,
                "  errors    {} (connect {}, io {}, closed {}, mismatch {}, timeout {}",
                self.failures(),
                e.connect,
                e.io,
                e.closed,
                e.mismatch,
                e.timeout
            );
            for (code, n) in e.error_frames.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = write!(s, ", ERROR {code}: {n}");
            }
            if c.mode == Mode::Udp {
                let _ = write!(s, ", lost {}", d.lost);
            }
            let _ = writeln!(s, ")");
        }
        if c.idle > 0 {
            let _ = writeln!(s, "  idle      {} of {} open and answered", self.idle_open, c.idle);
        }
        if let Some(cpu) = self.server_cpu_ns {
            let per = self.cpu_per_msg_ns().map(|ns| format!("{ns:.0} ns/msg")).unwrap_or_default();
            let rss = self.server_rss_kib.unwrap_or(0);
            let wait = self.server_wait_ns.unwrap_or(0) as f64 / 1e9;
            let _ = writeln!(
                s,
                "  server    cpu {:.3} s in window ({per}), waited {wait:.3} s for a CPU, rss {rss} KiB",
                cpu as f64 / 1e9
            );
        }
        let share =
            |ns: Option<u64>| ns.map(|ns| format!("{:.0}%", ns as f64 / self.window.as_secs_f64() / 1e7));
        if let (Some(server), client) =
            (share(self.server_core_foreign_ns), share(self.client_core_foreign_ns))
        {
            let client = client.map(|c| format!(", {c} of the client's")).unwrap_or_default();
            let _ = writeln!(s, "  noise     other processes used {server} of the server's core{client}");
        }
        s
    }

    /// One flat JSON object on one line; every value is a number except `mode`.
    pub fn json(&self) -> String {
        let c = &self.config;
        let e = &self.stats.errors;
        let mode = match c.mode {
            Mode::Load => "load",
            Mode::ConnectRate => "connect-rate",
            Mode::Udp => "udp",
            Mode::UdpOpen => "udp-open",
        };
        let mut s = format!(
            "{{\"mode\":\"{mode}\",\"connections\":{},\"in_flight\":{},\"body_size\":{},\"threads\":{},\
             \"idle\":{},\"idle_open\":{},\"window_s\":{:.6},\"messages\":{},\"total\":{},\
             \"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\
             \"max_ns\":{},\"mean_ns\":{:.1},\"errors\":{},\"err_connect\":{},\"err_io\":{},\
             \"err_closed\":{},\"err_mismatch\":{},\"err_timeout\":{}",
            c.connections,
            c.in_flight,
            c.body_size,
            c.threads,
            c.idle,
            self.idle_open,
            self.window.as_secs_f64(),
            self.stats.messages,
            self.stats.total,
            self.rate(),
            self.mb_per_s(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.stats.latency.max(),
            if self.stats.latency.is_empty() { 0.0 } else { self.stats.latency.mean() },
            self.failures(),
            e.connect,
            e.io,
            e.closed,
            e.mismatch,
            e.timeout,
        );
        for (code, n) in e.error_frames.iter().enumerate() {
            let _ = write!(s, ",\"err_frame_{code}\":{n}");
        }
        if matches!(c.mode, Mode::Udp | Mode::UdpOpen) {
            let d = &self.stats.datagrams;
            let _ = write!(
                s,
                ",\"sent\":{},\"lost\":{},\"late\":{},\"loss_rate\":{:.6},\"offered_per_s\":{:.1},\"reply_timeout_s\":{:.3},\
                 \"client_drops\":{}",
                d.sent,
                d.lost,
                d.late,
                d.loss_rate(),
                self.offered_rate(),
                c.reply_timeout.as_secs_f64(),
                d.client_drops
            );
            // Where losses happened, as shares of the requests sent over the same span as each
            // counter: the server's socket is read at the window's ends (so: the window's
            // requests); the clients' sockets over their whole life (so: every request of the run).
            let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
            let _ = write!(s, ",\"client_drop_rate\":{:.6}", share(d.client_drops, d.sent_all));
            if let Some(n) = self.server_drops {
                let _ = write!(s, ",\"server_drops\":{n},\"server_drop_rate\":{:.6}", share(n, d.sent));
            }
        }
        if let Some(cpu) = self.server_cpu_ns {
            let _ = write!(s, ",\"server_cpu_ns\":{cpu}");
        }
        if let Some(per) = self.cpu_per_msg_ns() {
            let _ = write!(s, ",\"server_cpu_ns_per_msg\":{per:.1}");
        }
        if let Some(rss) = self.server_rss_kib {
            let _ = write!(s, ",\"server_rss_kib\":{rss}");
        }
        if let Some(wait) = self.server_wait_ns {
            let _ = write!(s, ",\"server_wait_ns\":{wait}");
        }
        if let Some(ns) = self.server_core_foreign_ns {
            let _ = write!(s, ",\"server_core_foreign_ns\":{ns}");
        }
        if let Some(ns) = self.client_core_foreign_ns {
            let _ = write!(s, ",\"client_core_foreign_ns\":{ns}");
        }
        s.push('}');
        s
    }
}

/// Nanoseconds in the most readable unit.
pub fn show_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.1}us", ns as f64 / 1e3),
        _ => format!("{:.2}ms", ns as f64 / 1e6),
    }
}
