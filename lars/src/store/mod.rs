//! Storage: the original Lars's tables behind one trait, on SQLite (the default) or MySQL/MariaDB.
//!
//! Lars keeps its state in four tables (`docs/LARS.md`, "Database"), shared with operators,
//! scripts and the original's tools:
//!
//! | table | rows | who writes |
//! |---|---|---|
//! | `RouteData(id, modid, cmdid, serverip, serverport)` | one per node of a module | [`Store::set_route`], operators |
//! | `RouteVersion(id, version)` | exactly one, id 1 | bumped by every route change |
//! | `RouteChange(id, modid, cmdid, version)` | one per changed module per change | route changes; `lars-dns` deletes them once pushed |
//! | `ServerCallStatus(modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload)` | one per (module, node, caller) | `lars-reporter` |
//!
//! Every address column holds the unsigned 32-bit integer of the dotted quad (192.168.1.101 is
//! 3232235877), as the original's `%u` writes it; [`Module`] and [`Node`] are the typed views.
//!
//! # The rule of a route change
//!
//! A change to the routes is: edit `RouteData`, insert one `RouteChange` row per changed module
//! with the new version, bump `RouteVersion.version`, all in one transaction. `lars-dns` polls the
//! version, and when it moved loads the table, reads the `RouteChange` rows up to the new version,
//! pushes those modules and deletes the rows ([`Store::changes`], [`Store::delete_changes`]). [`Store::set_route`] is
//! the one place in this crate that writes routes, and it follows the rule; anything else that
//! follows it (the original's scripts, a console) is picked up the same way.
//!
//! # Sharing the database
//!
//! Nothing holds an exclusive lock: SQLite runs in WAL mode with a busy timeout
//! ([`sqlite::BUSY_TIMEOUT`]), so readers never block the writer and a writer waits its turn
//! rather than failing; MySQL is MySQL. A [`Store`] is one connection, owned by one thread (the
//! poller, one per reporter writer); open one per thread with [`open`].
//!
//! # Reports
//!
//! [`Store::write_status`] upserts a batch of [`StatusRow`]s in one transaction, adding each
//! row's counts to the stored ones (`succ_cnt = succ_cnt + new`) and taking its `ts` and
//! `overload`. The original replaces the counts (`succ_cnt = new`), which suits an agent that
//! sends its window's running totals; doorway's agent sends what happened since its last report
//! (one report per module per `report_interval`), so the stored counts are the sums of everything
//! reported, as the tests check.

pub mod mysql;
pub mod sqlite;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use doorway_linux::Pace;

/// A module: the pair `(modid, cmdid)` that names a remote service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Module {
    /// The first half.
    pub modid: i32,
    /// The second half.
    pub cmdid: i32,
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.modid, self.cmdid)
    }
}

/// One node of a route: an IPv4 address and a port.
pub type Node = SocketAddrV4;

/// The integer the tables hold for an address (the dotted quad as an unsigned 32-bit number).
pub fn ip_to_column(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

/// The address of a column's integer, or `None` when it is outside `0..2^32` (a hand-edited row).
pub fn ip_from_column(value: i64) -> Option<Ipv4Addr> {
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One row of `RouteData`, as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// The module.
    pub module: Module,
    /// The node.
    pub node: Node,
}

/// Every route at one version, as `lars-dns` loads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `RouteVersion.version` when the routes were read (in the same transaction).
    pub version: i64,
    /// Every valid `RouteData` row.
    pub routes: Vec<Route>,
    /// Rows whose address or port no node can have (counted, left out of `routes`).
    pub skipped: usize,
}

/// One row for `ServerCallStatus`: a module's calls to one node, seen by one caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRow {
    /// The module.
    pub module: Module,
    /// The node's address (the wire's `int32`, stored as its unsigned value).
    pub ip: u32,
    /// The node's port (the wire's `int32`, stored as its unsigned value).
    pub port: u32,
    /// The reporting agent's address.
    pub caller: u32,
    /// Successful calls to add.
    pub succ: u32,
    /// Failed calls to add.
    pub err: u32,
    /// Unix seconds of the report.
    pub ts: u32,
    /// Whether the agent holds the node overloaded.
    pub overload: bool,
}

impl StatusRow {
    /// The table's primary key.
    pub fn key(&self) -> (Module, u32, u32, u32) {
        (self.module, self.ip, self.port, self.caller)
    }
}

/// The stored state of one `ServerCallStatus` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCounts {
    /// `succ_cnt`.
    pub succ: i64,
    /// `err_cnt`.
    pub err: i64,
    /// `ts`.
    pub ts: i64,
    /// `overload`.
    pub overload: bool,
}

/// Where the database is: `sqlite://PATH` or `mysql://user:pass@host:port/db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    /// An SQLite file, created with the schema if missing.
    Sqlite(PathBuf),
    /// A MySQL or MariaDB database with the original schema (the URL as given).
    Mysql(String),
}

impl DbUrl {
    /// Reads a URL.
    pub fn parse(url: &str) -> core::result::Result<DbUrl, UrlError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(UrlError::NoPath);
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("mysql://") {
            ::mysql::Opts::from_url(url).map_err(|e| UrlError::Mysql(e.to_string()))?;
            return Ok(DbUrl::Mysql(url.to_string()));
        }
        Err(UrlError::Scheme)
    }
}

impl fmt::Display for DbUrl {
    /// The URL with any password left out, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DbUrl::Mysql(url) => match ::mysql::Opts::from_url(url) {
                Ok(opts) => write!(
                    f,
                    "mysql://{}@{}:{}/{}",
                    opts.get_user().unwrap_or(""),
                    opts.get_ip_or_hostname(),
                    opts.get_tcp_port(),
                    opts.get_db_name().unwrap_or("")
                ),
                Err(_) => f.write_str("mysql://?"),
            },
        }
    }
}

impl std::str::FromStr for DbUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        DbUrl::parse(s)
    }
}

/// Why a database URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Neither `sqlite://` nor `mysql://`.
    Scheme,
    /// `sqlite://` with no path.
    NoPath,
    /// A `mysql://` URL the client cannot read (its message).
    Mysql(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme => {
                f.write_str("a database URL is sqlite://PATH or mysql://user:pass@host:port/db")
            }
            UrlError::NoPath => f.write_str("sqlite:// needs a file path (sqlite://lars.db)"),
            UrlError::Mysql(e) => write!(f, "bad mysql:// URL: {e}"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Why a storage operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite said no.
    Sqlite(rusqlite::Error),
    /// MySQL said no.
    Mysql(::mysql::Error),
    /// The database has no `RouteVersion` row with id 1 (not a Lars database, or a damaged one).
    NoVersionRow,
    /// A batch or a route too large for one statement's parameters.
    TooLarge(usize),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "sqlite: {e}"),
            StoreError::Mysql(e) => write!(f, "mysql: {e}"),
            StoreError::NoVersionRow => f.write_str("the RouteVersion table has no row with id 1"),
            StoreError::TooLarge(n) => write!(f, "{n} rows are too many for one statement"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Mysql(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<::mysql::Error> for StoreError {
    fn from(e: ::mysql::Error) -> Self {
        StoreError::Mysql(e)
    }
}

/// The storage's result.
pub type Result<T> = core::result::Result<T, StoreError>;

/// One connection to a Lars database.
pub trait Store: Send {
    /// `RouteVersion.version`.
    fn version(&mut self) -> Result<i64>;

    /// Every route and the version they belong to, read in one transaction.
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// The modules of the `RouteChange` rows with `version <= upto`, each once, in order.
    fn changes(&mut self, upto: i64) -> Result<Vec<Module>>;

    /// Deletes the `RouteChange` rows with `version <= upto` (once their modules are pushed).
    fn delete_changes(&mut self, upto: i64) -> Result<()>;

    /// Replaces `module`'s nodes by `nodes` (none: the module has no route) by the rule of a
    /// route change; returns the new version.
    fn set_route(&mut self, module: Module, nodes: &[Node]) -> Result<i64>;

    /// The routes of `module`, or of every module, ordered by module then node.
    fn routes(&mut self, module: Option<Module>) -> Result<Vec<Route>>;

    /// Upserts `rows` into `ServerCallStatus` in one transaction (see the module docs).
    fn write_status(&mut self, rows: &[StatusRow]) -> Result<()>;

    /// The stored counts of one `ServerCallStatus` row, if it exists.
    fn status(&mut self, row: &StatusRow) -> Result<Option<StatusCounts>>;
}

/// Opens a connection to the database at `url` (an SQLite file is created with the schema if
/// missing; a MySQL database must hold the original schema).
pub fn open(url: &DbUrl) -> Result<Box<dyn Store>> {
    Ok(match url {
        DbUrl::Sqlite(path) => Box::new(sqlite::Sqlite::open(path)?),
        DbUrl::Mysql(url) => Box::new(mysql::Mysql::open(url)?),
    })
}

/// The nodes of `rows` that are valid, and how many were not.
fn valid_routes(rows: impl IntoIterator<Item = (i64, i64, i64, i64)>) -> (Vec<Route>, usize) {
    let mut skipped = 0;
    let mut routes = Vec::new();
    let mut pace = Pace::new();
    for (modid, cmdid, ip, port) in rows {
        pace.step();
        let module = i32::try_from(modid).ok().zip(i32::try_from(cmdid).ok());
        let node = ip_from_column(ip).zip(u16::try_from(port).ok());
        match (module, node) {
            (Some((modid, cmdid)), Some((ip, port))) => {
                routes.push(Route { module: Module { modid, cmdid }, node: SocketAddrV4::new(ip, port) })
            }
            _ => skipped += 1,
        }
    }
    (routes, skipped)
}

/// The rows of a batch merged by primary key: counts added, the last `ts` and `overload` kept, in
/// the order of each key's first row. One upsert per key keeps a batch's statement small.
pub fn merge_rows(rows: &[StatusRow]) -> Vec<StatusRow> {
    let mut index = std::collections::HashMap::with_capacity(rows.len());
    let mut merged: Vec<StatusRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match index.entry(row.key()) {
            std::collections::hash_map::Entry::Occupied(at) => {
                let into: &mut StatusRow = &mut merged[*at.get()];
                into.succ = into.succ.wrapping_add(row.succ);
                into.err = into.err.wrapping_add(row.err);
                into.ts = row.ts;
                into.overload = row.overload;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(merged.len());
                merged.push(*row);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_sqlite_or_mysql_and_nothing_else() {
        assert_eq!(DbUrl::parse("sqlite://lars.db"), Ok(DbUrl::Sqlite("lars.db".into())));
        assert_eq!(DbUrl::parse("sqlite:///var/lib/lars.db"), Ok(DbUrl::Sqlite("/var/lib/lars.db".into())));
        assert_eq!(DbUrl::parse("sqlite://"), Err(UrlError::NoPath));
        assert_eq!(DbUrl::parse("postgres://x"), Err(UrlError::Scheme));
        assert_eq!(DbUrl::parse("lars.db"), Err(UrlError::Scheme));
        let url = DbUrl::parse("mysql://root:secret@127.0.0.1:3307/lars_dns").unwrap();
        assert_eq!(url.to_string(), "mysql://root@127.0.0.1:3307/lars_dns", "the password is never shown");
        assert!(matches!(DbUrl::parse("mysql://root@host:notaport/db"), Err(UrlError::Mysql(_))));
    }

    #[test]
    fn rows_no_node_can_have_are_skipped_and_counted() {
        let (routes, skipped) = valid_routes([
            (1, 1, 3_232_235_877, 7001),
            (1, 1, -1, 7002),
            (1, 1, 1 << 32, 7003),
            (1, 1, 1, 65_536),
            (1 << 40, 1, 1, 1),
        ]);
        assert_eq!(skipped, 4);
        assert_eq!(
            routes,
            [Route { module: Module { modid: 1, cmdid: 1 }, node: "192.168.1.101:7001".parse().unwrap() }]
        );
    }

    #[test]
    fn a_batch_merges_rows_of_one_key_adding_counts_and_keeping_the_last_state() {
        let row = |modid, ip, succ, err, ts, overload| StatusRow {
            module: Module { modid, cmdid: 1 },
            ip,
            port: 80,
            caller: 9,
            succ,
            err,
            ts,
            overload,
        };
        let merged =
            merge_rows(&[row(1, 1, 2, 1, 10, false), row(2, 1, 5, 0, 10, false), row(1, 1, 3, 4, 11, true)]);
        assert_eq!(merged, [row(1, 1, 5, 5, 11, true), row(2, 1, 5, 0, 10, false)]);
    }
}
