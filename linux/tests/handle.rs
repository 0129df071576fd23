//! Working outside a handler, through `Handle`, and holding back a connection's input:
//!
//! - `Handle::send_to` and `Handle::broadcast` from a thread that is not the server's reach
//!   connections on both shards; a stale id answers `Closed`.
//! - A handler that declines a request (`Context::pause`) stops the connection being read: a peer
//!   that sends 100 MB meanwhile leaves the server's memory flat, and after `Handle::resume` every
//!   frame is handled, in order.
//!
//! The services run in-process; clients are real sockets on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;
use doorway_linux::SHARD_SHIFT;
use doorway_linux::{Config, Model, Server};
use doorway_testkit::client::frame_bytes;
use doorway_testkit::Client;

const WHOAMI: u16 = 200;
const NOTE: u16 = 202;
const HOLD: u16 = 210;
const NUMBERED: u16 = 211;
const T: Duration = Duration::from_secs(10);

/// WHOAMI answers the packed `ConnId`. NUMBERED answers its body's first 8 bytes, unless the gate
/// is closed: then it pauses the connection and records its id.
#[derive(Clone, Default)]
struct Gate {
    closed: Arc<AtomicBool>,
    paused: Arc<AtomicU64>,
}

impl Gate {
    fn whoami(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(WHOAMI, req.seq, &cx.conn().to_u64().to_be_bytes())
    }

    fn hold(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        self.closed.store(true, Ordering::SeqCst);
        cx.reply(HOLD, req.seq, b"")
    }

    fn numbered(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        if self.closed.load(Ordering::SeqCst) {
            assert!(cx.pause(), "the Linux server can pause");
            self.paused.store(cx.conn().to_u64(), Ordering::SeqCst);
            return Ok(());
        }
        cx.reply(NUMBERED, req.seq, &req.body[..8])
    }
}

message_map! {
    Gate {
        WHOAMI => whoami,
        HOLD => hold,
        NUMBERED => numbered,
    }
}

impl Service for Gate {}

fn whoami(c: &mut Client) -> u64 {
    let f = c.request(WHOAMI, 1, b"", T).unwrap();
    u64::from_be_bytes(f.body[..].try_into().unwrap())
}

fn shard_of(id: u64) -> u64 {
    (id & 0xffff_ffff) >> SHARD_SHIFT
}

#[test]
fn send_to_and_broadcast_from_a_foreign_thread_reach_both_shards() {
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), shards: 2, ..Config::default() };
    let running = Server::builder().config(cfg).start(Gate::default()).unwrap();
    let addr = running.local_addr();
    let mut conns: Vec<(Client, u64)> = Vec::new();
    let deadline = Instant::now() + T;
    while conns.len() < 2 || conns.iter().all(|(_, id)| shard_of(*id) == shard_of(conns[0].1)) {
        assert!(Instant::now() < deadline, "every connection landed on one shard");
        let mut c = Client::connect(addr, T).unwrap();
        let id = whoami(&mut c);
        conns.push((c, id));
    }
    let handle = running.handle();
    let ids: Vec<u64> = conns.iter().map(|(_, id)| *id).collect();
    let (sent, reached) = std::thread::spawn(move || {
        let sent: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| handle.send_to(ConnId::from_u64(*id), NOTE, n as u32, b"from outside"))
            .collect();
        (sent, handle.broadcast(NOTE, 99, b"to all"))
    })
    .join()
    .unwrap();
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    assert_eq!(reached, conns.len(), "the broadcast counts every open connection");
    for (n, (c, id)) in conns.iter_mut().enumerate() {
        let f = c.recv(T).unwrap();
        assert_eq!(
            (f.kind(), f.seq(), &f.body[..]),
            (NOTE, n as u32, &b"from outside"[..]),
            "shard {}",
            shard_of(*id)
        );
        let f = c.recv(T).unwrap();
        assert_eq!((f.kind(), f.seq(), &f.body[..]), (NOTE, 99, &b"to all"[..]));
    }

    // Once a connection is gone, its id answers Closed, whichever shard it was on.
    let handle = running.handle();
    for (c, id) in conns.drain(..) {
        drop(c);
        let deadline = Instant::now() + T;
        while handle.send_to(ConnId::from_u64(id), NOTE, 0, b"anyone?") != Err(SendError::Closed) {
            assert!(Instant::now() < deadline, "a closed connection's id never answered Closed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    running.stop();
    running.wait().unwrap();
}

/// The process's resident memory in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_paused_connection_holds_back_100_mb_and_answers_all_of_it_in_order_after_resume() {
    for model in [Model::Fused, Model::Pipeline] {
        let gate = Gate::default();
        let (closed, paused) = (gate.closed.clone(), gate.paused.clone());
        let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, ..Config::default() };
        let running = Server::builder().config(cfg).start(gate).unwrap();
        let mut c = Client::connect(running.local_addr(), T).unwrap();
        c.request(HOLD, 0, b"", T).unwrap();

        // 100 MB of numbered requests (1 KiB bodies), written from a fixed buffer by a thread.
        const BODY: usize = 1024;
        const FRAMES: u64 = 100_000_000 / (BODY as u64 + 12);
        let mut stream = TcpStream::connect(running.local_addr()).unwrap();
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for n in 0..FRAMES {
                    let mut body = vec![0u8; BODY];
                    body[..8].copy_from_slice(&n.to_be_bytes());
                    batch.extend_from_slice(&frame_bytes(NUMBERED, n as u32, &body));
                    if batch.len() >= 256 << 10 || n + 1 == FRAMES {
                        stream.write_all(&batch).unwrap();
                        batch.clear();
                    }
                }
            })
        };
        let deadline = Instant::now() + T;
        while paused.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "{model:?}: the service never paused");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = rss_kib();
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_kib();
        println!("{model:?}: paused; RSS {before} KiB, 1 s later {after} KiB, writer still blocked");
        assert!(after < before + 4096, "{model:?}: memory grew while paused: {before} -> {after} KiB");
        assert!(!writer.is_finished(), "{model:?}: the peer could write 100 MB into a paused connection");

        closed.store(false, Ordering::SeqCst);
        let id = ConnId::from_u64(paused.load(Ordering::SeqCst));
        running.handle().resume(id).unwrap();
        let mut reply = [0u8; 12 + 8];
        stream.set_read_timeout(Some(T)).unwrap();
        for n in 0..FRAMES {
            stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("{model:?}: reply {n}: {e}"));
            assert_eq!(u64::from_be_bytes(reply[12..].try_into().unwrap()), n, "{model:?}: out of order");
        }
        writer.join().unwrap();
        println!("{model:?}: all {FRAMES} requests answered in order after the resume");
        drop((c, stream));
        running.stop();
        running.wait().unwrap();
    }
}
