//! The peer binary over real loopback sockets: startup line, echo, ping, errors, shutdown, and the
//! UDP endpoint (`--udp`).
//!
//! Each test starts its own `doorway-peer --listen 127.0.0.1:0`, reads the startup line for the
//! port, and ends the process by its PID (SIGTERM, checked to exit 0, or kill on failure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorway_core::frame::{self, kind, Header, HEADER_LEN};

struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    fn start(extra: &[&str]) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorway-peer"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn doorway-peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("doorway-peer listening on ")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .parse()
            .unwrap();
        Peer { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "peer did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame_bytes(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN + body.len()];
    frame::encode(&mut out, kind, seq, body).unwrap();
    out
}

fn read_frame(stream: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).unwrap();
    let header = Header::parse(&head).unwrap();
    let mut body = vec![0; header.length as usize];
    stream.read_exact(&mut body).unwrap();
    (header, body)
}

#[test]
fn echo_split_and_pipelined() {
    let peer = Peer::start(&[]);
    let mut stream = peer.connect();
    // One frame written byte by byte.
    for b in frame_bytes(doorway_core::demo::kind::ECHO, 1, b"split") {
        stream.write_all(&[b]).unwrap();
    }
    let (header, body) = read_frame(&mut stream);
    assert_eq!((header.kind, header.seq, &body[..]), (doorway_core::demo::kind::ECHO, 1, &b"split"[..]));
    // Many frames in one write come back in order.
    let batch: Vec<u8> = (2..102u32)
        .flat_map(|seq| frame_bytes(doorway_core::demo::kind::ECHO, seq, &seq.to_be_bytes()))
        .collect();
    stream.write_all(&batch).unwrap();
    for seq in 2..102u32 {
        let (header, body) = read_frame(&mut stream);
        assert_eq!(
            (header.kind, header.seq, body),
            (doorway_core::demo::kind::ECHO, seq, seq.to_be_bytes().to_vec())
        );
    }
    assert!(peer.stop().success());
}

#[test]
fn ping_pong_and_unknown_kind() {
    let peer = Peer::start(&[]);
    let mut stream = peer.connect();
    stream.write_all(&frame_bytes(kind::PING, 5, b"hb")).unwrap();
    let (header, body) = read_frame(&mut stream);
    assert_eq!((header.kind, header.seq, &body[..]), (kind::PONG, 5, &b"hb"[..]));
    // A PONG gets no reply; kind 9 (reserved) gets ERROR 2 and the connection stays open.
    stream.write_all(&frame_bytes(kind::PONG, 6, b"")).unwrap();
    stream.write_all(&frame_bytes(9, 7, b"")).unwrap();
    let (header, body) = read_frame(&mut stream);
    assert_eq!((header.kind, header.seq), (kind::ERROR, 7));
    assert_eq!(frame::parse_error_body(&body).map(|(code, _)| code), Some(2));
    stream.write_all(&frame_bytes(doorway_core::demo::kind::ECHO, 8, b"still")).unwrap();
    let (header, _) = read_frame(&mut stream);
    assert_eq!((header.kind, header.seq), (doorway_core::demo::kind::ECHO, 8));
}

#[test]
fn oversized_frame_refused_then_closed() {
    let peer = Peer::start(&["--max-body", "16"]);
    let mut stream = peer.connect();
    // Only the header is sent: the refusal must not wait for the body.
    stream.write_all(&Header::new(doorway_core::demo::kind::ECHO, 11, 17).to_bytes()).unwrap();
    let (header, body) = read_frame(&mut stream);
    assert_eq!((header.kind, header.seq), (kind::ERROR, 11));
    assert_eq!(frame::parse_error_body(&body).map(|(code, _)| code), Some(1));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing may follow the ERROR");
}

#[test]
fn bad_argument_exits_2() {
    let status = Command::new(env!("CARGO_BIN_EXE_doorway-peer"))
        .args(["--threads", "zero"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn udp_endpoint_answers_each_datagram_to_its_source() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorway-peer"))
        .args(["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn doorway-peer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("doorway-peer listening on "), "{first:?}");
    let second = lines.next().unwrap().unwrap();
    let udp: SocketAddr = second
        .strip_prefix("doorway-peer udp on ")
        .unwrap_or_else(|| panic!("unexpected udp line {second:?}"))
        .parse()
        .unwrap();
    let peer = Peer { child, addr: first["doorway-peer listening on ".len()..].parse().unwrap() };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let recv = || {
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, udp);
        buf[..n].to_vec()
    };
    let roundtrip = |datagram: &[u8]| {
        socket.send_to(datagram, udp).unwrap();
        recv()
    };
    // A window of echoes in flight: every one answered, each to its own seq.
    let echoes: Vec<Vec<u8>> =
        (1..=16u32).map(|seq| frame_bytes(doorway_core::demo::kind::ECHO, seq, &seq.to_be_bytes())).collect();
    for e in &echoes {
        socket.send_to(e, udp).unwrap();
    }
    for e in &echoes {
        assert_eq!(&recv(), e);
    }
    assert_eq!(roundtrip(&frame_bytes(kind::PING, 20, b"hb")), frame_bytes(kind::PONG, 20, b"hb"));
    // A datagram longer than its head says is dropped; the next one is still answered.
    let mut long = frame_bytes(doorway_core::demo::kind::ECHO, 21, b"x");
    long.push(0);
    socket.send_to(&long, udp).unwrap();
    let reply = roundtrip(&frame_bytes(9, 22, b""));
    let header = Header::parse(&reply).unwrap();
    assert_eq!((header.kind, header.seq), (kind::ERROR, 22));
    // TCP still works beside it.
    let mut stream = peer.connect();
    stream.write_all(&frame_bytes(doorway_core::demo::kind::ECHO, 1, b"tcp")).unwrap();
    assert_eq!(read_frame(&mut stream).1, b"tcp");
    assert!(peer.stop().success());
}
