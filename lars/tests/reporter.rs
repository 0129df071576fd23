//! `lars-reporter`, the binary, over real sockets on 127.0.0.1 and real databases:
//!
//! - reports sent at up to 100,000/s for 10 s (with the database locked for 2 s in the middle, so
//!   the writers lag and the senders are paused) leave every row's counts equal to the sums sent,
//!   and the server's RSS stays flat while the writers lag;
//! - SIGTERM during a burst: it exits 0 and every report it accepted is in the table;
//! - SIGTERM after a burst held back by a locked database: everything the sockets held is written;
//! - a bad body closes only its connection (counted); the same sums hold on MariaDB.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorway_lars::reporter::{ReporterServer, ReporterSettings};
use doorway_lars::service::lars_server;
use doorway_lars::store::{self, DbUrl, Module, StatusRow};
use doorway_lars::{encode_frame, HostCallResult, MsgId, ReportStatusRequest};

use common::mariadb::Mariadb;
use common::{raw_frame, Child, LarsConn, TempDir};

/// Keys per round: modules 0..100 × nodes 0..10.
const KEYS: u32 = 1000;
const CALLER: i32 = 7;

/// One report per key: succ 1, err 1 for every third key.
fn round() -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..KEYS {
        let report = ReportStatusRequest {
            modid: (k / 10) as i32,
            cmdid: 1,
            caller: CALLER,
            results: vec![HostCallResult {
                ip: (k % 10) as i32,
                port: 80,
                succ: 1,
                err: u32::from(k % 3 == 0),
                overload: false,
            }],
            ts: 1_700_000_000,
        };
        out.extend_from_slice(&encode_frame(MsgId::ReportStatusRequest, &report).unwrap());
    }
    out
}

fn key_row(k: u32) -> StatusRow {
    StatusRow {
        module: Module { modid: (k / 10) as i32, cmdid: 1 },
        ip: k % 10,
        port: 80,
        caller: CALLER as u32,
        succ: 0,
        err: 0,
        ts: 0,
        overload: false,
    }
}

/// Every key's stored counts equal `rounds` rounds' worth.
fn assert_rounds_stored(db: &DbUrl, rounds: u64) {
    let mut store = store::open(db).unwrap();
    for k in 0..KEYS {
        let stored = store.status(&key_row(k)).unwrap();
        let (succ, err) = stored.map_or((0, 0), |s| (s.succ, s.err));
        let want_err = if k % 3 == 0 { rounds } else { 0 };
        assert_eq!((succ as u64, err as u64), (rounds, want_err), "key {k}");
    }
}

/// Starts the binary; returns it and its address once it prints that it listens.
fn spawn_reporter(db: &DbUrl, extra: &[&str]) -> (Child, SocketAddr, BufReader<std::process::ChildStdout>) {
    let url = match db {
        DbUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        DbUrl::Mysql(url) => url.clone(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_lars-reporter"))
        .args(["--listen", "127.0.0.1:0", "--db", &url, "--drain-timeout", "60s"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(Some(child));
    let mut stdout = BufReader::new(child.0.as_mut().unwrap().stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.strip_prefix("lars-reporter listening on ").and_then(|l| l.split_whitespace().next());
    let addr = addr.unwrap_or_else(|| panic!("first line: {line:?}")).parse().unwrap();
    (child, addr, stdout)
}

/// Exits 0 after SIGTERM; returns the reports and rows it says it accepted and wrote.
fn terminate(mut child: Child, mut stdout: BufReader<std::process::ChildStdout>) -> (u64, u64) {
    child.term();
    let status = child.wait_for(Duration::from_secs(90)).expect("lars-reporter did not exit after SIGTERM");
    assert!(status.success(), "{status}");
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let numbers: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(line.starts_with("lars-reporter stopped:") && numbers.len() == 2, "last line: {line:?}");
    (numbers[0], numbers[1])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends whole rounds paced at `rate` reports/s for `seconds`, returning the rounds written.
fn send_paced(addr: SocketAddr, rate: u64, seconds: f64) -> u64 {
    let frames = round();
    let mut stream = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 / u64::from(KEYS);
        if rounds > due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        stream.write_all(&frames).unwrap();
        rounds += 1;
    }
    rounds
}

fn counts_equal_sums_at_rate(
    db: &DbUrl,
    rate: u64,
    seconds: f64,
    lock_db: Option<&dyn Fn() -> Box<dyn FnOnce()>>,
) {
    let (child, addr, stdout) = spawn_reporter(db, &["--writers", "2", "--queue", "8192"]);
    let pid = child.0.as_ref().unwrap().id();
    let sender = std::thread::spawn(move || send_paced(addr, rate, seconds));
    // The RSS while it runs; the database is locked from 4 s to 6 s, so the writers lag.
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut unlock = None;
    while !sender.is_finished() {
        let t = started.elapsed().as_secs_f64();
        if let Some(lock) = lock_db {
            if t >= 4.0 && unlock.is_none() {
                unlock = Some(lock());
            }
        }
        if t >= 6.0 {
            if let Some(release) = unlock.take() {
                release();
            }
        }
        samples.push((t, rss_kib(pid)));
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(release) = unlock.take() {
        release();
    }
    let rounds = sender.join().unwrap();
    let sent = rounds * u64::from(KEYS);
    let (reports, rows) = terminate(child, stdout);
    let warm: Vec<u64> = samples.iter().filter(|(t, _)| *t >= 1.0).map(|(_, r)| *r).collect();
    let (low, high) = (warm.iter().min().copied().unwrap_or(0), warm.iter().max().copied().unwrap_or(0));
    println!(
        "{db}: {sent} reports in {seconds} s ({:.0}/s asked {rate}/s); accepted {reports}, written {rows}; server RSS {low}..{high} KiB after 1 s",
        sent as f64 / seconds
    );
    assert_eq!((reports, rows), (sent, sent));
    assert_rounds_stored(db, rounds);
    assert!(high - low < 64 << 10, "server RSS grew from {low} to {high} KiB");
}

#[test]
fn reports_at_100000_per_s_for_10_s_leave_counts_equal_to_the_sums_sent_with_rss_flat() {
    let dir = TempDir::new("reporter-rate");
    let db = dir.sqlite();
    store::open(&db).unwrap();
    let path = dir.0.join("lars.db");
    // Holds SQLite's write lock until the returned closure runs.
    let lock = move || -> Box<dyn FnOnce()> {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Box::new(move || conn.execute_batch("COMMIT").unwrap())
    };
    counts_equal_sums_at_rate(&db, 100_000, 10.0, Some(&lock));
}

#[test]
fn sigterm_during_a_burst_exits_0_with_every_accepted_report_in_the_table() {
    let dir = TempDir::new("reporter-sigterm");
    let db = dir.sqlite();
    let (child, addr, stdout) = spawn_reporter(&db, &["--writers", "2", "--queue", "4096"]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let frames = round();
            let mut stream = TcpStream::connect(addr).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if stream.write_all(&frames).is_err() {
                    break;
                }
                rounds += 1;
            }
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (reports, rows) = terminate(child, stdout);
    stop.store(true, Ordering::Relaxed);
    let rounds = sender.join().unwrap();
    println!(
        "burst: {} reports written by the client, {reports} accepted, {rows} rows written",
        rounds * u64::from(KEYS)
    );
    assert!(reports > 0 && reports <= (rounds + 1) * u64::from(KEYS));
    assert_eq!(rows, reports, "every accepted report's row was written");
    let mut store = store::open(&db).unwrap();
    let (mut succ, mut err) = (0u64, 0u64);
    for k in 0..KEYS {
        if let Some(s) = store.status(&key_row(k)).unwrap() {
            succ += s.succ as u64;
            err += s.err as u64;
        }
    }
    assert_eq!(succ, reports, "the table's success counts add up to the accepted reports");
    assert!(err <= succ);
}

#[test]
fn sigterm_after_a_burst_held_back_by_a_locked_database_writes_all_of_it() {
    let dir = TempDir::new("reporter-held");
    let db = dir.sqlite();
    store::open(&db).unwrap();
    let (child, addr, stdout) = spawn_reporter(&db, &["--writers", "1", "--queue", "256", "--batch", "64"]);
    let lock = rusqlite::Connection::open(dir.0.join("lars.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Three rounds: the writer is stuck on its first batch, the lane fills, the connection pauses,
    // and the rest waits in the sockets.
    let mut stream = TcpStream::connect(addr).unwrap();
    let frames = round();
    for _ in 0..3 {
        stream.write_all(&frames).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        lock.execute_batch("COMMIT").unwrap();
    });
    let (reports, rows) = terminate(child, stdout);
    release.join().unwrap();
    assert_eq!((reports, rows), (3 * u64::from(KEYS), 3 * u64::from(KEYS)));
    assert_rounds_stored(&db, 3);
}

#[test]
fn a_bad_body_closes_only_its_connection_and_is_counted() {
    let dir = TempDir::new("reporter-bad");
    let db = dir.sqlite();
    let settings = ReporterSettings {
        server: doorway_linux::Config { listen: "127.0.0.1:0".parse().unwrap(), ..lars_server(0) },
        db: db.clone(),
        ..ReporterSettings::default()
    };
    let server = ReporterServer::start(&settings, false).unwrap();
    let mut good = LarsConn::connect(server.local_addr());
    let mut bad = LarsConn::connect(server.local_addr());
    bad.send_raw(&raw_frame(3, 2, &[0x22, 0x09]));
    assert!(bad.closed_silently());
    for k in 0..3 {
        let report = ReportStatusRequest {
            modid: 1,
            cmdid: 1,
            caller: CALLER,
            results: vec![HostCallResult { ip: k, port: 80, succ: 1, err: 0, overload: false }],
            ts: 1,
        };
        good.send(MsgId::ReportStatusRequest, &report);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metrics().rows_written.get() < 3 {
        assert!(Instant::now() < deadline, "the good connection's reports were not written");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.bad_requests(), 1);
    server.handle().stop();
    let totals = server.wait().unwrap();
    assert_eq!((totals.reports, totals.rows_written), (3, 3));
}

#[test]
fn counts_equal_the_sums_sent_on_mariadb() {
    let server = Mariadb::start();
    let db = server.fresh_db();
    counts_equal_sums_at_rate(&db, 50_000, 3.0, None);
}
