//! `lars-dns` at the scale of issue 13, the server a child process (the `lars-dns` binary of the
//! same build, or `$LARS_DNS_BIN`) on 127.0.0.1 and a real SQLite file:
//!
//! - 15,000 connections each subscribed to one module (GetRouteRequest): a `route set` reaches
//!   every one of them within 1 s of its detection. The server checks the version every 10 ms, so
//!   detection comes at most one check (plus one version read) after the commit; the delay is
//!   timed from the commit, an upper bound of the delay from the detection. Printed per change:
//!   p50, p99, max and the spread between the first and the last push received.
//! - 1,000,000 routes (10,000 modules of 100 nodes) in memory, reloaded in full five times while
//!   three connections keep asking, each on a fixed schedule (a query every 500 µs, timed from
//!   when it was due, so a stall counts against every query it held back). A reload is started by
//!   a version change and ends when its push reaches a subscribed connection, so its window is
//!   seen from here; quiet periods as long as the reloads alternate with them. Checked: every
//!   query answered; no query waits for a reload (p99.9 during the reloads within 20 ms, half the
//!   shortest table build or twice the p99.9 with no reload, whichever is longest, plus what the
//!   shard thread spent waiting, runnable, for a CPU during one reload: a wait for the build
//!   would show all of it, 40 ms and more in a release build, a second in a debug build); and
//!   the 1 ms at p99.9 wherever the machine itself allows judging it (p99.9 with no
//!   reload within 500 µs).
//!   Printed: the write, load and reload times, query latency with and without a reload, how
//!   long the shard thread waited for a CPU during the reloads (`schedstat`), the server's RSS
//!   and peak RSS.
//!
//! Both hold the machine (15,000 sockets on this side and the server's 15,000, or a core
//! reloading), so they run one at a time. They are meant for a release build (`cargo test
//! --release -p doorway-lars --test dns_scale -- --nocapture`); a debug build runs the same
//! steps and checks, the reloads only take longer (debug-build figures are printed, not
//! compared). The machine is shared: a latency figure includes whatever else ran on its cores.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use doorway_lars::store::{self, DbUrl, Module};
use doorway_lars::{GetRouteResponse, Head, MsgId, HEAD_LEN};
use doorway_testkit::process::proc_status_kib;
use doorway_testkit::raise_nofile_limit;
use prost::Message as _;

use common::{Child, LarsConn, TempDir};

/// The version check of both tests: a change is detected within this of its commit.
const CHECK: &str = "10ms";
const CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// How long the server may take to load its table and print its listening line.
const START_LIMIT: Duration = Duration::from_secs(120);

/// One test at a time: each would disturb the other's figures (and together they would hold
/// more sockets than the limit allows).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn node(n: u32) -> SocketAddrV4 {
    SocketAddrV4::new((0x0A00_0000 + n).into(), 7000)
}

fn nodes(response: &GetRouteResponse) -> Vec<SocketAddrV4> {
    let mut nodes: Vec<_> = response.host.iter().map(|h| h.to_addr().unwrap()).collect();
    nodes.sort();
    nodes
}

/// The element at quantile `q` of `sorted` (not empty).
fn at(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// A `lars-dns` child process, stopped by its PID on drop.
struct DnsProcess {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    /// From the spawn to the listening line (the table is loaded before it).
    started_in: Duration,
}

impl DnsProcess {
    /// Starts `lars-dns` on `db` with the test's `args`; returns once it listens.
    fn spawn(db: &DbUrl, args: &[&str]) -> DnsProcess {
        let bin =
            std::env::var("LARS_DNS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lars-dns").to_string());
        let db = db.to_string();
        let base =
            ["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "warn", "--db", &db];
        let spawned = Instant::now();
        let mut child = Command::new(&bin)
            .args(base)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let child = Child(Some(child));
        // The lines are read on a thread of their own, so a server that never prints is a
        // timeout here rather than a test that hangs.
        let (lines, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                if lines.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        let next = || rx.recv_timeout(START_LIMIT).unwrap_or_else(|e| panic!("lars-dns {args:?}: {e}"));
        let line = next();
        let started_in = spawned.elapsed();
        let addr = line.strip_prefix("lars-dns listening on ").and_then(|l| l.split_whitespace().next());
        let addr = addr.unwrap_or_else(|| panic!("first line: {line:?}")).parse().unwrap();
        let line = next();
        let metrics = line.strip_prefix("lars-dns metrics on http://").and_then(|l| l.split('/').next());
        let metrics = metrics.unwrap_or_else(|| panic!("second line: {line:?}")).parse().unwrap();
        DnsProcess { child, addr, metrics, started_in }
    }

    fn pid(&self) -> u32 {
        self.child.0.as_ref().unwrap().id()
    }

    /// `(VmRSS, VmHWM)` in MiB.
    fn rss_mib(&self) -> (u64, u64) {
        let kib = |key| proc_status_kib(self.pid(), key).unwrap();
        (kib("VmRSS:") / 1024, kib("VmHWM:") / 1024)
    }

    /// The CPU time of its thread `name` and the time it waited, runnable, for a CPU
    /// (`/proc/PID/task/TID/schedstat`).
    fn thread_sched(&self, name: &str) -> (Duration, Duration) {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        let task = tasks
            .map(|t| t.unwrap().path())
            .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|comm| comm.trim() == name));
        let task = task.unwrap_or_else(|| panic!("lars-dns has no thread {name}"));
        let text = std::fs::read_to_string(task.join("schedstat")).unwrap();
        let mut ns = text.split_whitespace().map(|n| Duration::from_nanos(n.parse().unwrap()));
        (ns.next().unwrap(), ns.next().unwrap())
    }

    /// The value of `doorway_service_<name>` (`_total` for a counter) on `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let mut http = TcpStream::connect(self.metrics).unwrap();
        http.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        http.write_all(b"GET /metrics HTTP/1.0\r\nHost: lars-dns\r\n\r\n").unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).unwrap();
        let found = text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            let key = key.strip_prefix("doorway_service_")?;
            (key == name || key.strip_suffix("_total") == Some(name)).then(|| value.trim().parse().ok())?
        });
        found.unwrap_or_else(|| panic!("no doorway_service_{name} on /metrics:\n{text}"))
    }

    /// Polls `/metrics` until `name` is `want` (or `limit` passes); the last value.
    fn wait_metric(&self, name: &str, want: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.metric(name);
            if value == want || Instant::now() >= deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

const SUBSCRIBERS: usize = 15_000;
/// Connections opened, asked and answered together while subscribing.
const BATCH: usize = 500;
/// Route changes pushed, one after the other.
const CHANGES: u32 = 3;
const PUSH_LIMIT: Duration = Duration::from_secs(1);
const M: Module = Module { modid: 1, cmdid: 1 };

/// One subscriber's bytes since its last whole frame.
struct Inbound {
    conn: LarsConn,
    buf: Vec<u8>,
}

impl Inbound {
    /// Reads what is there (never blocks); a whole frame's body once one has arrived.
    fn poll(&mut self, chunk: &mut [u8]) -> Option<Vec<u8>> {
        match self.conn.stream.read(chunk) {
            Ok(0) => panic!("a subscriber was closed by the server"),
            Ok(len) => self.buf.extend_from_slice(&chunk[..len]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("a subscriber: {e}"),
        }
        let head = Head::parse(self.buf.get(..HEAD_LEN)?).unwrap();
        let end = HEAD_LEN + head.msglen;
        (self.buf.len() >= end).then(|| {
            assert_eq!(head.msgid, i32::from(MsgId::GetRouteResponse));
            let body = self.buf[HEAD_LEN..end].to_vec();
            self.buf.drain(..end);
            body
        })
    }
}

/// Sweeps every subscriber until each has its push or `limit` passed since `since`: each one's
/// delay (when its frame was seen) and the longest sweep (the resolution of the delays).
fn collect_pushes(
    subscribers: &mut [Inbound],
    since: Instant,
    want: &[SocketAddrV4],
) -> (Vec<Option<Duration>>, Duration) {
    let deadline = since + PUSH_LIMIT * 5;
    let mut delays = vec![None; subscribers.len()];
    let mut chunk = [0u8; 256];
    let mut longest_sweep = Duration::ZERO;
    while delays.iter().any(Option::is_none) && Instant::now() < deadline {
        let sweep = Instant::now();
        let mut got = 0;
        for (n, subscriber) in subscribers.iter_mut().enumerate() {
            if delays[n].is_some() {
                continue;
            }
            if let Some(body) = subscriber.poll(&mut chunk) {
                delays[n] = Some(since.elapsed());
                got += 1;
                let pushed = GetRouteResponse::decode(&body[..]).unwrap();
                assert_eq!((pushed.modid, pushed.cmdid), (M.modid, M.cmdid));
                assert_eq!(nodes(&pushed), want, "subscriber {n}");
            }
        }
        longest_sweep = longest_sweep.max(sweep.elapsed());
        if got == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    (delays, longest_sweep)
}

#[test]
fn a_route_change_reaches_15000_subscribed_connections_within_1_s_of_its_detection() {
    let _serial = serial();
    let limit = raise_nofile_limit().unwrap();
    assert!(limit >= SUBSCRIBERS as u64 + 1000, "open-file limit {limit}: too low for {SUBSCRIBERS} sockets");
    let dir = TempDir::new("dns-15000");
    let db = dir.sqlite();
    store::open(&db).unwrap().set_route(M, &[node(1)]).unwrap();
    // max-connections: doorway's default admits 10,000.
    let server = DnsProcess::spawn(&db, &["--check-interval", CHECK, "--max-connections", "16000"]);
    let (rss_idle, _) = server.rss_mib();

    let started = Instant::now();
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    while subscribers.len() < SUBSCRIBERS {
        let n = BATCH.min(SUBSCRIBERS - subscribers.len());
        let mut batch: Vec<LarsConn> = (0..n).map(|_| LarsConn::connect(server.addr)).collect();
        for conn in &mut batch {
            conn.ask(M);
        }
        for mut conn in batch {
            assert_eq!(nodes(&conn.answer()), [node(1)]);
            conn.stream.set_nonblocking(true).unwrap();
            subscribers.push(Inbound { conn, buf: Vec::new() });
        }
    }
    let subscribed_in = started.elapsed();
    let counted = server.wait_metric("subscribers", SUBSCRIBERS as u64, Duration::from_secs(10));
    assert_eq!(counted, SUBSCRIBERS as u64, "the server counts {counted} subscribers");
    let (rss, _) = server.rss_mib();
    println!(
        "{SUBSCRIBERS} connections opened and subscribed in {subscribed_in:.2?}; server RSS {rss_idle} -> {rss} MiB"
    );

    for change in 1..=CHANGES {
        let want = [node(1), node(1 + change)];
        store::open(&db).unwrap().set_route(M, &want).unwrap();
        let committed = Instant::now();
        let (delays, sweep) = collect_pushes(&mut subscribers, committed, &want);
        let reached = delays.iter().flatten().count();
        assert_eq!(
            reached, SUBSCRIBERS,
            "change {change}: {reached} of {SUBSCRIBERS} got the push within 5 s"
        );
        let mut delays: Vec<Duration> = delays.into_iter().flatten().collect();
        delays.sort();
        let (first, last) = (delays[0], delays[SUBSCRIBERS - 1]);
        println!(
            "change {change}: push delay after the commit ({CHECK} check), {SUBSCRIBERS} subscribers: p50 {:.1?}, \
             p99 {:.1?}, max {last:.1?}; first {first:.1?}, spread first to last {:.1?} (sweep {sweep:.1?})",
            at(&delays, 0.5),
            at(&delays, 0.99),
            last - first,
        );
        // Detected at most one check after the commit, so within 1 s of it means by 1 s + a check.
        assert!(
            last <= PUSH_LIMIT + CHECK_INTERVAL,
            "change {change}: the last push came {last:?} after the commit"
        );
        let pushes =
            server.wait_metric("pushes", u64::from(change) * SUBSCRIBERS as u64, Duration::from_secs(5));
        assert_eq!(pushes, u64::from(change) * SUBSCRIBERS as u64);
    }
    assert_eq!(server.metric("push_failures"), 0);
    let (rss, peak) = server.rss_mib();
    println!("server RSS {rss} MiB (peak {peak} MiB) with {SUBSCRIBERS} subscribers");
}

const ROUTES: u32 = 1_000_000;
const NODES_PER_MODULE: u32 = 100;
const MODULES: u32 = ROUTES / NODES_PER_MODULE;
const RELOADS: usize = 5;
const QUERY_CONNS: usize = 3;
/// Each query connection asks on this schedule (open loop): a query held up delays the ones
/// due after it, and each is timed from when it was due, so a stall counts once per query it
/// held back (no coordinated omission).
const QUERY_PERIOD: Duration = Duration::from_micros(500);
/// Queries per connection, at most (the test's time bounds them first).
const MAX_QUERIES: usize = 2_000_000;
const RELOAD_LIMIT: Duration = Duration::from_secs(120);
/// Above this p99.9 during the reloads (or half the shortest table build, or twice the p99.9
/// with no reload, if longer), plus the longest the shard thread waited for a CPU during one
/// reload, queries waited for the reload itself (see the test).
const HOLD_LIMIT: Duration = Duration::from_millis(20);
/// The shard thread of a one-shard server (doorway names it).
const SHARD_THREAD: &str = "doorway-s0-fuse";
/// The 1 ms target is checked when the p99.9 with no reload is at most this.
const JUDGE_BELOW: Duration = Duration::from_micros(500);
/// A module outside the million, edited to start each reload and subscribed to see it end.
const WATCH: Module = Module { modid: 100_000, cmdid: 1 };

/// Module `n` of the million: modid 1..=100 by cmdid 1..=100.
fn module(n: u32) -> Module {
    Module { modid: 1 + (n / 100) as i32, cmdid: 1 + (n % 100) as i32 }
}

/// Writes the million routes in one transaction (module `i / 100` gets node `10.0.0.0 + i`);
/// the time it took.
fn fill(dir: &TempDir) -> Duration {
    let db = dir.sqlite();
    drop(store::open(&db).unwrap());
    let started = Instant::now();
    let conn = rusqlite::Connection::open(dir.0.join("lars.db")).unwrap();
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
         INSERT INTO RouteData (modid, cmdid, serverip, serverport)
             SELECT 1 + i / {per_modid}, 1 + (i / {NODES_PER_MODULE}) % 100, {base} + i, 7000 FROM n;
         UPDATE RouteVersion SET version = 1 WHERE id = 1;
         COMMIT;",
        last = ROUTES - 1,
        per_modid = NODES_PER_MODULE * 100,
        base = 0x0A00_0000u32,
    ))
    .unwrap();
    started.elapsed()
}

/// One answered query: when it was asked (since the test's start) and how long the answer took.
#[derive(Clone, Copy)]
struct Sample {
    asked: Duration,
    took: Duration,
}

/// Asks random modules of the million every [`QUERY_PERIOD`] until `stop`, one question at a
/// time; a question late on its schedule because an answer was late is asked at once, and timed
/// from when it was due (so a stall counts against every question it held back). This thread's
/// own late wake-ups are not the server's: when a sleep overshoots, the schedule moves with it.
fn query_loop(addr: SocketAddr, seed: u64, epoch: Instant, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut conn = LarsConn::connect(addr);
    let mut samples = Vec::with_capacity(1 << 16);
    let mut rng = seed;
    let mut start = Instant::now();
    // Relaxed: a flag with nothing published behind it; a few more queries after it are fine.
    while !stop.load(Ordering::Relaxed) && samples.len() < MAX_QUERIES {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let n = ((rng >> 33) % u64::from(MODULES)) as u32;
        let mut due = start + QUERY_PERIOD * samples.len() as u32;
        if let Some(early) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
            let woke = Instant::now();
            start += woke - due;
            due = woke;
        }
        conn.ask(module(n));
        let (msgid, body) = conn.recv().unwrap();
        let took = due.elapsed();
        assert_eq!(msgid, i32::from(MsgId::GetRouteResponse));
        if samples.len() % 64 == 0 {
            let response = GetRouteResponse::decode(&body[..]).unwrap();
            assert_eq!((response.modid, response.cmdid), (module(n).modid, module(n).cmdid));
            assert_eq!(response.host.len(), NODES_PER_MODULE as usize, "module {n}");
        }
        samples.push(Sample { asked: due - epoch, took });
    }
    samples
}

/// `n, p50, p99, p99.9, max` of `took`, sorted here.
fn summary(mut took: Vec<Duration>) -> String {
    took.sort();
    if took.is_empty() {
        return "none".into();
    }
    format!(
        "n {}, p50 {:.0?}, p99 {:.0?}, p99.9 {:.0?}, max {:.1?}",
        took.len(),
        at(&took, 0.5),
        at(&took, 0.99),
        at(&took, 0.999),
        took[took.len() - 1]
    )
}

#[test]
fn a_reload_of_1_000_000_routes_never_holds_a_query_for_more_than_1_ms() {
    let _serial = serial();
    let dir = TempDir::new("dns-million");
    let filled_in = fill(&dir);
    let db = dir.sqlite();
    // Reloads only when this test changes the version.
    let server = DnsProcess::spawn(&db, &["--check-interval", CHECK, "--reload-interval", "1h"]);
    let (rss_loaded, _) = server.rss_mib();
    println!(
        "{ROUTES} routes ({MODULES} modules) written in {filled_in:.2?}; lars-dns loaded them and listened \
         in {:.2?}, RSS {rss_loaded} MiB",
        server.started_in
    );
    assert_eq!(server.metric("routes"), u64::from(ROUTES));
    let mut watch = LarsConn::connect(server.addr);
    watch.stream.set_read_timeout(Some(RELOAD_LIMIT)).unwrap();
    watch.ask(WATCH);
    assert!(watch.answer().host.is_empty());

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let queriers: Vec<_> = (0..QUERY_CONNS as u64)
        .map(|seed| {
            let stop = stop.clone();
            let addr = server.addr;
            std::thread::spawn(move || query_loop(addr, seed, epoch, stop))
        })
        .collect();
    // Quiet periods (as long as the reload before them) alternate with the reloads, so both
    // see the same machine.
    let mut windows = Vec::new();
    let mut quiet_periods = Vec::new();
    let mut build_us = Vec::new();
    let (mut shard_ran, mut shard_waited) = (Duration::ZERO, Duration::ZERO);
    let mut longest_wait = Duration::ZERO;
    std::thread::sleep(Duration::from_millis(200));
    let mut quiet_for = Duration::from_millis(500);
    for reload in 1..=RELOADS as u32 {
        let quiet_from = epoch.elapsed();
        std::thread::sleep(quiet_for);
        quiet_periods.push((quiet_from, epoch.elapsed()));
        let version = store::open(&db).unwrap().set_route(WATCH, &[node(reload)]).unwrap();
        let committed = epoch.elapsed();
        let (ran_before, waited_before) = server.thread_sched(SHARD_THREAD);
        let pushed = watch.answer();
        let seen = epoch.elapsed();
        let (ran, waited) = server.thread_sched(SHARD_THREAD);
        shard_ran += ran - ran_before;
        shard_waited += waited - waited_before;
        longest_wait = longest_wait.max(waited - waited_before);
        assert_eq!(nodes(&pushed), [node(reload)]);
        windows.push((committed, seen));
        quiet_for = seen - committed;
        assert_eq!(server.metric("table_version"), version as u64);
        build_us.push(server.metric("reload_us"));
    }
    let quiet_from = epoch.elapsed();
    std::thread::sleep(quiet_for);
    quiet_periods.push((quiet_from, epoch.elapsed()));
    // Relaxed: see query_loop.
    stop.store(true, Ordering::Relaxed);
    let samples: Vec<Sample> = queriers.into_iter().flat_map(|q| q.join().unwrap()).collect();
    let (rss, peak) = server.rss_mib();

    let overlaps = |s: &Sample| windows.iter().any(|&(from, to)| s.asked < to && s.asked + s.took > from);
    let in_quiet =
        |s: &Sample| quiet_periods.iter().any(|&(from, to)| s.asked >= from && s.asked + s.took <= to);
    let quiet: Vec<Duration> = samples.iter().filter(|s| in_quiet(s)).map(|s| s.took).collect();
    assert!(quiet.len() >= 1000, "only {} queries in the quiet periods", quiet.len());
    let mut during: Vec<Duration> = samples.iter().filter(|s| overlaps(s)).map(|s| s.took).collect();
    let reload_times: Vec<Duration> = windows.iter().map(|&(from, to)| to - from).collect();
    println!(
        "{RELOADS} reloads of {ROUTES} routes, commit to push seen: {:.0?} (table build and swap: {:?} ms)",
        reload_times,
        build_us.iter().map(|us| us / 1000).collect::<Vec<_>>()
    );
    println!("queries from {QUERY_CONNS} connections, no reload: {}", summary(quiet.clone()));
    println!("queries overlapping a reload: {}", summary(during.clone()));
    println!(
        "during the reloads ({:.2?} in all) the shard ran {shard_ran:.1?} and waited {shard_waited:.1?} for a CPU",
        reload_times.iter().sum::<Duration>()
    );
    println!("server RSS {rss} MiB, peak {peak} MiB (after loading: {rss_loaded} MiB)");
    during.sort();
    assert!(during.len() >= 1000, "only {} queries overlapped a reload", during.len());
    let p999 = at(&during, 0.999);
    let mut quiet = quiet;
    quiet.sort();
    let quiet_p999 = at(&quiet, 0.999);
    // A query that waited for the reload's table build would be held the whole build, and so
    // would every query due meanwhile: far more than 0.1% of them would wait about that long,
    // more than this machine keeps them waiting with no reload (twice that, for its bursts) and
    // more than the shard waited, runnable, for a CPU during one reload.
    let shortest_build = Duration::from_micros(*build_us.iter().min().unwrap());
    let hold_limit = HOLD_LIMIT.max(shortest_build / 2).max(quiet_p999 * 2) + longest_wait;
    assert!(
        p999 <= hold_limit,
        "p99.9 of the queries during a reload: {p999:?} (above {hold_limit:?}): held by the reload"
    );
    // The 1 ms itself can only be judged where the machine alone keeps within it.
    if quiet_p999 <= JUDGE_BELOW {
        assert!(p999 <= Duration::from_millis(1), "p99.9 of the queries during a reload: {p999:?}");
    } else {
        println!(
            "the 1 ms target is not judged here: p99.9 is {quiet_p999:?} with no reload at all (above \
             {JUDGE_BELOW:?}: other work on this machine); {p999:?} during the reloads"
        );
    }
}
