//! Upstream links over real sockets, against a second doorway server as the peer:
//!
//! - a link whose peer is stopped and restarted reconnects by itself, with backoff (attempts while
//!   the peer is down are observed and bounded), and `on_link_up` re-subscribes;
//! - while it is down `send_link` queues within the bound and answers `Full` past it, and the
//!   frames queued during the outage arrive in order after it;
//! - a link is not an admitted connection (`max_connections` does not count it) and is never
//!   closed for silence (a v1 link sends PING); a peer's ERROR on a v1 link reaches the service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use doorway_core::demo::kind::ECHO;
use doorway_core::demo::Demo;
use doorway_core::dispatch::{Context, LinkId, Outbox, Request, SendError, Service};
use doorway_core::frame::kind::ERROR;
use doorway_core::message_map;
use doorway_linux::{Config, LinkOptions, Model, Server};

const T: Duration = Duration::from_secs(5);
const SUBSCRIBE: &[u8] = b"subscribe";

/// Records what comes back on the link; re-subscribes on every `on_link_up`.
#[derive(Clone, Default)]
struct Subscriber {
    link: Arc<Mutex<Option<LinkId>>>,
    ups: Arc<AtomicUsize>,
    downs: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    errors: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Subscriber {
    fn echo(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        assert!(cx.link().is_some(), "only the link sends ECHO to this service");
        self.received.lock().unwrap().push(req.body.to_vec());
        Ok(())
    }

    fn error(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        assert!(cx.link().is_some());
        self.errors.lock().unwrap().push(req.body.to_vec());
        Ok(())
    }
}

message_map! {
    Subscriber {
        ECHO => echo,
        ERROR => error,
    }
}

impl Service for Subscriber {
    fn on_link_up<C: Context>(&mut self, cx: &mut C, link: LinkId) {
        *self.link.lock().unwrap() = Some(link);
        self.ups.fetch_add(1, Ordering::SeqCst);
        cx.send_link(link, ECHO, 0, SUBSCRIBE).expect("re-subscribing");
    }

    fn on_link_down<O: Outbox>(&mut self, _out: &mut O, _link: LinkId) {
        self.downs.fetch_add(1, Ordering::SeqCst);
    }
}

fn peer(addr: SocketAddr) -> doorway_linux::Running {
    Server::builder().config(Config { listen: addr, ..Config::default() }).start(Demo).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reconnects(model: Model) {
    let peer1 = peer("127.0.0.1:0".parse().unwrap());
    let peer_addr = peer1.local_addr();
    let options = LinkOptions {
        backoff_floor: Duration::from_millis(50),
        backoff_ceiling: Duration::from_millis(400),
        queue_bytes: 4096,
        ..LinkOptions::default()
    };
    let service = Subscriber::default();
    let (ups, downs, received) = (service.ups.clone(), service.downs.clone(), service.received.clone());
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, ..Config::default() };
    let mut builder = Server::builder().config(cfg).link_options(options);
    let link = builder.add_link("peer", peer_addr);
    let server = builder.start(service).unwrap();
    let handle = server.handle();

    wait_for("the first subscription's echo", || {
        received.lock().unwrap().first().is_some_and(|b| b == SUBSCRIBE)
    });
    assert_eq!(ups.load(Ordering::SeqCst), 1);
    assert!(server.link_status(link).unwrap().up);

    // The peer goes away.
    peer1.stop();
    peer1.wait().unwrap();
    wait_for("on_link_down", || downs.load(Ordering::SeqCst) == 1);
    received.lock().unwrap().clear();

    // While down: frames queue, in order, up to the bound; past it, Full.
    let mut queued = 0;
    loop {
        let body = format!("queued {queued:04}");
        match handle.send_link(link, ECHO, 0, body.as_bytes()) {
            Ok(()) => queued += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{model:?}: send_link from a foreign thread: {e}"),
        }
        assert!(queued < 10_000, "{model:?}: the queue never filled");
    }
    let status = server.link_status(link).unwrap();
    assert_eq!(status.queued_frames, queued);
    assert!(status.queued_bytes <= 4096 && status.queued_bytes + 23 > 4096, "{model:?}: {status:?}");
    let failures_before = server.counter("link_failures").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let attempts = server.counter("link_failures").unwrap() - failures_before;
    // 1.5 s of backoff from 50 ms doubling to 400 ms (±25 %): about 4 to 8 attempts.
    assert!((2..=12).contains(&attempts), "{model:?}: {attempts} failed attempts in 1.5 s");
    assert_eq!(server.link_status(link).unwrap().queued_frames, queued, "nothing lost or added while down");

    // The peer comes back on the same address: the link reconnects by itself, the queue goes out
    // first, in order, then on_link_up's subscription.
    let peer2 = peer(peer_addr);
    wait_for("the second on_link_up", || ups.load(Ordering::SeqCst) == 2);
    wait_for("every queued frame and the subscription", || received.lock().unwrap().len() == queued + 1);
    let got = received.lock().unwrap().clone();
    let expected: Vec<Vec<u8>> = (0..queued).map(|n| format!("queued {n:04}").into_bytes()).collect();
    assert_eq!(&got[..queued], &expected[..], "{model:?}: queued frames out of order");
    assert_eq!(got[queued], SUBSCRIBE);
    println!("{model:?}: {queued} frames queued while down, {attempts} attempts in 1.5 s of backoff");

    server.stop();
    server.wait().unwrap();
    peer2.stop();
    peer2.wait().unwrap();
}

#[test]
fn a_link_reconnects_with_backoff_resubscribes_and_delivers_its_queue_in_order_fused() {
    reconnects(Model::Fused);
}

#[test]
fn a_link_reconnects_with_backoff_resubscribes_and_delivers_its_queue_in_order_pipeline() {
    reconnects(Model::Pipeline);
}

/// A service whose shard context answers a `send_link` past the bound with `Full`.
#[derive(Clone)]
struct Filler {
    link: LinkId,
    results: Arc<Mutex<Vec<Result<(), SendError>>>>,
}

message_map! {
    Filler {}
}

impl Service for Filler {
    fn on_start<O: Outbox>(&mut self, out: &mut O) {
        let body = [7u8; 100];
        let results: Vec<_> = (0..50).map(|_| out.send_link(self.link, ECHO, 0, &body)).collect();
        *self.results.lock().unwrap() = results;
    }
}

#[test]
fn a_down_links_queue_answers_full_past_its_bound() {
    // Nothing listens there: the link stays down.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = nowhere.local_addr().unwrap();
    drop(nowhere);
    let results = Arc::new(Mutex::new(Vec::new()));
    let options = LinkOptions { queue_bytes: 1000, ..LinkOptions::default() };
    let mut builder =
        Server::builder().config(Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() });
    let link = builder.add_link("nowhere", addr);
    let server = builder.link_options(options).start(Filler { link, results: results.clone() }).unwrap();
    wait_for("on_start", || !results.lock().unwrap().is_empty());
    let results = results.lock().unwrap().clone();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1000 / 112, "frames of 112 bytes in a 1000-byte queue");
    assert!(results[ok..].iter().all(|r| *r == Err(SendError::Full)), "{results:?}");
    assert!(server.link_status(link).unwrap().queued_bytes <= 1000);
    server.stop();
    server.wait().unwrap();
}

#[test]
fn a_link_is_not_an_admitted_connection_and_is_kept_alive_not_closed_for_silence() {
    // The peer closes idle connections after 300 ms; our link pings every 200 ms when silent.
    let peer_cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let peer = Server::builder().config(peer_cfg).start(Demo).unwrap();
    let service = Subscriber::default();
    let (ups, errors) = (service.ups.clone(), service.errors.clone());
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 1,
        idle_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let mut builder = Server::builder().config(cfg);
    let link = builder.add_link("peer", peer.local_addr());
    let server = builder.start(service).unwrap();
    wait_for("the link", || ups.load(Ordering::SeqCst) == 1);
    // max_connections 1 still admits a client: the link does not count.
    let mut client = doorway_testkit::Client::connect(server.local_addr(), T).unwrap();
    let f = client.request(doorway_core::frame::kind::PING, 3, b"", T).unwrap();
    assert_eq!(f.kind(), doorway_core::frame::kind::PONG, "the one admitted client is served");
    // Silent for well past both idle timeouts: the link stays up (PINGs keep the peer's clock).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(ups.load(Ordering::SeqCst), 1, "the link was dropped and re-made");
    assert!(server.link_status(link).unwrap().up);
    // A peer's ERROR on a v1 link reaches the service (here: the peer's answer to an unknown kind).
    server.handle().send_link(link, 999, 5, b"").unwrap();
    wait_for("the peer's ERROR 2", || !errors.lock().unwrap().is_empty());
    assert_eq!(&errors.lock().unwrap()[0][..2], &2u16.to_be_bytes());
    drop(client);
    server.stop();
    server.wait().unwrap();
    peer.stop();
    peer.wait().unwrap();
}
