//! Server behaviour beyond the conformance suite, in every thread model: broadcast to 200
//! connections, a non-reading client beside healthy ones, garbage and oversized input, the
//! connection limit, idle timeouts, and the SIGTERM/SIGINT drain.
//!
//! Each test spawns its own `doorway` per model and checks what clients observe (replies, their
//! order, ERROR codes, closes) plus what `/proc` says about the server (it stays alive, its memory
//! stays bounded). Every loop is bounded in count and in time.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use doorway_core::demo::kind::{BROADCAST, ECHO};
use doorway_core::frame::kind::{ERROR, PING, PONG};
use doorway_core::frame::ErrorCode;
use doorway_testkit::client::{frame_bytes, Client, CloseKind, Frame, RecvError};
use doorway_testkit::rng::Rng;
use doorway_testkit::suite::{check_error_frame, run_suite, Target};

use common::{args, each_model, name, percentile, spawn, stat, stats, wait_open_at_most, MODELS, TIMEOUT};

fn connect_served(addr: std::net::SocketAddr, tag: u32) -> Client {
    let mut c = Client::connect(addr, TIMEOUT).expect("connect");
    let reply = c.request(ECHO, tag, &tag.to_be_bytes(), TIMEOUT).expect("first ECHO");
    assert_eq!(reply, Frame::new(ECHO, tag, &tag.to_be_bytes()));
    c
}

fn expect(c: &mut Client, want: Frame, context: &str) {
    match c.recv(TIMEOUT) {
        Ok(got) => assert_eq!(got, want, "{context}"),
        Err(e) => panic!("{context}: waiting for {want:?}: {e}"),
    }
}

fn expect_error_then_close(c: &mut Client, code: ErrorCode, seq: u32, context: &str) {
    let frame =
        c.recv(TIMEOUT).unwrap_or_else(|e| panic!("{context}: waiting for ERROR {}: {e}", code.code()));
    if let Err(f) = check_error_frame(&frame, code, seq) {
        panic!("{context}: {f}");
    }
    if let Err(e) = c.expect_close(TIMEOUT) {
        panic!("{context}: after ERROR {}: {e}", code.code());
    }
}

#[test]
fn broadcast_to_200_connections() {
    each_model(MODELS, |model| {
        let server = spawn(model);
        let ctx = name(model);
        let mut conns: Vec<Client> = (0..200).map(|i| connect_served(server.addr(), i)).collect();
        // One broadcast reaches all 200, sender included.
        conns[0].send(BROADCAST, 5, b"hello 200").unwrap();
        for (i, c) in conns.iter_mut().enumerate() {
            expect(c, Frame::new(BROADCAST, 0, b"hello 200"), &format!("{ctx}: conn {i}"));
        }
        // Every connection broadcasts once: each receives every body exactly once.
        let start = Instant::now();
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(BROADCAST, i as u32, &(i as u32).to_be_bytes()).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let mut seen = BTreeSet::new();
            for _ in 0..200 {
                let f = c
                    .recv(TIMEOUT)
                    .unwrap_or_else(|e| panic!("{ctx}: conn {i} after {} copies: {e}", seen.len()));
                assert_eq!((f.kind(), f.seq(), f.body.len()), (BROADCAST, 0, 4), "{ctx}: conn {i}: {f:?}");
                let from = u32::from_be_bytes([f.body[0], f.body[1], f.body[2], f.body[3]]);
                assert!(seen.insert(from), "{ctx}: conn {i} got {from}'s broadcast twice");
            }
            c.send(PING, 9, b"").unwrap();
            expect(c, Frame::new(PONG, 9, b""), &format!("{ctx}: conn {i}: nothing after the 200 copies"));
        }
        println!("{ctx}: 200 x 200 broadcast delivered in {:?}", start.elapsed());
    });
}

/// Reads the hog's stream after its flood: in-order ECHO replies (a prefix of what it sent), maybe
/// ERROR 6, then the close. Returns (echoes read, whether ERROR 6 arrived).
fn drain_hog(hog: &mut Client, ctx: &str) -> (u32, bool) {
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "{ctx}: the hog's stream did not end");
        match hog.recv(TIMEOUT) {
            Ok(f) if f.kind() == ECHO => {
                assert_eq!(f.seq(), next, "{ctx}: hog replies out of order");
                next += 1;
            }
            Ok(f) => {
                if let Err(e) = check_error_frame(&f, ErrorCode::SlowConsumer, 0) {
                    panic!("{ctx}: hog: {e}");
                }
                match hog.expect_close(TIMEOUT) {
                    Ok(_) => return (next, true),
                    Err(e) => panic!("{ctx}: hog not closed after ERROR 6: {e}"),
                }
            }
            // Closed without ERROR 6 (best effort), possibly in the middle of a frame.
            Err(RecvError::Closed { .. }) => return (next, false),
            Err(e) => panic!("{ctx}: hog not closed: {e}"),
        }
    }
}

#[test]
fn slow_consumer_is_closed_and_healthy_clients_are_unaffected() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let extra = ["--high-watermark", "65536", "--low-watermark", "16384", "--write-timeout-ms", "500"];
        let server = spawn(&args(model, &extra));
        let base_rss = server.rss_kib().unwrap();
        let stop = AtomicBool::new(false);
        let mut hog = Client::connect(server.addr(), TIMEOUT).unwrap();
        hog.set_recv_buffer(4096).unwrap();
        let mut hog_stream = hog.stream().try_clone().unwrap();
        hog_stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let (latencies, hog_sent, max_rss, cut_after) = thread::scope(|s| {
            let healthy: Vec<_> = (0..3u32)
                .map(|h| {
                    let stop = &stop;
                    let addr = server.addr();
                    s.spawn(move || {
                        let mut c = connect_served(addr, h);
                        let mut lat = Vec::new();
                        let mut seq = 0u32;
                        while !stop.load(Ordering::Relaxed) && lat.len() < 100_000 {
                            let t = Instant::now();
                            let f = c.request(ECHO, seq, b"healthy", TIMEOUT).expect("healthy ECHO");
                            lat.push(t.elapsed());
                            assert_eq!(f, Frame::new(ECHO, seq, b"healthy"));
                            seq += 1;
                            thread::sleep(Duration::from_millis(2));
                        }
                        lat
                    })
                })
                .collect();
            // The hog floods 16 KiB ECHOs for up to 4 s and never reads.
            let flood = s.spawn(move || {
                let body = vec![7u8; 16 * 1024];
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut seq = 0u32;
                let mut pending = frame_bytes(ECHO, seq, &body);
                let mut written = 0;
                while Instant::now() < deadline {
                    match hog_stream.write(&pending[written..]) {
                        Ok(n) => {
                            written += n;
                            if written == pending.len() {
                                seq += 1;
                                pending = frame_bytes(ECHO, seq, &body);
                                written = 0;
                            }
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                seq
            });
            let mut max_rss = base_rss;
            let flood_start = Instant::now();
            let mut cut_after = None;
            while !flood.is_finished() {
                max_rss = max_rss.max(server.rss_kib().unwrap_or(0));
                if cut_after.is_none() && stat(&stats(&server), "errors_sent_6") >= 1 {
                    cut_after = Some(flood_start.elapsed());
                }
                thread::sleep(Duration::from_millis(50));
            }
            thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            for h in healthy {
                all.extend(h.join().expect("healthy client"));
            }
            (all, flood.join().expect("hog"), max_rss, cut_after)
        });
        let (echoes, got_error) = drain_hog(&mut hog, &ctx);
        let mut sorted = latencies;
        sorted.sort_unstable();
        let p99 = percentile(&sorted, 99.0);
        println!(
            "{ctx}: hog sent {hog_sent} x 16 KiB, got {echoes} back, ERROR 6: {got_error}; healthy: {} requests, \
             p50 {:?} p99 {:?} max {:?}; server RSS {base_rss} KiB -> max {max_rss} KiB",
            sorted.len(),
            percentile(&sorted, 50.0),
            p99,
            sorted.last().copied().unwrap_or_default()
        );
        assert!(echoes < hog_sent, "{ctx}: the hog was never cut off");
        assert!(sorted.len() >= 100, "{ctx}: healthy clients made only {} requests", sorted.len());
        // A server stalled by the hog would hold healthy replies for the write timeout (500 ms) or
        // longer; a loaded CI machine alone stays well below this.
        assert!(p99 < Duration::from_millis(250), "{ctx}: healthy p99 {p99:?} beside the hog");
        assert!(max_rss < base_rss + 64 * 1024, "{ctx}: RSS grew from {base_rss} to {max_rss} KiB");
        // The server decided SLOW_CONSUMER (counted even when the ERROR cannot be delivered) about
        // write_timeout after the hog's buffers filled, which takes milliseconds here.
        let Some(cut_after) = cut_after else { panic!("{ctx}: errors_sent_6 never counted the hog") };
        assert!(cut_after < Duration::from_millis(500 + 1500), "{ctx}: hog cut off only after {cut_after:?}");
        println!("{ctx}: SLOW_CONSUMER decided {cut_after:?} into the flood (write timeout 500 ms)");
    });
}

#[test]
fn garbage_and_oversized_input_harm_no_one() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let server = spawn(model);
        let seed = Rng::seed_from_time();
        println!("{ctx}: garbage seed {seed:#x}");
        let stop = AtomicBool::new(false);
        let healthy_requests = thread::scope(|s| {
            let healthy: Vec<_> = (0..2u32)
                .map(|h| {
                    let stop = &stop;
                    let addr = server.addr();
                    s.spawn(move || {
                        let mut c = connect_served(addr, h);
                        let mut seq = 0u32;
                        while !stop.load(Ordering::Relaxed) && seq < 1_000_000 {
                            let body = seq.to_be_bytes();
                            let f =
                                c.request(ECHO, seq, &body, TIMEOUT).expect("healthy ECHO beside garbage");
                            assert_eq!(f, Frame::new(ECHO, seq, &body));
                            seq += 1;
                        }
                        seq
                    })
                })
                .collect();
            let workers: Vec<_> = (0..6u64)
                .map(|w| {
                    let addr = server.addr();
                    s.spawn(move || {
                        let mut rng = Rng::new(seed ^ (w + 1).wrapping_mul(0x9E37_79B9));
                        for _ in 0..25 {
                            let Ok(mut c) = Client::connect(addr, TIMEOUT) else { continue };
                            let bytes = match rng.below(4) {
                                // Pure noise.
                                0 => {
                                    let len = rng.range(1..4096);
                                    rng.bytes(len)
                                }
                                // A plausible header with random fields, then noise.
                                1 => {
                                    // Any kind but BROADCAST, which would reach the healthy clients.
                                    let kind = rng.below(70) as u16;
                                    let kind = if kind == BROADCAST { ECHO } else { kind };
                                    let mut b = frame_bytes(kind, rng.next_u64() as u32, b"");
                                    b[..4].copy_from_slice(&(rng.below(200_000) as u32).to_be_bytes());
                                    let len = rng.range(0..2048);
                                    b.extend(rng.bytes(len));
                                    b
                                }
                                // An oversized header followed by a megabyte.
                                2 => {
                                    let mut b = frame_bytes(ECHO, 1, b"");
                                    b[..4].copy_from_slice(&(1u32 << 31).to_be_bytes());
                                    b.extend(vec![0xAB; 1 << 20]);
                                    b
                                }
                                // Valid frames with a bad one in the middle.
                                _ => {
                                    let mut b = frame_bytes(ECHO, 1, b"ok");
                                    b.extend(frame_bytes(PING, 2, b"ok"));
                                    let mut bad = frame_bytes(ECHO, 3, b"bad");
                                    bad[6] = 0x80;
                                    b.extend(bad);
                                    b
                                }
                            };
                            let _ = c.stream().set_write_timeout(Some(Duration::from_secs(2)));
                            let _ = c.send_raw(&bytes);
                            // Whatever arrives must be valid frames; ERRORs must be well formed.
                            let deadline = Instant::now() + Duration::from_millis(200);
                            while Instant::now() < deadline {
                                match c.recv(Duration::from_millis(100)) {
                                    Ok(f) if f.kind() == ERROR => {
                                        assert!(f.error().is_some(), "malformed ERROR {f:?}");
                                    }
                                    Ok(_) => {}
                                    Err(RecvError::Protocol(e)) => {
                                        panic!("server sent an invalid frame: {e}")
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("garbage worker");
            }
            stop.store(true, Ordering::Relaxed);
            healthy.into_iter().map(|h| h.join().expect("healthy client")).sum::<u32>()
        });
        let mut server = server;
        assert!(
            server.is_running(),
            "{ctx}: server died on garbage (seed {seed:#x}):\n{}",
            server.stderr_text()
        );
        assert!(healthy_requests > 100, "{ctx}: healthy clients made only {healthy_requests} requests");
        let open = wait_open_at_most(&server, 1, Duration::from_secs(10));
        assert_eq!(open, 1, "{ctx}: {open} connections still open after every client left");
        println!("{ctx}: {healthy_requests} healthy requests beside 150 garbage connections");
    });
}

#[test]
fn server_full_refuses_with_error_5() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let server = spawn(&args(model, &["--max-connections", "3"]));
        let before = stats(&server);
        let mut target = Target::new(server.addr());
        target.max_connections = Some(3);
        target.only = vec!["server_full".into()];
        let report = run_suite(&target);
        assert!(report.passed(), "{ctx}:\n{report}\n{}", server.stderr_text());
        thread::sleep(Duration::from_millis(100));
        let after = stats(&server);
        let refused = stat(&after, "connections_refused") - stat(&before, "connections_refused");
        let errors = stat(&after, "errors_sent_5") - stat(&before, "errors_sent_5");
        assert!(
            refused >= 3 && errors >= 3,
            "{ctx}: refused {refused}, ERROR 5 sent {errors}, expected 3 each"
        );
    });
}

#[test]
fn idle_timeout_closes_with_error_4() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let server = spawn(&args(model, &["--idle-timeout-ms", "300"]));
        let mut target = Target::new(server.addr());
        target.idle_timeout = Some(Duration::from_millis(300));
        target.only = vec!["idle_timeout".into()];
        let report = run_suite(&target);
        assert!(report.passed(), "{ctx}:\n{report}\n{}", server.stderr_text());
        let s = stats(&server);
        assert!(stat(&s, "errors_sent_4") >= 3, "{ctx}: errors_sent_4 = {}", stat(&s, "errors_sent_4"));
    });
}

/// Reads `n` in-order ECHO replies, then ERROR 7 seq 0, then the close.
fn expect_drained(c: &mut Client, n: u32, body: &[u8], ctx: &str) {
    for seq in 0..n {
        expect(c, Frame::new(ECHO, seq, body), &format!("{ctx}: reply {seq} of {n} during the drain"));
    }
    expect_error_then_close(c, ErrorCode::ShuttingDown, 0, &format!("{ctx}: after {n} replies"));
}

fn drain_run(model: &[&str], signal: libc::c_int) {
    let ctx = format!("{} (signal {signal})", name(model));
    let mut server = spawn(&args(model, &["--drain-timeout-ms", "3000"]));
    let addr = server.addr();
    let body = b"in flight before the signal";
    let per_client = 300u32;
    let mut busy: Vec<Client> = (0..40).map(|i| connect_served(addr, i)).collect();
    let mut idle: Vec<Client> = (0..5).map(|i| connect_served(addr, 100 + i)).collect();
    let mut partial = connect_served(addr, 200);
    let batch: Vec<u8> = (0..per_client).flat_map(|seq| frame_bytes(ECHO, seq, body)).collect();
    for c in &mut busy {
        c.send_raw(&batch).unwrap();
    }
    let mut bytes = frame_bytes(ECHO, 0, body);
    bytes.extend(&frame_bytes(ECHO, 1, body)[..6]);
    partial.send_raw(&bytes).unwrap();
    let signalled = Instant::now();
    server.signal(signal).unwrap();
    // A connection that arrives after the signal is refused or closed unserved.
    thread::sleep(Duration::from_millis(300));
    match Client::connect(addr, TIMEOUT) {
        Err(_) => {}
        Ok(mut late) => {
            let _ = late.send(ECHO, 1, b"late");
            match late.recv(TIMEOUT) {
                Err(RecvError::Closed { .. }) => {}
                Ok(f) if f.error().is_some_and(|(code, _)| code == ErrorCode::ShuttingDown.code()) => {}
                other => panic!("{ctx}: a connection after the signal got {other:?}"),
            }
        }
    }
    for (i, c) in busy.iter_mut().enumerate() {
        expect_drained(c, per_client, body, &format!("{ctx}: busy client {i}"));
    }
    for (i, c) in idle.iter_mut().enumerate() {
        expect_drained(c, 0, body, &format!("{ctx}: idle client {i}"));
    }
    expect_drained(&mut partial, 1, body, &format!("{ctx}: client with a partial frame"));
    let status = server.wait_timeout(Duration::from_secs(6)).unwrap();
    let took = signalled.elapsed();
    let Some(status) = status else { panic!("{ctx}: still running {took:?} after the signal") };
    assert_eq!(status.code(), Some(0), "{ctx}: exit status {status}\n{}", server.stderr_text());
    assert!(took < Duration::from_secs(5), "{ctx}: drain took {took:?} (drain timeout 3 s)");
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{ctx}: after exit: {e}"),
        Ok(_) => panic!("{ctx}: still accepting after exit"),
    }
    println!("{ctx}: drained {} requests and exited 0 in {took:?}", 40 * per_client + 1);
}

#[test]
fn sigterm_drains_every_request_then_error_7() {
    each_model(MODELS, |model| {
        drain_run(model, libc::SIGTERM);
    });
}

#[test]
fn sigint_drains_too() {
    drain_run(&["--model", "pipeline"], libc::SIGINT);
}

#[test]
fn half_close_with_many_requests_gets_every_reply() {
    each_model(MODELS, |model| {
        let ctx = name(model);
        let server = spawn(model);
        let mut c = Client::connect(server.addr(), TIMEOUT).unwrap();
        let n = 5_000u32;
        let bytes: Vec<u8> = (0..n).flat_map(|seq| frame_bytes(ECHO, seq, &seq.to_le_bytes())).collect();
        let writer = c.spawn_writer(bytes).unwrap();
        writer.join().unwrap().unwrap();
        c.shutdown_write().unwrap();
        for seq in 0..n {
            expect(&mut c, Frame::new(ECHO, seq, &seq.to_le_bytes()), &ctx);
        }
        match c.expect_close(TIMEOUT) {
            Ok(CloseKind::Eof) => {}
            other => panic!("{ctx}: after {n} replies to a half-closed connection: {other:?}"),
        }
    });
}
