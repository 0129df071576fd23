//! The embedded server end to end on the host: two embassy-net stacks joined by an in-memory
//! Ethernet wire, the server (`serve` or `serve_until` with the demo service) on one, a client on
//! the other.
//!
//! This runs the real `doorway_embedded::serve` (sockets, sessions, refusal, the timing wheel,
//! closing) and `serve_until` (graceful shutdown: drain, ERROR 7, the drain timeout) without QEMU, so `cargo test --workspace` exercises it on every change; the QEMU
//! test (`cargo xtask qemu --test`) then runs the full conformance suite against the firmware.
//! Time is embassy-time's std driver (real time); the futures are driven by a busy `block_on`,
//! bounded by a deadline so a hang fails instead of blocking the test run.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::task::Context;

use doorway_core::demo::Demo;
use doorway_core::frame::{self, kind, Decoder, ErrorCode, HEADER_LEN};
use doorway_embedded::hub::Counters;
use doorway_embedded::{new_stack, serve, serve_until, Config, ServerStack, StartError, Storage};
use embassy_futures::block_on;
use embassy_futures::join::join;
use embassy_futures::poll_once;
use embassy_futures::select::{select, Either};
use embassy_net::tcp::{State, TcpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Instant, Timer};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// Local TCP ports of an end whose segments other than SYNs are lost on the wire: connections
/// from them stay half-open on the server (a client that lost its link after its SYN).
type Muted = Rc<RefCell<HashSet<u16>>>;

/// One end of the wire: frames sent here appear in the other end's queue.
struct End {
    mac: [u8; 6],
    rx: Queue,
    tx: Queue,
    muted: Muted,
}

struct Rx(Vec<u8>);
struct Tx(Queue, Muted);

/// Whether the wire loses `frame`: a TCP segment without SYN from a muted port.
fn lost(frame: &[u8], muted: &HashSet<u16>) -> bool {
    const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    const SYN: u8 = 0x02;
    if frame.len() < 14 + 20 || frame[12..14] != ETHERTYPE_IPV4 || frame[14 + 9] != TCP {
        return false;
    }
    let tcp = &frame[14 + usize::from(frame[14] & 0x0f) * 4..];
    tcp.len() >= 20 && muted.contains(&u16::from_be_bytes([tcp[0], tcp[1]])) && tcp[13] & SYN == 0
}

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        if !lost(&buf, &self.1.borrow()) {
            self.0.borrow_mut().push_back(buf);
        }
        r
    }
}

impl Driver for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx)> {
        // The busy executor polls again anyway; waking keeps the stack's runner honest.
        cx.waker().wake_by_ref();
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self.tx.clone(), self.muted.clone())))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx> {
        Some(Tx(self.tx.clone(), self.muted.clone()))
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const PORT: u16 = 7200;
const MAX_CONNECTIONS: usize = 2;
const IDLE_MS: u64 = 400;
/// The handshake timeout of the tests.
const HANDSHAKE: Duration = Duration::from_millis(1_000);
/// 4 sockets for 2 connections; max_body 256.
type TestStorage = Storage<4, 268, 536, 512, 512>;

/// A static address on the test network.
fn static_ip(ip: Ipv4Address) -> embassy_net::Config {
    embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    })
}

/// The client's stack, with room for plenty of client sockets.
fn client_stack(end: End, ip: Ipv4Address) -> (Stack<'static>, Runner<'static, End>) {
    embassy_net::new(end, static_ip(ip), Box::leak(Box::new(StackResources::<8>::new())), 2)
}

/// A server's stack with `SOCK` sockets in its set.
fn server_stack<const SOCK: usize>(
    end: End,
    config: embassy_net::Config,
) -> Result<(ServerStack<'static>, Runner<'static, End>), StartError> {
    new_stack(end, config, Box::leak(Box::new(StackResources::<SOCK>::new())), 1)
}

/// An end of a wire that leads nowhere.
fn lone_end() -> End {
    End { mac: [2, 0, 0, 0, 0, 1], rx: Queue::default(), tx: Queue::default(), muted: Muted::default() }
}

fn frame_bytes(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN + body.len()];
    frame::encode(&mut out, kind, seq, body).expect("buffer sized for the frame");
    out
}

/// A client connection on the client stack with its own buffers.
struct Client {
    socket: TcpSocket<'static>,
    pending: Vec<u8>,
}

impl Client {
    async fn connect(stack: Stack<'static>) -> Client {
        Client::connect_with(stack, 4096, 4096).await
    }

    /// A client with `rx` and `tx` bytes of socket buffer (a small `rx` is a small window).
    async fn connect_with(stack: Stack<'static>, rx: usize, tx: usize) -> Client {
        let rx = Box::leak(vec![0u8; rx].into_boxed_slice());
        let tx = Box::leak(vec![0u8; tx].into_boxed_slice());
        let mut socket = TcpSocket::new(stack, rx, tx);
        socket.connect((SERVER, PORT)).await.expect("connect to the embedded server");
        Client { socket, pending: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let mut sent = 0;
        while sent < bytes.len() {
            sent += self.socket.write(&bytes[sent..]).await.expect("write");
        }
    }

    /// The next frame, or `None` when the server closed.
    async fn recv(&mut self) -> Option<(u16, u32, Vec<u8>)> {
        loop {
            if let Some(f) = Decoder::new(u32::MAX).decode(&self.pending).expect("server sent a valid frame")
            {
                let out = (f.header.kind, f.header.seq, f.body.to_vec());
                let n = f.wire_len();
                self.pending.drain(..n);
                return Some(out);
            }
            let mut buf = [0u8; 1024];
            match self.socket.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn expect_error(&mut self, code: ErrorCode, seq: u32) {
        let (k, s, body) = self.recv().await.expect("an ERROR frame");
        assert_eq!((k, s), (kind::ERROR, seq), "ERROR {code:?}");
        assert_eq!(frame::parse_error_body(&body).map(|(c, _)| c), Some(code.code()));
    }

    async fn expect_close(&mut self) {
        assert_eq!(self.recv().await, None, "the server should have closed");
    }
}

/// The settings the tests use: short handshake and idle timeouts, write timeout 2 s, linger
/// 300 ms.
fn test_config() -> Config {
    Config {
        port: PORT,
        max_connections: MAX_CONNECTIONS,
        handshake_timeout: Some(HANDSHAKE),
        idle_timeout: Some(Duration::from_millis(IDLE_MS)),
        write_timeout: Duration::from_secs(2),
        linger: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(5),
    }
}

/// Drives both stacks, `server` (given the server's stack, a fresh storage and `config`) and
/// `client` (given the client's stack, once configured) until `client` finishes; fails if that
/// takes longer than `limit`.
fn harness<Srv, SrvFut, Cl, ClFut>(limit: Duration, config: Config, server: Srv, client: Cl)
where
    Srv: FnOnce(ServerStack<'static>, &'static mut TestStorage, Config) -> SrvFut,
    SrvFut: core::future::Future,
    Cl: FnOnce(Stack<'static>, Muted) -> ClFut,
    ClFut: core::future::Future<Output = ()>,
{
    let (a, b): (Queue, Queue) = Default::default();
    let muted = Muted::default();
    let server_end = End { mac: [2, 0, 0, 0, 0, 1], rx: a.clone(), tx: b.clone(), muted: Muted::default() };
    let client_end = End { mac: [2, 0, 0, 0, 0, 2], rx: b, tx: a, muted: muted.clone() };
    let (server_stack, mut server_runner) =
        server_stack::<{ TestStorage::SOCKETS }>(server_end, static_ip(SERVER))
            .expect("a static address takes no socket");
    let (client_stack, mut client_runner) = client_stack(client_end, Ipv4Address::new(10, 0, 0, 2));
    let storage = Box::leak(Box::new(TestStorage::new()));
    let network = join(server_runner.run(), client_runner.run());
    let server = async {
        server(server_stack, storage, config).await;
        // The server stack keeps running: a client may still knock after the server returned.
        core::future::pending::<()>().await;
    };
    let client = async {
        client_stack.wait_config_up().await;
        client(client_stack, muted).await;
    };
    let deadline = Timer::at(Instant::now() + limit);
    let outcome = block_on(select(join(network, server), select(client, deadline)));
    match outcome {
        Either::Second(Either::First(())) => {}
        Either::Second(Either::Second(())) => panic!("the test did not finish within {limit:?}"),
        Either::First(_) => unreachable!("the stacks run forever"),
    }
}

/// Runs `test` against a fresh server (`serve`, forever); fails if it takes longer than `limit`.
fn with_server<F, Fut>(limit: Duration, test: F)
where
    F: FnOnce(Stack<'static>) -> Fut,
    Fut: core::future::Future<Output = ()>,
{
    with_server_on_wire(limit, test_config(), |stack, _| test(stack));
}

/// Runs `test` against a fresh server (`serve`) with `config`, giving it the client's [`Muted`]
/// ports; fails if it takes longer than `limit`.
fn with_server_on_wire<F, Fut>(limit: Duration, config: Config, test: F)
where
    F: FnOnce(Stack<'static>, Muted) -> Fut,
    Fut: core::future::Future<Output = ()>,
{
    harness(
        limit,
        config,
        |mut stack, storage, config| async move { serve(&mut stack, storage, Demo, config).await },
        test,
    );
}

/// The test's side of a server run by `serve_until`: the switch that stops it, and what it
/// returned.
#[derive(Clone)]
struct Shutdown {
    stop: Rc<Signal<NoopRawMutex, ()>>,
    returned: Rc<Cell<Option<(Instant, Counters)>>>,
}

impl Shutdown {
    /// Completes the server's `stop` future; returns when.
    fn stop(&self) -> Instant {
        self.stop.signal(());
        Instant::now()
    }

    /// Waits up to `within` for `serve_until` to return; its return time and counters.
    async fn returned(&self, within: Duration) -> (Instant, Counters) {
        let start = Instant::now();
        loop {
            if let Some(returned) = self.returned.get() {
                return returned;
            }
            assert!(start.elapsed() < within, "serve_until did not return within {within:?}");
            Timer::after_millis(5).await;
        }
    }
}

/// Runs `test` against a fresh server under `serve_until` with `config`; fails past `limit`.
fn with_stoppable_server<F, Fut>(limit: Duration, config: Config, test: F)
where
    F: FnOnce(Stack<'static>, Shutdown) -> Fut,
    Fut: core::future::Future<Output = ()>,
{
    let shutdown = Shutdown { stop: Rc::new(Signal::new()), returned: Rc::new(Cell::new(None)) };
    let server_side = shutdown.clone();
    harness(
        limit,
        config,
        move |mut stack, storage, config| async move {
            let stopped = serve_until(&mut stack, storage, Demo, config, server_side.stop.wait()).await;
            let counters = stopped.expect("the stack has room for the server");
            server_side.returned.set(Some((Instant::now(), counters)));
        },
        move |stack, _| test(stack, shutdown),
    );
}

#[test]
fn echo_ping_stats_and_unknown_kinds() {
    with_server(Duration::from_secs(10), |stack| async move {
        let mut c = Client::connect(stack).await;
        c.send(&frame_bytes(doorway_core::demo::kind::ECHO, 1, b"hello")).await;
        assert_eq!(c.recv().await, Some((doorway_core::demo::kind::ECHO, 1, b"hello".to_vec())));
        // Several frames in one write, one of them split across writes.
        let mut bytes = frame_bytes(kind::PING, 2, b"p");
        bytes.extend(frame_bytes(kind::PONG, 3, b""));
        bytes.extend(frame_bytes(99, 4, b""));
        let tail = frame_bytes(doorway_core::demo::kind::ECHO, 5, &[7; 256]);
        bytes.extend(&tail[..100]);
        c.send(&bytes).await;
        c.send(&tail[100..]).await;
        assert_eq!(c.recv().await, Some((kind::PONG, 2, b"p".to_vec())));
        c.expect_error(ErrorCode::UnknownKind, 4).await;
        assert_eq!(c.recv().await, Some((doorway_core::demo::kind::ECHO, 5, vec![7; 256])));
        c.send(&frame_bytes(doorway_core::demo::kind::STATS, 6, b"")).await;
        let (k, s, body) = c.recv().await.expect("STATS reply");
        assert_eq!((k, s), (doorway_core::demo::kind::STATS, 6));
        let json = String::from_utf8(body).expect("STATS is UTF-8");
        assert!(json.contains("\"connections_open\":1"), "{json}");
        assert!(json.contains("\"frames_in\":6"), "ECHO, PING, PONG, 99, ECHO, STATS: {json}");
        assert!(json.contains("\"errors_sent_2\":1"), "{json}");
    });
}

#[test]
fn header_errors_close_and_bye_answers_first() {
    with_server(Duration::from_secs(10), |stack| async move {
        let mut c = Client::connect(stack).await;
        c.send(&frame_bytes(doorway_core::demo::kind::ECHO, 1, &[0; 257])).await; // max_body is 256
        c.expect_error(ErrorCode::FrameTooLarge, 1).await;
        c.expect_close().await;

        let mut c = Client::connect(stack).await;
        let mut flagged = frame_bytes(doorway_core::demo::kind::ECHO, 2, b"");
        flagged[7] = 1;
        c.send(&flagged).await;
        c.expect_error(ErrorCode::BadFlags, 2).await;
        c.expect_close().await;

        let mut c = Client::connect(stack).await;
        let mut bytes = frame_bytes(doorway_core::demo::kind::ECHO, 3, b"owed");
        bytes.extend(frame_bytes(kind::BYE, 4, b""));
        bytes.extend(frame_bytes(doorway_core::demo::kind::ECHO, 5, b"ignored"));
        c.send(&bytes).await;
        assert_eq!(c.recv().await, Some((doorway_core::demo::kind::ECHO, 3, b"owed".to_vec())));
        c.expect_close().await;
    });
}

#[test]
fn server_full_idle_timeout_and_broadcast() {
    with_server(Duration::from_secs(10), |stack| async move {
        let mut a = Client::connect(stack).await;
        let mut b = Client::connect(stack).await;
        // Both admitted (they answer), a third is refused with ERROR 5 then closed.
        for (c, seq) in [(&mut a, 1), (&mut b, 2)] {
            c.send(&frame_bytes(kind::PING, seq, b"")).await;
            assert_eq!(c.recv().await, Some((kind::PONG, seq, Vec::new())));
        }
        let mut refused = Client::connect(stack).await;
        refused.expect_error(ErrorCode::ServerFull, 0).await;
        refused.expect_close().await;

        // BROADCAST reaches both, the sender's copy in its reply order.
        a.send(&frame_bytes(doorway_core::demo::kind::BROADCAST, 3, b"all")).await;
        assert_eq!(a.recv().await, Some((doorway_core::demo::kind::BROADCAST, 0, b"all".to_vec())));
        assert_eq!(b.recv().await, Some((doorway_core::demo::kind::BROADCAST, 0, b"all".to_vec())));

        // `b` keeps talking; `a` goes quiet and gets ERROR 4 after the idle timeout.
        let start = Instant::now();
        for seq in 0..6 {
            Timer::after_millis(IDLE_MS / 4).await;
            b.send(&frame_bytes(kind::PING, seq, b"")).await;
            assert_eq!(b.recv().await, Some((kind::PONG, seq, Vec::new())), "an active connection stays");
        }
        a.expect_error(ErrorCode::IdleTimeout, 0).await;
        a.expect_close().await;
        assert!(start.elapsed() >= Duration::from_millis(IDLE_MS), "not before the idle timeout");

        // The freed slot admits exactly one more.
        let mut c = Client::connect(stack).await;
        c.send(&frame_bytes(doorway_core::demo::kind::ECHO, 9, b"in")).await;
        assert_eq!(c.recv().await, Some((doorway_core::demo::kind::ECHO, 9, b"in".to_vec())));
    });
}

#[test]
fn slow_consumer_is_cut_off_after_the_write_timeout() {
    with_server(Duration::from_secs(15), |stack| async move {
        // A client with a tiny receive window that sends many requests and reads nothing.
        let rx = Box::leak(vec![0u8; 256].into_boxed_slice());
        let tx = Box::leak(vec![0u8; 16 * 1024].into_boxed_slice());
        let mut socket = TcpSocket::new(stack, rx, tx);
        socket.connect((SERVER, PORT)).await.expect("connect");
        let mut slow = Client { socket, pending: Vec::new() };
        let start = Instant::now();
        let mut bytes = Vec::new();
        for seq in 0..60 {
            bytes.extend(frame_bytes(doorway_core::demo::kind::ECHO, seq, &[seq as u8; 200]));
        }
        slow.send(&bytes).await;
        // Meanwhile another connection is served normally.
        let mut other = Client::connect(stack).await;
        other.send(&frame_bytes(kind::PING, 1, b"")).await;
        assert_eq!(other.recv().await, Some((kind::PONG, 1, Vec::new())));
        // After the write timeout (2 s) the server gives up on the slow one: whatever replies got
        // through arrive in order, then the connection ends (ERROR 6 if it still fits).
        Timer::after_millis(2_500).await;
        let mut next = 0;
        while let Some((k, seq, body)) = slow.recv().await {
            if k == kind::ERROR {
                assert_eq!(
                    frame::parse_error_body(&body).map(|(c, _)| c),
                    Some(ErrorCode::SlowConsumer.code())
                );
                continue;
            }
            assert_eq!(
                (k, seq, body),
                (doorway_core::demo::kind::ECHO, next, vec![next as u8; 200]),
                "replies in order"
            );
            next += 1;
        }
        assert!(next < 60, "the slow consumer cannot have received everything");
        assert!(start.elapsed() >= Duration::from_secs(2), "not cut off before the write timeout");
        // `other` went idle meanwhile (400 ms); ask a fresh connection.
        let mut stats = Client::connect(stack).await;
        stats.send(&frame_bytes(doorway_core::demo::kind::STATS, 2, b"")).await;
        let (_, _, body) = stats.recv().await.expect("STATS");
        let json = String::from_utf8(body).expect("UTF-8");
        assert!(json.contains("\"errors_sent_6\":1"), "{json}");
    });
}

#[test]
fn shutdown_answers_what_was_received_then_error_7() {
    with_stoppable_server(Duration::from_secs(10), test_config(), |stack, shutdown| async move {
        // A client with a 256-byte window sends 14 requests and a partial frame, reading nothing:
        // the server answers until its output is full, then holds the rest unanswered (frame
        // buffer and socket), well within its 512-byte receive window.
        let mut a = Client::connect_with(stack, 256, 4096).await;
        let mut bytes = Vec::new();
        for seq in 0..14 {
            bytes.extend(frame_bytes(doorway_core::demo::kind::ECHO, seq, &[seq as u8; 100]));
        }
        let partial = frame_bytes(doorway_core::demo::kind::ECHO, 14, &[14; 100]);
        bytes.extend(&partial[..50]);
        a.send(&bytes).await;
        Timer::after_millis(200).await;
        // Another connection asks how many frames the server has taken so far.
        let mut b = Client::connect(stack).await;
        b.send(&frame_bytes(doorway_core::demo::kind::STATS, 1, b"")).await;
        let (_, _, body) = b.recv().await.expect("STATS");
        let json = String::from_utf8(body).expect("UTF-8");
        let frames_in: u64 = json
            .split("\"frames_in\":")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .expect("frames_in in STATS");
        // At least three requests (plus the partial frame) wait: more than the 268-byte frame
        // buffer holds, so the server must also drain its socket.
        assert!(frames_in <= 12, "too few requests unanswered when the stop comes: {json}");

        let stopped = shutdown.stop();
        // Every request the server had received is answered, in order, then ERROR 7, then EOF;
        // the partial frame is discarded.
        for seq in 0..14 {
            assert_eq!(
                a.recv().await,
                Some((doorway_core::demo::kind::ECHO, seq, vec![seq as u8; 100])),
                "reply {seq}"
            );
        }
        a.expect_error(ErrorCode::ShuttingDown, 0).await;
        a.expect_close().await;
        a.socket.close();
        b.expect_error(ErrorCode::ShuttingDown, 0).await;
        b.expect_close().await;
        b.socket.close();
        let (at, counters) = shutdown.returned(Duration::from_secs(3)).await;
        assert!(at >= stopped);
        assert_eq!(counters.frames_in, 15, "14 ECHO and one STATS");
        assert_eq!(counters.errors_sent[ErrorCode::ShuttingDown as usize - 1], 2);
        assert_eq!(counters.connections_open, 0);
    });
}

#[test]
fn shutdown_closes_an_idle_connection_with_error_7() {
    with_stoppable_server(Duration::from_secs(10), test_config(), |stack, shutdown| async move {
        let mut c = Client::connect(stack).await;
        c.send(&frame_bytes(kind::PING, 1, b"")).await;
        assert_eq!(c.recv().await, Some((kind::PONG, 1, Vec::new())));
        let stopped = shutdown.stop();
        c.expect_error(ErrorCode::ShuttingDown, 0).await;
        c.expect_close().await;
        c.socket.close();
        let (at, counters) = shutdown.returned(Duration::from_secs(2)).await;
        // The client closed at once, so no linger (300 ms) and no drain timeout (5 s) is waited.
        assert!(at - stopped < Duration::from_millis(250), "returned {:?} after the stop", at - stopped);
        assert_eq!(counters.errors_sent[ErrorCode::ShuttingDown as usize - 1], 1);
        assert_eq!(counters.connections_open, 0);
    });
}

/// What a connection attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Knock {
    /// The SYN was answered with a reset.
    Refused,
    /// No answer within a second.
    Unanswered,
    /// Accepted, but an ECHO got no ECHO back.
    AcceptedNotServed,
    /// Accepted and served.
    Served,
}

/// Tries to connect and be served an ECHO.
async fn knock(stack: Stack<'static>) -> Knock {
    let rx = Box::leak(vec![0u8; 1024].into_boxed_slice());
    let tx = Box::leak(vec![0u8; 1024].into_boxed_slice());
    let mut socket = TcpSocket::new(stack, rx, tx);
    match with_timeout(Duration::from_secs(1), socket.connect((SERVER, PORT))).await {
        Ok(Err(_)) => return Knock::Refused,
        Err(_) => {
            socket.abort();
            return Knock::Unanswered;
        }
        Ok(Ok(())) => {}
    }
    let mut c = Client { socket, pending: Vec::new() };
    c.send(&frame_bytes(doorway_core::demo::kind::ECHO, 1, b"late")).await;
    match with_timeout(Duration::from_millis(500), c.recv()).await {
        Ok(Some((doorway_core::demo::kind::ECHO, _, _))) => Knock::Served,
        _ => Knock::AcceptedNotServed,
    }
}

#[test]
fn after_the_stop_new_connections_are_not_served() {
    let config = Config {
        drain_timeout: Duration::from_millis(1_500),
        write_timeout: Duration::from_secs(10),
        ..test_config()
    };
    with_stoppable_server(Duration::from_secs(10), config, |stack, shutdown| async move {
        // A connection that never reads keeps the server draining until the drain timeout.
        let mut slow = Client::connect_with(stack, 256, 16 * 1024).await;
        let mut bytes = Vec::new();
        for seq in 0..40 {
            bytes.extend(frame_bytes(doorway_core::demo::kind::ECHO, seq, &[0; 200]));
        }
        slow.send(&bytes).await;
        Timer::after_millis(100).await;
        let stopped = shutdown.stop();
        Timer::after_millis(20).await;
        // No socket listens any more: the server's stack resets the SYN.
        assert_eq!(knock(stack).await, Knock::Refused, "while draining");
        assert!(shutdown.returned.get().is_none(), "still draining the slow connection");
        let (at, _) = shutdown.returned(Duration::from_secs(3)).await;
        assert!(at - stopped >= Duration::from_millis(1_400), "the slow connection held the drain");
        assert_eq!(knock(stack).await, Knock::Refused, "after serve_until returned");
    });
}

#[test]
fn the_drain_timeout_bounds_a_client_that_never_reads() {
    let drain = Duration::from_millis(500);
    let config = Config { drain_timeout: drain, write_timeout: Duration::from_secs(10), ..test_config() };
    with_stoppable_server(Duration::from_secs(10), config, |stack, shutdown| async move {
        let mut slow = Client::connect_with(stack, 256, 16 * 1024).await;
        let mut bytes = Vec::new();
        for seq in 0..60 {
            bytes.extend(frame_bytes(doorway_core::demo::kind::ECHO, seq, &[seq as u8; 200]));
        }
        slow.send(&bytes).await;
        Timer::after_millis(200).await;
        let stopped = shutdown.stop();
        let (at, counters) = shutdown.returned(drain + Duration::from_secs(2)).await;
        let took = at - stopped;
        assert!(took >= drain - Duration::from_millis(50), "returned before the drain timeout: {took:?}");
        assert!(took <= drain + Duration::from_millis(400), "the drain timeout did not bound it: {took:?}");
        assert_eq!(counters.connections_open, 0);
        // The client now finds the replies that got through, in order, then a reset: never a hang.
        let mut next = 0;
        let read_all = async {
            while let Some((k, seq, body)) = slow.recv().await {
                assert_eq!(
                    (k, seq, body),
                    (doorway_core::demo::kind::ECHO, next, vec![next as u8; 200]),
                    "replies in order"
                );
                next += 1;
            }
        };
        assert!(with_timeout(Duration::from_secs(2), read_all).await.is_ok(), "the connection ended");
        assert!(next < 60, "the slow client cannot have been answered in full");
    });
}

/// Opens a connection that stays half-open on the server: the SYN goes out and the server's
/// SYN-ACK arrives (the client socket is established), but the final ACK and everything after it
/// from this socket are lost on the wire, as if the client lost its link.
async fn half_open(stack: Stack<'static>, muted: &Muted) -> TcpSocket<'static> {
    let rx = Box::leak(vec![0u8; 256].into_boxed_slice());
    let tx = Box::leak(vec![0u8; 256].into_boxed_slice());
    let mut socket = TcpSocket::new(stack, rx, tx);
    // One poll picks the local port and queues the SYN; the stack sends it only once this task
    // yields, so the port is muted before anything but the SYN can leave.
    assert!(poll_once(socket.connect((SERVER, PORT))).is_pending(), "a connect waits for SYN-ACK");
    let port = socket.local_endpoint().expect("a connecting socket has a local endpoint").port;
    muted.borrow_mut().insert(port);
    let start = Instant::now();
    while socket.state() != State::Established {
        assert!(start.elapsed() < Duration::from_secs(2), "no SYN-ACK for the half-open connection");
        Timer::after_millis(5).await;
    }
    socket
}

#[test]
fn half_open_handshakes_give_their_sockets_back() {
    with_server_on_wire(Duration::from_secs(20), test_config(), |stack, muted| async move {
        // Bare SYNs take every socket the server has (4).
        let start = Instant::now();
        let mut ghosts = Vec::new();
        for _ in 0..4 {
            ghosts.push(half_open(stack, &muted).await);
        }
        assert_eq!(knock(stack).await, Knock::Refused, "every socket is half-open");
        // The handshakes time out and the sockets listen again: a real client is served.
        loop {
            match knock(stack).await {
                Knock::Served => break,
                Knock::Refused => {}
                other => panic!("a client found a socket but was not served: {other:?}"),
            }
            assert!(
                start.elapsed() < HANDSHAKE + Duration::from_secs(2),
                "still no listening socket {:?} after the half-open handshakes",
                start.elapsed()
            );
            Timer::after_millis(100).await;
        }
        let took = start.elapsed();
        assert!(took >= HANDSHAKE, "a handshake was given up after {took:?}, before the timeout");
    });
}

#[test]
fn the_largest_timeouts_serve_without_panicking() {
    let config = Config {
        handshake_timeout: Some(Duration::MAX),
        idle_timeout: Some(Duration::MAX),
        write_timeout: Duration::MAX,
        linger: Duration::MAX,
        drain_timeout: Duration::MAX,
        ..test_config()
    };
    with_stoppable_server(Duration::from_secs(10), config, |stack, shutdown| async move {
        // Sessions (idle timeout), a refusal (write timeout), a close (write timeout, linger).
        let mut a = Client::connect(stack).await;
        let mut b = Client::connect(stack).await;
        for (c, seq) in [(&mut a, 1), (&mut b, 2)] {
            c.send(&frame_bytes(kind::PING, seq, b"")).await;
            assert_eq!(c.recv().await, Some((kind::PONG, seq, Vec::new())));
        }
        let mut refused = Client::connect(stack).await;
        refused.expect_error(ErrorCode::ServerFull, 0).await;
        refused.expect_close().await;
        refused.socket.close();
        let mut bytes = frame_bytes(doorway_core::demo::kind::ECHO, 3, b"last");
        bytes.extend(frame_bytes(kind::BYE, 4, b""));
        a.send(&bytes).await;
        assert_eq!(a.recv().await, Some((doorway_core::demo::kind::ECHO, 3, b"last".to_vec())));
        a.expect_close().await;
        a.socket.close();
        // A stop (drain timeout): the open session gets ERROR 7 and the server returns.
        shutdown.stop();
        b.expect_error(ErrorCode::ShuttingDown, 0).await;
        b.expect_close().await;
        b.socket.close();
        let (_, counters) = shutdown.returned(Duration::from_secs(3)).await;
        assert_eq!(counters.connections_open, 0);
    });
}

/// Runs a server with `storage` on `stack` until it returns (it can only fail to start).
fn start(mut stack: ServerStack<'static>, mut runner: Runner<'static, End>) -> StartError {
    let storage = Box::leak(Box::new(TestStorage::new()));
    let limit = Timer::after_secs(5);
    match block_on(select(select(serve(&mut stack, storage, Demo, test_config()), runner.run()), limit)) {
        Either::First(Either::First(error)) => error,
        Either::First(Either::Second(_)) => unreachable!("the stack runs forever"),
        Either::Second(()) => panic!("the server started on a stack without room for it"),
    }
}

#[test]
fn an_undersized_stack_is_an_error_at_start_not_a_panic() {
    // A static address: the 4 server sockets need 4 in the set.
    let (stack, runner) = server_stack::<3>(lone_end(), static_ip(SERVER)).expect("no socket of its own");
    assert_eq!(start(stack, runner), StartError::TooFewSockets { needed: 4, available: 3 });
    // DHCP takes one of the set: 4 is one short.
    let dhcp = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = server_stack::<4>(lone_end(), dhcp.clone()).expect("room for the DHCP socket");
    assert_eq!(stack.room(), 3);
    let error = start(stack, runner);
    assert_eq!(error, StartError::TooFewSockets { needed: 5, available: 4 });
    assert!(error.to_string().contains("Storage::SOCKETS"), "the error says how to size: {error}");
    // With no room even for the DHCP socket, the stack is not made at all.
    assert_eq!(
        server_stack::<0>(lone_end(), dhcp).err(),
        Some(StartError::TooFewSockets { needed: 1, available: 0 })
    );
}
