//! What `lars-dns` and `lars-reporter` share as doorway services: the server defaults of a Lars
//! program, the `--db` setting, and the rule for bad input.
//!
//! Both programs serve the Lars wire (`doorway_core::wire::Lars`) with the server's `Config`
//! flattened into their own settings ([`lars_server`] gives the Lars defaults: their port, and the
//! idle timeout off, because Lars links send no keepalive and a subscribed agent may stay silent
//! for hours).
//!
//! Bad input: the framework itself closes a connection whose head is refused (a `msglen` below 0
//! or above 65,527) and counts and skips an unknown msgid. What only a service can judge is a body
//! that is not valid protobuf for its msgid; [`BadInput::refuse`] counts it, logs it (once per
//! connection: the connection is closed at once, so it cannot send a second) and closes only
//! that connection.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use doorway_core::dispatch::Context;
use doorway_core::wire::Lars;
use doorway_linux::config::{Kind, ValueError};
use doorway_linux::{Builder, Config, Server, ServiceMetric};

use crate::store::{DbUrl, StoreError};
use crate::MsgId;

/// The server settings of a Lars program listening on `port` of 127.0.0.1: the idle timeout off
/// (Lars links send no keepalive), room for as many agents as the open-file limit allows (the server
/// caps `max_connections` by it), everything else doorway's defaults.
pub fn lars_server(port: u16) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        idle_timeout: None,
        max_connections: 1 << 20,
        ..Config::default()
    }
}

/// A server builder for a Lars program: the Lars wire, `server`'s settings, drain on SIGTERM/SIGINT
/// when `signals`, and `metrics` shown in STATS and on `/metrics`.
pub fn lars_builder<'m>(
    server: &Config,
    signals: bool,
    metrics: impl IntoIterator<Item = &'m ServiceMetric>,
) -> Builder<Lars> {
    let builder = Server::builder().wire(Lars::default()).config(server.clone()).handle_signals(signals);
    metrics.into_iter().fold(builder, Builder::metric)
}

/// The default database: `sqlite://lars.db`.
pub fn default_db() -> DbUrl {
    DbUrl::Sqlite("lars.db".into())
}

impl Kind for DbUrl {
    type Value = DbUrl;
    const VALUE_NAME: Option<&'static str> = Some("URL");

    fn parse(text: &str) -> Result<DbUrl, ValueError> {
        DbUrl::parse(text)
            .map_err(|e| ValueError { text: text.to_string(), expected: Cow::Owned(e.to_string()) })
    }

    fn show(value: &DbUrl) -> String {
        value.to_string()
    }
}

/// Counts and closes connections that send a body that is not protobuf for its msgid.
#[derive(Clone, Debug)]
pub struct BadInput {
    /// `bad_requests`: bodies refused.
    pub metric: ServiceMetric,
}

impl Default for BadInput {
    fn default() -> Self {
        BadInput { metric: ServiceMetric::counter("bad_requests") }
    }
}

impl BadInput {
    /// Counts the refusal, logs it and closes the current connection after what it is owed.
    pub fn refuse(&self, cx: &mut impl Context, msgid: MsgId, error: &prost::DecodeError) {
        self.metric.add(1);
        log::debug!("connection {:?}: bad {msgid} body ({error}); closing it", cx.conn());
        cx.close();
    }
}

/// Why a Lars service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database cannot be opened or read.
    Store(StoreError),
    /// The server cannot start (address in use, ...).
    Server(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "database: {e}"),
            StartError::Server(e) => write!(f, "server: {e}"),
        }
    }
}

impl std::error::Error for StartError {}
