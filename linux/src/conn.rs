//! One connection's state and the role steps that act on it, under the connection's lock.
//!
//! The state does not care whether the socket was accepted or dialled: it is a descriptor, buffers
//! and a [`Phase`]. Each role has one step here: [`Conn::receive`] (read and cut frames),
//! [`Conn::send`] (one gathered write of everything pending), [`Conn::check`] (the timer
//! evaluation of idle, write and linger deadlines). The deal step lives in `shard.rs` because it
//! runs the service. A step returns a [`Sched`]: which roles must look at the connection next.
//!
//! # Lifecycle
//!
//! ```text
//! Open ──ERROR/BYE/EOF/close()──▶ Closing ──output flushed, SHUT_WR──▶ Lingering ──FIN/linger──▶ Dead
//!   │                              │ (peer already sent FIN) ────────────────────────────────▶ Dead
//!   └──── socket error, reset, deadline ──────────────────────────────────────────────────────▶ Dead
//! ```
//!
//! - Open: requests are read and answered. Reading pauses while pending output is above the high
//!   watermark and resumes below the low one; the idle clock stops while paused, and the write
//!   clock runs from the moment output went above the high watermark until it falls below the low
//!   one (so output stuck between the watermarks cannot hold a connection forever).
//! - Closing: no request is read any more (input is discarded; a slow consumer's is not even read,
//!   so a flood of closed connections cannot take the CPU from the live ones); what is owed is
//!   flushed.
//! - Lingering: the sending side is shut down; input is discarded until the peer's FIN or the
//!   linger deadline, so no reset destroys replies the peer has not read.
//! - Dead: the descriptor is closed; the deal role runs `on_close` and frees the slot.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use doorway_core::frame::ErrorCode;
use doorway_core::slab::ConnId;
use doorway_core::wheel::TimerId;
use doorway_core::wire::{Refusal, Wire, MAX_CLOSE_FRAME, MAX_HEAD_LEN};

use crate::buf::{InBuf, MemoryBudget, OutBuf, Pool, BLOCK};
use crate::stats::{Counter, Counters};
use crate::sync::{door, Doors};
use crate::sys::{self, socket};

/// Roles a step asks to run next on the connection (bit set).
pub type Sched = u8;
/// Run the receive role.
pub const READ: Sched = 1;
/// Run the deal role.
pub const DEAL: Sched = 2;
/// Run the send role.
pub const SEND: Sched = 4;

/// Period of the monitor's timerfd tick in milliseconds (the resolution of every timeout). The
/// wheel itself counts milliseconds.
pub const TICK_MS: u64 = 10;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and answering requests.
    Open,
    /// Flushing what is owed; input discarded.
    Closing,
    /// Sending side shut down; waiting for the peer's FIN.
    Lingering,
    /// Descriptor closed; waiting for the deal role to free the slot.
    Dead,
}

/// Settings every step needs, derived once from the config.
#[derive(Debug, Clone)]
pub struct Params<W> {
    /// The wire format: head checks, the body limit, the protocol's rules.
    pub wire: W,
    /// Pending output above which reading pauses.
    pub high: usize,
    /// Pending output below which reading resumes.
    pub low: usize,
    /// Pending output beyond which nothing more is queued (the connection is a slow consumer).
    pub hard_cap: usize,
    /// Idle timeout; `None`: off, an idle connection is never closed.
    pub idle_ms: Option<u64>,
    /// Write timeout.
    pub write_ms: u64,
    /// Linger after the server's close.
    pub linger_ms: u64,
}

/// What a step may touch besides the connection.
pub struct Io<'a, W> {
    /// Settings.
    pub p: &'a Params<W>,
    /// Input blocks.
    pub in_pool: &'a Pool,
    /// Output blocks.
    pub out_pool: &'a Pool,
    /// This thread's counters.
    pub c: &'a Counters,
    /// Milliseconds since the server started.
    pub now: u64,
    /// The server is draining (SIGTERM).
    pub stopping: bool,
    /// While stopping: the time by which every connection must be gone.
    pub drain_deadline: u64,
    /// The process-wide buffer budget.
    pub mem: &'a MemoryBudget,
    /// Admitted connections now, over all shards (for a connection's fair share of `mem`).
    pub admitted: &'a AtomicUsize,
}

/// A connection: its receive buffer and everything else (split so a handler can borrow the state
/// mutably while the request body is borrowed from the buffer).
pub struct Conn {
    /// Received bytes.
    pub inb: InBuf,
    /// Everything else.
    pub st: ConnState,
}

/// A connection's state apart from its receive buffer.
pub struct ConnState {
    /// The id handlers see (shard bits included).
    pub id: ConnId,
    fd: Option<OwnedFd>,
    /// Life phase.
    pub phase: Phase,
    /// Counts toward `max_connections` (false for a refused connection).
    pub admitted: bool,
    /// `on_open` ran, so `on_close` must run exactly once (and only then: a refused connection,
    /// or one that died before its first deal, never reaches the service).
    pub opened: bool,
    /// A refused header waits behind the frames before it.
    pub refusal: Option<Refusal>,
    /// The peer shut down its sending side.
    pub peer_eof: bool,
    /// An epoll edge reported RDHUP/HUP/ERR: read to EOF or EAGAIN, never stop at a short read
    /// (the FIN's edge is already spent). Sticky until EOF.
    pub rdhup: bool,
    /// Reading stopped before the socket was drained (buffer full of whole frames).
    pub more_input: bool,
    /// Reading paused by backpressure.
    pub paused: bool,
    /// Reading paused by the service (`Context::pause`): the frame at the head of the input is
    /// kept for when it resumes.
    pub held: bool,
    held_at: u64,
    /// While stopping: the socket was read until it had nothing more.
    pub stop_read_done: bool,
    /// Pending output.
    pub out: OutBuf,
    /// When the last whole frame arrived (ms); shifted forward by pauses.
    pub last_frame: u64,
    /// The idle deadline passed and a last read was asked for at this time (ms): the connection is
    /// closed as idle only if that read brought no whole frame either.
    pub idle_probe: Option<u64>,
    /// The receive role has read the socket since `idle_probe` was set (under load it may not
    /// have had its turn yet; the connection is not called idle before it has).
    pub idle_probe_read: bool,
    paused_at: u64,
    /// Since when this backpressure episode runs: set when pending output rises above the high
    /// watermark, cleared only when it falls below the low one. A connection that stays in the
    /// episode for `write_timeout` is a slow consumer (ERROR 6), even if its output hovers between
    /// the watermarks: it is not being read, and it is not reading.
    pub over_high_since: Option<u64>,
    /// Closing/Lingering: when the connection is dropped regardless.
    pub deadline: u64,
    /// The armed check timer and its deadline (ms). Armed lazily: a later deadline keeps the
    /// earlier timer, which re-evaluates and re-arms when it fires.
    pub check: Option<(TimerId, u64)>,
    /// Armed service timers: (token, timer).
    pub timers: Vec<(u32, TimerId)>,
    /// Output was refused because the memory limit was reached (the close that follows says so).
    pub over_memory: bool,
    /// The upstream link this connection serves, if the server dialled it.
    pub link: Option<doorway_core::dispatch::LinkId>,
    /// Closed as a slow consumer: its input is no longer read, not even to discard it.
    pub ignore_input: bool,
}

impl Conn {
    /// A new open connection on `fd` (registered by the caller).
    pub fn new(id: ConnId, fd: OwnedFd, now: u64) -> Conn {
        Conn {
            inb: InBuf::default(),
            st: ConnState {
                id,
                fd: Some(fd),
                phase: Phase::Open,
                admitted: true,
                opened: false,
                refusal: None,
                peer_eof: false,
                rdhup: false,
                more_input: false,
                paused: false,
                held: false,
                held_at: now,
                stop_read_done: false,
                out: OutBuf::default(),
                last_frame: now,
                idle_probe: None,
                idle_probe_read: false,
                paused_at: now,
                over_high_since: None,
                deadline: u64::MAX,
                check: None,
                timers: Vec::new(),
                over_memory: false,
                link: None,
                ignore_input: false,
            },
        }
    }

    /// Closes the descriptor and frees the buffers: the connection is Dead.
    pub fn kill<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        self.inb.release(io.in_pool);
        self.st.kill(io)
    }

    /// The receive role: reads until the socket is drained (or the buffer is full of whole frames),
    /// cutting frames as they complete. `rdhup` says the peer's FIN may be pending.
    pub fn receive<W: Wire>(&mut self, io: &Io<'_, W>, rdhup: bool) -> Sched {
        let Some(fd) = self.st.fd.as_ref().map(|f| f.as_raw_fd()) else { return 0 };
        match self.st.phase {
            Phase::Dead => 0,
            Phase::Closing | Phase::Lingering if self.st.ignore_input => {
                // A slow consumer: its input is not worth reading (it would take the CPU from the
                // connections being served). The kernel holds the peer back; its FIN or reset ends it.
                if rdhup {
                    self.kill(io)
                } else {
                    0
                }
            }
            Phase::Closing | Phase::Lingering => self.discard_input(io),
            Phase::Open => {
                if self.st.paused || self.st.held || self.st.refusal.is_some() || self.st.peer_eof {
                    return if io.stopping { DEAL } else { 0 };
                }
                let mut sched = 0;
                self.st.idle_probe_read = true;
                self.st.more_input = false;
                self.st.rdhup |= rdhup;
                let rdhup = self.st.rdhup;
                loop {
                    let Some(space) = self.inb.space(io.in_pool) else {
                        self.st.more_input = true;
                        sched |= DEAL;
                        break;
                    };
                    let room = space.len();
                    match sys::read(fd, space) {
                        Ok(0) => {
                            self.st.peer_eof = true;
                            sched |= DEAL;
                            break;
                        }
                        Ok(n) => {
                            io.c.add(Counter::BytesIn, n as u64);
                            let (frames, refused) = self.inb.filled(n, &io.p.wire);
                            if frames > 0 {
                                io.c.add(Counter::FramesIn, frames);
                                self.st.last_frame = io.now;
                                if self.st.idle_probe.take().is_some() {
                                    log::debug!("{}: the idle probe read found frames", self.st.id);
                                }
                                sched |= DEAL;
                            }
                            if let Some(r) = refused {
                                self.st.refusal = Some(r);
                                sched |= DEAL;
                                break;
                            }
                            // A short read drained the socket: with edge triggering, more data
                            // brings a new edge. A FIN may hide behind it, hence `rdhup`.
                            if n < room && !rdhup && !io.stopping {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return self.kill(io),
                    }
                }
                if io.stopping {
                    self.st.stop_read_done = !self.st.more_input;
                    sched |= DEAL;
                }
                self.inb.release_if_empty(io.in_pool);
                sched
            }
        }
    }

    /// Closing or Lingering: reads and drops input; the peer's FIN ends a lingering connection.
    fn discard_input<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        let Some(fd) = self.st.fd.as_ref().map(|f| f.as_raw_fd()) else { return 0 };
        let mut scratch = [0u8; 4096];
        for _ in 0..64 {
            match sys::read(fd, &mut scratch) {
                Ok(0) => {
                    self.st.peer_eof = true;
                    if self.st.phase == Phase::Lingering {
                        return self.kill(io);
                    }
                    return SEND;
                }
                Ok(n) => io.c.add(Counter::BytesIn, n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(io),
            }
        }
        // A flood: come back after others had their turn.
        READ
    }

    /// The send role: one gathered write of everything pending (more only if the kernel takes it
    /// all and more is pending), then backpressure and closing bookkeeping.
    pub fn send<W: Wire>(&mut self, io: &Io<'_, W>, doors: &Doors, idx: u32) -> Sched {
        let Some(fd) = self.st.fd.as_ref().map(|f| f.as_raw_fd()) else { return 0 };
        if self.st.phase == Phase::Dead {
            return 0;
        }
        let mut sched = 0;
        let mut armed = false;
        while !self.st.out.is_empty() {
            let mut iov: [&[u8]; socket::MAX_IOV] = [&[]; socket::MAX_IOV];
            let n = self.st.out.slices(&mut iov);
            match socket::write_vectored(fd, &iov[..n]) {
                Ok(written) => {
                    io.c.add(Counter::BytesOut, written as u64);
                    self.st.out.consume(written, io.out_pool);
                    if self.st.phase == Phase::Closing && written > 0 {
                        // Progress: the peer reads; give it time to finish.
                        self.st.deadline = io.now + io.p.write_ms + io.p.linger_ms;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if armed {
                        break;
                    }
                    // Ask for the EPOLLOUT edge, then retry once: an edge that came between the
                    // failed write and the door is not lost.
                    doors.enter(idx, door::WANT_WRITE);
                    armed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(io),
            }
        }
        let pending = self.st.out.len();
        if pending == 0 && !armed {
            doors.leave(idx, door::WANT_WRITE);
        }
        if pending < io.p.low {
            self.st.over_high_since = None;
        }
        if self.st.paused && pending < io.p.low {
            self.st.paused = false;
            self.st.idle_probe = None;
            // The idle clock did not run while paused.
            self.st.last_frame += io.now.saturating_sub(self.st.paused_at);
            sched |= READ | DEAL;
        } else if self.st.phase == Phase::Open && self.inb.has_frames() && pending <= io.p.high {
            // Deal stopped at the high watermark with frames left.
            sched |= DEAL;
        }
        if pending == 0 && self.st.phase == Phase::Closing {
            let _ = socket::shutdown_write(fd);
            if self.st.peer_eof {
                return self.kill(io);
            }
            self.st.phase = Phase::Lingering;
            self.st.deadline =
                (io.now + io.p.linger_ms).min(if io.stopping { io.drain_deadline } else { u64::MAX });
            // Deal arms the linger check; receive looks for a FIN that already arrived.
            sched |= DEAL | READ;
        }
        sched
    }

    /// The check timer fired: applies idle, write and closing deadlines. Returns roles to run.
    pub fn check<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        let now = io.now;
        match self.st.phase {
            Phase::Open => {
                if let Some(since) = self.st.over_high_since {
                    if now >= since + io.p.write_ms && self.st.out.len() >= io.p.low {
                        log::debug!("{}: slow consumer, closing", self.st.id);
                        self.st.out.discard_unsent(io.out_pool, &io.p.wire);
                        self.inb.clear();
                        self.st.ignore_input = true;
                        return self.st.begin_close(io, Some((ErrorCode::SlowConsumer, 0)));
                    }
                }
                let idle_due = io.p.idle_ms.is_some_and(|idle| now >= self.st.last_frame + idle);
                if idle_due && self.st.link.is_some() {
                    // A link is never closed for silence: keep it alive as the wire says (v1:
                    // PING; Lars: nothing) and look again after another idle period.
                    self.st.last_frame = now;
                    let mut frame = [0u8; MAX_CLOSE_FRAME];
                    let n = io.p.wire.keepalive(&mut frame);
                    if n > 0 {
                        self.st.out.push_encoded(io.out_pool, &frame[..n]);
                        io.c.add(Counter::FramesOut, 1);
                        return SEND;
                    }
                    return 0;
                }
                if !self.st.paused && !self.st.held && idle_due {
                    if self.st.idle_probe.is_none() {
                        // Before calling it idle, read once more: whatever the socket holds counts.
                        self.st.idle_probe = Some(now);
                        self.st.idle_probe_read = false;
                        return READ;
                    }
                    if !self.st.idle_probe_read {
                        // The receive role has not had its turn yet (a backlog): ask again, and
                        // move the probe so the next look is due in the future, not at once.
                        self.st.idle_probe = Some(now);
                        return READ;
                    }
                    log::debug!(
                        "{}: idle timeout (last frame {} ms ago, partial frame held: {})",
                        self.st.id,
                        now - self.st.last_frame,
                        self.inb.holds_buffer()
                    );
                    self.inb.clear();
                    return self.st.begin_close(io, Some((ErrorCode::IdleTimeout, 0)));
                }
                self.st.idle_probe = None;
                0
            }
            Phase::Closing | Phase::Lingering => {
                if now >= self.st.deadline {
                    log::debug!("{}: closing deadline passed, dropping", self.st.id);
                    return self.kill(io);
                }
                0
            }
            Phase::Dead => 0,
        }
    }
}

impl ConnState {
    /// Closes the descriptor: Dead.
    pub fn kill<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        self.fd = None;
        self.out.release(io.out_pool);
        self.phase = Phase::Dead;
        DEAL
    }

    /// Stops taking requests: queues `error` (if any) after what is owed and starts Closing.
    pub fn begin_close<W: Wire>(&mut self, io: &Io<'_, W>, error: Option<(ErrorCode, u32)>) -> Sched {
        if self.phase != Phase::Open {
            return 0;
        }
        // An upstream link gets no ERROR from this side: it is the peer that serves.
        let error = if self.link.is_some() { None } else { error };
        if let Some((code, seq)) = error {
            // Announced as the wire says (v1: an ERROR frame; Lars: nothing, just the close).
            let mut frame = [0u8; MAX_CLOSE_FRAME];
            let n = io.p.wire.close_frame(code, seq, &mut frame);
            if n > 0 {
                self.out.push_encoded(io.out_pool, &frame[..n]);
                io.c.add(Counter::FramesOut, 1);
                io.c.error_sent(code);
            }
        }
        self.phase = Phase::Closing;
        self.refusal = None;
        self.deadline = io.now + io.p.write_ms + io.p.linger_ms;
        if io.stopping {
            self.deadline = self.deadline.min(io.drain_deadline);
        }
        SEND
    }

    /// Queues one frame, enforcing the hard cap. Errors mean "not queued".
    pub fn push_frame<W: Wire>(
        &mut self,
        io: &Io<'_, W>,
        kind: u16,
        seq: u32,
        body: &[u8],
    ) -> Result<(), doorway_core::dispatch::SendError> {
        use doorway_core::dispatch::SendError;
        match self.phase {
            Phase::Open | Phase::Closing => {}
            Phase::Lingering | Phase::Dead => return Err(SendError::Closed),
        }
        if body.len() > crate::config::MAX_MAX_BODY as usize {
            return Err(SendError::TooLarge);
        }
        let mut head = [0u8; MAX_HEAD_LEN];
        let head_len = io.p.wire.encode_head(&mut head, kind, seq, body.len());
        let frame_len = head_len + body.len();
        let after = self.out.len() + frame_len;
        if after > io.p.hard_cap {
            return Err(SendError::Full);
        }
        // The memory limit: past it, a connection holding more than its share of the budget takes
        // no more output (and is closed with ERROR 6), so the connections holding the most unsent
        // bytes go first and small replies still flow. Read only above one block.
        if after > BLOCK && io.mem.exceeded_by(frame_len) {
            // Relaxed: an estimate for the policy.
            if after > io.mem.share(io.admitted.load(Ordering::Relaxed)) {
                self.over_memory = true;
                return Err(SendError::Full);
            }
        }
        self.out.push_frame(io.out_pool, &head[..head_len], body);
        io.c.add(Counter::FramesOut, 1);
        if let Some(code) = io.p.wire.error_code(kind, body) {
            io.c.error_sent(code);
        }
        Ok(())
    }

    /// The service declined the current request for now: stop reading and stop the idle clock.
    pub fn hold<W: Wire>(&mut self, io: &Io<'_, W>) {
        if !self.held {
            self.held = true;
            self.held_at = io.now;
        }
    }

    /// The service resumes a held connection: the kept request is dealt again, reading goes on,
    /// and the idle clock resumes where it stopped. Returns the roles to run.
    pub fn resume<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        if !self.held {
            return 0;
        }
        self.held = false;
        self.idle_probe = None;
        self.last_frame += io.now.saturating_sub(self.held_at);
        if self.phase == Phase::Open {
            DEAL | READ
        } else {
            0
        }
    }

    /// After output was queued: pause reading above the high watermark and start the write clock.
    pub fn after_output<W: Wire>(&mut self, io: &Io<'_, W>) {
        let pending = self.out.len();
        if pending > io.p.high {
            io.c.output_level(pending);
            if self.phase == Phase::Open && !self.paused {
                self.paused = true;
                self.paused_at = io.now;
            }
            if self.over_high_since.is_none() {
                self.over_high_since = Some(io.now);
            }
        }
    }

    /// Closes as a slow consumer: pending output discarded (a partly written frame kept), ERROR 6.
    pub fn slow_consumer<W: Wire>(&mut self, io: &Io<'_, W>) -> Sched {
        if self.phase != Phase::Open {
            return 0;
        }
        if self.over_memory {
            io.c.add(Counter::MemoryLimitCloses, 1);
            log::warn!(
                "{}: memory limit reached ({} of {} bytes in buffers); closing it with ERROR 6 as it holds {} unsent bytes",
                self.id,
                io.mem.used(),
                io.mem.limit(),
                self.out.len()
            );
        } else {
            log::debug!("{}: slow consumer (output over the hard cap), closing", self.id);
        }
        self.out.discard_unsent(io.out_pool, &io.p.wire);
        self.ignore_input = true;
        self.begin_close(io, Some((ErrorCode::SlowConsumer, 0)))
    }

    /// The next time (ms) the check timer must look at this connection, if any.
    pub fn next_check<W>(&self, p: &Params<W>) -> Option<u64> {
        match self.phase {
            Phase::Open => {
                let idle = match (self.paused || self.held, self.idle_probe) {
                    (true, _) => None,
                    (false, Some(probe)) => Some(probe + 2 * TICK_MS),
                    (false, None) => p.idle_ms.map(|idle| self.last_frame + idle),
                };
                let write = self.over_high_since.map(|s| s + p.write_ms);
                match (idle, write) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closing | Phase::Lingering => Some(self.deadline),
            Phase::Dead => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection on one end of a socket pair, and what `check` needs around it.
    struct Fixture {
        conn: Conn,
        p: Params<doorway_core::wire::V1>,
        in_pool: Pool,
        out_pool: Pool,
        c: Counters,
        mem: std::sync::Arc<MemoryBudget>,
        admitted: AtomicUsize,
        _peer: std::os::unix::net::UnixStream,
    }

    impl Fixture {
        fn new(idle_ms: Option<u64>, low: usize) -> Fixture {
            let (a, peer) = std::os::unix::net::UnixStream::pair().unwrap();
            Fixture {
                conn: Conn::new(ConnId::new(0, 0), OwnedFd::from(a), 0),
                p: Params {
                    wire: doorway_core::wire::V1::new(1024),
                    high: 1 << 20,
                    low,
                    hard_cap: 4 << 20,
                    idle_ms,
                    write_ms: 5000,
                    linger_ms: 100,
                },
                in_pool: Pool::new(true, 4, 0),
                out_pool: Pool::new(false, 4, 0),
                c: Counters::default(),
                mem: MemoryBudget::new(1 << 30, 1),
                admitted: AtomicUsize::new(1),
                _peer: peer,
            }
        }

        /// `check` at `now` ms.
        fn check(&mut self, now: u64) -> Sched {
            let io = Io {
                mem: &self.mem,
                admitted: &self.admitted,
                p: &self.p,
                in_pool: &self.in_pool,
                out_pool: &self.out_pool,
                c: &self.c,
                now,
                stopping: false,
                drain_deadline: u64::MAX,
            };
            self.conn.check(&io)
        }

        fn next_check(&self) -> Option<u64> {
            self.conn.st.next_check(&self.p)
        }
    }

    /// The idle check of a connection whose probe read has not run yet (the receive role is
    /// behind, as in the pipeline model on a loaded machine).
    #[test]
    fn an_idle_probe_waiting_for_its_read_is_rechecked_later_not_at_once() {
        let mut f = Fixture::new(Some(1000), 1 << 18);
        assert_eq!(f.check(1000), READ, "the idle deadline asks for a probe read first");
        // The receive role has not run; the deal role looks again much later.
        for now in [1500, 4000] {
            assert_eq!(f.check(now), READ, "no read yet: ask again, do not close");
            let next = f.next_check().unwrap();
            assert!(
                next > now,
                "the next check ({next} ms) is due at once at {now} ms: the deal thread spins"
            );
        }
        // Once the read ran and found nothing, the connection is idle.
        f.conn.st.idle_probe_read = true;
        let next = f.next_check().unwrap();
        assert_ne!(f.check(next), READ);
        assert_eq!(f.conn.st.phase, Phase::Closing);
    }

    /// With the idle timeout off a silent connection arms no check and survives any check, while
    /// the write timeout still closes a connection stuck above the high watermark.
    #[test]
    fn with_the_idle_timeout_off_only_the_write_timeout_closes() {
        let mut f = Fixture::new(None, 0);
        assert_eq!(f.next_check(), None, "an idle check was armed with the idle timeout off");
        assert_eq!(f.check(u64::MAX / 2), 0);
        assert_eq!(f.conn.st.phase, Phase::Open, "a silent connection was closed with the idle timeout off");
        f.conn.st.over_high_since = Some(1000);
        assert_eq!(f.next_check(), Some(6000), "the write timeout's check is still armed");
        assert_eq!(f.check(5999), 0);
        f.check(6000);
        assert_eq!(f.conn.st.phase, Phase::Closing, "the write timeout no longer closes");
    }
}
