//! What the Lars service tests share: temporary databases (SQLite files, MariaDB databases), a
//! blocking Lars TCP client, and a child process that is stopped by its PID.

#![allow(dead_code)]

pub mod mariadb;
pub mod system;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use doorway_lars::store::DbUrl;
use doorway_lars::{encode_frame, Head, MsgId, HEAD_LEN};

/// A directory of its own for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("doorway-lars-{}-{test}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `sqlite://DIR/lars.db` (not created yet).
    pub fn sqlite(&self) -> DbUrl {
        DbUrl::Sqlite(self.0.join("lars.db"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Lars TCP connection, blocking, with a read timeout.
pub struct LarsConn {
    pub stream: TcpStream,
}

impl LarsConn {
    /// Sends a GetRouteRequest for `module` (and subscribes to it, on lars-dns).
    pub fn ask(&mut self, module: doorway_lars::store::Module) {
        self.send(
            MsgId::GetRouteRequest,
            &doorway_lars::GetRouteRequest { modid: module.modid, cmdid: module.cmdid },
        );
    }

    /// The next frame, which must be a GetRouteResponse.
    pub fn answer(&mut self) -> doorway_lars::GetRouteResponse {
        let (msgid, body) = self.recv().unwrap();
        assert_eq!(msgid, i32::from(MsgId::GetRouteResponse));
        <doorway_lars::GetRouteResponse as prost::Message>::decode(&body[..]).unwrap()
    }

    pub fn connect(addr: SocketAddr) -> LarsConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        LarsConn { stream }
    }

    pub fn send(&mut self, msgid: MsgId, body: &impl prost::Message) {
        self.stream.write_all(&encode_frame(msgid, body).unwrap()).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame: its raw msgid and body.
    pub fn recv(&mut self) -> std::io::Result<(i32, Vec<u8>)> {
        let mut head = [0u8; HEAD_LEN];
        self.stream.read_exact(&mut head)?;
        let head = Head::parse(&head).map_err(std::io::Error::other)?;
        let mut body = vec![0u8; head.msglen];
        self.stream.read_exact(&mut body)?;
        Ok((head.msgid, body))
    }

    /// Whether the server closed the connection with nothing more written (within the timeout).
    pub fn closed_silently(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest.is_empty(),
            Err(_) => false,
        }
    }
}

/// A frame's bytes with any msgid and a raw msglen.
pub fn raw_frame(msgid: i32, msglen: i32, body: &[u8]) -> Vec<u8> {
    let mut out = msgid.to_le_bytes().to_vec();
    out.extend_from_slice(&msglen.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A process this test started, stopped (SIGTERM, then SIGKILL after 10 s) by its PID on drop.
pub struct Child(pub Option<std::process::Child>);

impl Child {
    /// Sends SIGTERM to this child's PID.
    pub fn term(&self) {
        if let Some(child) = &self.0 {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    /// Waits up to `limit` for the child to exit; its status, or `None` if it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.term();
            if self.wait_for(Duration::from_secs(10)).is_none() {
                if let Some(mut child) = self.0.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}
