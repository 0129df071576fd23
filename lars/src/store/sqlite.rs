//! The SQLite store: one file, created with the original's tables on first open.
//!
//! The tables keep the original's names and columns, with SQLite's `INTEGER` for every number
//! (SQLite integers are 64-bit, so an unsigned 32-bit address fits as it is) and `overload` as 0
//! or 1. The connection runs in WAL mode (readers never block the writer) with `synchronous =
//! NORMAL` (a commit survives the process dying; the last commits may be lost to a power cut) and
//! a busy timeout of [`BUSY_TIMEOUT`], so two programs sharing the file wait for each other
//! instead of failing. Writes take the write lock when they begin (`BEGIN IMMEDIATE`), so a
//! transaction never has to upgrade a read lock, which SQLite can only answer with `SQLITE_BUSY`.

use std::path::Path;
use std::time::Duration;

use doorway_linux::Pace;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    merge_rows, valid_routes, Module, Node, Result, Route, Snapshot, StatusCounts, StatusRow, Store,
    StoreError,
};

/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The original's tables, in SQLite's words; run on every open (each statement is idempotent).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS RouteData (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    serverip INTEGER NOT NULL,
    serverport INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS RouteData_module ON RouteData (modid, cmdid);
CREATE TABLE IF NOT EXISTS RouteVersion (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO RouteVersion (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS RouteChange (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ServerCallStatus (
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    ip INTEGER NOT NULL,
    port INTEGER NOT NULL,
    caller INTEGER NOT NULL,
    succ_cnt INTEGER NOT NULL,
    err_cnt INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    overload INTEGER NOT NULL,
    PRIMARY KEY (modid, cmdid, ip, port, caller)
);
";

const UPSERT: &str = "INSERT INTO ServerCallStatus \
    (modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
    ON CONFLICT (modid, cmdid, ip, port, caller) DO UPDATE SET \
    succ_cnt = succ_cnt + excluded.succ_cnt, err_cnt = err_cnt + excluded.err_cnt, \
    ts = excluded.ts, overload = excluded.overload";

/// A connection to an SQLite Lars database.
pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating if missing) the database at `path`, with the schema.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // `journal_mode` answers the mode it set, so it is read as a query.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))?;
        Ok(Sqlite { conn })
    }

    fn version_of(conn: &Connection) -> Result<i64> {
        conn.query_row("SELECT version FROM RouteVersion WHERE id = 1", [], |row| row.get(0))
            .optional()?
            .ok_or(StoreError::NoVersionRow)
    }
}

impl Store for Sqlite {
    fn version(&mut self) -> Result<i64> {
        Self::version_of(&self.conn)
    }

    fn snapshot(&mut self) -> Result<Snapshot> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let version = Self::version_of(&tx)?;
        let (routes, skipped) = {
            let mut stmt = tx.prepare("SELECT modid, cmdid, serverip, serverport FROM RouteData")?;
            let mut pace = Pace::new();
            let rows = stmt.query_map([], |r| {
                pace.step();
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            valid_routes(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        };
        tx.commit()?;
        Ok(Snapshot { version, routes, skipped })
    }

    fn changes(&mut self, upto: i64) -> Result<Vec<Module>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT modid, cmdid FROM RouteChange WHERE version <= ?1 ORDER BY modid, cmdid",
        )?;
        let rows = stmt.query_map([upto], |r| Ok(Module { modid: r.get(0)?, cmdid: r.get(1)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn delete_changes(&mut self, upto: i64) -> Result<()> {
        self.conn.execute("DELETE FROM RouteChange WHERE version <= ?1", [upto])?;
        Ok(())
    }

    fn set_route(&mut self, module: Module, nodes: &[Node]) -> Result<i64> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = Self::version_of(&tx)? + 1;
        tx.execute("DELETE FROM RouteData WHERE modid = ?1 AND cmdid = ?2", [module.modid, module.cmdid])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO RouteData (modid, cmdid, serverip, serverport) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for node in nodes {
                insert.execute(params![module.modid, module.cmdid, u32::from(*node.ip()), node.port()])?;
            }
        }
        tx.execute(
            "INSERT INTO RouteChange (modid, cmdid, version) VALUES (?1, ?2, ?3)",
            params![module.modid, module.cmdid, version],
        )?;
        tx.execute("UPDATE RouteVersion SET version = ?1 WHERE id = 1", [version])?;
        tx.commit()?;
        Ok(version)
    }

    fn routes(&mut self, module: Option<Module>) -> Result<Vec<Route>> {
        let (filter, args) = match module {
            Some(m) => ("WHERE modid = ?1 AND cmdid = ?2", vec![m.modid, m.cmdid]),
            None => ("", vec![]),
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT modid, cmdid, serverip, serverport FROM RouteData {filter} \
             ORDER BY modid, cmdid, serverip, serverport"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(valid_routes(rows.collect::<rusqlite::Result<Vec<_>>>()?).0)
    }

    fn write_status(&mut self, rows: &[StatusRow]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(UPSERT)?;
            for row in merge_rows(rows) {
                upsert.execute(params![
                    row.module.modid,
                    row.module.cmdid,
                    row.ip,
                    row.port,
                    row.caller,
                    row.succ,
                    row.err,
                    row.ts,
                    row.overload
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn status(&mut self, row: &StatusRow) -> Result<Option<StatusCounts>> {
        Ok(self
            .conn
            .query_row(
                "SELECT succ_cnt, err_cnt, ts, overload FROM ServerCallStatus \
                 WHERE modid = ?1 AND cmdid = ?2 AND ip = ?3 AND port = ?4 AND caller = ?5",
                params![row.module.modid, row.module.cmdid, row.ip, row.port, row.caller],
                |r| {
                    Ok(StatusCounts {
                        succ: r.get(0)?,
                        err: r.get(1)?,
                        ts: r.get(2)?,
                        overload: r.get::<_, i64>(3)? != 0,
                    })
                },
            )
            .optional()?)
    }
}
