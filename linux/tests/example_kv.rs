//! Runs `examples/kv.rs` in-process on both models (and two shards, so notifications cross
//! shards) and talks to it over real loopback sockets.

#[path = "../examples/kv.rs"]
#[allow(dead_code)]
mod kv;

use std::time::{Duration, Instant};

use doorway_linux::{Config, Model, Server};
use doorway_testkit::Client;

const T: Duration = Duration::from_secs(5);

fn run(model: Model, shards: usize) {
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, shards, ..Config::default() };
    let running = Server::builder().config(cfg).start(kv::Kv::default()).unwrap();
    let addr = running.local_addr();
    let ctx = format!("{model:?}/{shards}");

    // Several watchers, so with two shards some sit on the other shard than the writer.
    let mut watchers: Vec<Client> = (0..4).map(|_| Client::connect(addr, T).unwrap()).collect();
    for (i, w) in watchers.iter_mut().enumerate() {
        w.send(kv::WATCH, i as u32, b"").unwrap();
        let f = w.recv(T).unwrap();
        assert_eq!((f.kind(), f.seq()), (kv::WATCH, i as u32), "{ctx}");
    }

    let mut c = Client::connect(addr, T).unwrap();
    c.send(kv::PUT, 1, b"colour\0blue").unwrap();
    let f = c.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq(), f.body.len()), (kv::PUT, 1, 0), "{ctx}");
    for w in &mut watchers {
        let f = w.recv(T).unwrap();
        assert_eq!((f.kind(), &f.body[..]), (kv::CHANGED, &b"colour\0blue"[..]), "{ctx}");
    }

    c.send(kv::GET, 2, b"colour").unwrap();
    let f = c.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq(), &f.body[..]), (kv::GET, 2, &b"blue"[..]), "{ctx}");
    c.send(kv::GET, 3, b"shape").unwrap();
    assert_eq!(c.recv(T).unwrap().kind(), kv::NOT_FOUND, "{ctx}");

    let asked = Instant::now();
    c.send(kv::REMIND, 4, &120u32.to_be_bytes()).unwrap();
    c.send(kv::DEL, 5, b"colour").unwrap();
    let f = c.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq()), (kv::DEL, 5), "{ctx}: the reminder must not overtake the DEL");
    let f = c.recv(T).unwrap();
    assert_eq!((f.kind(), f.seq(), &f.body[..]), (kv::REMIND, 4, &b"ding"[..]), "{ctx}");
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(110), "{ctx}: reminder after {waited:?}");
    assert!(waited < Duration::from_secs(2), "{ctx}: reminder after {waited:?}");

    c.send(kv::GET, 6, b"colour").unwrap();
    assert_eq!(c.recv(T).unwrap().kind(), kv::NOT_FOUND, "{ctx}");
    // A kind the table does not list gets the protocol's ERROR 2, and the connection stays open.
    c.send(120, 7, b"").unwrap();
    assert_eq!(c.recv(T).unwrap().error().map(|e| e.0), Some(2), "{ctx}");

    // A watcher that left is forgotten: the next PUT still reaches the others.
    drop(watchers.pop());
    std::thread::sleep(Duration::from_millis(50));
    c.send(kv::PUT, 8, b"k\0v").unwrap();
    assert_eq!(c.recv(T).unwrap().kind(), kv::PUT, "{ctx}");
    for w in &mut watchers {
        assert_eq!(w.recv(T).unwrap().body, b"k\0v", "{ctx}");
    }

    running.stop();
    running.wait().unwrap();
}

#[test]
fn kv_example_fused() {
    run(Model::Fused, 1);
}

#[test]
fn kv_example_pipeline() {
    run(Model::Pipeline, 1);
}

#[test]
fn kv_example_two_shards() {
    run(Model::Fused, 2);
    run(Model::Pipeline, 2);
}
