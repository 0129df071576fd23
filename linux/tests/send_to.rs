//! `Context::send_to` as a handler sees it: delivered to a live connection on this shard or
//! another one, `Closed` for a connection that has gone, on both models and with two shards.
//!
//! A small relay service runs in-process: WHOAMI answers the connection's packed `ConnId`, SEND
//! (`to: u64be` then a body) passes the body to `to` as NOTE and answers the result.

use std::time::{Duration, Instant};

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;
use doorway_linux::shard::SHARD_SHIFT;
use doorway_linux::{Config, Model, Server};
use doorway_testkit::Client;

const WHOAMI: u16 = 200;
const SEND: u16 = 201;
const NOTE: u16 = 202;
const T: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
struct Relay;

impl Relay {
    fn whoami(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(WHOAMI, req.seq, &cx.conn().to_u64().to_be_bytes())
    }

    fn send(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let Some((to, body)) = req.body.split_first_chunk::<8>() else {
            return cx.reply(SEND, req.seq, b"bad request");
        };
        let answer: &[u8] = match cx.send_to(ConnId::from_u64(u64::from_be_bytes(*to)), NOTE, req.seq, body) {
            Ok(()) => b"ok",
            Err(SendError::Closed) => b"closed",
            Err(SendError::Full) => b"full",
            Err(SendError::TooLarge) => b"too large",
        };
        cx.reply(SEND, req.seq, answer)
    }
}

message_map! {
    Relay {
        WHOAMI => whoami,
        SEND => send,
    }
}

impl Service for Relay {}

fn whoami(c: &mut Client) -> u64 {
    let f = c.request(WHOAMI, 1, b"", T).unwrap();
    u64::from_be_bytes(f.body[..].try_into().unwrap())
}

fn send(from: &mut Client, to: u64, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut req = to.to_be_bytes().to_vec();
    req.extend_from_slice(body);
    let f = from.request(SEND, seq, &req, T).unwrap();
    assert_eq!((f.kind(), f.seq()), (SEND, seq));
    f.body
}

fn shard_of(id: u64) -> u64 {
    (id & 0xffff_ffff) >> SHARD_SHIFT
}

fn run(model: Model, shards: usize) {
    let ctx = format!("{model:?}/{shards}");
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, shards, ..Config::default() };
    let running = Server::builder().config(cfg).start(Relay).unwrap();
    let addr = running.local_addr();

    // Enough connections that, with two shards, some pairs sit on different shards.
    let mut conns: Vec<(Client, u64)> = Vec::new();
    let deadline = Instant::now() + T;
    while conns.len() < 4 || (shards > 1 && conns.iter().all(|(_, id)| shard_of(*id) == shard_of(conns[0].1)))
    {
        assert!(Instant::now() < deadline, "{ctx}: every connection landed on one shard");
        let mut c = Client::connect(addr, T).unwrap();
        let id = whoami(&mut c);
        conns.push((c, id));
    }
    let (mut sender, sender_id) = conns.remove(0);
    // One target on the sender's shard (if any) and one on another (with two shards).
    let same = conns.iter().position(|(_, id)| shard_of(*id) == shard_of(sender_id));
    let other = conns.iter().position(|(_, id)| shard_of(*id) != shard_of(sender_id));
    let targets: Vec<usize> = [same, other].into_iter().flatten().collect();
    assert!(shards == 1 || other.is_some(), "{ctx}: no cross-shard pair");

    for (n, &t) in targets.iter().enumerate() {
        let seq = 10 + n as u32;
        let to = conns[t].1;
        let where_ = if shard_of(to) == shard_of(sender_id) { "same shard" } else { "other shard" };
        assert_eq!(send(&mut sender, to, seq, b"hello"), b"ok", "{ctx}: to a live connection, {where_}");
        let f = conns[t].0.recv(T).unwrap();
        assert_eq!((f.kind(), f.seq(), &f.body[..]), (NOTE, seq, &b"hello"[..]), "{ctx}: {where_}");
    }

    // Close the targets; once the server has freed them, their ids answer Closed, on this shard
    // and across shards alike.
    let gone: Vec<u64> = targets.iter().map(|&t| conns[t].1).collect();
    let mut by_index = targets.clone();
    by_index.sort_unstable();
    for &t in by_index.iter().rev() {
        drop(conns.remove(t));
    }
    for (n, &to) in gone.iter().enumerate() {
        let where_ = if shard_of(to) == shard_of(sender_id) { "same shard" } else { "other shard" };
        let deadline = Instant::now() + T;
        loop {
            let answer = send(&mut sender, to, 20 + n as u32, b"anyone?");
            if answer == b"closed" {
                break;
            }
            assert_eq!(answer, b"ok", "{ctx}: {where_}");
            assert!(
                Instant::now() < deadline,
                "{ctx}: send_to a closed connection ({where_}) still answers ok"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A fresh connection reusing the slot does not receive the old id's frames.
        let mut fresh = Client::connect(addr, T).unwrap();
        let fresh_id = whoami(&mut fresh);
        assert_ne!(fresh_id, to, "{ctx}: a new connection got a closed one's id");
        assert_eq!(send(&mut sender, to, 30, b"stale"), b"closed", "{ctx}: {where_}");
        assert!(
            fresh.recv(Duration::from_millis(100)).is_err(),
            "{ctx}: a stale id reached a new connection"
        );
    }

    drop((sender, conns));
    running.stop();
    running.wait().unwrap();
}

#[test]
fn send_to_fused() {
    run(Model::Fused, 1);
}

#[test]
fn send_to_pipeline() {
    run(Model::Pipeline, 1);
}

#[test]
fn send_to_fused_two_shards() {
    run(Model::Fused, 2);
}
