//! UDP endpoints over real sockets on 127.0.0.1: a datagram is one frame of the server's wire and
//! its reply goes back to its source; bad datagrams are counted and dropped and harm nothing else;
//! many in flight are all answered; endpoints work beside TCP or without it, on both models and on
//! both wires.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use doorway_core::demo::kind::{ECHO, STATS};
use doorway_core::demo::Demo;
use doorway_core::frame::{encode, Decoder, Header};
use doorway_core::wire::Lars;
use doorway_linux::{Config, Model, Server};
use doorway_testkit::json;

const T: Duration = Duration::from_secs(5);

fn v1(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12 + body.len()];
    encode(&mut out, kind, seq, body).unwrap();
    out
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn stats(s: &UdpSocket, to: SocketAddr) -> Vec<(String, i128)> {
    s.send_to(&v1(STATS, 9, b""), to).unwrap();
    let reply = recv(s);
    let frame = Decoder::new(1 << 20).decode(&reply).unwrap().unwrap();
    json::parse_int_object(frame.body).unwrap()
}

fn stat(all: &[(String, i128)], key: &str) -> i128 {
    all.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn a_datagram_is_one_frame_and_its_reply_goes_back_to_its_source() {
    for model in [Model::Fused, Model::Pipeline] {
        let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, shards: 2, ..Config::default() };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let running = Server::builder().config(cfg).udp(any).udp(any).udp(any).start(Demo).unwrap();
        assert_eq!(running.udp_addrs().len(), 3);
        let (a, b) = (client(), client());
        for (n, &to) in running.udp_addrs().iter().enumerate() {
            a.send_to(&v1(ECHO, n as u32, b"from a"), to).unwrap();
            b.send_to(&v1(ECHO, 100 + n as u32, b"from b"), to).unwrap();
            assert_eq!(recv(&a), v1(ECHO, n as u32, b"from a"), "{model:?}: endpoint {n}");
            assert_eq!(recv(&b), v1(ECHO, 100 + n as u32, b"from b"), "{model:?}: endpoint {n}");
        }
        // TCP beside it still works.
        let mut tcp = doorway_testkit::Client::connect(running.local_addr(), T).unwrap();
        assert_eq!(tcp.request(ECHO, 1, b"tcp", T).unwrap().body, b"tcp");
        drop(tcp);
        running.stop();
        running.wait().unwrap();
    }
}

#[test]
fn bad_datagrams_are_counted_and_dropped_and_harm_nothing_else() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cfg = Config { max_body: 1024, ..Config::default() };
    let running = Server::builder().config(cfg).without_tcp().udp(any).start(Demo).unwrap();
    let to = running.udp_addrs()[0];
    let s = client();
    let good = v1(ECHO, 1, b"hello");
    let mut too_long = good.clone();
    too_long.extend_from_slice(b"trailing");
    let mut flags = Header::new(ECHO, 2, 0).to_bytes().to_vec();
    flags[6] = 1;
    let bad: Vec<Vec<u8>> = vec![
        vec![1, 2, 3, 4, 5],             // shorter than a head
        good[..good.len() - 2].to_vec(), // shorter than its head says
        too_long,                        // longer than its head says
        flags,                           // a head v1 refuses
        v1(ECHO, 3, &[0u8; 1025]),       // over max_body
        Vec::new(),                      // empty
    ];
    for d in &bad {
        s.send_to(d, to).unwrap();
    }
    s.send_to(&good, to).unwrap();
    assert_eq!(recv(&s), good, "the good datagram after the bad ones is answered");
    let all = stats(&s, to);
    assert_eq!(stat(&all, "datagrams_dropped"), bad.len() as i128);
    assert_eq!(stat(&all, "datagrams_in"), 2, "the echo and this STATS");
    assert!(running.tcp_addr().is_none());
    running.stop();
    running.wait().unwrap();
}

/// Many clients with a window of requests in flight each: every request is answered, none lost.
#[test]
fn windows_of_requests_in_flight_are_all_answered() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: u32 = 20_000;
    const WINDOW: u32 = 16;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = Server::builder().without_tcp().udp(any).start(Demo).unwrap();
    let to = running.udp_addrs()[0];
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let s = client();
                let (mut sent, mut got) = (0u32, 0u32);
                let mut seen = vec![false; PER_CLIENT as usize];
                while got < PER_CLIENT {
                    while sent < PER_CLIENT && sent - got < WINDOW {
                        s.send_to(&v1(ECHO, sent, &sent.to_be_bytes()), to).unwrap();
                        sent += 1;
                    }
                    let reply = recv(&s);
                    let f = Decoder::default().decode(&reply).unwrap().unwrap();
                    assert_eq!(f.body, &f.header.seq.to_be_bytes());
                    assert!(!std::mem::replace(&mut seen[f.header.seq as usize], true), "a duplicate reply");
                    got += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed();
    let total = CLIENTS as f64 * f64::from(PER_CLIENT);
    println!(
        "{total} request/reply datagrams, window {WINDOW}, none lost: {:.0}/s",
        total / elapsed.as_secs_f64()
    );
    running.stop();
    running.wait().unwrap();
}

#[test]
fn the_lars_wire_works_over_udp() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = Server::builder().wire(Lars::default()).without_tcp().udp(any).start(LarsEcho).unwrap();
    let to = running.udp_addrs()[0];
    let s = client();
    let mut frame = 4i32.to_le_bytes().to_vec();
    frame.extend_from_slice(&3i32.to_le_bytes());
    frame.extend_from_slice(b"abc");
    s.send_to(&frame, to).unwrap();
    let reply = recv(&s);
    assert_eq!(&reply[..4], &104i32.to_le_bytes());
    assert_eq!(&reply[8..], b"abc");
    running.stop();
    running.wait().unwrap();
}

#[derive(Clone)]
struct LarsEcho;

impl LarsEcho {
    fn echo(
        &mut self,
        cx: &mut impl doorway_core::dispatch::Context,
        req: &doorway_core::dispatch::Request<'_>,
    ) -> Result<(), doorway_core::dispatch::SendError> {
        cx.reply(req.kind + 100, 0, req.body)
    }
}

doorway_core::message_map! {
    LarsEcho {
        1..=8 => echo,
    }
}

impl doorway_core::dispatch::Service for LarsEcho {}
