//! Connection lifecycle rules that need the server's configuration or its process to observe:
//! backpressure (reading paused above the high watermark, resumed below the low one, the idle
//! clock paused meanwhile), the linger after a close, EMFILE without a busy loop, counters that
//! are global across shards, and a drain bounded by `--drain-timeout-ms` even when a client never
//! reads.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use doorway_core::demo::kind::ECHO;
use doorway_core::frame::kind::{PING, PONG};
use doorway_core::frame::ErrorCode;
use doorway_testkit::client::{frame_bytes, Client, Frame, RecvError};
use doorway_testkit::suite::{check_error_frame, raw_header};

use common::{args, each_model, name, spawn, stat, stats, wait_open_at_most, MODELS, TIMEOUT};

#[test]
fn backpressure_pauses_reading_and_the_idle_clock_then_resumes() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let extra = [
            "--high-watermark",
            "65536",
            "--low-watermark",
            "16384",
            "--write-timeout-ms",
            "20000",
            "--idle-timeout-ms",
            "1000",
        ];
        let server = spawn(&args(model, &extra));
        let base_rss = server.rss_kib().unwrap();
        let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
        c.set_recv_buffer(64 * 1024).unwrap();
        let body = vec![0x5Au8; 4096];
        let n = 8000u32; // 32 MiB of requests, far beyond every kernel buffer on the path.
        let written = Arc::new(AtomicUsize::new(0));
        let mut stream = c.stream().try_clone().unwrap();
        let counter = Arc::clone(&written);
        let frame_len = frame_bytes(ECHO, 0, &body).len();
        let writer = thread::spawn({
            let body = body.clone();
            move || -> std::io::Result<()> {
                for seq in 0..n {
                    stream.write_all(&frame_bytes(ECHO, seq, &body))?;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        });
        // Read nothing for two and a half idle timeouts: the server must stop reading us, and must not
        // count that time as idle.
        thread::sleep(Duration::from_millis(2500));
        let sent_while_paused = written.load(Ordering::Relaxed);
        let paused_rss = server.rss_kib().unwrap();
        assert!(
            sent_while_paused < n as usize,
            "{ctx}: the server read all {n} requests ({} MiB) while its replies were not read",
            (n as usize * frame_len) >> 20
        );
        for seq in 0..n {
            match c.recv(TIMEOUT) {
                Ok(f) if f.kind() == ECHO && f.seq() == seq && f.body == body => {}
                Ok(f) => panic!("{ctx}: expected ECHO {seq}, got {f:?}"),
                Err(e) => panic!("{ctx}: waiting for ECHO {seq} of {n}: {e}"),
            }
        }
        writer.join().unwrap().unwrap_or_else(|e| panic!("{ctx}: writer: {e}"));
        assert_eq!(c.request(PING, 1, b"", TIMEOUT).unwrap(), Frame::new(PONG, 1, b""));
        println!(
            "{ctx}: {sent_while_paused} of {n} requests accepted while paused; RSS {base_rss} -> {paused_rss} KiB"
        );
        assert!(paused_rss < base_rss + 16 * 1024, "{ctx}: RSS {base_rss} -> {paused_rss} KiB while paused");
    });
}

#[test]
fn linger_ends_a_closing_connection_the_client_keeps_open() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let server = spawn(&args(model, &["--linger-ms", "500"]));
        let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
        c.send_raw(&raw_header(0, ECHO, 1, 3)).unwrap();
        let f = c.recv(TIMEOUT).unwrap();
        check_error_frame(&f, ErrorCode::BadFlags, 3).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let start = Instant::now();
        match c.recv(TIMEOUT) {
            Err(RecvError::Closed { .. }) => {}
            other => panic!("{ctx}: expected the close after ERROR 3, got {other:?}"),
        }
        // Keep the socket open and keep sending: the server discards it until the linger ends,
        // then drops the connection (our writes start failing).
        let mut stream = c.stream().try_clone().unwrap();
        let failed_after = loop {
            if stream.write_all(&[0u8; 100]).is_err() {
                break start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{ctx}: linger never ended");
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            failed_after >= Duration::from_millis(250),
            "{ctx}: linger ended after {failed_after:?} (500 ms set)"
        );
        assert_eq!(
            wait_open_at_most(&server, 1, TIMEOUT),
            1,
            "{ctx}: the lingering connection is still counted"
        );
        println!("{ctx}: linger 500 ms ended after {failed_after:?}");
    });
}

#[test]
fn emfile_refuses_without_a_busy_loop() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let mut server = spawn(model);
        let base_fds = server.fd_count().unwrap() as u64;
        server.set_nofile_limit(base_fds + 16).unwrap();
        let mut conns = connect_and_echo(server.addr(), 40, b"fd?");
        let (served, closed) = served_or_refused(&mut conns, b"fd?", true, &ctx, "beyond the fd limit");
        let cpu_before = server.cpu_time().unwrap();
        thread::sleep(Duration::from_secs(1));
        let cpu = server.cpu_time().unwrap() - cpu_before;
        println!(
            "{ctx}: fd limit {}: {served} served, {closed} closed; server CPU {cpu:?} over 1 s",
            base_fds + 16
        );
        assert!(served >= 4, "{ctx}: only {served} connections served under the fd limit");
        assert!(closed >= 10, "{ctx}: only {closed} connections turned away beyond the fd limit");
        assert!(
            cpu < Duration::from_millis(300),
            "{ctx}: {cpu:?} of CPU in 1 s at the fd limit: a busy loop"
        );
        drop(conns);
        // Once fds are free again, new connections are served.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ok = Client::connect(server.addr(), TIMEOUT)
                .ok()
                .and_then(|mut c| c.request(ECHO, 1, b"again", Duration::from_secs(1)).ok())
                .is_some_and(|f| f == Frame::new(ECHO, 1, b"again"));
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{ctx}: not serving again after fds were released");
            thread::sleep(Duration::from_millis(50));
        }
        assert!(server.is_running(), "{ctx}: server died at the fd limit:\n{}", server.stderr_text());
    });
}

#[test]
fn counters_are_global_across_shards() {
    each_model(
        &[&["--model", "fused", "--shards", "2"][..], &["--model", "pipeline", "--shards", "2"]],
        |model| {
            let ctx = name(model);
            let server = spawn(model);
            let mut conns: Vec<Client> = (0..20)
                .map(|i| {
                    let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
                    assert_eq!(c.request(ECHO, i, b"x", TIMEOUT).unwrap(), Frame::new(ECHO, i, b"x"));
                    c
                })
                .collect();
            for (i, c) in conns.iter_mut().enumerate() {
                let f = c.request(doorway_core::demo::kind::STATS, 1, b"", TIMEOUT).unwrap();
                let s = doorway_testkit::json::parse_int_object(&f.body).unwrap();
                let open = stat(&s, "connections_open");
                assert!(open >= 20, "{ctx}: STATS on connection {i} says connections_open = {open} of 20");
                assert!(stat(&s, "frames_in") >= 20 + i as i128, "{ctx}: frames_in not global: {s:?}");
            }
            drop(conns);
            assert_eq!(wait_open_at_most(&server, 1, TIMEOUT), 1, "{ctx}");
            assert!(stat(&stats(&server), "connections_accepted") >= 21, "{ctx}");
        },
    );
}

#[test]
fn drain_timeout_bounds_shutdown_beside_a_client_that_never_reads() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let extra = [
            "--drain-timeout-ms",
            "1000",
            "--high-watermark",
            "65536",
            "--low-watermark",
            "16384",
            "--write-timeout-ms",
            "60000",
        ];
        let mut server = spawn(&args(model, &extra));
        let mut polite = Client::connect(server.addr(), TIMEOUT).unwrap();
        assert_eq!(polite.request(ECHO, 1, b"hi", TIMEOUT).unwrap(), Frame::new(ECHO, 1, b"hi"));
        let hog = Client::connect(server.addr(), TIMEOUT).unwrap();
        hog.set_recv_buffer(4096).unwrap();
        let mut stream = hog.stream().try_clone().unwrap();
        stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        let flood = thread::spawn(move || {
            let body = vec![1u8; 8192];
            for seq in 0..1000u32 {
                if stream.write_all(&frame_bytes(ECHO, seq, &body)).is_err() {
                    break;
                }
            }
        });
        thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        server.sigterm().unwrap();
        let f = polite.recv(TIMEOUT).unwrap_or_else(|e| panic!("{ctx}: polite client: {e}"));
        check_error_frame(&f, ErrorCode::ShuttingDown, 0).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let status = server.wait_timeout(Duration::from_secs(5)).unwrap();
        let took = start.elapsed();
        let Some(status) = status else {
            panic!("{ctx}: still running 5 s after SIGTERM with a 1 s drain timeout")
        };
        assert_eq!(status.code(), Some(0), "{ctx}: exit status {status}\n{}", server.stderr_text());
        assert!(
            took < Duration::from_millis(1000 + 1500),
            "{ctx}: exit {took:?} after SIGTERM (drain timeout 1 s)"
        );
        flood.join().unwrap();
        drop(hog);
        println!("{ctx}: exited 0 {took:?} after SIGTERM beside a non-reading client");
    });
}

#[test]
fn max_connections_is_capped_by_the_fd_limit() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        // A 128-fd limit from the start: the default max-connections (10,000) cannot be honoured,
        // so the server must cap it and refuse the excess with ERROR 5, not run into EMFILE.
        // Admitted and lingering-refused connections must fit in the limit together: with a 10 s
        // linger, a refusal that waited for another one's descriptor would miss the 5 s deadline.
        let mut all = vec!["--listen", "127.0.0.1:0", "--log-level", "warn", "--linger-ms", "10000"];
        all.extend_from_slice(model);
        let server = doorway_testkit::ServerProcess::spawn_with_nofile(
            common::doorway_bin(),
            &all,
            TIMEOUT,
            Some(128),
        )
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let mut conns = connect_and_echo(server.addr(), 200, b"cap");
        let (served, refused) = served_or_refused(&mut conns, b"cap", false, &ctx, "under a 128-fd limit");
        println!("{ctx}: 128-fd limit: {served} served, {refused} refused with ERROR 5");
        assert!(served >= 32, "{ctx}: only {served} served under a 128-fd limit");
        assert!(
            refused >= 72,
            "{ctx}: only {refused} refused: the cap leaves no room for the server's own fds"
        );
        let mut server = server;
        assert!(server.is_running(), "{ctx}: server died at its fd cap:\n{}", server.stderr_text());
    });
}

/// Opens `n` connections and sends each an ECHO of `body` with its index as `seq`.
fn connect_and_echo(addr: std::net::SocketAddr, n: usize, body: &[u8]) -> Vec<Client> {
    let mut conns: Vec<Client> = (0..n).map(|_| Client::connect(addr, TIMEOUT).unwrap()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let _ = c.send(ECHO, i as u32, body);
    }
    conns
}

/// Reads each connection's answer within 5 s in all: its echo (served) or ERROR 5 with `seq` 0
/// (refused), or, where `closed_counts`, a close without a frame (refused on the spot by a
/// server out of descriptors). Anything else, a timeout included, fails the test.
fn served_or_refused(
    conns: &mut [Client],
    body: &[u8],
    closed_counts: bool,
    ctx: &str,
    what: &str,
) -> (usize, usize) {
    let (mut served, mut refused, n) = (0, 0, conns.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, c) in conns.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match c.recv(left) {
            Ok(f) if f == Frame::new(ECHO, i as u32, body) => served += 1,
            Ok(f) => {
                check_error_frame(&f, ErrorCode::ServerFull, 0)
                    .unwrap_or_else(|e| panic!("{ctx}: connection {i} {what}: {e}"));
                refused += 1;
            }
            Err(RecvError::Closed { .. }) if closed_counts => refused += 1,
            other => panic!("{ctx}: connection {i} of {n} {what}: {other:?} (neither served nor refused)"),
        }
    }
    (served, refused)
}
