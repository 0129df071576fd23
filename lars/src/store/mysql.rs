//! The MySQL/MariaDB store: the original's database, as its own `base/sql/lars_dns.sql` creates it.
//!
//! Nothing here creates tables: an existing Lars database works as it is, and a new one is made
//! with the original's script (the test harness does that, `tests/common/mariadb.rs`). Reads of
//! the whole table use a consistent snapshot, so the routes and the version belong together; a
//! route change locks the version row (`SELECT ... FOR UPDATE`) first, so two writers take turns.
//! `overload` is the original's `char(1)`, written `'0'` or `'1'`.
//!
//! Reports go in as multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements of at most
//! [`ROWS_PER_STATEMENT`] rows, all of one batch in one transaction.

use doorway_linux::Pace;
use mysql::prelude::Queryable;
use mysql::{AccessMode, Conn, Opts, Params, TxOpts, Value};

use super::{
    merge_rows, valid_routes, Module, Node, Result, Route, Snapshot, StatusCounts, StatusRow, Store,
    StoreError,
};

/// Rows per upsert statement (9 parameters each, well under the protocol's 65,535).
pub const ROWS_PER_STATEMENT: usize = 1000;

/// A connection to a MySQL/MariaDB Lars database.
pub struct Mysql {
    conn: Conn,
}

impl Mysql {
    /// Connects to `url` (`mysql://user:pass@host:port/db`).
    pub fn open(url: &str) -> Result<Mysql> {
        let opts = Opts::from_url(url).map_err(|e| StoreError::Mysql(e.into()))?;
        Ok(Mysql { conn: Conn::new(opts)? })
    }
}

fn version_of(q: &mut impl Queryable, lock: bool) -> Result<i64> {
    let sql = if lock {
        "SELECT version FROM RouteVersion WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT version FROM RouteVersion WHERE id = 1"
    };
    q.query_first::<i64, _>(sql)?.ok_or(StoreError::NoVersionRow)
}

fn route_rows(q: &mut impl Queryable, module: Option<Module>) -> Result<Vec<(i64, i64, i64, i64)>> {
    const COLUMNS: &str = "SELECT modid, cmdid, serverip, serverport FROM RouteData";
    Ok(match module {
        Some(m) => q.exec(
            format!("{COLUMNS} WHERE modid = ? AND cmdid = ? ORDER BY serverip, serverport"),
            (m.modid, m.cmdid),
        )?,
        None => {
            let mut pace = Pace::new();
            q.query_map(format!("{COLUMNS} ORDER BY modid, cmdid, serverip, serverport"), |row| {
                pace.step();
                row
            })?
        }
    })
}

impl Store for Mysql {
    fn version(&mut self) -> Result<i64> {
        version_of(&mut self.conn, false)
    }

    fn snapshot(&mut self) -> Result<Snapshot> {
        let mut tx = self.conn.start_transaction(
            TxOpts::default().set_with_consistent_snapshot(true).set_access_mode(Some(AccessMode::ReadOnly)),
        )?;
        let version = version_of(&mut tx, false)?;
        let rows = route_rows(&mut tx, None)?;
        tx.commit()?;
        let (routes, skipped) = valid_routes(rows);
        Ok(Snapshot { version, routes, skipped })
    }

    fn changes(&mut self, upto: i64) -> Result<Vec<Module>> {
        let modules: Vec<(i32, i32)> = self.conn.exec(
            "SELECT DISTINCT modid, cmdid FROM RouteChange WHERE version <= ? ORDER BY modid, cmdid",
            (upto,),
        )?;
        Ok(modules.into_iter().map(|(modid, cmdid)| Module { modid, cmdid }).collect())
    }

    fn delete_changes(&mut self, upto: i64) -> Result<()> {
        self.conn.exec_drop("DELETE FROM RouteChange WHERE version <= ?", (upto,))?;
        Ok(())
    }

    fn set_route(&mut self, module: Module, nodes: &[Node]) -> Result<i64> {
        let mut tx = self.conn.start_transaction(TxOpts::default())?;
        let version = version_of(&mut tx, true)? + 1;
        tx.exec_drop("DELETE FROM RouteData WHERE modid = ? AND cmdid = ?", (module.modid, module.cmdid))?;
        tx.exec_batch(
            "INSERT INTO RouteData (modid, cmdid, serverip, serverport) VALUES (?, ?, ?, ?)",
            nodes.iter().map(|n| (module.modid, module.cmdid, u32::from(*n.ip()), n.port())),
        )?;
        tx.exec_drop(
            "INSERT INTO RouteChange (modid, cmdid, version) VALUES (?, ?, ?)",
            (module.modid, module.cmdid, version),
        )?;
        tx.exec_drop("UPDATE RouteVersion SET version = ? WHERE id = 1", (version,))?;
        tx.commit()?;
        Ok(version)
    }

    fn routes(&mut self, module: Option<Module>) -> Result<Vec<Route>> {
        Ok(valid_routes(route_rows(&mut self.conn, module)?).0)
    }

    fn write_status(&mut self, rows: &[StatusRow]) -> Result<()> {
        let merged = merge_rows(rows);
        let mut tx = self.conn.start_transaction(TxOpts::default())?;
        for chunk in merged.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO ServerCallStatus (modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) VALUES ",
            );
            let mut values = Vec::with_capacity(chunk.len() * 9);
            for (n, row) in chunk.iter().enumerate() {
                sql.push_str(if n == 0 { "(?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?)" });
                values.extend([
                    Value::from(row.module.modid),
                    Value::from(row.module.cmdid),
                    Value::from(row.ip),
                    Value::from(row.port),
                    Value::from(row.caller),
                    Value::from(row.succ),
                    Value::from(row.err),
                    Value::from(row.ts),
                    Value::from(if row.overload { "1" } else { "0" }),
                ]);
            }
            sql.push_str(
                " ON DUPLICATE KEY UPDATE succ_cnt = succ_cnt + VALUES(succ_cnt), \
                 err_cnt = err_cnt + VALUES(err_cnt), ts = VALUES(ts), overload = VALUES(overload)",
            );
            tx.exec_drop(sql, Params::Positional(values))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn status(&mut self, row: &StatusRow) -> Result<Option<StatusCounts>> {
        let found: Option<(i64, i64, i64, String)> = self.conn.exec_first(
            "SELECT succ_cnt, err_cnt, ts, overload FROM ServerCallStatus \
             WHERE modid = ? AND cmdid = ? AND ip = ? AND port = ? AND caller = ?",
            (row.module.modid, row.module.cmdid, row.ip, row.port, row.caller),
        )?;
        Ok(found.map(|(succ, err, ts, overload)| StatusCounts { succ, err, ts, overload: overload == "1" }))
    }
}

/// The tables of the original's `base/sql/lars_dns.sql` (without its `DROP DATABASE` and
/// `CREATE DATABASE`), for making a new Lars database in an existing MySQL database.
pub const ORIGINAL_SCHEMA: &str = "
CREATE TABLE RouteData (
    id int(10) unsigned NOT NULL AUTO_INCREMENT,
    modid int(10) unsigned NOT NULL,
    cmdid int(10) unsigned NOT NULL,
    serverip int(10) unsigned NOT NULL,
    serverport int(10) unsigned NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
CREATE TABLE RouteVersion (
    id int(10) unsigned NOT NULL AUTO_INCREMENT,
    version int(10) unsigned NOT NULL,
    PRIMARY KEY (id)
);
INSERT INTO RouteVersion (version) VALUES (0);
CREATE TABLE RouteChange (
    id int(10) unsigned NOT NULL AUTO_INCREMENT,
    modid int(10) unsigned NOT NULL,
    cmdid int(10) unsigned NOT NULL,
    version bigint(20) unsigned NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE ServerCallStatus (
    modid int(11) NOT NULL,
    cmdid int(11) NOT NULL,
    ip int(11) unsigned NOT NULL,
    port int(11) unsigned NOT NULL,
    caller int(11) unsigned NOT NULL,
    succ_cnt int(11) NOT NULL,
    err_cnt int(11) NOT NULL,
    ts bigint(20) NOT NULL,
    overload char(1) NOT NULL,
    PRIMARY KEY (modid, cmdid, ip, port, caller),
    KEY mlb_index (modid, cmdid, ip, port, caller)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;
";

impl Mysql {
    /// Creates the original's tables ([`ORIGINAL_SCHEMA`]) in the connection's database.
    pub fn create_schema(&mut self) -> Result<()> {
        self.conn.query_drop(ORIGINAL_SCHEMA)?;
        Ok(())
    }
}
