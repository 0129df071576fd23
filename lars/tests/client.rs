//! The client's reply handling, over real UDP sockets on 127.0.0.1.
//!
//! The peer here is a test fixture standing in for the agent: a UDP socket in the test thread that
//! receives the client's requests and answers with frames from the original's test vectors
//! (`tests/data/lars-wire-vectors.txt`), or with what the original agent cannot be made to send:
//! stale and foreign replies, garbage, short datagrams, silence. The client runs on its own thread
//! and the test drives the conversation datagram by datagram, so nothing depends on timing except
//! the timeout tests. `tests/client_vs_original_agent.rs` runs the client against the real agent.

use doorway_lars::client::{agent_port, BadReply, Config, Error, Node};
use doorway_lars::proto::{Body, MsgId, RetCode};
use doorway_lars::{decode_frame, Client, GetHostResponse, GetRouteResponse, HostInfo, WireError};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const VECTORS: &str = include_str!("data/lars-wire-vectors.txt");

/// The frame of the vector line for message `name` whose JSON contains `fields`.
fn vector(name: &str, fields: &str) -> Vec<u8> {
    let line = VECTORS
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.split('\t').nth(1) == Some(name) && line.contains(fields))
        .unwrap_or_else(|| panic!("no vector {name} with {fields}"));
    let hex = line.rsplit('\t').next().unwrap_or_default();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// A vector's `GetHostResponse` with its `seq` set to `seq`, so it answers a given request.
fn host_reply(fields: &str, seq: u32) -> Vec<u8> {
    let Ok(Body::GetHostResponse(reply)) = decode_frame(&vector("GetHostResponse", fields)).unwrap().decode()
    else {
        panic!("not a GetHostResponse")
    };
    Body::GetHostResponse(GetHostResponse { seq, ..reply }).encode_frame().unwrap()
}

fn frame(body: Body) -> Vec<u8> {
    body.encode_frame().unwrap()
}

/// The fixture: one UDP socket the client's requests for the test's module reach.
struct Agent {
    socket: UdpSocket,
}

/// A request as the fixture received it.
struct Request {
    bytes: Vec<u8>,
    from: SocketAddr,
}

impl Request {
    fn decode(&self) -> Body {
        decode_frame(&self.bytes).and_then(|frame| frame.decode()).expect("the client sends valid frames")
    }

    fn seq(&self) -> u32 {
        match self.decode() {
            Body::GetHostRequest(request) => request.seq,
            other => panic!("expected a GetHostRequest, got {other:?}"),
        }
    }
}

/// How long a client waits per try, long enough that the fixture always answers in time even on
/// a loaded machine, so the tests that count requests see no retry they did not ask for.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The timeout of the tests that wait for the client to time out.
const SHORT_TIMEOUT: Duration = Duration::from_millis(100);

impl Agent {
    fn new() -> Agent {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Agent { socket }
    }

    /// A client whose requests about `(modid, cmdid)` come to this fixture.
    fn client(&self, modid: i32, cmdid: i32, tries: u32) -> Client {
        self.client_with_timeout(modid, cmdid, tries, TIMEOUT)
    }

    fn client_with_timeout(&self, modid: i32, cmdid: i32, tries: u32, timeout: Duration) -> Client {
        let port = self.socket.local_addr().unwrap().port();
        let offset = agent_port(0, modid, cmdid).unwrap();
        let config = Config { base_port: port - offset, timeout, tries, ..Config::default() };
        let client = Client::with_config(config).unwrap();
        assert_eq!(agent_port(client.config().base_port, modid, cmdid), Some(port));
        client
    }

    fn recv(&self) -> Request {
        let mut buffer = [0; 65_536];
        let (len, from) = self.socket.recv_from(&mut buffer).expect("the client sent a request");
        Request { bytes: buffer[..len].to_vec(), from }
    }

    fn send(&self, to: &Request, datagrams: &[&[u8]]) {
        for datagram in datagrams {
            self.socket.send_to(datagram, to.from).unwrap();
        }
    }

    /// Nothing more arrives within `wait`.
    fn assert_quiet(&self, wait: Duration) {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buffer = [0; 64];
        assert!(self.socket.recv_from(&mut buffer).is_err(), "unexpected datagram");
    }
}

/// Runs `call` with `client` on its own thread.
fn spawn<T: Send + 'static>(
    mut client: Client,
    call: impl FnOnce(&mut Client) -> T + Send + 'static,
) -> JoinHandle<T> {
    thread::spawn(move || call(&mut client))
}

/// What `get_host(1, 1)` of a fresh one-try client makes of each datagram as the only answer to its
/// request. The cases run at once, each with its own fixture: a call that is not answered usefully
/// waits its whole timeout.
fn one_try_answered_with(datagrams: Vec<Vec<u8>>) -> Vec<Result<Node, Error>> {
    thread::scope(|scope| {
        let calls: Vec<_> = datagrams
            .into_iter()
            .map(|datagram| {
                scope.spawn(move || {
                    let agent = Agent::new();
                    let call = spawn(agent.client(1, 1, 1), |c| c.get_host(1, 1));
                    let request = agent.recv();
                    assert_eq!(request.seq(), 0);
                    agent.send(&request, &[&datagram]);
                    call.join().unwrap()
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    })
}

/// What a case expects of the error it ends in.
type Expect<E> = fn(&E) -> bool;

const NODE_7002: Node = (Ipv4Addr::new(192, 168, 1, 101), 7002);

#[test]
fn get_host_returns_the_node_the_agent_chose() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 1, 3), |c| c.get_host(1, 1));
    let request = agent.recv();
    // A fresh client's first request is the original's, byte for byte (seq 0).
    assert_eq!(request.bytes, vector("GetHostRequest", r#""seq":0,"modid":1,"cmdid":1"#));
    agent.send(&request, &[&host_reply(r#""seq":7"#, request.seq())]);
    assert_eq!(call.join().unwrap().unwrap(), NODE_7002);
}

#[test]
fn every_get_host_carries_a_new_seq() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 1, 3), |c| (c.get_host(1, 1), c.get_host(1, 1)));
    for expected_seq in [0, 1] {
        let request = agent.recv();
        assert_eq!(request.seq(), expected_seq);
        agent.send(&request, &[&host_reply(r#""seq":7"#, expected_seq)]);
    }
    let (first, second) = call.join().unwrap();
    assert_eq!((first.unwrap(), second.unwrap()), (NODE_7002, NODE_7002));
}

#[test]
fn get_host_skips_stale_replies_and_replies_to_other_requests() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 1, 3), |c| c.get_host(1, 1));
    let request = agent.recv();
    let seq = request.seq();
    let other_node = GetHostResponse {
        seq: seq.wrapping_sub(1),
        modid: 1,
        cmdid: 1,
        retcode: 0,
        host: Some(HostInfo { ip: 1, port: 1 }),
    };
    agent.send(
        &request,
        &[
            // A reply to an earlier call (seq 0 - 1 wraps to u32::MAX: still stale).
            &frame(Body::GetHostResponse(other_node)),
            // A late reply to an earlier get_route on the same port.
            &vector("API_GetRouteResponse", r#""modid":1,"cmdid":3"#),
            &host_reply(r#""seq":7"#, seq),
        ],
    );
    assert_eq!(call.join().unwrap().unwrap(), NODE_7002);
}

#[test]
fn get_host_maps_overload_noexist_and_system_error_to_errors() {
    let system_error = frame(Body::GetHostResponse(GetHostResponse {
        modid: 1,
        cmdid: 1,
        retcode: RetCode::SystemError.into(),
        ..Default::default()
    }));
    let cases: [(Vec<u8>, Expect<Error>); 3] = [
        (vector("GetHostResponse", "RET_OVERLOAD"), |e| matches!(e, Error::Overload)),
        (vector("GetHostResponse", "RET_NOEXIST"), |e| matches!(e, Error::NoExist)),
        (system_error, |e| matches!(e, Error::SystemError)),
    ];
    for (reply, expected) in cases {
        let Body::GetHostResponse(reply) = decode_frame(&reply).unwrap().decode().unwrap() else {
            unreachable!()
        };
        let agent = Agent::new();
        let call =
            spawn(agent.client(reply.modid, reply.cmdid, 3), move |c| c.get_host(reply.modid, reply.cmdid));
        let request = agent.recv();
        agent.send(
            &request,
            &[&frame(Body::GetHostResponse(GetHostResponse { seq: request.seq(), ..reply }))],
        );
        let error = call.join().unwrap().unwrap_err();
        assert!(expected(&error), "retcode {}: {error:?}", reply.retcode);
    }
}

#[test]
fn a_late_reply_to_an_earlier_try_answers_the_call() {
    let agent = Agent::new();
    let call =
        spawn(agent.client_with_timeout(1, 1, 3, SHORT_TIMEOUT), |c| (c.get_host(1, 1), c.get_host(1, 1)));
    let first = agent.recv();
    let second = agent.recv(); // sent after the first try's timeout
    assert_eq!(second.seq(), first.seq().wrapping_add(1));
    agent.send(&second, &[&host_reply(r#""seq":7"#, first.seq())]);
    // The next call starts after both seqs this one used.
    let next = agent.recv();
    assert_eq!(next.seq(), first.seq().wrapping_add(2));
    agent.send(&next, &[&host_reply(r#""seq":7"#, next.seq())]);
    let (late, next) = call.join().unwrap();
    assert_eq!((late.unwrap(), next.unwrap()), (NODE_7002, NODE_7002));
}

#[test]
fn a_silent_agent_is_a_timeout_after_every_try() {
    let agent = Agent::new();
    let started = Instant::now();
    let call = spawn(agent.client_with_timeout(1, 1, 3, SHORT_TIMEOUT), |c| c.get_host(1, 1));
    let seqs: Vec<u32> = (0..3).map(|_| agent.recv().seq()).collect();
    let result = call.join().unwrap();
    assert!(matches!(result, Err(Error::Timeout { tries: 3 })), "{result:?}");
    assert_eq!(seqs, [0, 1, 2]);
    assert!(started.elapsed() >= SHORT_TIMEOUT * 3, "{:?}", started.elapsed());
    agent.assert_quiet(Duration::from_millis(50));
}

#[test]
fn a_stale_reply_neither_extends_its_try_nor_shortens_the_next() {
    let agent = Agent::new();
    let call = spawn(agent.client_with_timeout(1, 1, 1, SHORT_TIMEOUT), |c| {
        let started = Instant::now();
        let first = c.get_host(1, 1);
        let first_took = started.elapsed();
        let started = Instant::now();
        let second = c.get_host(1, 1);
        (first, first_took, second, started.elapsed())
    });
    let request = agent.recv();
    // Late in the try, so the rest of it is short.
    thread::sleep(SHORT_TIMEOUT * 8 / 10);
    agent.send(&request, &[&host_reply(r#""seq":7"#, request.seq().wrapping_sub(1))]);
    agent.recv();
    let (first, first_took, second, second_took) = call.join().unwrap();
    assert!(matches!(first, Err(Error::Timeout { tries: 1 })), "{first:?}");
    assert!(matches!(second, Err(Error::Timeout { tries: 1 })), "{second:?}");
    assert!(first_took >= SHORT_TIMEOUT && first_took < SHORT_TIMEOUT * 3 / 2, "{first_took:?}");
    assert!(second_took >= SHORT_TIMEOUT, "the next call waits its whole timeout: {second_took:?}");
}

#[test]
fn garbage_short_and_malformed_datagrams_are_bad_replies_when_nothing_better_comes() {
    let mut negative_length = vector("GetHostResponse", r#""seq":7"#);
    negative_length[4..8].copy_from_slice(&(-1i32).to_le_bytes());
    let mut truncated = host_reply(r#""seq":7"#, 0);
    truncated.pop();
    let mut not_protobuf = vec![5, 0, 0, 0, 2, 0, 0, 0];
    not_protobuf.extend_from_slice(&[0x0a, 0x05]);
    let cases: [(&[u8], Expect<BadReply>); 8] = [
        (b"garbage!garbage!", |b| matches!(b, BadReply::Wire(WireError::TooLong(_)))),
        (&[99, 0, 0, 0, 0, 0, 0, 0], |b| matches!(b, BadReply::Wire(WireError::UnknownMsgId(99)))),
        (&[5, 0, 0], |b| matches!(b, BadReply::Wire(WireError::ShortHead { len: 3 }))),
        (&negative_length, |b| matches!(b, BadReply::Wire(WireError::NegativeLength(-1)))),
        (&truncated, |b| matches!(b, BadReply::Wire(WireError::LengthMismatch { .. }))),
        (&not_protobuf, |b| {
            matches!(b, BadReply::Wire(WireError::Body { msgid: MsgId::GetHostResponse, .. }))
        }),
        (&vector("ReportRequest", r#""retcode":1"#), |b| {
            matches!(b, BadReply::UnexpectedMsgId(MsgId::ReportRequest))
        }),
        (&[], |b| matches!(b, BadReply::Wire(WireError::ShortHead { len: 0 }))),
    ];
    let results = one_try_answered_with(cases.iter().map(|(datagram, _)| datagram.to_vec()).collect());
    for ((datagram, expected), result) in cases.iter().zip(results) {
        match result {
            Err(Error::BadReply(bad)) => assert!(expected(&bad), "{datagram:02x?}: {bad:?}"),
            other => panic!("{datagram:02x?}: {other:?}"),
        }
    }
}

#[test]
fn a_good_reply_after_garbage_still_answers_the_call() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 1, 3), |c| c.get_host(1, 1));
    let request = agent.recv();
    agent.send(
        &request,
        &[b"\xff\xff\xff\xff\xff\xff\xff\xff", &[1], &host_reply(r#""seq":7"#, request.seq())],
    );
    assert_eq!(call.join().unwrap().unwrap(), NODE_7002);
}

#[test]
fn a_reply_to_our_seq_that_makes_no_sense_is_a_bad_reply() {
    let nonsense: [(GetHostResponse, BadReply); 4] = [
        (
            GetHostResponse { modid: 1, cmdid: 2, ..Default::default() },
            BadReply::WrongModule { modid: 1, cmdid: 2 },
        ),
        (
            GetHostResponse { modid: 1, cmdid: 1, retcode: 7, ..Default::default() },
            BadReply::UnknownRetCode(7),
        ),
        (GetHostResponse { modid: 1, cmdid: 1, ..Default::default() }, BadReply::MissingHost),
        (
            GetHostResponse {
                modid: 1,
                cmdid: 1,
                host: Some(HostInfo { ip: -1, port: -5 }),
                ..Default::default()
            },
            BadReply::BadPort(-5),
        ),
    ];
    // A fresh client's only try has seq 0, which every reply here carries.
    let results = one_try_answered_with(
        nonsense.iter().map(|(reply, _)| frame(Body::GetHostResponse(*reply))).collect(),
    );
    for ((reply, expected), result) in nonsense.iter().zip(results) {
        match result {
            Err(Error::BadReply(bad)) => assert_eq!(&bad, expected),
            other => panic!("{reply:?}: {other:?}"),
        }
    }
}

#[test]
fn nothing_listening_on_the_agent_port_is_agent_unreachable() {
    let agent = Agent::new();
    let mut client = agent.client_with_timeout(1, 1, 3, SHORT_TIMEOUT);
    let port = agent.socket.local_addr().unwrap().port();
    drop(agent);
    let started = Instant::now();
    let result = client.get_host(1, 1);
    assert!(matches!(result, Err(Error::AgentUnreachable { port: p }) if p == port), "{result:?}");
    assert!(started.elapsed() < SHORT_TIMEOUT, "refusal is not a timeout: {:?}", started.elapsed());
}

#[test]
fn report_sends_the_originals_report_request_and_waits_for_nothing() {
    let agent = Agent::new();
    let mut client = agent.client(1, 1, 3);
    client.report(1, 1, (Ipv4Addr::new(192, 168, 1, 101), 7001), RetCode::Overload).unwrap();
    assert_eq!(agent.recv().bytes, vector("ReportRequest", r#""retcode":1"#));
    client.report(1, 1, (Ipv4Addr::new(10, 0, 0, 1), 8001), RetCode::Succ).unwrap();
    let Body::ReportRequest(report) = agent.recv().decode() else { panic!("not a ReportRequest") };
    assert_eq!((report.host, report.retcode), (Some(HostInfo { ip: 167_772_161, port: 8001 }), 0));
}

#[test]
fn get_route_returns_every_node_of_the_module() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 3, 3), |c| c.get_route(1, 3));
    let request = agent.recv();
    assert_eq!(request.bytes, vector("API_GetRouteRequest", r#""modid":1,"cmdid":3"#));
    let other_module = GetRouteResponse { modid: 4, cmdid: 0, host: vec![HostInfo { ip: 1, port: 1 }] };
    agent.send(
        &request,
        &[
            &frame(Body::ApiGetRouteResponse(other_module)),
            &host_reply(r#""seq":7"#, 0),
            &vector("API_GetRouteResponse", r#""modid":1,"cmdid":3"#),
        ],
    );
    assert_eq!(call.join().unwrap().unwrap(), [(Ipv4Addr::LOCALHOST, 9001)]);
}

#[test]
fn get_route_with_a_port_out_of_range_is_a_bad_reply() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 1, 1), |c| c.get_route(1, 1));
    let request = agent.recv();
    let hosts = vec![HostInfo { ip: 1, port: 80 }, HostInfo { ip: 1, port: 70_000 }];
    agent.send(
        &request,
        &[&frame(Body::ApiGetRouteResponse(GetRouteResponse { modid: 1, cmdid: 1, host: hosts }))],
    );
    let result = call.join().unwrap();
    assert!(matches!(result, Err(Error::BadReply(BadReply::BadPort(70_000)))), "{result:?}");
}

#[test]
fn reg_init_asks_again_until_the_route_arrives() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 2, 3), |c| c.reg_init(1, 2));
    let empty = vector("GetRouteResponse", r#""host":[]"#); // modid 1, cmdid 2, no nodes
    let Body::GetRouteResponse(empty) = decode_frame(&empty).unwrap().decode().unwrap() else {
        unreachable!()
    };
    for _ in 0..2 {
        let request = agent.recv();
        agent.send(&request, &[&frame(Body::ApiGetRouteResponse(empty.clone()))]);
    }
    let request = agent.recv();
    let route = GetRouteResponse { host: vec![HostInfo { ip: -1_062_731_419, port: 7001 }], ..empty };
    agent.send(&request, &[&frame(Body::ApiGetRouteResponse(route))]);
    assert_eq!(call.join().unwrap().unwrap(), [(Ipv4Addr::new(192, 168, 1, 101), 7001)]);
}

#[test]
fn reg_init_gives_up_with_no_exist_after_its_tries() {
    let agent = Agent::new();
    let call = spawn(agent.client(1, 2, 3), |c| c.reg_init(1, 2));
    let empty = frame(Body::ApiGetRouteResponse(GetRouteResponse { modid: 1, cmdid: 2, host: vec![] }));
    for _ in 0..3 {
        let request = agent.recv();
        agent.send(&request, &[&empty]);
    }
    assert!(matches!(call.join().unwrap(), Err(Error::NoExist)));
    agent.assert_quiet(Duration::from_millis(100));
}

#[test]
fn a_module_with_a_negative_sum_still_reaches_its_port() {
    let agent = Agent::new();
    let call = spawn(agent.client(-5, 3, 1), |c| c.get_host(-5, 3));
    let request = agent.recv();
    let Body::GetHostRequest(sent) = request.decode() else { panic!("not a GetHostRequest") };
    assert_eq!((sent.seq, sent.modid, sent.cmdid), (0, -5, 3));
    let reply = GetHostResponse { seq: 0, modid: -5, cmdid: 3, retcode: RetCode::NoExist.into(), host: None };
    agent.send(&request, &[&frame(Body::GetHostResponse(reply))]);
    assert!(matches!(call.join().unwrap(), Err(Error::NoExist)));
}
