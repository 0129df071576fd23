//! A bounded soak, per thread model: for a fixed time, client threads connect, send, and leave at
//! random, some of them misbehaving (garbage, oversized headers, floods without reading, abandoned
//! partial frames, idling); then nothing may have leaked: STATS `connections_open` back to the
//! one STATS connection, the server's fd count back to its baseline, its RSS within a bound of
//! the baseline taken after a warm-up.
//!
//! Well-behaved clients check every reply as they go, so the soak also fails on a wrong or lost
//! reply. The seed is printed; `DOORWAY_SOAK_SEED` replays one, `DOORWAY_SOAK_SECS` changes the
//! duration per model (default 11 s).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use doorway_core::demo::kind::{BROADCAST, ECHO};
use doorway_core::frame::kind::{BYE, PING, PONG};
use doorway_core::frame::ErrorCode;
use doorway_testkit::client::{frame_bytes, Client, Frame, RecvError};
use doorway_testkit::rng::Rng;
use doorway_testkit::suite::{check_error_frame, raw_header};
use doorway_testkit::{raise_nofile_limit, ServerProcess};

use common::{args, name, stat, stats, wait_open_at_most, MAIN_MODELS};

const WORKERS: u64 = 12;
const WAIT: Duration = Duration::from_secs(10);

/// What the workers did, for the report.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    requests: AtomicU64,
    misbehaving: AtomicU64,
}

/// Receives the next frame that is not a broadcast (other sessions broadcast at random).
fn recv_skipping_broadcasts(c: &mut Client) -> Result<Frame, RecvError> {
    loop {
        let f = c.recv(WAIT)?;
        if !(f.kind() == BROADCAST && f.seq() == 0) {
            return Ok(f);
        }
    }
}

/// A well-behaved session: a random batch of requests, every reply checked, then one of three
/// ways out (drop, BYE, half-close).
fn good_session(addr: SocketAddr, rng: &mut Rng, tally: &Tally) -> Result<(), String> {
    let mut c = Client::connect(addr, WAIT).map_err(|e| format!("connect: {e}"))?;
    for _ in 0..rng.range(1..6) {
        let n = rng.range(1..40);
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..n {
            let seq = rng.next_u64() as u32;
            let len = rng.range(0..200);
            let body = rng.bytes(len);
            if rng.chance(1, 2) {
                bytes.extend(frame_bytes(ECHO, seq, &body));
                expected.push(Frame::new(ECHO, seq, &body));
            } else {
                bytes.extend(frame_bytes(PING, seq, &body));
                expected.push(Frame::new(PONG, seq, &body));
            }
        }
        if rng.chance(1, 50) {
            bytes.extend(frame_bytes(BROADCAST, 1, b"soak"));
        }
        c.send_raw(&bytes).map_err(|e| format!("send: {e}"))?;
        for want in &expected {
            let got = recv_skipping_broadcasts(&mut c).map_err(|e| format!("waiting for {want:?}: {e}"))?;
            if got != *want {
                return Err(format!("expected {want:?}, got {got:?}"));
            }
        }
        tally.requests.fetch_add(n as u64, Ordering::Relaxed);
    }
    match rng.below(3) {
        0 => {}
        1 => {
            c.send(BYE, 0, b"").map_err(|e| format!("BYE: {e}"))?;
            match recv_skipping_broadcasts(&mut c) {
                Err(RecvError::Closed { .. }) => {}
                other => return Err(format!("after BYE: {other:?}")),
            }
        }
        _ => {
            c.send(ECHO, 7, b"last").map_err(|e| format!("send: {e}"))?;
            c.shutdown_write().map_err(|e| format!("shutdown: {e}"))?;
            match recv_skipping_broadcasts(&mut c) {
                Ok(f) if f == Frame::new(ECHO, 7, b"last") => {}
                other => return Err(format!("after half-close: {other:?}")),
            }
            match recv_skipping_broadcasts(&mut c) {
                Err(RecvError::Closed { .. }) => {}
                other => return Err(format!("no close after half-close: {other:?}")),
            }
        }
    }
    Ok(())
}

/// A misbehaving session, chosen at random; the server must survive it and release it.
fn bad_session(addr: SocketAddr, rng: &mut Rng) -> Result<(), String> {
    let Ok(mut c) = Client::connect(addr, WAIT) else { return Ok(()) };
    let _ = c.stream().set_write_timeout(Some(Duration::from_millis(500)));
    match rng.below(5) {
        // Noise, then leave at once.
        0 => {
            let len = rng.range(1..2000);
            let _ = c.send_raw(&rng.bytes(len));
        }
        // An oversized header: ERROR 1.
        1 => {
            let seq = rng.next_u64() as u32;
            c.send_raw(&raw_header(u32::MAX, ECHO, 0, seq)).map_err(|e| format!("send: {e}"))?;
            let f = recv_skipping_broadcasts(&mut c).map_err(|e| format!("waiting for ERROR 1: {e}"))?;
            check_error_frame(&f, ErrorCode::FrameTooLarge, seq).map_err(|e| e.to_string())?;
        }
        // A flood it never reads, then an abrupt exit.
        2 => {
            c.set_recv_buffer(4096).map_err(|e| e.to_string())?;
            let body = vec![3u8; 8192];
            let mut stream = c.stream().try_clone().map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_millis(rng.range(50..600) as u64);
            while Instant::now() < deadline {
                if stream.write_all(&frame_bytes(ECHO, 1, &body)).is_err() {
                    break;
                }
            }
        }
        // Half a frame, then gone.
        3 => {
            let bytes = frame_bytes(ECHO, 1, b"never finished");
            let cut = rng.range(1..bytes.len());
            let _ = c.send_raw(&bytes[..cut]);
        }
        // Idle for a while (the server's idle timeout may fire first).
        _ => thread::sleep(Duration::from_millis(rng.range(100..1500) as u64)),
    }
    Ok(())
}

fn soak(model: &[&str], secs: u64, seed: u64) {
    let ctx = name(model);
    let extra = [
        "--idle-timeout-ms",
        "1000",
        "--high-watermark",
        "65536",
        "--low-watermark",
        "16384",
        "--write-timeout-ms",
        "300",
        "--linger-ms",
        "300",
    ];
    let mut server: ServerProcess = common::spawn(&args(model, &extra));
    let addr = server.addr();
    // Warm up (pools, thread stacks), then take the baseline.
    let warm: Vec<Client> = (0..200).map(|_| Client::connect(addr, WAIT).unwrap()).collect();
    for mut c in warm {
        assert_eq!(c.request(ECHO, 1, &[0u8; 1000], WAIT).unwrap().seq(), 1);
    }
    assert_eq!(wait_open_at_most(&server, 1, WAIT), 1, "{ctx}: warm-up connections not released");
    let base_fds = server.fd_count().unwrap();
    let base_rss = server.rss_kib().unwrap();
    let tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut max_rss = base_rss;
    let errors: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let tally = &tally;
                s.spawn(move || -> Option<String> {
                    let mut rng = Rng::new(seed.wrapping_add(w.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                    while Instant::now() < deadline {
                        tally.sessions.fetch_add(1, Ordering::Relaxed);
                        let result = if rng.chance(1, 4) {
                            tally.misbehaving.fetch_add(1, Ordering::Relaxed);
                            bad_session(addr, &mut rng)
                        } else {
                            good_session(addr, &mut rng, tally)
                        };
                        if let Err(e) = result {
                            return Some(format!("worker {w}: {e}"));
                        }
                    }
                    None
                })
            })
            .collect();
        while Instant::now() < deadline {
            max_rss = max_rss.max(server.rss_kib().unwrap_or(0));
            thread::sleep(Duration::from_millis(200));
        }
        workers.into_iter().filter_map(|w| w.join().expect("soak worker panicked")).collect()
    });
    assert!(
        server.is_running(),
        "{ctx}: server died during the soak (seed {seed:#x}):\n{}",
        server.stderr_text()
    );
    assert!(errors.is_empty(), "{ctx} (seed {seed:#x}): {errors:#?}\n{}", server.stderr_text());
    let open = wait_open_at_most(&server, 1, Duration::from_secs(15));
    assert_eq!(open, 1, "{ctx}: {open} connections open after every client left (seed {seed:#x})");
    let fd_deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = server.fd_count().unwrap();
    while fds > base_fds + 1 && Instant::now() < fd_deadline {
        thread::sleep(Duration::from_millis(100));
        fds = server.fd_count().unwrap();
    }
    let rss = server.rss_kib().unwrap();
    let s = stats(&server);
    println!(
        "{ctx}: {secs} s soak, seed {seed:#x}: {} sessions ({} misbehaving), {} requests checked; \
         accepted {}, errors sent 1:{} 4:{} 6:{}; fds {base_fds} -> {fds}; RSS {base_rss} KiB, max {max_rss} KiB, \
         after {rss} KiB",
        tally.sessions.load(Ordering::Relaxed),
        tally.misbehaving.load(Ordering::Relaxed),
        tally.requests.load(Ordering::Relaxed),
        stat(&s, "connections_accepted"),
        stat(&s, "errors_sent_1"),
        stat(&s, "errors_sent_4"),
        stat(&s, "errors_sent_6"),
    );
    assert!(fds <= base_fds + 1, "{ctx}: fd leak: {base_fds} before, {fds} after (seed {seed:#x})");
    assert!(
        rss <= base_rss * 2 + 32 * 1024,
        "{ctx}: RSS {base_rss} KiB before, {rss} KiB after (seed {seed:#x})"
    );
    assert!(tally.requests.load(Ordering::Relaxed) > 1000, "{ctx}: the soak hardly ran");
}

#[test]
fn soak_leaves_no_leak() {
    raise_nofile_limit().unwrap();
    let secs = std::env::var("DOORWAY_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(11);
    let seed = std::env::var("DOORWAY_SOAK_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(Rng::seed_from_time);
    for model in MAIN_MODELS {
        soak(model, secs, seed);
    }
}
