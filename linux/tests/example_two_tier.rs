//! Runs `examples/two_tier.rs` in-process against a second doorway server (the demo service) as its
//! upstream tier, over real loopback sockets: every ECHO comes back to the client that asked, while
//! the upstream is down requests get a clear UPSTREAM_DOWN, and after the upstream restarts the
//! link comes back by itself and requests flow again.

#[path = "../examples/two_tier.rs"]
#[allow(dead_code)]
mod two_tier;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use doorway_core::demo::kind::ECHO;
use doorway_core::demo::Demo;
use doorway_linux::{Config, LinkOptions, Model, Server};
use doorway_testkit::Client;

const T: Duration = Duration::from_secs(5);

fn upstream(addr: SocketAddr) -> doorway_linux::Running {
    let cfg = Config { listen: addr, ..Config::default() };
    Server::builder().config(cfg).start(Demo).unwrap()
}

/// Sends ECHOs until one comes back as an echo (the link is up), within `T`.
fn until_echoed(c: &mut Client, seq: &mut u32) {
    let deadline = Instant::now() + T;
    loop {
        *seq += 1;
        let f = c.request(ECHO, *seq, b"ready?", T).unwrap();
        if f.kind() == ECHO {
            assert_eq!((f.seq(), &f.body[..]), (*seq, &b"ready?"[..]));
            return;
        }
        assert_eq!(f.kind(), two_tier::UPSTREAM_DOWN);
        assert!(Instant::now() < deadline, "the link never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(model: Model, shards: usize) {
    let ctx = format!("{model:?}/{shards}");
    let up = upstream("127.0.0.1:0".parse().unwrap());
    let up_addr = up.local_addr();
    let options = LinkOptions {
        backoff_floor: Duration::from_millis(20),
        backoff_ceiling: Duration::from_millis(200),
        ..LinkOptions::default()
    };
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, shards, ..Config::default() };
    let access = two_tier::start(cfg, up_addr, options).unwrap();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(access.local_addr(), T).unwrap()).collect();
    let mut seq = 0;
    until_echoed(&mut clients[0], &mut seq);

    // Every client gets its own replies, with its own seqs, through the one link.
    for round in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(ECHO, round, format!("client {i} round {round}").as_bytes()).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let f = c.recv(T).unwrap();
            assert_eq!((f.kind(), f.seq()), (ECHO, round), "{ctx}");
            assert_eq!(f.body, format!("client {i} round {round}").as_bytes(), "{ctx}");
        }
    }

    // The upstream goes away: requests get a clear answer, not silence.
    up.stop();
    up.wait().unwrap();
    let deadline = Instant::now() + T;
    loop {
        seq += 1;
        let f = clients[1].request(ECHO, seq, b"anyone?", T).expect("an answer while upstream is down");
        if f.kind() == two_tier::UPSTREAM_DOWN {
            assert_eq!(f.seq(), seq, "{ctx}");
            break;
        }
        assert!(Instant::now() < deadline, "{ctx}: still echoing with the upstream stopped");
    }

    // It comes back on the same address: the link reconnects by itself.
    let up = upstream(up_addr);
    until_echoed(&mut clients[2], &mut seq);
    let f = clients[3].request(ECHO, 7, b"after the restart", T).unwrap();
    assert_eq!((f.kind(), f.seq(), &f.body[..]), (ECHO, 7, &b"after the restart"[..]), "{ctx}");
    assert!(access.counter("link_connects").unwrap() >= 2, "{ctx}");

    drop(clients);
    access.stop();
    access.wait().unwrap();
    up.stop();
    up.wait().unwrap();
}

#[test]
fn two_tier_fused() {
    run(Model::Fused, 1);
}

#[test]
fn two_tier_pipeline() {
    run(Model::Pipeline, 1);
}

#[test]
fn two_tier_two_shards() {
    run(Model::Fused, 2);
}
