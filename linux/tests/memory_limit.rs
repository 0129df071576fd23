//! `--memory-limit`: one budget for every connection's buffers, so many clients that pipeline large
//! ECHOs and never read cannot make the server hold gigabytes (each alone stays within its own
//! per-connection cap; 500 of them did not, before the budget).
//!
//! 500 non-reading clients each try to pipeline 20 MiB of 64 KiB ECHOs against a 128 MiB limit
//! (the write timeout is set to a minute, so only the budget can stop them). The server's peak RSS
//! (`VmHWM`) must stay under the limit plus its idle baseline, the budget must have closed
//! connections with ERROR 6 (`memory_limit_closes`), and a well-behaved client beside them keeps
//! its round trips in milliseconds.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{args, name, spawn, stat, stats, MAIN_MODELS, TIMEOUT};
use doorway_testkit::client::{frame_bytes, Client};

const ECHO: u16 = 64;
const FLOODERS: usize = 500;
const FLOOD_BYTES: usize = 20 << 20;
const LIMIT_MIB: u64 = 128;
/// The whole flood ends by then at the latest.
const FLOOD_DEADLINE: Duration = Duration::from_secs(15);

/// Writes up to `FLOOD_BYTES` of pipelined ECHOs on each socket without ever reading; returns when
/// every socket has written them or failed, or at the deadline.
fn flood(socks: &mut [TcpStream]) {
    let chunk: Vec<u8> = (0..16).flat_map(|i| frame_bytes(ECHO, i, &[0x5a; 65_536])).collect();
    let mut sent = vec![0usize; socks.len()];
    let mut done = vec![false; socks.len()];
    let deadline = Instant::now() + FLOOD_DEADLINE;
    while done.iter().any(|d| !d) && Instant::now() < deadline {
        let mut progress = false;
        for (i, s) in socks.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let at = sent[i] % chunk.len();
            match s.write(&chunk[at..]) {
                Ok(n) => {
                    sent[i] += n;
                    progress |= n > 0;
                    done[i] = sent[i] >= FLOOD_BYTES;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => done[i] = true,
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn non_reading_clients_cannot_take_the_server_past_its_memory_limit() {
    for model in MAIN_MODELS {
        let limit = format!("{LIMIT_MIB}MiB");
        let server = spawn(&args(model, &["--memory-limit", &limit, "--write-timeout-ms", "60000"]));
        let addr = server.addr();
        let mut bystander = Client::connect(addr, TIMEOUT).unwrap();
        bystander.request(ECHO, 0, b"hello", TIMEOUT).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let baseline_kib = server.rss_kib().unwrap();

        let mut socks: Vec<TcpStream> = (0..FLOODERS)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rtts = Vec::new();
                let mut seq = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let f = bystander.request(ECHO, seq, b"are you there?", TIMEOUT).expect("bystander");
                    assert_eq!((f.kind(), f.seq()), (ECHO, seq));
                    rtts.push(t.elapsed());
                    seq += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                rtts
            })
        };
        let started = Instant::now();
        flood(&mut socks);
        let flood_time = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut rtts = watcher.join().unwrap();
        let peak_kib = server.peak_rss_kib().unwrap();
        let s = stats(&server);
        drop(socks);

        rtts.sort_unstable();
        let p = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize];
        let closes = stat(&s, "memory_limit_closes");
        println!(
            "{}: idle RSS {baseline_kib} KiB, peak {peak_kib} KiB (limit {LIMIT_MIB} MiB); {closes} connections closed \
             by the limit; flood {flood_time:.1?}; bystander {} round trips p50 {:.2?} p99 {:.2?} max {:.2?}",
            name(model),
            rtts.len(),
            p(0.5),
            p(0.99),
            p(1.0)
        );
        assert!(
            peak_kib < LIMIT_MIB * 1024 + baseline_kib,
            "{}: peak RSS {peak_kib} KiB over the limit plus the idle baseline {baseline_kib} KiB",
            name(model)
        );
        assert!(closes > 0, "{}: the flood never reached the limit; the test proves nothing", name(model));
        // Milliseconds, not seconds, on a machine whose two cores are saturated by the flood.
        assert!(p(0.99) < Duration::from_millis(300), "{}: bystander p99 {:?}", name(model), p(0.99));
    }
}
