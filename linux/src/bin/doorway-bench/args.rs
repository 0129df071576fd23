//! Command line of `doorway-bench`, parsed once into a validated [`Config`].
//!
//! Every run is bounded in time: a duration run stops sending at the end of its window and waits
//! at most [`DRAIN`] for the replies still owed; a message-count run stops at `--timeout`. In UDP
//! mode every request also has its own bound, `--reply-timeout`: past it the request is lost (there
//! is no retransmission), so a dropped datagram is counted, never waited for.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// How long a run waits for replies still owed after it stops sending.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The largest body the bench sends (the protocol's lengths are u32; the server caps much lower).
const MAX_BODY: usize = 16 << 20;

/// Load generator for the doorway protocol (docs/PROTOCOL.md).
///
/// Opens `--connections` connections, keeps `--in-flight` ECHO requests outstanding on each (1 =
/// ping-pong), verifies every reply (kind, seq, body) and reports messages/s, latency percentiles
/// and errors by kind. `--connect-rate` measures new connections per second instead (connect, one
/// echo, close). `--udp` sends datagrams instead, one frame each, from `--connections` sockets:
/// closed loop with `--in-flight` requests outstanding per socket (a lost one is an error), or open
/// loop at `--rate` datagrams/s (the loss rate is the figure). Exit status: 0 with no errors, 1
/// with errors, 2 on bad arguments.
#[derive(Debug, Clone, Parser)]
#[command(name = "doorway-bench", version)]
pub struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7200")]
    pub addr: SocketAddr,
    /// Active connections (in --connect-rate mode: concurrent connect loops; with --udp: client
    /// sockets).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Requests outstanding per connection (per socket with --udp); 1 is ping-pong.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Body bytes per request.
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Measured window in seconds (default 5 unless --messages is given).
    #[arg(long, conflicts_with = "messages")]
    pub duration: Option<f64>,
    /// Total requests to complete instead of a duration (bounded by --timeout).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seconds of load before the measured window opens (duration runs only).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Hard bound in seconds for a --messages run.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Measure new connections per second: connect, one echo, close, repeat.
    #[arg(long)]
    pub connect_rate: bool,
    /// `--addr` is a UDP endpoint: each request and reply is one datagram.
    #[arg(long, conflicts_with_all = ["connect_rate", "idle"])]
    pub udp: bool,
    /// With --udp: open loop, sending this many datagrams per second in all (spread evenly over
    /// the sockets) for the run's duration whatever comes back; reports the loss rate.
    #[arg(long, requires = "udp", conflicts_with = "messages")]
    pub rate: Option<f64>,
    /// With --udp: seconds a request waits for its reply before it counts as lost.
    #[arg(long, default_value_t = 1.0)]
    pub reply_timeout: f64,
    /// Extra idle connections held open for the whole run (each does one echo first).
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Worker threads (each with its own epoll loop).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// PID of the server, to report its CPU time and RSS over the measured window (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON line to stdout (the human report then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Progress line interval in seconds (0 = off); shown only for runs longer than 3 s.
    #[arg(long, default_value_t = 1.0)]
    pub progress: f64,
}

/// What a run does once it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Steady load: `in_flight` requests outstanding per connection.
    Load,
    /// Connect, one echo, close, repeat.
    ConnectRate,
    /// UDP closed loop: `in_flight` requests outstanding per socket; none may be lost.
    Udp,
    /// UDP open loop: a fixed send rate; losses are the measurement.
    UdpOpen,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// Send for `warmup + window`, count replies inside the window.
    Window { warmup: Duration, window: Duration },
    /// Complete this many requests in all, within `timeout`.
    Messages { total: u64, timeout: Duration },
}

/// The most datagrams an open-loop run may plan to send (each has an 8-byte send-time slot).
const MAX_OPEN_LOOP: f64 = 50e6;

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server address.
    pub addr: SocketAddr,
    /// Load or connect-rate.
    pub mode: Mode,
    /// Active connections (or connect loops).
    pub connections: usize,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Body bytes per request.
    pub body_size: usize,
    /// When the run ends.
    pub stop: Stop,
    /// Idle connections held open.
    pub idle: usize,
    /// Worker threads.
    pub threads: usize,
    /// Server PID for /proc sampling.
    pub server_pid: Option<u32>,
    /// Progress interval (None = off).
    pub progress: Option<Duration>,
    /// UDP open loop: datagrams per second in all.
    pub rate: Option<f64>,
    /// UDP: how long a request waits for its reply before it is lost.
    pub reply_timeout: Duration,
}

fn seconds(name: &str, value: f64, max: f64) -> Result<Duration, String> {
    if !(value.is_finite() && value >= 0.0 && value <= max) {
        return Err(format!("{name} must be between 0 and {max} seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

impl Args {
    /// Checks ranges and builds the run configuration.
    pub fn validate(&self) -> Result<Config, String> {
        if self.connections == 0 || self.connections > 100_000 {
            return Err("--connections must be between 1 and 100000".into());
        }
        if self.in_flight == 0 || self.in_flight > 65_536 {
            return Err("--in-flight must be between 1 and 65536".into());
        }
        if self.body_size > MAX_BODY {
            return Err(format!("--body-size must be at most {MAX_BODY}"));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err("--threads must be between 1 and 256".into());
        }
        if self.idle > 100_000 {
            return Err("--idle must be at most 100000".into());
        }
        let mode = match (self.connect_rate, self.udp, self.rate) {
            (true, _, _) => Mode::ConnectRate,
            (false, true, None) => Mode::Udp,
            (false, true, Some(_)) => Mode::UdpOpen,
            (false, false, _) => Mode::Load,
        };
        let reply_timeout = seconds("--reply-timeout", self.reply_timeout, DRAIN.as_secs_f64())?;
        if reply_timeout < Duration::from_millis(1) {
            return Err("--reply-timeout must be at least 0.001 seconds".into());
        }
        let stop = match self.messages {
            Some(0) => return Err("--messages must be at least 1".into()),
            Some(total) => Stop::Messages { total, timeout: seconds("--timeout", self.timeout, 3600.0)? },
            None => {
                let window = seconds("--duration", self.duration.unwrap_or(5.0), 3600.0)?;
                if window.is_zero() {
                    return Err("--duration must be positive".into());
                }
                Stop::Window { warmup: seconds("--warmup", self.warmup, 3600.0)?, window }
            }
        };
        if let (true, Stop::Messages { total, .. }) = (self.udp, stop) {
            // A socket's seqs must not wrap within a run: a late reply is told apart by its seq.
            if total / self.connections as u64 >= u64::from(u32::MAX / 2) {
                return Err("--messages per --connections socket must be below 2^31 with --udp".into());
            }
        }
        if let (Some(rate), Stop::Window { warmup, window }) = (self.rate, stop) {
            if !(rate.is_finite() && rate >= 1.0) {
                return Err("--rate must be at least 1 datagram per second".into());
            }
            if rate * (warmup + window).as_secs_f64() > MAX_OPEN_LOOP {
                return Err(format!("--rate times the run's seconds must be at most {MAX_OPEN_LOOP}"));
            }
        }
        let progress = seconds("--progress", self.progress, 3600.0)?;
        Ok(Config {
            addr: self.addr,
            mode,
            connections: self.connections,
            in_flight: self.in_flight,
            body_size: self.body_size,
            stop,
            idle: self.idle,
            threads: self.threads.min(self.connections),
            server_pid: self.server_pid,
            progress: (!progress.is_zero()).then_some(progress),
            rate: self.rate,
            reply_timeout,
        })
    }
}
