//! The message map: handlers declared in one table, dispatched by a `match` (消息映射,
//! docs/ARCHITECTURE.md#message-map).
//!
//! An application is a type with handler methods and one [`message_map!`] table. The macro
//! expands to an impl of [`MessageMap`] whose `dispatch` is a single `match` on the kind, which
//! the compiler lowers to a jump table: O(1), no heap, no hand-written switch in user code. A
//! kind with no row is answered by the protocol's one fallback (ERROR 2, [`Dispatched::Unknown`]).
//!
//! ```
//! use doorway_core::dispatch::{Context, Request, SendError, Service};
//! use doorway_core::message_map;
//!
//! struct Greeter;
//!
//! impl Greeter {
//!     fn hello(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
//!         cx.reply(req.kind, req.seq, b"hello")
//!     }
//! }
//!
//! message_map! {
//!     Greeter {
//!         100 => hello,
//!     }
//! }
//!
//! impl Service for Greeter {}
//! ```
//!
//! # Who does what
//!
//! - A binding (Linux reactor, embedded task) decodes frames and calls [`handle_frame`], which
//!   applies the protocol's control rules (PING, PONG, BYE, reserved kinds, client ERRORs) and
//!   hands application kinds to the service's map.
//! - The binding implements [`Context`]: queueing replies on the connection, sending to another
//!   connection, broadcasting, closing, timers and counters. Handlers see only this trait, so one
//!   service runs unchanged on both homes.
//! - The service implements [`Service`] (hooks with defaults) on top of the generated
//!   [`MessageMap`].

use crate::frame::{self, kind, ErrorCode, FrameRef};
use crate::slab::ConnId;
use core::fmt;

/// One decoded request as a handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// The connection it arrived on.
    pub conn: ConnId,
    /// Message kind.
    pub kind: u16,
    /// Sequence number, to be echoed by the reply.
    pub seq: u32,
    /// The body, borrowed from the receive buffer.
    pub body: &'a [u8],
}

/// Why output could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// The connection's send queue or the buffer pool is exhausted.
    Full,
    /// The target connection is gone or closing.
    Closed,
    /// The body is larger than the binding can send in one frame.
    TooLarge,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "send queue full",
            SendError::Closed => "connection closed",
            SendError::TooLarge => "body too large",
        })
    }
}

impl core::error::Error for SendError {}

/// An upstream link: a connection the server dials and keeps dialled (a route service, an
/// aggregation tier). The id stays the same across reconnects, unlike the `ConnId` of each
/// connection the link makes, so a service can hold "the route service link" for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkId(pub u16);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// Why a timer could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TimerError {
    /// No timer slot is free.
    Full,
    /// The delay is beyond the wheel's range.
    OutOfRange,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimerError::Full => "no free timer",
            TimerError::OutOfRange => "delay out of range",
        })
    }
}

impl core::error::Error for TimerError {}

/// What a binding offers a handler. One implementation per home (Linux, embedded).
pub trait Context {
    /// The connection the current request (or timer) belongs to.
    fn conn(&self) -> ConnId;

    /// Queues a frame on the current connection, in reply order.
    fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError>;

    /// Queues a frame on another connection. A stale id answers `Err(Closed)`.
    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError>;

    /// Queues a frame on every connection still accepting requests (the current one included);
    /// returns how many took it. A connection that cannot take it is treated as a slow consumer.
    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize;

    /// Closes the current connection after the replies already queued are sent.
    fn close(&mut self);

    /// Input backpressure: declines the current request for now. Called from a handler (before
    /// replying), the request is kept and delivered again, in order, once the connection is
    /// resumed; reading the connection stops meanwhile (the peer is held back by TCP flow control,
    /// so memory stays flat however fast it sends) and its idle clock stops. A binding resumes on
    /// [`Context::resume`] from a hook of the same connection (a timer, say) or on its own API from
    /// another thread (`Handle::resume` on Linux). Returns `false` where the binding cannot pause:
    /// the request must then be handled now.
    fn pause(&mut self) -> bool {
        false
    }

    /// Resumes a connection paused with [`Context::pause`] (from one of its own hooks).
    fn resume(&mut self) {}

    /// The link the current frame arrived on, if it came from upstream rather than a client.
    fn link(&self) -> Option<LinkId> {
        None
    }

    /// Queues a frame on an upstream link. While the link is down the frame waits in the link's
    /// bounded queue and goes out, in order, once it is up again; a full queue answers `Full`, an
    /// unknown link `Closed`. Bindings without links answer `Closed`.
    fn send_link(&mut self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let _ = (link, kind, seq, body);
        Err(SendError::Closed)
    }

    /// Arms (or re-arms) the current connection's timer `token` to fire after `after_ms`;
    /// [`Service::on_timer`] receives it. Timers die with their connection.
    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError>;

    /// Disarms the current connection's timer `token`, if armed.
    fn cancel_timer(&mut self, token: u32);

    /// Visits the server's counters by name, for STATS and metrics.
    fn counters(&self, visit: &mut dyn FnMut(&str, u64));

    /// Queues an ERROR frame with the protocol's `seq` rule.
    fn reply_error(&mut self, code: ErrorCode, refused_seq: u32) -> Result<(), SendError> {
        let mut body = [0u8; frame::MAX_ERROR_BODY];
        let n = frame::error_body(&mut body, code);
        let seq = if code.echoes_seq() { refused_seq } else { 0 };
        self.reply(kind::ERROR, seq, &body[..n])
    }
}

/// What a service can do where no connection is current: in [`Service::on_start`] and
/// [`Service::on_shard_timer`], the shard-wide hooks for work such as aggregating and flushing.
///
/// Its timers belong to the shard (the same timing wheel as connection timers), not to a
/// connection: they live until they fire or are cancelled.
pub trait Outbox {
    /// Queues a frame on a connection. A stale id answers `Err(Closed)`.
    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError>;

    /// Queues a frame on every connection still accepting requests; returns how many took it.
    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize;

    /// Arms (or re-arms) the shard timer `token` to fire after `after_ms`;
    /// [`Service::on_shard_timer`] receives it.
    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError>;

    /// Disarms the shard timer `token`, if armed.
    fn cancel_timer(&mut self, token: u32);

    /// Visits the server's counters by name.
    fn counters(&self, visit: &mut dyn FnMut(&str, u64));

    /// Queues a frame on an upstream link (see [`Context::send_link`]).
    fn send_link(&mut self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let _ = (link, kind, seq, body);
        Err(SendError::Closed)
    }
}

/// What the generated map did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dispatched {
    /// A handler ran and returned this.
    Handled(Result<(), SendError>),
    /// No row for the kind.
    Unknown,
}

/// The dispatch table, generated by [`message_map!`].
pub trait MessageMap {
    /// Runs the handler for `req.kind`, or answers `Unknown`.
    fn dispatch<C: Context>(&mut self, cx: &mut C, req: &Request<'_>) -> Dispatched;
}

/// An application: a message map plus optional lifecycle hooks.
pub trait Service: MessageMap {
    /// A connection was admitted. Every `on_open` is followed by exactly one [`Service::on_close`]
    /// for that connection, and `on_close` never runs for a connection without one (a refused
    /// connection, or one that died before it was first served, never reaches the service).
    fn on_open<C: Context>(&mut self, cx: &mut C) {
        let _ = cx;
    }

    /// A connection that [`Service::on_open`] saw is gone (exactly once); `conn` is already stale.
    fn on_close(&mut self, conn: ConnId) {
        let _ = conn;
    }

    /// A timer set with [`Context::set_timer`] fired.
    fn on_timer<C: Context>(&mut self, cx: &mut C, token: u32) {
        let _ = (cx, token);
    }

    /// An upstream link is up (again): the place to re-send subscriptions. Frames queued while it
    /// was down have been put on the wire first. `cx` is the link's connection: `reply` sends on it.
    fn on_link_up<C: Context>(&mut self, cx: &mut C, link: LinkId) {
        let _ = (cx, link);
    }

    /// An upstream link went down; the server reconnects with backoff by itself. `out` reaches
    /// the clients (to tell those waiting on the link, say).
    fn on_link_down<O: Outbox>(&mut self, out: &mut O, link: LinkId) {
        let _ = (out, link);
    }

    /// The service's instance starts serving (once per instance, before any connection; on Linux
    /// once per shard). The place to arm shard timers. Bindings without shard-wide hooks never
    /// call it.
    fn on_start<O: Outbox>(&mut self, out: &mut O) {
        let _ = out;
    }

    /// A shard timer set with [`Outbox::set_timer`] fired.
    fn on_shard_timer<O: Outbox>(&mut self, out: &mut O, token: u32) {
        let _ = (out, token);
    }
}

/// Declares a type's message map: `Type { kind_pattern => method, ... }`.
///
/// Each method has the shape
/// `fn name(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError>`.
/// Patterns are any `u16` patterns (constants, literals, ranges). Kinds below 64 never reach the
/// map: [`handle_frame`] answers them per the protocol.
#[macro_export]
macro_rules! message_map {
    ($ty:ty { $($kind:pat => $handler:ident),* $(,)? }) => {
        impl $crate::dispatch::MessageMap for $ty {
            #[inline]
            fn dispatch<C: $crate::dispatch::Context>(
                &mut self,
                cx: &mut C,
                req: &$crate::dispatch::Request<'_>,
            ) -> $crate::dispatch::Dispatched {
                #[allow(unreachable_patterns)]
                match req.kind {
                    $($kind => $crate::dispatch::Dispatched::Handled(self.$handler(cx, req)),)*
                    _ => $crate::dispatch::Dispatched::Unknown,
                }
            }
        }
    };
}

/// What the binding does after a frame was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Control {
    /// Keep reading the connection.
    Continue,
    /// BYE: send what is owed, ignore further input, close.
    Bye,
    /// Output could not be queued; the binding closes the connection as a slow consumer.
    SendFailed(SendError),
    /// An unknown kind was skipped without an answer (the Lars wire); the binding counts it.
    Skipped,
}

/// Applies `docs/PROTOCOL.md`'s kind rules to one decoded frame on `cx.conn()`.
///
/// PING → PONG; PONG consumed; BYE → [`Control::Bye`]; kind 0, reserved kinds (5..64), a client's
/// ERROR, and application kinds without a handler → ERROR 2 (connection stays open); the rest go
/// to the service's message map.
///
/// The rules belong to the v1 wire ([`crate::wire::V1`]); this is its entry point for a binding
/// that holds a decoded [`FrameRef`].
pub fn handle_frame<S: Service, C: Context>(service: &mut S, cx: &mut C, frame: &FrameRef<'_>) -> Control {
    use crate::wire::{Head, Wire, V1};
    let h = frame.header;
    let head = Head { kind: Some(h.kind), seq: h.seq, body_len: frame.body.len() };
    V1::default().handle(service, cx, head, frame.body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::{Decoder, Header};

    /// A recording context for tests.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) sent: Vec<(ConnId, u16, u32, Vec<u8>)>,
        pub(crate) closed: bool,
        pub(crate) timers: Vec<(u32, u32)>,
    }

    impl Context for Recorder {
        fn conn(&self) -> ConnId {
            ConnId::new(1, 0)
        }
        fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
            self.sent.push((self.conn(), kind, seq, body.to_vec()));
            Ok(())
        }
        fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
            self.sent.push((to, kind, seq, body.to_vec()));
            Ok(())
        }
        fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
            self.sent.push((ConnId::new(u32::MAX, 0), kind, seq, body.to_vec()));
            1
        }
        fn close(&mut self) {
            self.closed = true;
        }
        fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError> {
            self.timers.push((token, after_ms));
            Ok(())
        }
        fn cancel_timer(&mut self, token: u32) {
            self.timers.retain(|t| t.0 != token);
        }
        fn counters(&self, visit: &mut dyn FnMut(&str, u64)) {
            visit("connections_open", 3);
            visit("frames_in", 10);
        }
    }

    /// A key-value service declared in a few lines, no hand-written match.
    #[derive(Default)]
    struct Kv {
        value: Vec<u8>,
    }

    impl Kv {
        fn put(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
            self.value = req.body.to_vec();
            cx.reply(req.kind, req.seq, b"")
        }
        fn get(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
            cx.reply(req.kind, req.seq, &self.value)
        }
    }

    const PUT: u16 = 100;
    message_map! {
        Kv {
            PUT => put,
            101 | 102 => get,
        }
    }
    impl Service for Kv {}

    pub(crate) fn frame(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; 12 + body.len()];
        frame::encode(&mut out, kind, seq, body).unwrap();
        out
    }

    fn run<S: Service>(svc: &mut S, cx: &mut Recorder, kind: u16, seq: u32, body: &[u8]) -> Control {
        let bytes = frame(kind, seq, body);
        let f = Decoder::default().decode(&bytes).unwrap().unwrap();
        handle_frame(svc, cx, &f)
    }

    #[test]
    fn map_dispatches_by_kind() {
        let (mut kv, mut cx) = (Kv::default(), Recorder::default());
        assert_eq!(run(&mut kv, &mut cx, PUT, 1, b"v"), Control::Continue);
        assert_eq!(run(&mut kv, &mut cx, 102, 2, b""), Control::Continue);
        assert_eq!(cx.sent[1], (ConnId::new(1, 0), 102, 2, b"v".to_vec()));
    }

    #[test]
    fn control_rules() {
        let (mut kv, mut cx) = (Kv::default(), Recorder::default());
        assert_eq!(run(&mut kv, &mut cx, kind::PING, 7, b"x"), Control::Continue);
        assert_eq!(cx.sent.pop(), Some((ConnId::new(1, 0), kind::PONG, 7, b"x".to_vec())));
        assert_eq!(run(&mut kv, &mut cx, kind::PONG, 7, b""), Control::Continue);
        assert!(cx.sent.is_empty());
        assert_eq!(run(&mut kv, &mut cx, kind::BYE, 0, b""), Control::Bye);
        for k in [0, kind::ERROR, 5, 63, 64, 999] {
            run(&mut kv, &mut cx, k, 5, b"");
            let (_, sent_kind, seq, body) = cx.sent.pop().unwrap();
            assert_eq!((sent_kind, seq), (kind::ERROR, 5));
            assert_eq!(frame::parse_error_body(&body), Some((2, "unknown kind")));
        }
        let _ = Header::new(0, 0, 0);
    }
}
