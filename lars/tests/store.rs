//! The storage behaviours, each on a real SQLite file and on a real MariaDB server:
//!
//! - a new SQLite file is created with the schema at version 0;
//! - `set_route` commits `RouteData`, one `RouteChange` row and the version bump together, and
//!   replaces the module's nodes (an empty list removes them);
//! - `changes`/`delete_changes` see and delete exactly the rows up to a version;
//! - `write_status` adds counts to the stored ones and keeps the last `ts` and `overload`;
//! - two connections writing at once (two writers of the reporter, `route set` beside `lars-dns`)
//!   both succeed: nobody holds the database.
//!
//! The MariaDB test starts its own server (see `common/mariadb.rs`) and runs every scenario in a
//! fresh database of it.

mod common;

use doorway_lars::store::{self, DbUrl, Module, Route, StatusRow};

use common::mariadb::Mariadb;
use common::TempDir;

const M: Module = Module { modid: 1, cmdid: 1 };

fn node(s: &str) -> std::net::SocketAddrV4 {
    s.parse().unwrap()
}

fn route_set_commits_routes_change_and_version_together(url: &DbUrl) {
    let mut db = store::open(url).unwrap();
    assert_eq!(db.version().unwrap(), 0);
    assert_eq!(db.set_route(M, &[node("192.168.1.101:7001"), node("10.0.0.1:80")]).unwrap(), 1);
    assert_eq!(db.set_route(Module { modid: 2, cmdid: 3 }, &[node("10.0.0.2:81")]).unwrap(), 2);
    let snapshot = db.snapshot().unwrap();
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.routes.len(), 3);
    assert_eq!(
        db.routes(Some(M)).unwrap(),
        [
            Route { module: M, node: node("10.0.0.1:80") },
            Route { module: M, node: node("192.168.1.101:7001") }
        ]
    );
    assert_eq!(db.changes(2).unwrap(), [M, Module { modid: 2, cmdid: 3 }]);
    assert_eq!(db.changes(1).unwrap(), [M]);

    // Replaced, then removed; each a change of its own.
    assert_eq!(db.set_route(M, &[node("10.0.0.9:9")]).unwrap(), 3);
    assert_eq!(db.routes(Some(M)).unwrap(), [Route { module: M, node: node("10.0.0.9:9") }]);
    assert_eq!(db.set_route(M, &[]).unwrap(), 4);
    assert!(db.routes(Some(M)).unwrap().is_empty());
    assert_eq!(db.routes(None).unwrap().len(), 1, "the other module is untouched");

    db.delete_changes(3).unwrap();
    assert_eq!(db.changes(i64::MAX).unwrap(), [M], "only the version-4 row is left");
    db.delete_changes(4).unwrap();
    assert!(db.changes(i64::MAX).unwrap().is_empty());
}

fn status_counts_add_up_and_keep_the_last_state(url: &DbUrl) {
    let mut db = store::open(url).unwrap();
    let row = |succ, err, ts, overload| StatusRow {
        module: M,
        ip: 3_232_235_877,
        port: 7001,
        caller: 2_130_706_433,
        succ,
        err,
        ts,
        overload,
    };
    assert_eq!(db.status(&row(0, 0, 0, false)).unwrap(), None);
    db.write_status(&[row(3, 1, 100, false), row(2, 0, 101, true)]).unwrap();
    db.write_status(&[row(10, 5, 102, false)]).unwrap();
    let stored = db.status(&row(0, 0, 0, false)).unwrap().unwrap();
    assert_eq!((stored.succ, stored.err, stored.ts, stored.overload), (15, 6, 102, false));
    db.write_status(&[row(0, 1, 103, true)]).unwrap();
    assert!(db.status(&row(0, 0, 0, false)).unwrap().unwrap().overload);
}

fn two_connections_write_at_once_without_an_error(url: &DbUrl) {
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut db = store::open(&url).unwrap();
                for n in 0..200u32 {
                    let rows: Vec<_> = (0..10u32)
                        .map(|i| StatusRow {
                            module: Module { modid: 10 + t as i32, cmdid: 1 },
                            ip: i,
                            port: 1,
                            caller: 1,
                            succ: 1,
                            err: 0,
                            ts: n,
                            overload: false,
                        })
                        .collect();
                    db.write_status(&rows).unwrap();
                    if n % 50 == 0 {
                        db.set_route(Module { modid: 100 + t as i32, cmdid: 1 }, &[node("10.0.0.1:1")])
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut db = store::open(url).unwrap();
    for t in 0..2 {
        for i in 0..10 {
            let probe = StatusRow {
                module: Module { modid: 10 + t, cmdid: 1 },
                ip: i,
                port: 1,
                caller: 1,
                succ: 0,
                err: 0,
                ts: 0,
                overload: false,
            };
            assert_eq!(db.status(&probe).unwrap().unwrap().succ, 200);
        }
    }
    assert_eq!(db.version().unwrap(), 8, "every route change bumped the version once");
}

#[test]
fn a_new_sqlite_file_is_created_with_the_schema_at_version_0() {
    let dir = TempDir::new("schema");
    let url = dir.sqlite();
    assert!(!dir.0.join("lars.db").exists());
    assert_eq!(store::open(&url).unwrap().version().unwrap(), 0);
    assert!(dir.0.join("lars.db").exists());
    // Opening again keeps what is there.
    store::open(&url).unwrap().set_route(M, &[node("10.0.0.1:1")]).unwrap();
    assert_eq!(store::open(&url).unwrap().version().unwrap(), 1);
    let conn = rusqlite::Connection::open(dir.0.join("lars.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn sqlite_route_set_commits_routes_change_and_version_together() {
    let dir = TempDir::new("route-set");
    route_set_commits_routes_change_and_version_together(&dir.sqlite());
}

#[test]
fn sqlite_status_counts_add_up_and_keep_the_last_state() {
    let dir = TempDir::new("status");
    status_counts_add_up_and_keep_the_last_state(&dir.sqlite());
}

#[test]
fn sqlite_two_connections_write_at_once_without_an_error() {
    let dir = TempDir::new("two-writers");
    two_connections_write_at_once_without_an_error(&dir.sqlite());
}

#[test]
fn the_same_storage_behaviours_hold_on_mariadb() {
    let server = Mariadb::start();
    route_set_commits_routes_change_and_version_together(&server.fresh_db());
    status_counts_add_up_and_keep_the_last_state(&server.fresh_db());
    two_connections_write_at_once_without_an_error(&server.fresh_db());
    // An existing database without the tables is an error, not a crash or a silent empty table.
    let missing = server.url("mysql");
    let error = store::open(&missing).unwrap().version().unwrap_err();
    assert!(error.to_string().contains("RouteVersion"), "{error}");
}
