//! The peer binary over real loopback sockets: startup line, echo, ping, errors, shutdown.
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
