//! 10,000 concurrent connections, in each thread model: all admitted, each echoes once, STATS
//! counts them, and every one is released when the clients leave.
//!
//! The server and this test are separate processes, each under the 20,000 open-file limit: the
//! test raises its own soft limit to the hard limit and holds 10,000 sockets, the server holds the
//! other ends. The models run one after the other (never two servers of 10,000 at once).

mod common;

use std::time::{Duration, Instant};

use doorway_core::demo::kind::ECHO;
use doorway_testkit::client::{frame_bytes, Client, Frame};
use doorway_testkit::raise_nofile_limit;

use common::{args, name, stat, stats, wait_open_at_most, MAIN_MODELS, TIMEOUT};

const CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_concurrent_connections() {
    let limit = raise_nofile_limit().unwrap();
    assert!(
        limit >= CONNECTIONS as u64 + 500,
        "open-file limit {limit} is too low for {CONNECTIONS} sockets"
    );
    for model in MAIN_MODELS {
        let ctx = name(model);
        let server = common::spawn(&args(model, &["--max-connections", "12000"]));
        let base_rss = server.rss_kib().unwrap();
        let base_fds = server.fd_count().unwrap();
        let start = Instant::now();
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let c =
                Client::connect(server.addr(), TIMEOUT).unwrap_or_else(|e| panic!("{ctx}: connect {i}: {e}"));
            conns.push(c);
        }
        let connected = start.elapsed();
        // Every connection sends one ECHO, then every reply is read.
        for (i, c) in conns.iter_mut().enumerate() {
            c.send_raw(&frame_bytes(ECHO, i as u32, &(i as u32).to_be_bytes())).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let f = c.recv(TIMEOUT).unwrap_or_else(|e| panic!("{ctx}: reply on connection {i}: {e}"));
            assert_eq!(f, Frame::new(ECHO, i as u32, &(i as u32).to_be_bytes()), "{ctx}: connection {i}");
        }
        let echoed = start.elapsed();
        let s = stats(&server);
        let open = stat(&s, "connections_open");
        assert!(open > CONNECTIONS as i128, "{ctx}: connections_open {open} with {CONNECTIONS} + 1 open");
        assert_eq!(stat(&s, "connections_refused"), 0, "{ctx}: connections refused");
        let rss = server.rss_kib().unwrap();
        let fds = server.fd_count().unwrap();
        assert!(fds >= base_fds + CONNECTIONS, "{ctx}: server holds {fds} fds");
        drop(conns);
        let open = wait_open_at_most(&server, 1, Duration::from_secs(20));
        assert_eq!(open, 1, "{ctx}: {open} connections still open after every client left");
        // The fds are released (the STATS connection may still be closing).
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.fd_count().unwrap() > base_fds + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let fds_after = server.fd_count().unwrap();
        assert!(fds_after <= base_fds + 2, "{ctx}: {fds_after} fds after, {base_fds} before");
        println!(
            "{ctx}: {CONNECTIONS} connections in {connected:?}, all echoed by {echoed:?}; server RSS {base_rss} -> \
             {rss} KiB ({:.0} bytes per connection), fds {base_fds} -> {fds} -> {fds_after}",
            (rss.saturating_sub(base_rss) * 1024) as f64 / CONNECTIONS as f64
        );
    }
}
