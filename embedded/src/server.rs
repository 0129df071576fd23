//! The server loop: one future per socket, all joined in the caller's task with a `clock` (the
//! timing wheel) and, in [`serve_until`], the caller's `stop` future.
//!
//! ```text
//! socket i ── accept ─┬─▶ admitted: session (read ─▶ Decoder ─▶ handle_frame ─▶ Cx ─▶ OutBuf i ─▶ write)
//!                     └─▶ full:     ERROR 5 SERVER_FULL
//!           ─▶ shut down (FIN, discard input until it is acknowledged, bounded) ─▶ accept again
//! stop ─▶ Hub::stop ─▶ listening sockets abort, sessions drain ─▶ ERROR 7 ─▶ shut down ─▶ return
//! ```
//!
//! # Admission and refusal
//!
//! All `SOCKETS` sockets listen on the port and are alike. When one accepts, the connection is
//! admitted if fewer than [`Config::max_connections`] sessions are running, and otherwise answered
//! ERROR 5 (`seq` 0) on that socket and shut down. A session stops counting the moment it ends,
//! before its socket finishes closing, so keep a couple of sockets more than `max_connections`:
//! a client that closes one connection and at once opens the next finds a listening socket even
//! though the old one is still exchanging FIN and ACK. A connection that arrives while every
//! socket is busy finds no listener and is reset by the TCP stack: refused either way, never left
//! hanging.
//!
//! A listening socket that receives a SYN stops listening until the handshake completes. One that
//! never completes (a client that lost its link after its SYN, a scanner) would hold the socket
//! forever, and a few of them would leave none listening until reboot; so each listening socket
//! carries a TCP timeout of [`Config::handshake_timeout`] (10 s): the stack resets a handshake
//! that long silent, `accept` returns with the socket closed, and the socket listens again
//! without counting a connection. The timeout is cleared once the connection is in: sessions
//! have their own (idle, write, linger).
//!
//! # One session
//!
//! The session loop keeps the bytes of an unfinished frame in the connection's frame buffer
//! (`BUF` = `max_body` + 12 bytes, so a frame that fits the limit always fits) and handles every
//! whole frame in it through [`handle_frame`]. Replies go to the slot's [`OutBuf`](crate::out)
//! and from there into the socket. Before each frame it checks that the output buffer has `BUF`
//! bytes free, enough for the largest reply of one request; otherwise it stops reading
//! (backpressure), and the idle clock stops while `write_timeout` runs (ERROR 6 when it expires).
//! Then it waits, in one `select`, for input, for the socket to take output, for another
//! connection to queue output here (broadcast), or for the next deadline (idle timeout, timer,
//! write timeout). Nothing in the loop allocates or formats.
//!
//! # Closing
//!
//! After BYE, an ERROR that closes, or the client's half-close, the session hands every reply
//! owed to the socket, then the socket sends FIN and input is discarded until the client has
//! acknowledged all our bytes and closed its side too, bounded by [`Config::linger`]; a socket
//! the client has not closed by then is reset. A refusal only waits for the acknowledgement of
//! its ERROR frame and FIN before the reset, so refused clients cannot pin sockets.
//!
//! # Shutdown
//!
//! [`serve`] never stops. [`serve_until`] takes a `stop` future and, when it completes, does what
//! `PROTOCOL.md` "Shutdown" asks, adapted to a device with no process to exit:
//!
//! 1. `Hub::stop` records the drain deadline (`now` + [`Config::drain_timeout`]), flags every
//!    slot and wakes it. From then on the server is *stopping*.
//! 2. A socket waiting to accept aborts and its future returns: no socket listens any more, so
//!    the TCP stack resets a later SYN (refused, never left hanging), and one caught half-open
//!    gets a reset too. A socket busy with a refusal or a close finishes that, then returns
//!    instead of listening again.
//! 3. A session notices the flag like a kill, but keeps its output. It notes how many bytes its
//!    socket holds at that moment (`drain_left`, at most `SOCK_RX`) and reads no further than
//!    that: what the client sent before the stop is answered, what it sends after is not, so the
//!    drain is bounded however fast the client writes. Every whole frame in the frame buffer and
//!    in those bytes is answered as usual (backpressure included); then ERROR 7 (`seq` 0) goes
//!    last, a trailing partial frame is discarded, and the session closes the usual way (flush
//!    within `write_timeout`, FIN, `shut_down` with `linger`). A session already closing (BYE,
//!    an ERROR) just finishes closing; a half-closed one sends ERROR 7 after its replies too.
//! 4. The sockets live in [`serve_until`]'s future and are lent to the connection futures, which
//!    are joined and raced (`select3`) against the future that awaited `stop` and now sleeps
//!    until the drain deadline, and the clock. If the connections all return first, the drain
//!    was clean. If the deadline comes first, the `select` drops the connection futures (the
//!    hub is never borrowed across an await, so nothing is left half-borrowed), then every socket
//!    still open (a client that never reads, or never acknowledges our FIN) is reset and its
//!    session ended (`on_close` runs). One watch for all sockets costs nothing per connection.
//! 5. [`serve_until`] returns then, so at most `drain_timeout` after the stop (plus up to
//!    100 ms to hand the resets to the stack), with the final [`Counters`]
//!    (`connections_open` 0, ERROR 7s in `errors_sent`). Returning counters rather than `()`
//!    lets firmware log or persist them before rebooting without reaching back into `Storage`.
//!
//! While stopping, the idle clock does not run (the drain is bounded by the deadline instead),
//! and the cost to a server that is never stopped is one flag test per wake-up and session
//! event: nothing allocates or formats. Dropping the `serve_until` future instead removes the
//! sockets from the stack without a reset; the storage can still be reused (the next run
//! frees the slots the dropped one left, bumping their generations).

use core::cell::RefCell;
use core::convert::Infallible;
use core::future::{pending, poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use doorway_core::dispatch::{Context, Control, Service};
use doorway_core::frame::{self, ErrorCode, HEADER_LEN, MAX_ERROR_BODY};
use doorway_core::wire::{Cut, Wire, V1};
use embassy_futures::join::join_array;
use embassy_futures::poll_once;
use embassy_futures::select::{select, select3, select4, Either, Either3, Either4};
use embassy_net::tcp::{State, TcpSocket};
use embassy_time::{with_deadline, Duration, Instant, Timer};

use crate::hub::{Counters, Hub, Phase};
use crate::stack::{ServerStack, StartError};
use crate::timers::{deadline, tick, within, Entries, TimerWheel};

/// How long a reset socket may take to hand its RST to the stack.
const RESET_FLUSH: Duration = Duration::from_millis(100);

/// The longest timeout handed to a smoltcp socket: its clock is signed microseconds, so a longer
/// one (`Duration::MAX`) would wrap negative and expire at once. 2^31 s is 68 years.
const MAX_SOCKET_TIMEOUT: Duration = Duration::from_secs(1 << 31);

/// Runtime settings of the embedded server (capacities are const generics of [`Storage`]).
///
/// Any duration is valid, up to `Duration::MAX`: deadlines saturate at "never" instead of
/// overflowing. A timeout that can be switched off is an `Option`, and `None` is off; the other
/// durations bound a close or a shutdown, where "never" is `Duration::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// TCP port to listen on.
    pub port: u16,
    /// Sessions served at once; a connection beyond them gets ERROR 5. At most the socket count;
    /// two sockets more than this keep reconnects from being refused (see the module docs).
    pub max_connections: usize,
    /// Give up a connection whose TCP handshake has not completed this long after its last
    /// segment (a SYN whose client lost its link, a scanner): the listening socket resets it and
    /// listens again. `None` waits forever, so a few such SYNs can take every socket until
    /// reboot. Values above 68 years count as 68 years (smoltcp's clock is signed).
    pub handshake_timeout: Option<Duration>,
    /// Close a connection that sent no complete frame for this long (ERROR 4); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose output stayed above the watermark this long (ERROR 6), and bound
    /// the flush of what is owed before a close (and the ERROR 5 of a refusal).
    pub write_timeout: Duration,
    /// After a close, how long to wait for the client to acknowledge our last bytes and FIN
    /// (input is discarded meanwhile) before the socket is reset.
    pub linger: Duration,
    /// How long [`serve_until`] lets open connections drain once its `stop` future completes;
    /// sockets still open then are reset and it returns (see the module docs, "Shutdown").
    pub drain_timeout: Duration,
}

impl Config {
    /// The protocol's default port.
    pub const DEFAULT_PORT: u16 = 7200;

    /// Defaults: port 7200, 4 connections, handshake timeout 10 s, idle timeout 60 s, write
    /// timeout 5 s, linger 1 s, drain timeout 5 s.
    pub const fn new() -> Config {
        Config {
            port: Config::DEFAULT_PORT,
            max_connections: 4,
            handshake_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// The buffers of one connection socket.
pub struct ConnBuffers<const BUF: usize, const SOCK_RX: usize, const SOCK_TX: usize> {
    frame: [u8; BUF],
    sock_rx: [u8; SOCK_RX],
    sock_tx: [u8; SOCK_TX],
}

impl<const BUF: usize, const SOCK_RX: usize, const SOCK_TX: usize> ConnBuffers<BUF, SOCK_RX, SOCK_TX> {
    const NEW: Self = ConnBuffers { frame: [0; BUF], sock_rx: [0; SOCK_RX], sock_tx: [0; SOCK_TX] };
}

/// All memory the server uses, sized at compile time.
///
/// - `SOCKETS`: TCP sockets; [`Config::max_connections`] of them serve sessions at a time, the
///   rest refuse (ERROR 5) or finish closing. `max_connections` + 2 is a good count.
/// - `BUF`: frame buffer per connection = `max_body` + 12 (the header). The embedded default
///   `max_body` is 1,024, so `BUF` = 1,036.
/// - `OUT`: pending output per connection; at least `BUF` (one largest reply), `2 * BUF` lets a
///   reply be queued while the previous one drains.
/// - `SOCK_RX`, `SOCK_TX`: the TCP socket buffers (the receive window and the unacknowledged
///   output).
///
/// Put it in a `static` (its constructor is `const`) so its size shows in the link map.
///
/// # Sizing the network stack
///
/// The server's sockets live in the embassy-net stack's socket set, so size the stack's
/// `StackResources` from this type, never by a second count: [`Self::SOCKETS`], plus one if the
/// stack runs DHCP, plus any socket of the firmware's own. Make the stack with
/// [`new_stack`](crate::new_stack); [`serve`] then checks the room before it creates a socket
/// and returns [`StartError::TooFewSockets`] on a mismatch (see [`crate::stack`]).
///
/// ```
/// use doorway_embedded::Storage;
/// use embassy_net::StackResources;
///
/// type MyStorage = Storage<4, 268, 536, 512, 512>;
/// // A static address: the server's sockets only.
/// type MyResources = StackResources<{ MyStorage::SOCKETS }>;
/// // DHCP adds a socket of the stack's own.
/// type MyDhcpResources = StackResources<{ MyStorage::SOCKETS + 1 }>;
/// # let _ = (MyResources::new(), MyDhcpResources::new());
/// ```
pub struct Storage<
    const SOCKETS: usize,
    const BUF: usize,
    const OUT: usize,
    const SOCK_RX: usize,
    const SOCK_TX: usize,
> {
    conns: [ConnBuffers<BUF, SOCK_RX, SOCK_TX>; SOCKETS],
    hub: RefCell<Hub<SOCKETS, OUT>>,
}

/// The default capacities: 6 sockets (for the default 4 connections), `max_body` 1 KiB, 2 KiB
/// output and 1 KiB socket buffers each (about 31 KiB in all).
pub type DefaultStorage = Storage<6, 1036, 2072, 1024, 1024>;

impl<
        const SOCKETS: usize,
        const BUF: usize,
        const OUT: usize,
        const SOCK_RX: usize,
        const SOCK_TX: usize,
    > Storage<SOCKETS, BUF, OUT, SOCK_RX, SOCK_TX>
{
    /// Rejects impossible capacities at compile time.
    const CHECK: () = {
        assert!(SOCKETS >= 1, "at least one socket");
        assert!(BUF > HEADER_LEN, "BUF is max_body + 12 and must exceed the header");
        assert!(OUT >= BUF, "OUT must hold the largest reply (BUF bytes)");
        assert!(SOCK_RX > 0 && SOCK_TX > 0, "socket buffers cannot be empty");
    };

    /// Zeroed storage.
    #[allow(clippy::let_unit_value)]
    pub const fn new() -> Self {
        let () = Self::CHECK;
        Storage { conns: [const { ConnBuffers::NEW }; SOCKETS], hub: RefCell::new(Hub::NEW) }
    }

    /// The largest body a request may carry.
    pub const MAX_BODY: usize = BUF - HEADER_LEN;

    /// The server's TCP sockets: what the stack's `StackResources` must hold besides its own
    /// (see "Sizing the network stack").
    pub const SOCKETS: usize = SOCKETS;

    /// A snapshot of the server's counters.
    pub fn counters(&self) -> crate::hub::Counters {
        *self.hub.borrow().counters()
    }
}

impl<
        const SOCKETS: usize,
        const BUF: usize,
        const OUT: usize,
        const SOCK_RX: usize,
        const SOCK_TX: usize,
    > Default for Storage<SOCKETS, BUF, OUT, SOCK_RX, SOCK_TX>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `PROTOCOL.md` with `service` on `stack`, forever.
///
/// Checks that the stack has room for `SOCKETS` sockets, waits for its IP configuration, creates
/// the sockets in `storage` and runs every connection in the calling task. This is
/// [`serve_until`] with a `stop` that never completes; use that to shut the server down
/// gracefully.
///
/// It returns only if it cannot start: [`StartError::TooFewSockets`] when the stack's
/// `StackResources` was not sized from the storage (see [`Storage`], "Sizing the network stack").
pub async fn serve<
    S,
    const SOCKETS: usize,
    const BUF: usize,
    const OUT: usize,
    const SOCK_RX: usize,
    const SOCK_TX: usize,
>(
    stack: &mut ServerStack<'_>,
    storage: &mut Storage<SOCKETS, BUF, OUT, SOCK_RX, SOCK_TX>,
    service: S,
    config: Config,
) -> StartError
where
    S: Service,
{
    match serve_until(stack, storage, service, config, pending()).await {
        Err(error) => error,
        Ok(_) => {
            // `pending` never completes, so a started server never returns: not reached.
            let never: Infallible = pending().await;
            match never {}
        }
    }
}

/// Serves `PROTOCOL.md` with `service` on `stack` until `stop` completes, then shuts down
/// gracefully and returns the final counters.
///
/// `stop` is any future: a button, an `embassy_sync::signal::Signal` raised by an OTA task, a
/// `Timer`. When it completes the server stops accepting, lets every open session answer the
/// complete requests it already received, sends each ERROR 7 (SHUTTING_DOWN, `seq` 0) and closes
/// it as usual; it returns once every socket is closed, at most [`Config::drain_timeout`] (plus
/// about 100 ms to send resets) after `stop` completed. See the module docs, "Shutdown".
///
/// The counters returned are the same as [`Storage::counters`] afterwards; `connections_open` is
/// 0. `storage` and `stack` can be passed to `serve`/`serve_until` again (the counters keep
/// counting). If `stop` completes before the stack is configured, it returns at once. If the
/// stack has no room for `SOCKETS` sockets it returns [`StartError::TooFewSockets`] before
/// creating any (see [`Storage`], "Sizing the network stack").
///
/// Dropping the future instead of completing `stop` removes the sockets from the stack without
/// a word to the clients, as dropping any `TcpSocket` does.
pub async fn serve_until<
    S,
    F,
    const SOCKETS: usize,
    const BUF: usize,
    const OUT: usize,
    const SOCK_RX: usize,
    const SOCK_TX: usize,
>(
    stack: &mut ServerStack<'_>,
    storage: &mut Storage<SOCKETS, BUF, OUT, SOCK_RX, SOCK_TX>,
    service: S,
    config: Config,
    stop: F,
) -> Result<Counters, StartError>
where
    S: Service,
    F: Future<Output = ()>,
{
    if let Err(error) = stack.check_room(SOCKETS) {
        net_debug!("doorway: cannot start: {}", error);
        return Err(error);
    }
    let stack = stack.stack();
    let mut stop = pin!(stop);
    if let Either::Second(()) = select(stack.wait_config_up(), stop.as_mut()).await {
        return Ok(storage.counters());
    }
    let service = RefCell::new(service);
    let Storage { conns, hub } = storage;
    let hub = &*hub;
    hub.borrow_mut().begin();
    let wheel = RefCell::new(TimerWheel::<SOCKETS>::new_at(Entries::NEW, tick(Instant::now())));
    let wheel = &wheel;
    // The sockets live here, lent to the connection futures, so that they outlive those futures
    // and can be reset at the drain deadline.
    let mut sockets = conns.each_mut().map(|bufs| {
        let ConnBuffers { frame, sock_rx, sock_tx } = bufs;
        (TcpSocket::new(stack, sock_rx, sock_tx), frame)
    });
    let mut index = 0;
    let connections = sockets.each_mut().map(|(socket, frame)| {
        index += 1;
        connection(socket, frame, index - 1, hub, wheel, &service, config)
    });
    // Completes at the drain deadline: `stop`, then every slot is told, then the drain timeout.
    let stopper = async {
        stop.await;
        net_trace!("doorway: stopping");
        let deadline = deadline(Instant::now(), config.drain_timeout);
        hub.borrow_mut().stop(deadline);
        Timer::at(deadline).await;
    };
    net_trace!("doorway: serving port {} with {} sockets", config.port, SOCKETS);
    // Every connection future returns once the server is stopping and its socket is closed; the
    // clock never returns.
    let outcome = select3(join_array(connections), stopper, clock(hub, wheel)).await;
    match outcome {
        Either3::First(_) => {}
        Either3::Second(()) => reset_the_rest(&mut sockets, hub, wheel, &service).await,
        Either3::Third(never) => match never {},
    }
    net_trace!("doorway: stopped");
    let counters = *hub.borrow().counters();
    Ok(counters)
}

/// At the drain deadline (the connection futures are gone): resets every socket still open and
/// ends its session, if it had one (`on_close` runs).
async fn reset_the_rest<S: Service, const N: usize, const BUF: usize, const OUT: usize>(
    sockets: &mut [(TcpSocket<'_>, &mut [u8; BUF]); N],
    hub: &RefCell<Hub<N, OUT>>,
    wheel: &RefCell<TimerWheel<N>>,
    service: &RefCell<S>,
) {
    for (index, (socket, _)) in sockets.iter_mut().enumerate() {
        if !matches!(socket.state(), State::Closed | State::TimeWait) {
            net_debug!("doorway: socket {} still open at the drain deadline, reset", index);
            socket.abort();
        }
        let mut hub = hub.borrow_mut();
        if hub.slots[index].phase != Phase::Free {
            let id = hub.slots[index].id(index);
            hub.close(index, &mut wheel.borrow_mut());
            drop(hub);
            service.borrow_mut().on_close(id);
        }
    }
    // Let the stack send the resets (bounded: a socket whose reset cannot go out is dropped).
    let flushed = join_array(sockets.each_mut().map(|(socket, _)| socket.flush()));
    let _ = within(RESET_FLUSH, flushed).await;
}

/// Sleeps until the wheel's next slot is due (or an earlier timer is armed), then fires what is
/// due: idle timeouts and service timers are marked on their slots, which wake.
async fn clock<const N: usize, const OUT: usize>(
    hub: &RefCell<Hub<N, OUT>>,
    wheel: &RefCell<TimerWheel<N>>,
) -> Infallible {
    loop {
        let at = hub.borrow_mut().fire_due(Instant::now(), &mut wheel.borrow_mut());
        let kicked = poll_fn(|cx| {
            let mut hub = hub.borrow_mut();
            if core::mem::take(&mut hub.clock_kicked) {
                Poll::Ready(())
            } else {
                hub.clock_waker.register(cx.waker());
                Poll::Pending
            }
        });
        match at {
            Some(at) => {
                select(Timer::at(Instant::from_ticks(at)), kicked).await;
            }
            None => kicked.await,
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Everything owed was handed to the socket: send FIN, wait for the acknowledgement.
    Shut,
    /// The peer reset, or a bound expired: abort.
    Abort,
}

/// Completes once the server is stopping (for a socket waiting to accept: its slot's waker).
async fn stopping<const N: usize, const OUT: usize>(hub: &RefCell<Hub<N, OUT>>, index: usize) {
    poll_fn(|cx| {
        let mut hub = hub.borrow_mut();
        if hub.stopping() {
            Poll::Ready(())
        } else {
            hub.register(index, cx.waker());
            Poll::Pending
        }
    })
    .await;
}

/// Accepts and serves connections on one socket until the server stops: then a listening socket
/// stops listening at once, a busy one finishes its connection first. The socket lives in
/// [`serve_until`], which resets it if this future is still running at the drain deadline.
async fn connection<S: Service, const N: usize, const BUF: usize, const OUT: usize>(
    socket: &mut TcpSocket<'_>,
    frame: &mut [u8; BUF],
    index: usize,
    hub: &RefCell<Hub<N, OUT>>,
    wheel: &RefCell<TimerWheel<N>>,
    service: &RefCell<S>,
    config: Config,
) {
    loop {
        if hub.borrow().stopping() {
            return;
        }
        // A handshake that does not complete in time is reset by the stack (the socket closes
        // and `accept` returns); sessions have their own timeouts, so it is cleared once in.
        socket.set_timeout(config.handshake_timeout.map(|t| t.min(MAX_SOCKET_TIMEOUT)));
        let accepted = select(socket.accept(config.port), stopping(hub, index)).await;
        socket.set_timeout(None);
        match accepted {
            Either::First(Ok(())) if socket.state() == State::Closed => {
                net_debug!("doorway: socket {} gave up a half-open handshake", index);
                continue;
            }
            Either::First(Ok(())) => {}
            Either::First(Err(_)) => {
                socket.abort();
                Timer::after_millis(10).await;
                continue;
            }
            Either::Second(()) => {
                // Stop listening: later SYNs find no socket and are reset by the stack, and one
                // caught half-open (SYN received, not yet accepted) is reset now.
                socket.abort();
                let _ = within(RESET_FLUSH, socket.flush()).await;
                return;
            }
        }
        socket.set_nagle_enabled(false);
        let full = hub.borrow().counters.connections_open >= config.max_connections.min(N) as u64;
        if full {
            net_debug!("doorway: server full, refusing on socket {}", index);
            refuse(socket, hub, config).await;
            shut_down(socket, &mut frame[..], End::Shut, false, config).await;
            continue;
        }
        let id = hub.borrow_mut().open(index);
        net_trace!("doorway: conn {} open", index);
        {
            let mut hub = hub.borrow_mut();
            service.borrow_mut().on_open(&mut hub.cx(index, Instant::now(), &mut wheel.borrow_mut()));
        }
        let end = session(socket, frame, index, hub, wheel, service, config).await;
        hub.borrow_mut().release(index);
        shut_down(socket, &mut frame[..], end, true, config).await;
        hub.borrow_mut().close(index, &mut wheel.borrow_mut());
        service.borrow_mut().on_close(id);
        net_trace!("doorway: conn {} closed", index);
    }
}

/// Answers a connection beyond `max_connections` with ERROR 5 (`seq` 0).
async fn refuse<const N: usize, const OUT: usize>(
    socket: &mut TcpSocket<'_>,
    hub: &RefCell<Hub<N, OUT>>,
    config: Config,
) {
    let mut error = [0u8; HEADER_LEN + MAX_ERROR_BODY];
    let n = frame::encode_error(&mut error, ErrorCode::ServerFull, 0).unwrap_or(0);
    {
        let counters = &mut hub.borrow_mut().counters;
        counters.connections_refused += 1;
        counters.errors_sent[ErrorCode::ServerFull as usize - 1] += 1;
        counters.frames_out += 1;
        counters.bytes_out += n as u64;
    }
    let until = deadline(Instant::now(), config.write_timeout);
    let mut sent = 0;
    while sent < n {
        match with_deadline(until, socket.write(&error[sent..n])).await {
            Ok(Ok(k)) if k > 0 => sent += k,
            _ => break,
        }
    }
}

/// Closes the socket after a session or a refusal.
///
/// `End::Shut`: FIN after what is queued; input is discarded meanwhile. A session's socket then
/// waits until the client has acknowledged everything *and* closed its side, bounded by
/// `linger`: an acknowledgement is not delivery when a proxy sits in between (QEMU's user
/// network acknowledges and buffers), and a reset would make such a proxy drop replies the
/// client has not read. A refusal (`wait_for_peer` false) is reset as soon as its one ERROR frame
/// and the FIN are acknowledged, so refused clients that keep their end open cannot hold
/// sockets. `End::Abort`: reset at once.
async fn shut_down(
    socket: &mut TcpSocket<'_>,
    scratch: &mut [u8],
    end: End,
    wait_for_peer: bool,
    config: Config,
) {
    if end == End::Shut {
        socket.close();
        let deadline = deadline(Instant::now(), config.linger);
        let (mut rd, mut wr) = socket.split();
        let mut peer_closed = false;
        let mut acknowledged = false;
        while !(acknowledged && (peer_closed || !wait_for_peer)) {
            let read = async {
                if peer_closed {
                    pending().await
                } else {
                    rd.read(scratch).await
                }
            };
            let flushed = async {
                if acknowledged {
                    pending().await
                } else {
                    wr.flush().await
                }
            };
            match select3(read, flushed, Timer::at(deadline)).await {
                Either3::First(Ok(0)) | Either3::First(Err(_)) => peer_closed = true,
                Either3::First(Ok(_)) => {}
                Either3::Second(_) => acknowledged = true,
                Either3::Third(()) => break,
            }
        }
    }
    if !matches!(socket.state(), State::Closed | State::TimeWait) {
        socket.abort();
        let _ = within(RESET_FLUSH, socket.flush()).await;
    }
}

/// Arms (or moves) slot `index`'s idle timer to `now` + the idle timeout, if there is one.
fn restart_idle<const N: usize, const OUT: usize>(
    hub: &mut Hub<N, OUT>,
    index: usize,
    now: Instant,
    config: Config,
    wheel: &mut TimerWheel<N>,
) {
    if let Some(idle) = config.idle_timeout {
        hub.arm_idle(index, deadline(now, idle), wheel);
    }
}

/// Serves one admitted connection until it must close.
async fn session<S: Service, const N: usize, const BUF: usize, const OUT: usize>(
    socket: &mut TcpSocket<'_>,
    frame: &mut [u8; BUF],
    index: usize,
    hub: &RefCell<Hub<N, OUT>>,
    wheel: &RefCell<TimerWheel<N>>,
    service: &RefCell<S>,
    config: Config,
) -> End {
    // The v1 wire, through the same trait as the Linux server.
    let wire = V1::new((BUF - HEADER_LEN) as u32);
    let (mut rd, mut wr) = socket.split();
    let mut len = 0usize;
    let mut eof = false;
    let mut closing = false;
    // Stopping: answer what was received, then ERROR 7. `drain_left` is how many of the bytes
    // the socket held when the stop was noticed are still to be read.
    let mut draining = false;
    let mut drain_left = 0usize;
    let mut closing_deadline = Instant::MAX;
    let mut paused_since: Option<Instant> = None;
    restart_idle(&mut hub.borrow_mut(), index, Instant::now(), config, &mut wheel.borrow_mut());
    loop {
        let now = Instant::now();
        let was_closing = closing;
        {
            let mut hub = hub.borrow_mut();
            let wheel = &mut *wheel.borrow_mut();
            let mut service = service.borrow_mut();
            // Another connection's broadcast found our output full: we are a slow consumer.
            if let Some(code) = hub.slots[index].kill.take() {
                if !closing {
                    net_debug!("doorway: conn {} killed", index);
                    hub.slots[index].out.discard_unsent();
                    let _ = hub.cx(index, now, wheel).reply_error(code, 0);
                    closing = true;
                }
            }
            // The server is stopping: read no further than what the socket holds now.
            if core::mem::take(&mut hub.slots[index].stop) && !closing && !draining {
                net_trace!("doorway: conn {} draining", index);
                draining = true;
                drain_left = if eof { 0 } else { rd.recv_queue() };
            }
            // The idle timer fired (the clock marked the slot).
            if core::mem::take(&mut hub.slots[index].idle_expired) && !closing {
                net_debug!("doorway: conn {} idle", index);
                let _ = hub.cx(index, now, wheel).reply_error(ErrorCode::IdleTimeout, 0);
                closing = true;
            }
            // Service timers that fired.
            for i in 0..crate::hub::TIMERS {
                if let Some(token) = hub.slots[index].fired[i].take() {
                    if !closing {
                        service.on_timer(&mut hub.cx(index, now, wheel), token);
                    }
                }
            }
            closing |= hub.slots[index].close_requested;
            // Every whole frame, while the output has room for the largest reply.
            let mut consumed = 0;
            while !closing && hub.slots[index].out.free() >= BUF {
                match wire.cut(&frame[consumed..len]) {
                    Cut::Frame(n) => {
                        let bytes = &frame[consumed..consumed + n];
                        consumed += n;
                        hub.counters.frames_in += 1;
                        hub.counters.bytes_in += n as u64;
                        let mut cx = hub.cx(index, now, wheel);
                        let head = wire.head(bytes);
                        match wire.handle(&mut *service, &mut cx, head, &bytes[V1::HEAD_LEN..]) {
                            Control::Continue | Control::Skipped => {}
                            Control::Bye => closing = true,
                            Control::SendFailed(_) => {
                                net_debug!("doorway: conn {} output full", index);
                                hub.slots[index].out.discard_unsent();
                                let _ = hub.cx(index, now, wheel).reply_error(ErrorCode::SlowConsumer, 0);
                                closing = true;
                            }
                        }
                        closing |= hub.slots[index].close_requested;
                    }
                    Cut::Need(_) => break,
                    Cut::Refused(r) => {
                        net_debug!("doorway: conn {} refused a header", index);
                        let _ = hub.cx(index, now, wheel).reply_error(r.code, r.seq);
                        closing = true;
                    }
                }
            }
            if consumed > 0 && !closing && !draining {
                // One O(1) move of the idle timer per batch of frames.
                restart_idle(&mut hub, index, now, config, wheel);
            }
            frame.copy_within(consumed..len, 0);
            len -= consumed;
            // Hand output to the socket until it is empty or the socket is full.
            let out = &mut hub.slots[index].out;
            while !out.is_empty() {
                match poll_once(wr.write(out.as_slice())) {
                    Poll::Ready(Ok(n)) if n > 0 => out.consume(n),
                    Poll::Ready(Ok(_)) | Poll::Pending => break,
                    Poll::Ready(Err(_)) => return End::Abort,
                }
            }
            // The flush made room for a reply and a whole frame (or a refused header) is waiting:
            // handle it now rather than wait for input that may never come.
            if !closing && out.free() >= BUF && !matches!(wire.cut(&frame[..len]), Cut::Need(_)) {
                continue;
            }
            let paused = !closing && out.free() < BUF;
            // Shutdown: everything held when the stop came is read and every whole frame in it is
            // answered (the decode loop above ran dry without pausing), so ERROR 7 goes last; a
            // trailing partial frame is discarded.
            if draining && !closing && !paused && drain_left == 0 {
                let _ = hub.cx(index, now, wheel).reply_error(ErrorCode::ShuttingDown, 0);
                closing = true;
            }
            // Half-close: every whole request is answered; a trailing partial frame is discarded.
            if eof && !closing && !paused {
                closing = true;
            }
            paused_since = if paused { Some(paused_since.unwrap_or(now)) } else { None };
            // The idle clock runs only while the connection is read.
            if paused || closing || draining {
                hub.disarm_idle(index, wheel);
            } else if hub.slots[index].idle.is_none() {
                restart_idle(&mut hub, index, now, config, wheel);
            }
            if closing && !was_closing {
                hub.slots[index].phase = Phase::Closing;
                closing_deadline = deadline(now, config.write_timeout);
            }
            if closing && hub.slots[index].out.is_empty() {
                return End::Shut;
            }
        }
        // The next deadline of this session (the idle timeout lives on the wheel).
        let deadline = match (closing, paused_since) {
            (true, _) => Some(closing_deadline),
            (false, Some(since)) => Some(deadline(since, config.write_timeout)),
            (false, None) => None,
        };
        if deadline.is_some_and(|d| now >= d) {
            if closing {
                net_debug!("doorway: conn {} flush timed out", index);
                return End::Abort;
            }
            hub.borrow_mut().slots[index].kill.get_or_insert(ErrorCode::SlowConsumer);
            continue;
        }
        let pending_out = !hub.borrow().slots[index].out.is_empty();
        let can_read =
            !closing && !eof && paused_since.is_none() && len < BUF && (!draining || drain_left > 0);
        let read_end = if draining { BUF.min(len.saturating_add(drain_left)) } else { BUF };
        let read = async {
            if can_read {
                rd.read(&mut frame[len..read_end]).await
            } else {
                pending().await
            }
        };
        let writable = async {
            if pending_out {
                wr.wait_write_ready().await
            } else {
                pending().await
            }
        };
        let notified = poll_fn(|cx| {
            let mut hub = hub.borrow_mut();
            let slot = &hub.slots[index];
            if slot.has_event() || (!pending_out && !slot.out.is_empty()) {
                Poll::Ready(())
            } else {
                hub.register(index, cx.waker());
                Poll::Pending
            }
        });
        let timeout = async {
            match deadline {
                Some(deadline) => Timer::at(deadline).await,
                None => pending().await,
            }
        };
        match select4(read, writable, notified, timeout).await {
            Either4::First(Ok(0)) => eof = true,
            Either4::First(Ok(n)) => {
                len += n;
                if draining {
                    drain_left = drain_left.saturating_sub(n);
                }
            }
            Either4::First(Err(_)) => return End::Abort,
            Either4::Second(()) | Either4::Third(()) | Either4::Fourth(()) => {}
        }
    }
}
