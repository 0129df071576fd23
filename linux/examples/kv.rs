//! kv: a key-value service on doorway, with change notifications and reminders.
//!
//! The whole application is a type, a handler table (`message_map!`) and one line to serve it:
//!
//! | kind | request body       | reply                                                   |
//! |-----:|--------------------|---------------------------------------------------------|
//! | 100  | PUT `key\0value`   | empty PUT; every watcher gets CHANGED `key\0value`      |
//! | 101  | GET `key`          | GET with the value, or NOT_FOUND (110)                  |
//! | 102  | DEL `key`          | empty DEL, or NOT_FOUND                                 |
//! | 103  | WATCH              | empty WATCH; this connection now receives CHANGED (106) |
//! | 104  | REMIND `ms: u32be` | REMIND with body `ding`, `ms` later (a connection timer) |
//!
//! Run it: `cargo run -p doorway-linux --example kv -- --listen 127.0.0.1:7400` (every `doorway`
//! flag works). The service is cloned per shard; the store and the watcher list are shared by
//! all clones through `Arc<Mutex<..>>`, and notifications cross shards via `send_to`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use doorway_core::dispatch::{Context, Request, SendError, Service};
use doorway_core::message_map;
use doorway_core::slab::ConnId;

/// Store `key\0value`.
pub const PUT: u16 = 100;
/// Read a key.
pub const GET: u16 = 101;
/// Delete a key.
pub const DEL: u16 = 102;
/// Subscribe to changes.
pub const WATCH: u16 = 103;
/// Ask for a reminder after some milliseconds.
pub const REMIND: u16 = 104;
/// Pushed to watchers: `key\0value` after a PUT.
pub const CHANGED: u16 = 106;
/// No such key.
pub const NOT_FOUND: u16 = 110;

/// The service: shared store, shared watcher list.
#[derive(Clone, Default)]
pub struct Kv {
    store: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
    watchers: Arc<Mutex<Vec<ConnId>>>,
}

impl Kv {
    fn put(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let Some(split) = req.body.iter().position(|&b| b == 0) else {
            return cx.reply(NOT_FOUND, req.seq, b"PUT body is key\\0value");
        };
        let (key, value) = (&req.body[..split], &req.body[split + 1..]);
        self.store.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_vec(), value.to_vec());
        cx.reply(PUT, req.seq, b"")?;
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for w in watchers {
            // A watcher that vanished or cannot keep up simply misses the notification.
            let _ = cx.send_to(w, CHANGED, 0, req.body);
        }
        Ok(())
    }

    fn get(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match store.get(req.body) {
            Some(v) => cx.reply(GET, req.seq, v),
            None => cx.reply(NOT_FOUND, req.seq, b""),
        }
    }

    fn del(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let removed = self.store.lock().unwrap_or_else(|e| e.into_inner()).remove(req.body);
        cx.reply(if removed.is_some() { DEL } else { NOT_FOUND }, req.seq, b"")
    }

    fn watch(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner()).push(cx.conn());
        cx.reply(WATCH, req.seq, b"")
    }

    fn remind(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let ms = match req.body {
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => return cx.reply(NOT_FOUND, req.seq, b"REMIND body is ms: u32be"),
        };
        // The request's seq is the timer token: the reminder answers it.
        match cx.set_timer(req.seq, ms) {
            Ok(()) => Ok(()),
            Err(_) => cx.reply(NOT_FOUND, req.seq, b"no timer"),
        }
    }
}

message_map! {
    Kv {
        PUT => put,
        GET => get,
        DEL => del,
        WATCH => watch,
        REMIND => remind,
    }
}

impl Service for Kv {
    fn on_close(&mut self, conn: ConnId) {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner()).retain(|w| *w != conn);
    }

    fn on_timer<C: Context>(&mut self, cx: &mut C, token: u32) {
        let _ = cx.reply(REMIND, token, b"ding");
    }
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cfg = match doorway_linux::Cli::parse().into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("kv: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    env_logger::Builder::new().filter_level(cfg.log_level.filter()).init();
    let server = doorway_linux::Server::builder().config(cfg).handle_signals(true);
    match server.start(Kv::default()) {
        Ok(running) => {
            println!("kv listening on {}", running.local_addr());
            match running.wait() {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kv: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("kv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
