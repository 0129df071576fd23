//! The server speaking the Lars wire (`doorway_core::wire::Lars`: an 8-byte little-endian head,
//! `msgid` and `msglen`, no `seq`) over real sockets, in both models:
//!
//! - msgids 1-8 reach the message map (on v1 they would be PING, PONG, ERROR, BYE and reserved);
//! - an unknown msgid is skipped without an answer (counted), and the next request is answered;
//! - a `msglen` below 0 or above 65,527 closes the connection with nothing written to it, and
//!   harms no other connection;
//! - refusals and idle closes are silent too (Lars announces nothing).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::wire::Lars;
use doorway_linux::{Config, Model, Server};

const T: Duration = Duration::from_secs(5);

/// Answers msgid k with msgid k + 100 and the same body; counts skipped msgids for the test.
#[derive(Clone, Default)]
struct LarsEcho;

impl LarsEcho {
    fn echo(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(req.kind + 100, 0, req.body)
    }

    fn skipped(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let mut skipped = 0;
        cx.counters(&mut |k, v| {
            if k == "unknown_kinds_skipped" {
                skipped = v;
            }
        });
        cx.reply(req.kind, 0, &skipped.to_le_bytes())
    }
}

message_map! {
    LarsEcho {
        1..=8 => echo,
        50 => skipped,
    }
}

impl Service for LarsEcho {}

fn frame(msgid: i32, body: &[u8]) -> Vec<u8> {
    let mut out = msgid.to_le_bytes().to_vec();
    out.extend_from_slice(&(body.len() as i32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let id = i32::from_le_bytes(head[..4].try_into().unwrap());
    let len = i32::from_le_bytes(head[4..].try_into().unwrap());
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    Ok((id, body))
}

/// Reads until EOF, returning what arrived (nothing, for a silent close).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
        Err(e) => panic!("waiting for the close: {e}"),
    }
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

fn serve(model: Model, cfg: Config) -> doorway_linux::Running<Lars> {
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), model, ..cfg };
    Server::builder().wire(Lars::default()).config(cfg).start(LarsEcho).unwrap()
}

#[test]
fn msgids_1_to_8_reach_the_map_and_unknown_ones_are_skipped() {
    for model in [Model::Fused, Model::Pipeline] {
        let running = serve(model, Config::default());
        let mut s = connect(running.local_addr());
        for id in 1..=8 {
            s.write_all(&frame(id, &[id as u8; 3])).unwrap();
            assert_eq!(read_frame(&mut s).unwrap(), (id + 100, vec![id as u8; 3]), "{model:?}: msgid {id}");
        }
        // Unknown msgids (no row, negative, beyond u16) get nothing; the next request is answered.
        for id in [9, -1, 70_000] {
            s.write_all(&frame(id, b"ignored")).unwrap();
        }
        s.write_all(&frame(4, b"after")).unwrap();
        assert_eq!(read_frame(&mut s).unwrap(), (104, b"after".to_vec()), "{model:?}");
        s.write_all(&frame(50, b"")).unwrap();
        let (id, body) = read_frame(&mut s).unwrap();
        assert_eq!((id, u64::from_le_bytes(body[..].try_into().unwrap())), (50, 3), "{model:?}: counted");
        drop(s);
        running.stop();
        running.wait().unwrap();
    }
}

#[test]
fn a_bad_msglen_closes_that_connection_with_nothing_written() {
    for model in [Model::Fused, Model::Pipeline] {
        let running = serve(model, Config::default());
        let mut bystander = connect(running.local_addr());
        for len in [-1i32, 65_528, i32::MAX] {
            let mut s = connect(running.local_addr());
            s.write_all(&frame(1, b"ok")).unwrap();
            assert_eq!(read_frame(&mut s).unwrap().0, 101);
            let mut bad = 2i32.to_le_bytes().to_vec();
            bad.extend_from_slice(&len.to_le_bytes());
            s.write_all(&bad).unwrap();
            assert!(
                read_to_close(&mut s).is_empty(),
                "{model:?}: msglen {len}: bytes written before the close"
            );
            bystander.write_all(&frame(3, b"still here")).unwrap();
            assert_eq!(read_frame(&mut bystander).unwrap(), (103, b"still here".to_vec()), "{model:?}");
        }
        // The largest body the original allows passes.
        let mut s = connect(running.local_addr());
        s.write_all(&frame(5, &vec![9u8; 65_527])).unwrap();
        assert_eq!(read_frame(&mut s).unwrap(), (105, vec![9u8; 65_527]));
        drop((s, bystander));
        running.stop();
        running.wait().unwrap();
    }
}

#[test]
fn refusals_and_idle_closes_are_silent_on_the_lars_wire() {
    let cfg =
        Config { max_connections: 1, idle_timeout: Some(Duration::from_millis(300)), ..Config::default() };
    let running = serve(Model::Fused, cfg);
    let mut admitted = connect(running.local_addr());
    admitted.write_all(&frame(1, b"")).unwrap();
    read_frame(&mut admitted).unwrap();
    let mut refused = connect(running.local_addr());
    assert!(read_to_close(&mut refused).is_empty(), "a refusal writes nothing on the Lars wire");
    assert!(read_to_close(&mut admitted).is_empty(), "an idle close writes nothing on the Lars wire");
    running.stop();
    running.wait().unwrap();
}
