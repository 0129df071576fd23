//! The whole Lars system under faults, in one process, on real sockets and a real SQLite file:
//! `lars-dns`, `lars-reporter` and `lars-agent` on doorway, three backend servers, and clients that
//! do what an application does with the client library: `get_host`, call the backend, `report`.
//!
//! Timeouts are short (a 2 s overload timeout, a 100 ms route poll) so the whole story fits in a
//! few seconds:
//!
//! 1. traffic spreads over the three backends;
//! 2. one backend starts failing: within N calls it is overloaded and traffic moves (N and the
//!    share of failed calls are printed and bounded);
//! 3. it recovers: it is handed out again after about `overload_timeout`;
//! 4. a node added with `route set` is handed out within 2 s;
//! 5. `lars-dns` is stopped: the agent keeps answering from what it has; restarted on the same
//!    address, the agent re-subscribes by itself and sees a later change;
//! 6. the reporter's table shows every node's counts.
//!
//! And the agent with one loop per port (`--shards 3`): a module on each port is answered, a
//! route change pushed to the loop that holds the `lars-dns` link reaches every port, and every
//! port's reports land in the reporter's table.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_lars::client::{self, Client};
use doorway_lars::dns::DnsServer;
use doorway_lars::store::{self, Module, StatusRow};
use doorway_lars::RetCode;

use common::system::{dns_settings, System};
use common::TempDir;

const M: Module = Module { modid: 1, cmdid: 1 };
const OVERLOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A backend: answers each connection's byte with `b'+'`, or `b'-'` while failing.
struct Backend {
    addr: SocketAddrV4,
    failing: Arc<AtomicBool>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(if flag.load(Ordering::SeqCst) { b"-" } else { b"+" });
                }
            }
        });
        Backend { addr, failing }
    }
}

/// One application call: the backend's answer, as the retcode the application reports.
fn call(node: client::Node) -> RetCode {
    let ok = (|| {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from(node), Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"?").ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        Some(b[0] == b'+')
    })();
    if ok == Some(true) {
        RetCode::Succ
    } else {
        RetCode::SystemError
    }
}

/// Calls (get_host, backend, report) `n` times; returns how often each node was handed out and
/// how many calls failed.
fn traffic(c: &mut Client, n: usize) -> (HashMap<client::Node, usize>, usize) {
    let mut chosen = HashMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match c.get_host(M.modid, M.cmdid) {
            Ok(node) => {
                *chosen.entry(node).or_insert(0) += 1;
                let rc = call(node);
                if rc != RetCode::Succ {
                    failed += 1;
                }
                c.report(M.modid, M.cmdid, node, rc).unwrap();
            }
            Err(client::Error::Overload) => failed += 1,
            Err(e) => panic!("get_host: {e}"),
        }
    }
    (chosen, failed)
}

fn node(b: &Backend) -> client::Node {
    (*b.addr.ip(), b.addr.port())
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn the_whole_lars_system_under_faults() {
    let dir = TempDir::new("system");
    let db = dir.sqlite();
    let backends: Vec<Backend> = (0..4).map(|_| Backend::start()).collect();
    store::open(&db).unwrap().set_route(M, &[backends[0].addr, backends[1].addr, backends[2].addr]).unwrap();

    let sys = System::start(&db, OVERLOAD_TIMEOUT);
    let (dns, agent, reporter, base, dns_addr) =
        (sys.dns, sys.agent, sys.reporter, sys.udp_base, sys.dns_addr);
    let mut c = Client::with_config(client::Config { base_port: base, ..client::Config::default() }).unwrap();

    // 1. The first request for the module triggers its route; then traffic spreads.
    wait_for("the route", Duration::from_secs(3), || c.get_host(M.modid, M.cmdid).is_ok());
    let (chosen, failed) = traffic(&mut c, 300);
    assert_eq!(failed, 0);
    for b in &backends[..3] {
        let n = chosen.get(&node(b)).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "round robin: {n} of 300 to {}", b.addr);
    }

    // 2. Backend 1 starts failing: it is overloaded within N calls and traffic moves.
    backends[1].failing.store(true, Ordering::SeqCst);
    let mut calls_until_overloaded = 0;
    let mut failures = 0;
    let victim = node(&backends[1]);
    let mut since_last_victim = 0;
    // Overloaded, it is only probed (every `probe_num` + 1 calls): ten calls in a row without it
    // mean it left the rotation.
    while since_last_victim < 10 {
        let node = c.get_host(M.modid, M.cmdid).unwrap();
        let rc = call(node);
        c.report(M.modid, M.cmdid, node, rc).unwrap();
        calls_until_overloaded += 1;
        if node == victim {
            failures += 1;
            since_last_victim = 0;
        } else {
            since_last_victim += 1;
        }
        assert!(calls_until_overloaded < 200, "the failing backend was never overloaded");
    }
    calls_until_overloaded -= 10;
    let (chosen, failed) = traffic(&mut c, 330);
    let to_victim = chosen.get(&victim).copied().unwrap_or(0);
    println!(
        "failing backend overloaded after {calls_until_overloaded} calls ({failures} failed); then {to_victim} of \
         330 calls went to it (probes), {failed} failed ({:.1}%)",
        100.0 * failed as f64 / 330.0
    );
    // contin_err_limit (15) straight failures, one call in three going to it.
    assert!(calls_until_overloaded <= 60, "{calls_until_overloaded} calls");
    assert!(to_victim <= 40, "an overloaded backend gets only probes: {to_victim} of 330");

    // 3. It recovers: back in rotation after about overload_timeout.
    backends[1].failing.store(false, Ordering::SeqCst);
    let back_after = wait_for("the recovered backend", OVERLOAD_TIMEOUT * 3, || {
        let (chosen, _) = traffic(&mut c, 30);
        chosen.get(&victim).copied().unwrap_or(0) >= 8
    });
    println!(
        "recovered backend back in rotation after {back_after:.1?} (overload_timeout {OVERLOAD_TIMEOUT:?})"
    );

    // 4. A node added with `route set` is handed out within 2 s.
    let route: Vec<SocketAddrV4> = backends.iter().map(|b| b.addr).collect();
    store::open(&db).unwrap().set_route(M, &route).unwrap();
    let added = node(&backends[3]);
    let took =
        wait_for("the added node", Duration::from_secs(2), || traffic(&mut c, 8).0.contains_key(&added));
    println!("added node handed out {took:.1?} after the commit");

    // 5. lars-dns goes away: the agent keeps answering from what it has.
    dns.handle().stop();
    dns.wait().unwrap();
    let (chosen, failed) = traffic(&mut c, 100);
    assert_eq!((chosen.values().sum::<usize>(), failed), (100, 0), "answers while lars-dns is down");
    // A change made while it is down, then lars-dns restarts on the same address: the agent
    // re-subscribes by itself and sees it (node 0 removed).
    store::open(&db).unwrap().set_route(M, &route[1..]).unwrap();
    let dns = DnsServer::start(&dns_settings(&db, dns_addr), false).unwrap();
    let removed = node(&backends[0]);
    let took = wait_for("the change after the restart", Duration::from_secs(5), || {
        let (chosen, _) = traffic(&mut c, 30);
        !chosen.contains_key(&removed)
    });
    println!("after the lars-dns restart, the change reached the agent within {took:.1?}");

    // 6. The reporter's table holds every node's counts.
    std::thread::sleep(Duration::from_millis(600));
    let mut st = store::open(&db).unwrap();
    for b in &backends {
        let row = StatusRow {
            module: M,
            ip: store::ip_to_column(*b.addr.ip()),
            port: u32::from(b.addr.port()),
            caller: store::ip_to_column(Ipv4Addr::UNSPECIFIED),
            succ: 0,
            err: 0,
            ts: 0,
            overload: false,
        };
        let counts = st.status(&row).unwrap().unwrap_or_else(|| panic!("no row for {}", b.addr));
        assert!(counts.succ > 0, "{}: {counts:?}", b.addr);
        if b.addr == backends[1].addr {
            assert!(counts.err >= 15, "the failing backend's errors were reported: {counts:?}");
        }
    }

    agent.stop();
    agent.wait().unwrap();
    dns.handle().stop();
    dns.wait().unwrap();
    reporter.handle().stop();
    reporter.wait().unwrap();
}

#[test]
fn an_agent_with_one_loop_per_port_answers_pushes_and_reports_on_every_port() {
    let dir = TempDir::new("system-per-port");
    let db = dir.sqlite();
    // (modid + cmdid) % 3 is 2, 0, 1: one module per port, so one per loop.
    let modules =
        [Module { modid: 10, cmdid: 1 }, Module { modid: 10, cmdid: 2 }, Module { modid: 10, cmdid: 3 }];
    let first = |m: &Module| SocketAddrV4::new(Ipv4Addr::new(10, 9, m.cmdid as u8, 1), 7000);
    let second = |m: &Module| SocketAddrV4::new(Ipv4Addr::new(10, 9, m.cmdid as u8, 2), 7000);
    for m in &modules {
        store::open(&db).unwrap().set_route(*m, &[first(m)]).unwrap();
    }
    let sys = System::start_with(&db, OVERLOAD_TIMEOUT, 3);
    let mut c =
        Client::with_config(client::Config { base_port: sys.udp_base, ..client::Config::default() }).unwrap();
    let host = |c: &mut Client, m: &Module| c.get_host(m.modid, m.cmdid).ok();
    let as_node = |a: SocketAddrV4| (*a.ip(), a.port());

    // Each loop asks lars-dns through the link another loop owns, and gets its answer.
    for m in &modules {
        wait_for("a module's route", Duration::from_secs(3), || host(&mut c, m) == Some(as_node(first(m))));
        for _ in 0..5 {
            let node = host(&mut c, m).unwrap();
            c.report(m.modid, m.cmdid, node, RetCode::Succ).unwrap();
        }
    }
    // Every loop's reports reach lars-reporter (its link is on shard 1).
    let mut st = store::open(&db).unwrap();
    for m in &modules {
        let row = StatusRow {
            module: *m,
            ip: store::ip_to_column(*first(m).ip()),
            port: 7000,
            caller: store::ip_to_column(Ipv4Addr::UNSPECIFIED),
            succ: 0,
            err: 0,
            ts: 0,
            overload: false,
        };
        wait_for("the reports", Duration::from_secs(3), || {
            st.status(&row).unwrap().is_some_and(|counts| counts.succ >= 5)
        });
    }
    // A change is pushed on the lars-dns link (shard 0) and seen on every port.
    for m in &modules {
        store::open(&db).unwrap().set_route(*m, &[second(m)]).unwrap();
    }
    for m in &modules {
        wait_for("the changed route", Duration::from_secs(2), || host(&mut c, m) == Some(as_node(second(m))));
    }
    sys.stop();
}

#[test]
fn the_agent_binary_refuses_settings_it_cannot_serve_with_exit_2() {
    let agent = env!("CARGO_BIN_EXE_lars-agent");
    for (args, says) in [
        (&["--shards", "4"][..], "--shards 4: the agent runs 1 to 3"),
        (&["--udp-base", "127.0.0.1:65534"][..], "no room for three ports"),
    ] {
        let out = std::process::Command::new(agent).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
