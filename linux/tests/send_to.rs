//! `Context::send_to` as a handler sees it: delivered to a live connection on this shard or
//! another one, `Closed` for a connection that has gone, on both models and with two shards.
//!
//! A small relay service runs in-process: WHOAMI answers the connection's packed `ConnId`, SEND
//! (`to: u64be` then a body) passes the body to `to` as NOTE and answers the result. SLEEP holds
//! its shard's deal thread for a while and FLOOD broadcasts many times, so one test can fill a
//! starved shard's inbox (`doorway_linux::INBOX_CAP_BYTES`) and see what its clients get.

use std::time::{Duration, Instant};

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;
use doorway_linux::{Config, Model, Server};
use doorway_linux::{INBOX_CAP_BYTES, SHARD_SHIFT};
use doorway_testkit::Client;

const WHOAMI: u16 = 200;
const SEND: u16 = 201;
const NOTE: u16 = 202;
const SLEEP: u16 = 203;
const FLOOD: u16 = 204;
const BROADCAST: u16 = 205;
/// FLOOD's broadcasts: 1 KiB bodies, enough of them to pass the inbox cap by a quarter.
const FLOOD_BODY: usize = 1024;
const FLOOD_COUNT: usize = INBOX_CAP_BYTES / FLOOD_BODY * 5 / 4;
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

    /// Holds this shard's deal thread for `ms: u32be`, then answers.
    fn sleep(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let ms = req.body.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
        std::thread::sleep(Duration::from_millis(ms.into()));
        cx.reply(SLEEP, req.seq, b"")
    }

    /// Broadcasts FLOOD_COUNT bodies, answers how many connections the broadcasts reached in all
    /// (`u64be`), and closes (so the sender takes no copy itself).
    fn flood(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.close();
        let body = [7u8; FLOOD_BODY];
        let reached: usize = (0..FLOOD_COUNT).map(|_| cx.broadcast(BROADCAST, 0, &body)).sum();
        cx.reply(FLOOD, req.seq, &(reached as u64).to_be_bytes())
    }
}

message_map! {
    Relay {
        WHOAMI => whoami,
        SEND => send,
        SLEEP => sleep,
        FLOOD => flood,
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

/// A shard starved while another floods it with broadcasts: its inbox stops at the cap, and its
/// connections, which each miss broadcasts, are closed with ERROR 6, never left silently short.
#[test]
fn a_full_inbox_closes_the_starved_shards_connections_with_error_6() {
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: Model::Fused,
        shards: 2,
        // Room for every broadcast that fits the inbox, so only the missed ones can close.
        high_watermark: 64 << 20,
        low_watermark: 1 << 20,
        ..Config::default()
    };
    let running = Server::builder().config(cfg).start(Relay).unwrap();
    let addr = running.local_addr();
    // A flooder and a victim on different shards.
    let (mut flooder, flooder_id) = {
        let mut c = Client::connect(addr, T).unwrap();
        let id = whoami(&mut c);
        (c, id)
    };
    let deadline = Instant::now() + T;
    let mut victim = loop {
        assert!(Instant::now() < deadline, "every connection landed on one shard");
        let mut c = Client::connect(addr, T).unwrap();
        if shard_of(whoami(&mut c)) != shard_of(flooder_id) {
            break c;
        }
    };
    // The victim's shard sleeps in a handler while the flood fills its inbox.
    victim.send(SLEEP, 1, &3000u32.to_be_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let f = flooder.request(FLOOD, 2, b"", T).unwrap();
    let reached = u64::from_be_bytes(f.body[..].try_into().unwrap());
    assert!(
        reached < FLOOD_COUNT as u64,
        "the broadcasts reached {reached} connections: none was refused by the full inbox"
    );
    assert!(reached > 0, "no broadcast reached the other shard");

    let f = victim.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq()), (SLEEP, 1));
    let mut broadcasts = 0u64;
    let last = loop {
        match victim.recv(T) {
            Ok(f) if f.kind() == BROADCAST => broadcasts += 1,
            other => break other,
        }
    };
    let last = last.expect("the victim's connection ended without an ERROR");
    assert_eq!(last.error().map(|e| e.0), Some(6), "the victim must be told why: {last:?}");
    assert!(broadcasts <= reached, "{broadcasts} broadcasts delivered, {reached} counted");
    assert!(victim.recv(T).is_err(), "the connection stays open after ERROR 6");
    println!("flood: {reached} of {FLOOD_COUNT} broadcasts queued; victim got {broadcasts}, then ERROR 6");
    drop((flooder, victim));
    running.stop();
    running.wait().unwrap();
}

/// A handler runs under its own slot's lock: sending to an earlier id of that same slot must
/// answer `Closed`, not wait for that lock (it once hung the whole shard: no accepts, no replies).
fn stale_id_of_own_slot(model: Model) {
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, ..Config::default() };
    let running = Server::builder().config(cfg).start(Relay).unwrap();
    let addr = running.local_addr();
    let mut a = Client::connect(addr, T).unwrap();
    let a_id = whoami(&mut a);
    drop(a);
    // Once A's slot is freed, a new connection takes it with the next generation (the others are
    // kept open meanwhile, so the slot cannot be skipped).
    let deadline = Instant::now() + T;
    let mut others = Vec::new();
    let (mut b, b_id) = loop {
        let mut c = Client::connect(addr, T).unwrap();
        let id = whoami(&mut c);
        if ConnId::from_u64(id).index() == ConnId::from_u64(a_id).index() {
            break (c, id);
        }
        assert!(Instant::now() < deadline, "{model:?}: slot of {a_id:#x} never reused");
        others.push(c);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(a_id, b_id);
    assert_eq!(send(&mut b, a_id, 7, b"to my slot's past"), b"closed", "{model:?}");
    // The shard still serves: B, and a new connection.
    assert_eq!(whoami(&mut b), b_id);
    let mut c = Client::connect(addr, T).unwrap();
    whoami(&mut c);
    drop((b, c, others));
    running.stop();
    running.wait().unwrap();
}

#[test]
fn sending_to_an_earlier_id_of_ones_own_slot_answers_closed_fused() {
    stale_id_of_own_slot(Model::Fused);
}

#[test]
fn sending_to_an_earlier_id_of_ones_own_slot_answers_closed_pipeline() {
    stale_id_of_own_slot(Model::Pipeline);
}
