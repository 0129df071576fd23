//! The service hooks' contract as a service sees it, on both models:
//!
//! - `on_close` runs exactly once for each `on_open`, and never for a connection the service never
//!   saw open (refused with ERROR 5).
//! - A panicking hook (a handler, `on_open`, `on_timer`) closes only the connection it ran for
//!   (replies queued before the panic still arrive), is counted as `handler_panics`, and the shard
//!   serves on; with `OnPanic::Abort` the process aborts.
//!
//! - Shard-wide hooks: `on_start` arms a shard timer, `on_shard_timer` flushes an aggregate with
//!   no connection current, and a service metric shows in `/metrics`.
//!
//! Small services run in-process: one counts its hooks in shared atomics and panics on request,
//! one aggregates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_linux::{Config, Model, OnPanic, Server};
use doorway_testkit::client::CloseKind;
use doorway_testkit::Client;

const ECHO: u16 = 100;
const PANIC: u16 = 101;
const PANIC_LATER: u16 = 102;
const COUNTERS: u16 = 103;
const T: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
struct Recorder {
    opens: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

impl Recorder {
    fn echo(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(ECHO, req.seq, req.body)
    }

    /// Replies first, then panics: the reply must still reach the client.
    fn panic(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(PANIC, req.seq, b"before the panic")?;
        panic!("a handler bug on request {}", req.seq);
    }

    /// Arms a timer whose `on_timer` panics.
    fn panic_later(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.set_timer(1, 20).map_err(|_| SendError::Full)?;
        cx.reply(PANIC_LATER, req.seq, b"")
    }

    /// Answers `handler_panics` as a u64be.
    fn counters(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let mut panics = u64::MAX;
        cx.counters(&mut |k, v| {
            if k == "handler_panics" {
                panics = v;
            }
        });
        cx.reply(COUNTERS, req.seq, &panics.to_be_bytes())
    }
}

message_map! {
    Recorder {
        ECHO => echo,
        PANIC => panic,
        PANIC_LATER => panic_later,
        COUNTERS => counters,
    }
}

impl Service for Recorder {
    fn on_open<C: Context>(&mut self, _cx: &mut C) {
        self.opens.fetch_add(1, Ordering::SeqCst);
    }

    fn on_close(&mut self, _conn: doorway_core::slab::ConnId) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }

    fn on_timer<C: Context>(&mut self, _cx: &mut C, token: u32) {
        panic!("a timer bug (token {token})");
    }
}

fn config(model: Model) -> Config {
    Config { listen: "127.0.0.1:0".parse().unwrap(), model, ..Config::default() }
}

fn echo(c: &mut Client, seq: u32) {
    let f = c.request(ECHO, seq, b"ping", T).unwrap();
    assert_eq!((f.kind(), f.seq(), &f.body[..]), (ECHO, seq, &b"ping"[..]));
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn on_close_once_per_on_open(model: Model) {
    let service = Recorder::default();
    let (opens, closes) = (service.opens.clone(), service.closes.clone());
    let running =
        Server::builder().config(Config { max_connections: 1, ..config(model) }).start(service).unwrap();
    let addr = running.local_addr();
    let mut admitted = Client::connect(addr, T).unwrap();
    echo(&mut admitted, 1);
    for n in 0..5 {
        let mut refused = Client::connect(addr, T).unwrap();
        let f = refused.recv(T).unwrap();
        assert_eq!(f.error().map(|e| e.0), Some(5), "{model:?}: refusal {n}: {f:?}");
        assert!(refused.expect_close(T).is_ok(), "{model:?}: refusal {n} stays open");
    }
    drop(admitted);
    wait_for("the admitted connection's on_close", || closes.load(Ordering::SeqCst) >= 1);
    // The refusals' slots are freed too; none of them may reach the service.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(opens.load(Ordering::SeqCst), 1, "{model:?}: on_open");
    assert_eq!(closes.load(Ordering::SeqCst), 1, "{model:?}: on_close ran for connections never opened");
    running.stop();
    running.wait().unwrap();
}

#[test]
fn refused_connections_never_reach_on_close_fused() {
    on_close_once_per_on_open(Model::Fused);
}

#[test]
fn refused_connections_never_reach_on_close_pipeline() {
    on_close_once_per_on_open(Model::Pipeline);
}

/// Connections still open when the drain deadline ends the server get their `on_close` too.
#[test]
fn connections_cut_by_the_drain_deadline_get_on_close() {
    for model in [Model::Fused, Model::Pipeline] {
        let service = Recorder::default();
        let (opens, closes) = (service.opens.clone(), service.closes.clone());
        let cfg = Config { drain_timeout: Duration::from_millis(200), ..config(model) };
        let running = Server::builder().config(cfg).start(service).unwrap();
        let mut clients: Vec<Client> =
            (0..3).map(|_| Client::connect(running.local_addr(), T).unwrap()).collect();
        for (n, c) in clients.iter_mut().enumerate() {
            echo(c, n as u32);
            // Never read again: the ERROR 7 is sent, but nobody closes from this side.
        }
        running.stop();
        running.wait().unwrap();
        assert_eq!(opens.load(Ordering::SeqCst), 3, "{model:?}");
        assert_eq!(closes.load(Ordering::SeqCst), 3, "{model:?}: on_close per on_open");
        drop(clients);
    }
}

fn panicking_hooks_close_only_their_connection(model: Model) {
    let service = Recorder::default();
    let closes = service.closes.clone();
    let running = Server::builder().config(config(model)).start(service).unwrap();
    let addr = running.local_addr();
    let mut bystander = Client::connect(addr, T).unwrap();
    echo(&mut bystander, 1);

    // A handler panics after replying: the reply arrives, then the connection closes.
    let mut victim = Client::connect(addr, T).unwrap();
    echo(&mut victim, 1);
    victim.send(ECHO, 2, b"ping").unwrap();
    victim.send(PANIC, 3, b"").unwrap();
    victim.send(ECHO, 4, b"after").unwrap();
    let f = victim.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq()), (ECHO, 2), "{model:?}");
    let f = victim.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq(), &f.body[..]), (PANIC, 3, &b"before the panic"[..]), "{model:?}");
    assert!(
        matches!(victim.expect_close(T), Ok(CloseKind::Eof | CloseKind::Reset)),
        "{model:?}: the panicking connection must close, and answer nothing after the panic"
    );
    wait_for("on_close of the panicking connection", || closes.load(Ordering::SeqCst) >= 1);

    // A timer's panic closes its connection too.
    let mut timed = Client::connect(addr, T).unwrap();
    let f = timed.request(PANIC_LATER, 5, b"", T).unwrap();
    assert_eq!(f.kind(), PANIC_LATER);
    assert!(timed.expect_close(T).is_ok(), "{model:?}: a panicking on_timer must close its connection");

    // The shard serves on: the bystander, and new connections.
    echo(&mut bystander, 2);
    let mut fresh = Client::connect(addr, T).unwrap();
    echo(&mut fresh, 1);
    let f = fresh.request(COUNTERS, 2, b"", T).unwrap();
    assert_eq!(u64::from_be_bytes(f.body[..].try_into().unwrap()), 2, "{model:?}: handler_panics");
    drop((bystander, fresh));
    running.stop();
    running.wait().unwrap();
}

#[test]
fn a_panicking_handler_closes_only_its_connection_fused() {
    panicking_hooks_close_only_their_connection(Model::Fused);
}

#[test]
fn a_panicking_handler_closes_only_its_connection_pipeline() {
    panicking_hooks_close_only_their_connection(Model::Pipeline);
}

/// `OnPanic::Abort`: the test runs itself again as a child process that serves with it; a panicking
/// handler must abort that child (SIGABRT), not close a connection and go on.
#[test]
fn on_panic_abort_aborts_the_process() {
    const CHILD: &str = "DOORWAY_TEST_ABORT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let cfg = Config { on_panic: OnPanic::Abort, ..config(Model::Fused) };
        let running = Server::builder().config(cfg).start(Recorder::default()).unwrap();
        let mut c = Client::connect(running.local_addr(), T).unwrap();
        let _ = c.request(PANIC, 1, b"", T);
        // Not reached when the server aborts.
        std::thread::sleep(T);
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "on_panic_abort_aborts_the_process", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "the child must abort: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Aggregates its requests and flushes a summary on a shard timer (armed in `on_start`, no
/// connection involved), counting the flushes in a service metric.
#[derive(Clone)]
struct Aggregator {
    pending: u32,
    flushes: doorway_linux::ServiceMetric,
}

const FLUSH: u32 = 1;
const SUMMARY: u16 = 120;
const COUNT: u16 = 121;

impl Aggregator {
    fn count(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        self.pending += 1;
        cx.reply(COUNT, req.seq, b"")
    }
}

message_map! {
    Aggregator {
        COUNT => count,
    }
}

impl Service for Aggregator {
    fn on_start<O: doorway_core::dispatch::Outbox>(&mut self, out: &mut O) {
        out.set_timer(FLUSH, 50).expect("a shard timer");
    }

    fn on_shard_timer<O: doorway_core::dispatch::Outbox>(&mut self, out: &mut O, token: u32) {
        assert_eq!(token, FLUSH);
        if self.pending > 0 {
            self.flushes.add(1);
            out.broadcast(SUMMARY, 0, &self.pending.to_be_bytes());
            self.pending = 0;
        }
        out.set_timer(FLUSH, 50).expect("re-armed");
    }
}

#[test]
fn shard_timers_flush_aggregates_and_service_metrics_show_in_metrics() {
    for model in [Model::Fused, Model::Pipeline] {
        let flushes = doorway_linux::ServiceMetric::counter("flushes");
        let cfg = Config { metrics_addr: Some("127.0.0.1:0".parse().unwrap()), ..config(model) };
        let service = Aggregator { pending: 0, flushes: flushes.clone() };
        let running = Server::builder().config(cfg).metric(&flushes).start(service).unwrap();
        let mut c = Client::connect(running.local_addr(), T).unwrap();
        for seq in 0..3 {
            assert_eq!(c.request(COUNT, seq, b"", T).unwrap().kind(), COUNT);
        }
        let f = c.recv(T).unwrap();
        assert_eq!((f.kind(), &f.body[..]), (SUMMARY, &3u32.to_be_bytes()[..]), "{model:?}");
        assert_eq!(flushes.get(), 1, "{model:?}");
        let mut http = std::net::TcpStream::connect(running.metrics_addr().unwrap()).unwrap();
        use std::io::{Read, Write};
        http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).unwrap();
        assert!(text.contains("doorway_service_flushes_total 1"), "{model:?}: {text}");
        drop(c);
        running.stop();
        running.wait().unwrap();
    }
}

#[test]
fn a_service_metric_with_a_taken_name_is_refused_at_start() {
    let taken = doorway_linux::ServiceMetric::counter("frames_in");
    let err = Server::builder().config(config(Model::Fused)).metric(&taken).start(Recorder::default()).err();
    assert!(err.is_some_and(|e| e.to_string().contains("already taken")));
}
