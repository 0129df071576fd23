//! A MariaDB server of the test's own: installed with apt if missing, started on a private data
//! directory and a free port of 127.0.0.1 (no systemd, no password set by hand), stopped by its
//! PID when the [`Mariadb`] value is dropped.
//!
//! Bootstrap: `mariadb-install-db` makes the data directory; `mariadbd` runs as a plain child
//! process (`--user=root` when the tests run as root, which mariadbd otherwise refuses); the
//! harness connects once over the private Unix socket as the OS user (MariaDB's `unix_socket`
//! authentication, or the empty root password `--auth-root-authentication-method=normal` gives)
//! and creates the user `lars`@`127.0.0.1` with a password. Tests connect over TCP with
//! `mysql://lars:lars-test@127.0.0.1:PORT/DB`, as an operator would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use doorway_lars::store::mysql::Mysql;
use doorway_lars::store::DbUrl;
use mysql::prelude::Queryable;

use super::{Child, TempDir};

/// The user the harness creates (all privileges, from 127.0.0.1).
pub const USER: &str = "lars";
/// Its password.
pub const PASSWORD: &str = "lars-test";
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running MariaDB of this test.
pub struct Mariadb {
    // Field order: the server stops before its directory is removed.
    server: Child,
    dir: TempDir,
    port: u16,
    next_db: AtomicU32,
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// `mariadbd` and `mariadb-install-db`, installing `mariadb-server` with apt when missing.
fn programs() -> (PathBuf, PathBuf) {
    let both = || Some((find("mariadbd")?, find("mariadb-install-db")?));
    if let Some(found) = both() {
        return found;
    }
    assert!(
        is_root(),
        "MariaDB is not installed and this is not root: run `cargo xtask setup` or install mariadb-server"
    );
    eprintln!("mariadb: not installed; apt-get install mariadb-server");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "mariadb-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        assert!(install(), "apt-get install mariadb-server failed");
    }
    both().expect("mariadb-server installed but mariadbd or mariadb-install-db not found")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free TCP port of 127.0.0.1 below 32768: the original Lars programs read their ports into a
/// C `short`, so a larger one (every ephemeral port) turns negative on its way to the client library.
pub fn free_low_port() -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (start..32_768)
        .chain(20_000..start)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("no free TCP port below 32768")
}

impl Mariadb {
    /// Installs (if needed), initialises and starts a server; returns once it answers.
    pub fn start() -> Mariadb {
        Self::start_on(free_port())
    }

    /// The same on a port below 32768, which the original Lars programs can reach.
    pub fn start_for_original() -> Mariadb {
        Self::start_on(free_low_port())
    }

    fn start_on(port: u16) -> Mariadb {
        let (mariadbd, install_db) = programs();
        let dir = TempDir::new("mariadb");
        let data = dir.0.join("data");
        let root = is_root();
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=root");
        }
        let out = install.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));

        let socket = dir.0.join("mariadb.sock");
        let mut server = Command::new(mariadbd);
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.0.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", dir.0.join("mariadb.err").display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size=128M"])
            .args(["--innodb-flush-log-at-trx-commit=1", "--max-connections=200"]);
        if root {
            server.arg("--user=root");
        }
        let child = server.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut db = Mariadb { server: Child(Some(child)), dir, port, next_db: AtomicU32::new(0) };
        db.bootstrap(&socket);
        db
    }

    /// Creates the `lars` user over the Unix socket, once the server answers there.
    fn bootstrap(&mut self, socket: &Path) {
        let deadline = Instant::now() + START_LIMIT;
        let mut conn = loop {
            let opts = mysql::OptsBuilder::new().socket(Some(socket.to_str().unwrap())).user(Some("root"));
            match mysql::Conn::new(opts) {
                Ok(conn) => break conn,
                Err(e) => {
                    if let Some(status) = self.server.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        let log = std::fs::read_to_string(self.dir.0.join("mariadb.err")).unwrap_or_default();
                        panic!("mariadbd exited ({status}):\n{log}");
                    }
                    assert!(Instant::now() < deadline, "mariadbd did not answer within {START_LIMIT:?}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        conn.query_drop(format!(
            "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'; FLUSH PRIVILEGES;"
        ))
        .unwrap();
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` (any number of statements) with no database selected, as the harness's user.
    pub fn exec_admin(&self, sql: &str) {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some(USER))
            .pass(Some(PASSWORD));
        mysql::Conn::new(opts).unwrap().query_drop(sql).unwrap();
    }

    /// The URL of database `name` (which may not exist).
    pub fn url(&self, name: &str) -> DbUrl {
        DbUrl::parse(&format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{name}", self.port)).unwrap()
    }

    /// A new database with the original's tables.
    pub fn fresh_db(&self) -> DbUrl {
        let name = format!("lars_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.exec_admin(&format!("CREATE DATABASE {name}"));
        let url = self.url(&name);
        let DbUrl::Mysql(text) = &url else { unreachable!() };
        Mysql::open(text).unwrap().create_schema().unwrap();
        url
    }

    /// Runs `sql` in database `url` (for edits made the way other tools make them).
    pub fn exec(&self, url: &DbUrl, sql: &str) {
        let DbUrl::Mysql(text) = url else { panic!("not a MySQL URL") };
        mysql::Conn::new(mysql::Opts::from_url(text).unwrap()).unwrap().query_drop(sql).unwrap();
    }
}
