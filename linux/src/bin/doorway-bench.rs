//! `doorway-bench`: the load generator for `docs/PROTOCOL.md` servers (doorway, the tokio peer, the
//! QEMU firmware).
//!
//! Shape of a run, all bounded in time:
//!
//! 1. open `--idle` connections, one ECHO each, and hold them (they prove they are served);
//! 2. workers connect their share of `--connections` and wait at a barrier, so connect time is
//!    never measured;
//! 3. the main thread fixes the [`Plan`] (one time base for everyone), releases the workers, and
//!    samples the server's `/proc` CPU time at the window's edges while printing progress;
//! 4. workers stop sending at the window's end and wait at most [`args::DRAIN`] for replies owed;
//! 5. per-worker statistics merge into one [`report::Report`]: human text and one JSON line.
//!
//! The client must not be the bottleneck: steady load runs level-triggered epoll loops
//! ([`load`]) doing one `read` and one `write` per connection per wake-up, with every buffer
//! allocated at connect time and replies verified in place. Connect-rate mode ([`connect`]) uses
//! blocking loops, one per `--connections`. UDP mode ([`udp`]) runs the same shape with connected
//! datagram sockets in place of connections, batching with `sendmmsg`/`recvmmsg`: closed loop
//! (`--in-flight` outstanding per socket, none may be lost) or open loop (`--rate`, the loss rate
//! is the figure).
//!
//! Exit status: 0 when every reply verified and nothing failed (in a UDP closed loop: nothing lost),
//! 1 otherwise, 2 on bad arguments.

#[path = "doorway-bench/args.rs"]
mod args;
#[path = "doorway-bench/connect.rs"]
mod connect;
#[path = "doorway-bench/load.rs"]
mod load;
#[path = "doorway-bench/report.rs"]
mod report;
#[path = "doorway-bench/sys.rs"]
mod sys;
#[path = "doorway-bench/udp.rs"]
mod udp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use doorway_core::frame::{kind, Header, HEADER_LEN};

use crate::args::{Config, Mode, Stop, DRAIN};
use crate::report::{CoreSample, Errors, Report, ServerSample, Stats};

/// Bound on one connect, and on one blocking read in connect-rate and idle setup.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on opening and checking all idle connections.
const IDLE_SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One time base for every thread: instants are nanoseconds since `base`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    base: Instant,
    /// Replies from here on count.
    pub measure_from: u64,
    /// Replies from here on do not count.
    pub measure_until: u64,
    /// No new request is sent from here on.
    pub stop_sending: u64,
    /// Whatever is still owed from here on is a timeout.
    pub hard_deadline: u64,
}

impl Plan {
    fn new(stop: Stop) -> Plan {
        let ns = |d: Duration| d.as_nanos() as u64;
        let base = Instant::now();
        match stop {
            Stop::Window { warmup, window } => Plan {
                base,
                measure_from: ns(warmup),
                measure_until: ns(warmup + window),
                stop_sending: ns(warmup + window),
                hard_deadline: ns(warmup + window + DRAIN),
            },
            Stop::Messages { timeout, .. } => Plan {
                base,
                measure_from: 0,
                measure_until: u64::MAX,
                stop_sending: ns(timeout),
                hard_deadline: ns(timeout),
            },
        }
    }

    /// Nanoseconds since the plan's base.
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// The ECHO request every connection sends: a whole frame template. Its first four body bytes
/// (when the body has four) carry the `seq`, the rest is a fixed pattern, so a reply is checked
/// against its own request with one comparison and no per-message allocation.
pub struct Request {
    /// Header and body as sent, with `seq` 0.
    pub frame: Vec<u8>,
    /// The body pattern.
    pub body: Vec<u8>,
}

impl Request {
    fn new(body_size: usize) -> Request {
        let body: Vec<u8> = (0..body_size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect();
        let mut frame = vec![0u8; HEADER_LEN + body_size];
        // The size was validated (<= 16 MiB), so it fits in the u32 length and the buffer.
        let _ = doorway_core::frame::encode(&mut frame, doorway_core::demo::kind::ECHO, 0, &body);
        Request { frame, body }
    }

    /// Writes request `seq` into `out` (exactly one frame long).
    pub fn write(&self, out: &mut [u8], seq: u32) {
        out.copy_from_slice(&self.frame);
        let _ = Header::new(doorway_core::demo::kind::ECHO, seq, self.body.len() as u32).emit(out);
        if self.body.len() >= 4 {
            out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&seq.to_be_bytes());
        }
    }

    /// Whether `body` is the body of request `seq`.
    pub fn matches(&self, body: &[u8], seq: u32) -> bool {
        if body.len() != self.body.len() {
            return false;
        }
        if body.len() < 4 {
            return body == &self.body[..];
        }
        body[..4] == seq.to_be_bytes() && body[4..] == self.body[4..]
    }
}

/// Opens the idle connections, one verified ECHO each, within [`IDLE_SETUP_TIMEOUT`].
fn open_idle(cfg: &Config, request: &Request) -> (Vec<TcpStream>, Errors) {
    let mut errors = Errors::default();
    let deadline = Instant::now() + IDLE_SETUP_TIMEOUT;
    let mut streams = Vec::with_capacity(cfg.idle);
    for _ in 0..cfg.idle {
        if Instant::now() >= deadline {
            errors.timeout += 1;
            continue;
        }
        match TcpStream::connect_timeout(&cfg.addr, CONNECT_TIMEOUT) {
            Ok(stream) => streams.push(stream),
            Err(_) => errors.connect += 1,
        }
    }
    // Send every echo first, then read every reply: pipelined, so 10,000 take well under a second.
    let mut frame = vec![0u8; request.frame.len()];
    request.write(&mut frame, 1);
    streams.retain_mut(|stream| {
        let ok = stream.set_nodelay(true).is_ok()
            && stream.set_read_timeout(Some(CONNECT_TIMEOUT)).is_ok()
            && stream.write_all(&frame).is_ok();
        if !ok {
            errors.io += 1;
        }
        ok
    });
    let mut reply = vec![0u8; request.frame.len()];
    streams.retain_mut(|stream| {
        if Instant::now() >= deadline {
            errors.timeout += 1;
            return false;
        }
        let mut head = [0u8; HEADER_LEN];
        if stream.read_exact(&mut head).is_err() {
            errors.closed += 1;
            return false;
        }
        let Ok(header) = Header::parse(&head) else { return false };
        if header.kind == kind::ERROR {
            let mut code = [0u8; 2];
            let _ = stream.read_exact(&mut code);
            errors.error_frame(u16::from_be_bytes(code));
            return false;
        }
        let body = &mut reply[..request.body.len()];
        let ok = header.kind == doorway_core::demo::kind::ECHO
            && header.seq == 1
            && header.length as usize == body.len()
            && stream.read_exact(body).is_ok()
            && request.matches(body, 1);
        if !ok {
            errors.mismatch += 1;
        }
        ok
    });
    (streams, errors)
}

/// Splits `total` into `parts` near-equal shares.
fn shares(total: u64, parts: usize) -> Vec<u64> {
    let parts_u = parts as u64;
    (0..parts_u).map(|i| total / parts_u + u64::from(i < total % parts_u)).collect()
}

/// Runs the whole benchmark described by `cfg`.
fn run(cfg: Config) -> Report {
    let request = Arc::new(Request::new(cfg.body_size));
    let (idle, idle_errors) = open_idle(&cfg, &request);
    let quotas = match cfg.stop {
        Stop::Messages { total, .. } => shares(total, cfg.connections),
        Stop::Window { .. } => vec![u64::MAX; cfg.connections],
    };
    let n_threads = match cfg.mode {
        Mode::Load | Mode::Udp | Mode::UdpOpen => cfg.threads,
        Mode::ConnectRate => cfg.connections,
    };
    // Open loop: each socket's share of the rate, and how long it sends.
    let open_loop = match (cfg.rate, cfg.stop) {
        (Some(rate), Stop::Window { warmup, window }) => {
            Some((rate / cfg.connections as f64, warmup + window))
        }
        _ => None,
    };
    let ready = Arc::new(Barrier::new(n_threads + 1));
    let plan_cell: Arc<OnceLock<Plan>> = Arc::new(OnceLock::new());
    let progress = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n_threads);
    for t in 0..n_threads {
        let (ready, plan_cell, progress, finished) =
            (Arc::clone(&ready), Arc::clone(&plan_cell), Arc::clone(&progress), Arc::clone(&finished));
        let request = Arc::clone(&request);
        let (addr, mode, in_flight, reply_timeout) = (cfg.addr, cfg.mode, cfg.in_flight, cfg.reply_timeout);
        // Round-robin share of the connections (or the connect loops' quotas).
        let my_quotas: Vec<u64> = quotas.iter().copied().skip(t).step_by(n_threads).collect();
        let handle = std::thread::Builder::new().name(format!("bench-{t}")).spawn(move || {
            let stats = match mode {
                Mode::Load => {
                    let worker = load::Worker { request, in_flight, quotas: my_quotas, progress };
                    let connected = worker.connect(addr);
                    ready.wait();
                    ready.wait();
                    connected.run(plan_cell.get().expect("the plan is set before the second barrier"))
                }
                Mode::Udp | Mode::UdpOpen => {
                    let worker = udp::Worker {
                        request,
                        in_flight,
                        quotas: my_quotas,
                        progress,
                        reply_timeout,
                        open_loop,
                    };
                    let connected = worker.connect(addr);
                    ready.wait();
                    ready.wait();
                    connected.run(plan_cell.get().expect("the plan is set before the second barrier"))
                }
                Mode::ConnectRate => {
                    ready.wait();
                    ready.wait();
                    let plan = plan_cell.get().expect("the plan is set before the second barrier");
                    connect::run(addr, &request, my_quotas.iter().sum(), plan, &progress)
                }
            };
            finished.fetch_add(1, Ordering::Release);
            stats
        });
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("doorway-bench: cannot spawn a worker thread: {e}");
                std::process::exit(1);
            }
        }
    }
    ready.wait();
    let plan = Plan::new(cfg.stop);
    let _ = plan_cell.set(plan);
    ready.wait();

    let pid = cfg.server_pid;
    let long_run = match cfg.stop {
        Stop::Window { warmup, window } => warmup + window > Duration::from_secs(3),
        Stop::Messages { .. } => true,
    };
    let mut progress_line = Progress::new(cfg.progress.filter(|_| long_run), &progress, &plan);
    let all_done = || finished.load(Ordering::Acquire) == n_threads;
    // Cores the server and this process are pinned to, to measure what else ran on them.
    let server_core = pid.and_then(|p| Some((p, report::pinned_cpu(&p.to_string())?)));
    let client_core = report::pinned_cpu("self");
    // UDP: the kernel's drop count at the server's socket, when it is on this machine.
    let udp_port = matches!(cfg.mode, Mode::Udp | Mode::UdpOpen).then_some(cfg.addr.port());
    let server_drops = || udp_port.and_then(report::udp_drops);
    let sample = || {
        let drops = server_drops();
        (pid.and_then(ServerSample::read), CoreSample::read(server_core, client_core), drops)
    };
    let (window, (first, cores0, drops0), (last, cores1, drops1)) = match cfg.stop {
        Stop::Window { .. } => {
            wait_until(plan.instant(plan.measure_from), &mut progress_line, &all_done);
            let first = sample();
            wait_until(plan.instant(plan.measure_until), &mut progress_line, &all_done);
            let last = sample();
            (Duration::from_nanos(plan.measure_until - plan.measure_from), first, last)
        }
        Stop::Messages { .. } => {
            let first = sample();
            wait_until(plan.instant(plan.hard_deadline), &mut progress_line, &all_done);
            let last = sample();
            (Duration::from_nanos(plan.now()), first, last)
        }
    };
    let (server_core_foreign_ns, client_core_foreign_ns) = CoreSample::foreign(&cores0, &cores1);
    let mut stats = Stats::new();
    for handle in handles {
        match handle.join() {
            Ok(worker_stats) => stats.add(&worker_stats),
            Err(_) => stats.errors.io += 1,
        }
    }
    stats.errors.add(&idle_errors);
    let idle_open = idle.len();
    drop(idle);
    let (server_cpu_ns, server_rss_kib, server_wait_ns) = match (first, last) {
        (Some(a), Some(b)) => (
            Some(b.cpu_ns.saturating_sub(a.cpu_ns)),
            Some(b.rss_kib),
            Some(b.wait_ns.saturating_sub(a.wait_ns)),
        ),
        _ => (None, None, None),
    };
    let server_drops = drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a));
    Report {
        server_drops,
        config: cfg,
        stats,
        window,
        idle_open,
        server_cpu_ns,
        server_rss_kib,
        server_wait_ns,
        server_core_foreign_ns,
        client_core_foreign_ns,
    }
}

/// Prints a progress line every interval, to stderr.
struct Progress<'a> {
    every: Option<Duration>,
    counter: &'a AtomicU64,
    plan: &'a Plan,
    next: Instant,
    last_count: u64,
}

impl<'a> Progress<'a> {
    fn new(every: Option<Duration>, counter: &'a AtomicU64, plan: &'a Plan) -> Progress<'a> {
        let next = Instant::now() + every.unwrap_or(Duration::ZERO);
        Progress { every, counter, plan, next, last_count: 0 }
    }

    fn tick(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let count = self.counter.load(Ordering::Relaxed);
        let rate = (count - self.last_count) as f64 / every.as_secs_f64();
        let t = self.plan.now() as f64 / 1e9;
        eprintln!("doorway-bench: [{t:6.1}s] {rate:>10.0}/s  {count} replies");
        self.last_count = count;
        self.next += every;
    }
}

/// Sleeps until `until` (or until every worker is done), ticking the progress line.
fn wait_until(until: Instant, progress: &mut Progress<'_>, all_done: &dyn Fn() -> bool) {
    loop {
        let now = Instant::now();
        if now >= until || all_done() {
            return;
        }
        progress.tick();
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

fn main() -> ExitCode {
    let args = args::Args::parse();
    let cfg = match args.validate() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("doorway-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("doorway-bench: cannot raise the open-file limit: {e}");
    }
    let report = run(cfg);
    if args.json {
        eprint!("{}", report.human());
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", report.json());
        let _ = stdout.flush();
    } else {
        print!("{}", report.human());
    }
    if report.failures() > 0 || report.stats.total == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
#[path = "doorway-bench/tests.rs"]
mod tests;
