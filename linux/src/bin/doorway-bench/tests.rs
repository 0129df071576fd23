//! The load generator against small in-process servers on 127.0.0.1:0: a correct one (a byte
//! echo is a valid ECHO server), one that corrupts a reply, one that answers ERROR, one that never
//! answers and one that hangs up. Each run is short and bounded; the assertions are on what the
//! report says. UDP mode runs against a real doorway server (the library, in process) and against
//! small datagram servers that corrupt, duplicate or drop chosen replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use doorway_core::frame::{self, ErrorCode, Header, HEADER_LEN};

use super::*;

/// Starts a server thread that hands every accepted connection to `serve` on its own thread.
fn server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn byte_echo(mut stream: TcpStream) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Reads whole frames and hands each to `reply`, which writes what it wants.
fn framewise(mut stream: TcpStream, mut reply: impl FnMut(&mut TcpStream, Header, &[u8]) -> bool) {
    let decoder = frame::Decoder::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        let mut pos = 0;
        while let Ok(Some(frame)) = decoder.decode(&buf[pos..len]) {
            pos += frame.wire_len();
            if !reply(&mut stream, frame.header, frame.body) {
                return;
            }
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
    }
}

fn corrupt_seq_5(stream: TcpStream) {
    framewise(stream, |s, header, body| {
        let mut out = vec![0u8; HEADER_LEN + body.len()];
        frame::encode(&mut out, header.kind, header.seq, body).unwrap();
        if header.seq == 5 {
            *out.last_mut().unwrap() ^= 0xff;
        }
        s.write_all(&out).is_ok()
    });
}

fn unknown_kind(stream: TcpStream) {
    framewise(stream, |s, header, _| {
        let mut out = [0u8; 64];
        let n = frame::encode_error(&mut out, ErrorCode::UnknownKind, header.seq).unwrap();
        s.write_all(&out[..n]).is_ok()
    });
}

fn silent(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn hang_up(stream: TcpStream) {
    drop(stream);
}

fn config(addr: SocketAddr, extra: &[&str]) -> Config {
    let mut argv = vec!["doorway-bench".to_string(), "--addr".into(), addr.to_string()];
    argv.extend(extra.iter().map(|s| s.to_string()));
    args::Args::try_parse_from(argv).unwrap().validate().unwrap()
}

#[test]
fn steady_load_against_a_correct_server() {
    let addr = server(byte_echo);
    let report =
        run(config(addr, &["--connections", "8", "--in-flight", "4", "--duration", "0.3", "--threads", "2"]));
    assert_eq!(report.stats.errors, Errors::default());
    assert!(report.stats.messages > 1000, "only {} replies in 0.3 s", report.stats.messages);
    assert!(report.stats.total >= report.stats.messages);
    assert_eq!(report.stats.latency.len(), report.stats.messages);
    let json = report.json();
    assert!(json.starts_with("{\"mode\":\"load\",\"connections\":8,\"in_flight\":4,"), "{json}");
    assert!(json.contains("\"errors\":0,"), "{json}");
}

#[test]
fn message_count_and_large_bodies() {
    let addr = server(byte_echo);
    let report = run(config(
        addr,
        &["--connections", "3", "--in-flight", "4", "--body-size", "20000", "--messages", "301"],
    ));
    assert_eq!(report.stats.errors, Errors::default());
    assert_eq!(report.stats.total, 301);
    assert_eq!(report.stats.messages, 301);
}

#[test]
fn tiny_bodies_are_verified_too() {
    let addr = server(byte_echo);
    for body in ["0", "3"] {
        let report = run(config(addr, &["--in-flight", "2", "--body-size", body, "--messages", "50"]));
        assert_eq!((report.stats.total, report.stats.errors.total()), (50, 0));
    }
}

#[test]
fn corrupted_body_is_a_mismatch() {
    let addr = server(corrupt_seq_5);
    let report = run(config(addr, &["--connections", "2", "--messages", "40", "--timeout", "5"]));
    // Each connection's fifth reply is corrupt; that connection stops there.
    assert_eq!(report.stats.errors.mismatch, 2);
    assert_eq!(report.stats.total, 8);
}

#[test]
fn error_frames_are_counted_by_code() {
    let addr = server(unknown_kind);
    let report = run(config(addr, &["--connections", "3", "--duration", "0.2"]));
    assert_eq!(report.stats.errors.error_frames[2], 3);
    assert_eq!(report.stats.total, 0);
}

#[test]
fn silent_server_is_bounded_and_times_out() {
    let addr = server(silent);
    let started = Instant::now();
    let report = run(config(addr, &["--connections", "2", "--in-flight", "3", "--duration", "0.2"]));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(report.stats.errors.timeout, 6);
    assert_eq!(report.stats.total, 0);
}

#[test]
fn hang_up_is_an_unexpected_close() {
    let addr = server(hang_up);
    let report = run(config(addr, &["--connections", "2", "--duration", "0.2"]));
    assert_eq!(report.stats.errors.closed + report.stats.errors.io, 2);
}

#[test]
fn refused_connect_is_a_connect_error() {
    // Bind then drop: nothing listens on this port any more.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let report = run(config(addr, &["--connections", "2", "--duration", "0.1"]));
    assert_eq!(report.stats.errors.connect, 2);
}

#[test]
fn connect_rate_mode() {
    let addr = server(byte_echo);
    let report = run(config(addr, &["--connect-rate", "--connections", "2", "--duration", "0.3"]));
    assert_eq!(report.stats.errors, Errors::default());
    assert!(report.stats.messages > 20, "only {} connections", report.stats.messages);
    assert!(report.json().starts_with("{\"mode\":\"connect-rate\""));
}

#[test]
fn idle_connections_are_opened_and_checked() {
    let addr = server(byte_echo);
    let report = run(config(addr, &["--idle", "50", "--duration", "0.1"]));
    assert_eq!(report.idle_open, 50);
    assert_eq!(report.stats.errors, Errors::default());
}

#[test]
fn server_cpu_is_sampled_from_proc() {
    let addr = server(byte_echo);
    // The "server" is this test process itself, so its CPU time grows during the window.
    let pid = std::process::id().to_string();
    let report = run(config(addr, &["--connections", "4", "--duration", "0.3", "--server-pid", &pid]));
    assert!(report.server_rss_kib.unwrap() > 0);
    assert!(report.server_cpu_ns.is_some());
    assert!(report.server_wait_ns.is_some());
    assert!(report.json().contains("\"server_cpu_ns_per_msg\":"));
    assert!(report.json().contains("\"server_wait_ns\":"));
}

#[test]
fn bad_arguments_are_refused() {
    let parse = |extra: &[&str]| {
        let mut argv = vec!["doorway-bench"];
        argv.extend(extra);
        args::Args::try_parse_from(argv).map_err(|e| e.to_string()).and_then(|a| a.validate().map(|_| ()))
    };
    assert!(parse(&["--connections", "0"]).is_err());
    assert!(parse(&["--in-flight", "0"]).is_err());
    assert!(parse(&["--duration", "-1"]).is_err());
    assert!(parse(&["--duration", "1", "--messages", "5"]).is_err());
    assert!(parse(&["--messages", "5"]).is_ok());
    assert!(parse(&["--rate", "1000"]).is_err(), "--rate needs --udp");
    assert!(parse(&["--udp", "--connect-rate"]).is_err());
    assert!(parse(&["--udp", "--idle", "5"]).is_err());
    assert!(parse(&["--udp", "--rate", "0"]).is_err());
    assert!(parse(&["--udp", "--rate", "1000", "--messages", "5"]).is_err());
    assert!(parse(&["--udp", "--reply-timeout", "0"]).is_err());
    assert!(parse(&["--udp", "--messages", "9000000000", "--connections", "1"]).is_err());
    assert!(parse(&["--udp", "--rate", "1000", "--duration", "1"]).is_ok());
}

/// A doorway server (the library, in process) with one UDP endpoint and no TCP listener.
fn udp_doorway() -> (doorway_linux::Running, SocketAddr) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running =
        doorway_linux::Server::builder().without_tcp().udp(any).start(doorway_core::demo::Demo).unwrap();
    let addr = running.udp_addrs()[0];
    (running, addr)
}

#[test]
fn udp_closed_loop_against_doorway_loses_nothing() {
    let (running, addr) = udp_doorway();
    let report = run(config(
        addr,
        &["--udp", "--connections", "3", "--in-flight", "8", "--messages", "30001", "--threads", "2"],
    ));
    assert_eq!(report.stats.errors, Errors::default());
    assert_eq!((report.stats.total, report.stats.messages), (30_001, 30_001));
    let d = report.stats.datagrams;
    assert_eq!((d.sent, d.lost, d.late, report.failures()), (30_001, 0, 0, 0));
    assert_eq!(report.stats.latency.len(), 30_001);
    let json = report.json();
    assert!(json.starts_with("{\"mode\":\"udp\",\"connections\":3,\"in_flight\":8,"), "{json}");
    assert!(json.contains("\"errors\":0,") && json.contains("\"lost\":0,"), "{json}");
    running.stop();
    running.wait().unwrap();
}

#[test]
fn udp_open_loop_sends_at_its_rate_and_reports_the_loss_rate() {
    let (running, addr) = udp_doorway();
    let report = run(config(
        addr,
        &["--udp", "--connections", "2", "--rate", "20000", "--duration", "0.5", "--warmup", "0.1"],
    ));
    let d = report.stats.datagrams;
    // 20,000/s for 0.5 s inside the window: 10,000 requests, give or take the edges.
    assert!((9_900..=10_100).contains(&d.sent), "{d:?}");
    assert!(d.lost <= d.sent && report.stats.messages == d.sent - d.lost, "{d:?}");
    assert_eq!(report.stats.errors, Errors::default());
    // A loss is the measurement here, not a failure.
    assert_eq!(report.failures(), 0);
    let json = report.json();
    assert!(json.starts_with("{\"mode\":\"udp-open\""), "{json}");
    assert!(json.contains("\"loss_rate\":") && json.contains("\"offered_per_s\":"), "{json}");
    // The warm-up's 2,000 requests are sent too, and the clients' drop counters cover them: their
    // share is of every request sent, never above 100 % (it was of the window's alone: 120 % here).
    assert!(d.sent_all >= d.sent + 1_800, "{d:?}");
    let mut report = report;
    report.stats.datagrams.client_drops = d.sent_all;
    let json = report.json();
    assert!(json.contains("\"client_drop_rate\":1.000000"), "{json}");
    running.stop();
    running.wait().unwrap();
}

/// A datagram server on its own thread: `reply` maps each request to the datagrams sent back.
fn udp_server(reply: fn(Header, &[u8]) -> Vec<Vec<u8>>) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(header) = Header::parse(&buf[..n]) else { continue };
            for out in reply(header, &buf[..n]) {
                let _ = socket.send_to(&out, from);
            }
        }
    });
    addr
}

#[test]
fn udp_silent_server_loses_every_request_within_the_reply_timeout() {
    let addr = udp_server(|_, _| Vec::new());
    let started = Instant::now();
    let report =
        run(config(addr, &["--udp", "--in-flight", "2", "--messages", "6", "--reply-timeout", "0.1"]));
    // Three rounds of two lanes, 0.1 s each, and no retransmission: bounded, every request lost.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let d = report.stats.datagrams;
    assert_eq!((d.sent, d.lost, report.stats.total), (6, 6, 0));
    assert_eq!(report.failures(), 6, "a closed loop may lose nothing");
}

#[test]
fn udp_wrong_duplicate_and_missing_replies_are_told_apart() {
    // seq 3: a corrupt body; seq 5: answered twice; seq 7: never answered.
    let addr = udp_server(|header, datagram| {
        let mut out = datagram.to_vec();
        match header.seq {
            3 => {
                *out.last_mut().unwrap() ^= 0xff;
                vec![out]
            }
            5 => vec![out.clone(), out],
            7 => Vec::new(),
            _ => vec![out],
        }
    });
    let report = run(config(
        addr,
        &["--udp", "--in-flight", "4", "--messages", "40", "--reply-timeout", "0.2", "--timeout", "5"],
    ));
    let (e, d) = (report.stats.errors, report.stats.datagrams);
    assert_eq!((e.mismatch, d.late, d.lost, d.sent), (1, 1, 1, 40), "{e:?} {d:?}");
    assert_eq!(report.stats.total, 38);
    assert_eq!(report.failures(), 2);
}

#[test]
fn request_template_round_trip() {
    let request = Request::new(10);
    let mut out = vec![0u8; request.frame.len()];
    request.write(&mut out, 0xdead_beef);
    let frame = frame::Decoder::default().decode(&out).unwrap().unwrap();
    assert_eq!(
        (frame.header.kind, frame.header.seq, frame.body.len()),
        (doorway_core::demo::kind::ECHO, 0xdead_beef, 10)
    );
    assert!(request.matches(frame.body, 0xdead_beef));
    assert!(!request.matches(frame.body, 1));
}

#[test]
fn core_noise_helpers_read_proc() {
    assert!(report::core_busy_ns(0).is_some());
    assert!(report::process_cpu_ns("self").is_some());
    // A process pinned with taskset reports its one CPU; an unpinned one (on 2+ CPUs) none.
    let Ok(mut child) = std::process::Command::new("taskset").args(["-c", "0", "sleep", "5"]).spawn() else {
        return; // No taskset here: nothing to check.
    };
    std::thread::sleep(Duration::from_millis(200));
    let pinned = report::pinned_cpu(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(pinned, Some(0));
    let first = report::CoreSample::read(Some((std::process::id(), 0)), Some(0));
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_millis(50) {}
    let last = report::CoreSample::read(Some((std::process::id(), 0)), Some(0));
    let (server, client) = report::CoreSample::foreign(&first, &last);
    assert!(server.is_some() && client.is_some());
}
