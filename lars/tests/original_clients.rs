//! The original Lars's clients against doorway's programs, unchanged: `lars_wire.py` (the stdlib
//! codec and clients verified byte for byte against the original's C++ protobuf code; in
//! `tests/tools/`) asks doorway's `lars-agent` for hosts and routes over UDP, asks `lars-dns` for a
//! route over TCP and reports to `lars-reporter`, whose table then has the row.
//!
//! Needs `python3` (on every machine this project runs on; the test says so and fails otherwise).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use doorway_lars::store::{self, Module, StatusRow};

use common::system::System;
use common::TempDir;

const M: Module = Module { modid: 1, cmdid: 1 };

/// Runs `lars_wire.py ARGS` and returns its JSON lines.
fn lars_wire(args: &[String]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/lars_wire.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for this test: {e}"));
    assert!(out.status.success(), "lars_wire.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn the_originals_python_clients_work_against_doorways_programs_unchanged() {
    let dir = TempDir::new("original-clients");
    let db = dir.sqlite();
    store::open(&db)
        .unwrap()
        .set_route(M, &["127.0.0.1:9001".parse().unwrap(), "10.0.0.2:9002".parse().unwrap()])
        .unwrap();
    let sys = System::start(&db, Duration::from_secs(2));
    // The original's clients send (1, 1) to port 8888 + (1 + 1) % 3: give them that port.
    let port = (sys.udp_base + 2).to_string();

    // Against lars-dns: GetRoute over TCP.
    let dns_port = sys.dns_addr.port().to_string();
    let out = lars_wire(&s(&["dns-get-route", "--port", &dns_port, "1", "1"]));
    assert!(out[0].contains("\"10.0.0.2\"") && out[0].contains("9001"), "{out:?}");

    // Against lars-agent: the first call may find the route still on its way.
    let deadline = Instant::now() + Duration::from_secs(3);
    let host = loop {
        let out = lars_wire(&s(&["agent-get-host", "--port", &port, "1", "1"]));
        if out[0].contains("RET_SUCC") {
            break out[0].clone();
        }
        assert!(out[0].contains("RET_NOEXIST"), "{out:?}");
        assert!(Instant::now() < deadline, "the agent never answered with a host");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(host.contains("9001") || host.contains("9002"), "{host}");
    let out = lars_wire(&s(&["agent-get-route", "--port", &port, "1", "1"]));
    assert!(out[0].contains("9001") && out[0].contains("9002"), "{out:?}");
    // (`agent-report` has no port flag: it always sends to 8888 + (modid + cmdid) % 3, which this
    // test does not own; the client library's `report` covers ReportRequest in tests/system.rs.)

    // Against lars-reporter: a ReportStatusRequest lands in the table.
    let reporter_port = sys.reporter.local_addr().port().to_string();
    lars_wire(&s(&[
        "report-status",
        "--port",
        &reporter_port,
        "--caller",
        "192.168.0.7",
        "--ip",
        "10.0.0.2",
        "--hport",
        "9002",
        "--succ",
        "5",
        "--err",
        "2",
        "1",
        "1",
    ]));
    let row = StatusRow {
        module: M,
        ip: store::ip_to_column(Ipv4Addr::new(10, 0, 0, 2)),
        port: 9002,
        caller: store::ip_to_column(Ipv4Addr::new(192, 168, 0, 7)),
        succ: 0,
        err: 0,
        ts: 0,
        overload: false,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let counts = loop {
        if let Some(c) = store::open(&db).unwrap().status(&row).unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline, "the report never reached the table");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((counts.succ, counts.err), (5, 2));
    sys.stop();
}
