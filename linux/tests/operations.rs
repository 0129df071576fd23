//! What an operator touches: `--help`, the TOML config file and its precedence under flags,
//! invalid settings (exit status 2 with a message), and the Prometheus metrics endpoint.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use doorway_core::demo::kind::{ECHO, STATS};
use doorway_core::frame::ErrorCode;
use doorway_testkit::client::{Client, Frame};
use doorway_testkit::process::SpawnError;
use doorway_testkit::suite::{check_error_frame, raw_header};
use doorway_testkit::ServerProcess;

use common::{doorway_bin, spawn, stat, stats, TIMEOUT};

/// Every setting of the operator contract (docs/ARCHITECTURE.md#operator-contract).
const FLAGS: &[&str] = &[
    "--config",
    "--listen",
    "--model",
    "--shards",
    "--max-connections",
    "--max-body",
    "--idle-timeout",
    "--write-timeout",
    "--high-watermark",
    "--low-watermark",
    "--drain-timeout",
    "--linger",
    "--metrics-addr",
    "--log-level",
    "--on-panic",
    "--memory-limit",
    // The binary's own flag: UDP endpoints (not a setting of the file).
    "--udp",
    // The durations' old names, still accepted.
    "--idle-timeout-ms",
    "--write-timeout-ms",
    "--drain-timeout-ms",
    "--linger-ms",
];

#[test]
fn help_lists_every_setting() {
    let out = Command::new(doorway_bin()).arg("--help").output().unwrap();
    assert!(out.status.success(), "doorway --help: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in FLAGS {
        assert!(text.contains(flag), "--help does not mention {flag}:\n{text}");
    }
    for word in ["pipeline", "fused"] {
        assert!(text.contains(word), "--help does not name the model {word}:\n{text}");
    }
    for units in ["<DURATION>", "<BYTES>", "ms, s, m (minutes), h", "KiB, MiB, GiB"] {
        assert!(text.contains(units), "--help does not give the units {units}:\n{text}");
    }
}

/// `--udp ADDR`, repeated: one `doorway udp on <addr>` line per endpoint after the listening line,
/// each endpoint answering datagrams while TCP still works.
#[test]
fn udp_flag_serves_endpoints_beside_tcp() {
    let server = spawn(&["--udp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    while lines.len() < 2 && std::time::Instant::now() < deadline {
        lines.extend(server.stdout_lines());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let endpoints: Vec<SocketAddr> = lines
        .iter()
        .map(|l| l.strip_prefix("doorway udp on ").unwrap_or_else(|| panic!("{l:?}")).parse().unwrap())
        .collect();
    assert_eq!(endpoints.len(), 2, "{lines:?}");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    for (seq, to) in endpoints.iter().enumerate() {
        let mut datagram = vec![0u8; 14];
        doorway_core::frame::encode(&mut datagram, ECHO, seq as u32, b"hi").unwrap();
        socket.send_to(&datagram, to).unwrap();
        let mut reply = [0u8; 64];
        let (n, from) = socket.recv_from(&mut reply).unwrap();
        assert_eq!((&reply[..n], from), (&datagram[..], *to));
    }
    let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
    assert_eq!(c.request(ECHO, 1, b"tcp", TIMEOUT).unwrap(), Frame::new(ECHO, 1, b"tcp"));
}

/// A file in a per-test temporary directory.
fn temp_file(test: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("doorway-tests-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("doorway.toml");
    std::fs::write(&path, contents).unwrap();
    path
}

fn echo_len_accepted(addr: SocketAddr, len: usize) -> bool {
    let mut c = Client::connect(addr, TIMEOUT).unwrap();
    let body = vec![1u8; len];
    let f = c.request(ECHO, 1, &body, TIMEOUT).expect("a reply");
    if f == Frame::new(ECHO, 1, &body) {
        return true;
    }
    check_error_frame(&f, ErrorCode::FrameTooLarge, 1).unwrap_or_else(|e| panic!("{e}"));
    false
}

#[test]
fn config_file_and_flags_win() {
    let path = temp_file(
        "config",
        "# doorway settings\nlisten = \"127.0.0.1:0\"\nmodel = \"fused\"\nshards = 2\nmax-body = 100\nidle-timeout-ms = 30000\n",
    );
    let path_str = path.to_str().unwrap();
    // The file alone.
    let server = ServerProcess::spawn(doorway_bin(), &["--config", path_str], TIMEOUT).unwrap();
    assert_eq!((server.model(), server.shards()), ("fused", 2));
    assert!(echo_len_accepted(server.addr(), 100));
    assert!(!echo_len_accepted(server.addr(), 101), "max-body from the file is not applied");
    drop(server);
    // Flags win over the file.
    let server = spawn(&["--config", path_str, "--model", "pipeline", "--max-body", "200"]);
    assert_eq!((server.model(), server.shards()), ("pipeline", 2));
    assert!(echo_len_accepted(server.addr(), 200));
    assert!(!echo_len_accepted(server.addr(), 201), "--max-body does not override the file");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The idle timeout, given in the new form, the old `-ms` form and the file, closes a silent
/// connection with ERROR 4; `off` does not.
#[test]
fn idle_timeout_takes_units_old_ms_flags_and_off() {
    let path = temp_file("durations", "idle-timeout = \"300ms\"\nlinger = \"1s\"\n");
    let servers = [
        spawn(&["--idle-timeout", "300ms", "--drain-timeout", "2s"]),
        spawn(&["--idle-timeout-ms", "300", "--drain-timeout-ms", "2000"]),
        spawn(&["--config", path.to_str().unwrap()]),
    ];
    let off = spawn(&["--idle-timeout", "off"]);
    let mut silent = Client::connect(off.addr(), TIMEOUT).unwrap();
    for server in &servers {
        let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
        let f = c.recv(TIMEOUT).unwrap_or_else(|e| panic!("no ERROR 4 from {:?}: {e}", server.addr()));
        check_error_frame(&f, ErrorCode::IdleTimeout, 0).unwrap_or_else(|e| panic!("{e}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(silent.request(ECHO, 3, b"x", TIMEOUT).unwrap(), Frame::new(ECHO, 3, b"x"));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn expect_exit_2(args: &[&str], what: &str) {
    match ServerProcess::spawn(doorway_bin(), args, TIMEOUT) {
        Ok(server) => panic!("{what}: doorway {args:?} started on {}", server.addr()),
        Err(SpawnError::Exited { status, stderr }) => {
            assert_eq!(status.code(), Some(2), "{what}: doorway {args:?} exited {status}; stderr: {stderr}");
            assert!(!stderr.trim().is_empty(), "{what}: no message on stderr");
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn invalid_settings_exit_2_with_a_message() {
    let l = ["--listen", "127.0.0.1:0"];
    expect_exit_2(&[&l[..], &["--model", "bogus"]].concat(), "unknown model");
    expect_exit_2(&[&l[..], &["--shards", "0"]].concat(), "zero shards");
    expect_exit_2(&[&l[..], &["--max-body", "lots"]].concat(), "non-numeric max-body");
    expect_exit_2(&[&l[..], &["--low-watermark", "10", "--high-watermark", "10"]].concat(), "low >= high");
    expect_exit_2(&[&l[..], &["--listen", "not-an-address"]].concat(), "bad listen address");
    expect_exit_2(&[&l[..], &["--no-such-flag"]].concat(), "unknown flag");
    expect_exit_2(&[&l[..], &["--idle-timeout", "5 parsecs"]].concat(), "a duration without a known unit");
    expect_exit_2(&[&l[..], &["--write-timeout", "0"]].concat(), "a zero write timeout");
    expect_exit_2(&[&l[..], &["--config", "/nonexistent/doorway.toml"]].concat(), "missing config file");
    let unknown = temp_file("unknown-key", "listen = \"127.0.0.1:0\"\nbogus-setting = 1\n");
    expect_exit_2(&["--config", unknown.to_str().unwrap()], "unknown key in the file");
    let syntax = temp_file("syntax", "listen = \n");
    expect_exit_2(&["--config", syntax.to_str().unwrap()], "TOML syntax error");
    let range = temp_file("range", "listen = \"127.0.0.1:0\"\nmax-connections = 0\n");
    expect_exit_2(&["--config", range.to_str().unwrap()], "out-of-range value in the file");
    for p in [unknown, syntax, range] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

/// `GET /metrics` over HTTP/1.1; returns (status line, headers, body).
fn get_metrics(addr: SocketAddr) -> (String, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("metrics are UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), body.to_string())
}

/// The value of the sample `name` (with its labels, e.g. `x{code="2"}`) in Prometheus text.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let server = spawn(&["--metrics-addr", "127.0.0.1:0", "--max-body", "1000"]);
    let metrics = server.metrics_addr().expect("a metrics line");
    // Traffic: three ECHOs, an unknown kind, bad flags, an oversized header.
    let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
    for seq in 0..3 {
        assert_eq!(c.request(ECHO, seq, b"m", TIMEOUT).unwrap(), Frame::new(ECHO, seq, b"m"));
    }
    let f = c.request(1234, 9, b"", TIMEOUT).unwrap();
    check_error_frame(&f, ErrorCode::UnknownKind, 9).unwrap();
    for (header, code) in [
        (raw_header(0, ECHO, 1, 5), ErrorCode::BadFlags),
        (raw_header(5000, ECHO, 0, 6), ErrorCode::FrameTooLarge),
    ] {
        let mut bad = Client::connect(server.addr(), TIMEOUT).unwrap();
        bad.send_raw(&header).unwrap();
        let f = bad.recv(TIMEOUT).unwrap();
        check_error_frame(&f, code, header[11] as u32).unwrap();
    }
    let s = stats(&server);
    let (status, headers, body) = get_metrics(metrics);
    assert!(status.starts_with("HTTP/1.") && status.contains(" 200"), "{status}");
    assert!(headers.contains("content-type: text/plain"), "{headers}");
    let open =
        sample(&body, "doorway_connections_open").unwrap_or_else(|| panic!("no connections_open:\n{body}"));
    assert!(open >= 1.0, "doorway_connections_open = {open} with a connection open");
    for name in [
        "doorway_connections_accepted_total",
        "doorway_connections_refused_total",
        "doorway_frames_in_total",
        "doorway_frames_out_total",
        "doorway_bytes_in_total",
        "doorway_bytes_out_total",
    ] {
        let v = sample(&body, name).unwrap_or_else(|| panic!("no sample {name} in:\n{body}"));
        // The metrics were read after STATS, so every counter is at least what STATS said.
        let key = name.trim_start_matches("doorway_").trim_end_matches("_total");
        assert!(v >= stat(&s, key) as f64, "{name} = {v} < STATS {key} = {}", stat(&s, key));
    }
    for code in 1..=7 {
        let name = format!("doorway_errors_sent_total{{code=\"{code}\"}}");
        let v = sample(&body, &name).unwrap_or_else(|| panic!("no sample {name} in:\n{body}"));
        let want = if (1..=3).contains(&code) { 1.0 } else { 0.0 };
        assert!(v >= want, "{name} = {v}");
    }
    assert!(sample(&body, "doorway_connections_accepted_total").unwrap() >= 4.0);
    assert!(sample(&body, "doorway_frames_in_total").unwrap() >= 5.0);
    assert!(
        body.lines().any(|l| l.starts_with("doorway_queue_high_water{queue=\"")),
        "no doorway_queue_high_water{{queue=...}} sample in:\n{body}"
    );
    // Every sample line is `name[{labels}] value`.
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
    }
    // STATS still answers on the served port.
    assert_eq!(c.request(STATS, 77, b"", TIMEOUT).unwrap().seq(), 77);
}
