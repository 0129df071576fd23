//! `lars-dns` over real sockets on 127.0.0.1, on real SQLite files (and MariaDB, last test):
//!
//! - GetRoute answers a module's nodes, and an empty list for a module with none;
//! - a `route set` while 1,000 subscribed connections are open reaches each of them, at the
//!   default 1 s poll, within 2 s of the commit (p50, p99 and max printed);
//! - a change written by another tool, by the rule, is pushed only to the module's subscribers,
//!   and a closed subscriber's id never reaches the connection that comes after it;
//! - a bad body is counted and closes only its connection; an unknown msgid is skipped;
//! - the binary: `--help`, a TOML file, `route set` refusing a bad port, SIGTERM exits 0.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doorway_lars::dns::{DnsServer, DnsSettings};
use doorway_lars::service::lars_server;
use doorway_lars::store::{self, DbUrl, Module};
use doorway_lars::GetRouteResponse;
use prost::Message as _;

use common::mariadb::Mariadb;
use common::{raw_frame, Child, LarsConn, TempDir};

const M: Module = Module { modid: 1, cmdid: 1 };

fn node(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn settings(db: &DbUrl, check: Duration) -> DnsSettings {
    DnsSettings {
        server: doorway_linux::Config { listen: "127.0.0.1:0".parse().unwrap(), ..lars_server(0) },
        db: db.clone(),
        check_interval: check,
        ..DnsSettings::default()
    }
}

fn nodes(response: &GetRouteResponse) -> Vec<String> {
    let mut nodes: Vec<_> = response.host.iter().map(|h| h.to_addr().unwrap().to_string()).collect();
    nodes.sort();
    nodes
}

fn stop(server: DnsServer) {
    server.handle().stop();
    server.wait().unwrap();
}

fn get_route_answers_nodes_and_an_empty_list(db: &DbUrl) {
    store::open(db).unwrap().set_route(M, &[node("192.168.1.101:7001"), node("10.0.0.1:80")]).unwrap();
    let server = DnsServer::start(&settings(db, Duration::from_millis(50)), false).unwrap();
    let mut conn = LarsConn::connect(server.local_addr());
    conn.ask(M);
    let response = conn.answer();
    assert_eq!((response.modid, response.cmdid), (1, 1));
    assert_eq!(nodes(&response), ["10.0.0.1:80", "192.168.1.101:7001"]);
    conn.ask(Module { modid: 7, cmdid: 9 });
    assert_eq!(conn.answer(), GetRouteResponse { modid: 7, cmdid: 9, host: vec![] });
    assert_eq!(server.metrics().queries.get(), 2);
    stop(server);
}

fn a_change_by_the_rule_reaches_only_the_modules_subscribers(db: &DbUrl, edit: &dyn Fn(&str)) {
    store::open(db).unwrap().set_route(M, &[node("10.0.0.1:1")]).unwrap();
    let server = DnsServer::start(&settings(db, Duration::from_millis(50)), false).unwrap();
    let mut subscriber = LarsConn::connect(server.local_addr());
    let mut other = LarsConn::connect(server.local_addr());
    subscriber.ask(M);
    subscriber.answer();
    other.ask(Module { modid: 2, cmdid: 2 });
    other.answer();
    // What the original's tools write: the node, a RouteChange row, the version, in one transaction.
    edit(
        "INSERT INTO RouteData (modid, cmdid, serverip, serverport) VALUES (1, 1, 167772162, 2); \
         INSERT INTO RouteChange (modid, cmdid, version) VALUES (1, 1, 2); \
         UPDATE RouteVersion SET version = 2 WHERE id = 1;",
    );
    let pushed = subscriber.answer();
    assert_eq!(nodes(&pushed), ["10.0.0.1:1", "10.0.0.2:2"]);
    other.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    let nothing = other.stream.read(&mut byte);
    assert!(matches!(&nothing, Err(e) if e.kind() == ErrorKind::WouldBlock), "a stray push: {nothing:?}");
    // The pushed RouteChange rows are deleted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store::open(db).unwrap().changes(i64::MAX).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "RouteChange rows were never deleted");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(server);
}

#[test]
fn get_route_answers_a_modules_nodes_and_an_unknown_module_an_empty_list() {
    let dir = TempDir::new("dns-answers");
    get_route_answers_nodes_and_an_empty_list(&dir.sqlite());
}

#[test]
fn a_change_written_by_another_tool_reaches_only_the_modules_subscribers() {
    let dir = TempDir::new("dns-other-tool");
    let path = dir.0.join("lars.db");
    a_change_by_the_rule_reaches_only_the_modules_subscribers(&dir.sqlite(), &|sql| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("BEGIN; {sql} COMMIT;")).unwrap();
    });
}

#[test]
fn a_route_set_reaches_each_of_1000_subscribed_connections_within_2_s_at_the_default_poll() {
    const CONNS: usize = 1000;
    let dir = TempDir::new("dns-1000");
    let db = dir.sqlite();
    store::open(&db).unwrap().set_route(M, &[node("10.0.0.1:1")]).unwrap();
    let settings = settings(&db, DnsSettings::default().check_interval);
    assert_eq!(settings.check_interval, Duration::from_secs(1));
    let server = DnsServer::start(&settings, false).unwrap();
    let mut conns: Vec<LarsConn> = (0..CONNS).map(|_| LarsConn::connect(server.local_addr())).collect();
    for conn in &mut conns {
        conn.ask(M);
    }
    for conn in &mut conns {
        assert_eq!(nodes(&conn.answer()), ["10.0.0.1:1"]);
        conn.stream.set_nonblocking(true).unwrap();
    }
    let new_route = [node("10.0.0.1:1"), node("10.0.0.3:3")];
    store::open(&db).unwrap().set_route(M, &new_route).unwrap();
    let committed = Instant::now();

    // Sweep every socket until each has a whole frame (bounded by a deadline).
    let deadline = committed + Duration::from_secs(5);
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); CONNS];
    let mut delays: Vec<Option<Duration>> = vec![None; CONNS];
    let mut chunk = [0u8; 256];
    while delays.iter().any(Option::is_none) && Instant::now() < deadline {
        for (n, conn) in conns.iter_mut().enumerate() {
            if delays[n].is_some() {
                continue;
            }
            match conn.stream.read(&mut chunk) {
                Ok(0) => panic!("connection {n} closed"),
                Ok(len) => bufs[n].extend_from_slice(&chunk[..len]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => panic!("connection {n}: {e}"),
            }
            let frame = doorway_lars::decode_frame(&bufs[n]);
            if let Ok(frame) = frame {
                delays[n] = Some(committed.elapsed());
                let pushed = GetRouteResponse::decode(frame.body).unwrap();
                assert_eq!(nodes(&pushed), ["10.0.0.1:1", "10.0.0.3:3"], "connection {n}");
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let reached = delays.iter().filter(|d| d.is_some()).count();
    assert_eq!(reached, CONNS, "only {reached} of {CONNS} connections got the push within 5 s");
    let mut delays: Vec<Duration> = delays.into_iter().flatten().collect();
    delays.sort();
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    println!(
        "push delay after the commit, {CONNS} subscribers, 1 s poll: p50 {:?}, p99 {:?}, max {:?} (spread {:?})",
        at(0.5),
        at(0.99),
        delays[CONNS - 1],
        delays[CONNS - 1] - delays[0]
    );
    assert!(delays[CONNS - 1] < Duration::from_secs(2), "max push delay {:?}", delays[CONNS - 1]);
    assert_eq!(server.metrics().pushes.get(), CONNS as u64);
    stop(server);
}

#[test]
fn a_closed_subscribers_id_never_reaches_the_connection_after_it() {
    let dir = TempDir::new("dns-stale");
    let db = dir.sqlite();
    let server = DnsServer::start(&settings(&db, Duration::from_millis(50)), false).unwrap();
    let mut first = LarsConn::connect(server.local_addr());
    first.ask(M);
    first.answer();
    drop(first);
    // The next connection may take the same slot and fd; it asks about another module.
    let mut next = LarsConn::connect(server.local_addr());
    next.ask(Module { modid: 3, cmdid: 3 });
    next.answer();
    store::open(&db).unwrap().set_route(M, &[node("10.0.0.1:1")]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metrics().table_version.get() != 1 {
        assert!(Instant::now() < deadline, "the change was never loaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    next.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    assert!(next.stream.read(&mut byte).is_err(), "the new connection got the old one's push");
    assert_eq!(server.metrics().pushes.get(), 0);
    stop(server);
}

#[test]
fn a_bad_body_closes_only_its_connection_and_an_unknown_msgid_is_skipped() {
    let dir = TempDir::new("dns-bad");
    let db = dir.sqlite();
    store::open(&db).unwrap().set_route(M, &[node("10.0.0.1:1")]).unwrap();
    let server = DnsServer::start(&settings(&db, Duration::from_millis(50)), false).unwrap();
    let mut bystander = LarsConn::connect(server.local_addr());
    for bad in [
        raw_frame(1, 2, &[0x0a, 0x05]),       // field 1 length-delimited, truncated
        raw_frame(1, 3, &[0xff, 0xff, 0xff]), // a varint that never ends
        raw_frame(1, -1, &[]),                // msglen below 0
        raw_frame(1, 65_528, &[]),            // msglen over the limit
    ] {
        let mut conn = LarsConn::connect(server.local_addr());
        conn.send_raw(&bad);
        assert!(conn.closed_silently(), "{bad:?}: the connection stayed open or got an answer");
        bystander.ask(M);
        assert_eq!(nodes(&bystander.answer()), ["10.0.0.1:1"]);
    }
    assert_eq!(server.metrics().queries.get(), 4);
    assert_eq!(server.bad_requests(), 2, "the two bad bodies are counted (the heads, by the server)");
    let mut conn = LarsConn::connect(server.local_addr());
    conn.send_raw(&raw_frame(99, 3, b"new"));
    conn.send_raw(&raw_frame(3, 0, b""));
    conn.ask(M);
    assert_eq!(nodes(&conn.answer()), ["10.0.0.1:1"], "answered after two unknown msgids");
    stop(server);
}

fn lars_dns() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lars-dns"))
}

#[test]
fn the_binary_reads_a_toml_file_serves_and_exits_0_on_sigterm() {
    let dir = TempDir::new("dns-binary");
    let db = dir.0.join("routes.db");
    let help = lars_dns().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for shown in [
        "--db <URL>",
        "[default: sqlite://lars.db]",
        "--check-interval",
        "--reload-interval",
        "[default: 1m]",
    ] {
        assert!(help.contains(shown), "--help lacks {shown}:\n{help}");
    }
    // `route set` refuses a bad port (exit 2) and writes nothing; a good one commits.
    let url = format!("sqlite://{}", db.display());
    let bad = lars_dns().args(["route", "set", "1", "1", "10.0.0.1:70000", "--db", &url]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the port is not a number from 1 to 65535"));
    assert!(!db.exists(), "a refused route set created the database");
    let good = lars_dns().args(["route", "set", "1", "1", "10.0.0.1:7000", "--db", &url]).output().unwrap();
    assert!(good.status.success(), "{good:?}");
    assert_eq!(String::from_utf8_lossy(&good.stdout), "1 1: 1 node(s), version 1\n");
    let list = lars_dns().args(["route", "list", "--db", &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "1 1 10.0.0.1:7000\n");

    let config = dir.0.join("lars-dns.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\ndb = \"{url}\"\ncheck-interval = \"100ms\"\n"),
    )
    .unwrap();
    let child =
        lars_dns().arg("--config").arg(&config).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut child = Child(Some(child));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.strip_prefix("lars-dns listening on ").and_then(|l| l.split_whitespace().next());
    let addr = addr.unwrap_or_else(|| panic!("first line: {line:?}")).parse().unwrap();
    let mut conn = LarsConn::connect(addr);
    conn.ask(M);
    assert_eq!(nodes(&conn.answer()), ["10.0.0.1:7000"]);
    child.term();
    let status = child.wait_for(Duration::from_secs(15)).expect("lars-dns did not exit after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn the_same_dns_behaviours_hold_on_mariadb() {
    let server = Mariadb::start();
    get_route_answers_nodes_and_an_empty_list(&server.fresh_db());
    let db = server.fresh_db();
    a_change_by_the_rule_reaches_only_the_modules_subscribers(&db, &|sql| {
        server.exec(&db, &format!("START TRANSACTION; {sql} COMMIT;"));
    });
}
