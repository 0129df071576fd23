//! The UDP worker: one thread, one level-triggered epoll, a few connected sockets, datagrams moved
//! in batches (`sendmmsg`/`recvmmsg`, [`crate::sys`]) so the client is not the bottleneck.
//!
//! Every request is one datagram (a whole ECHO frame) and so is every reply. UDP may drop, so each
//! request has its own bound, the reply timeout; there is no retransmission: a request unanswered
//! by then is *lost*, and a reply that comes after that (or twice) is *late* and verifies nothing.
//! A reply is checked in full (length, kind, seq, body) against its own request, like the TCP
//! worker's.
//!
//! Two ways to load a socket ([`Book`]):
//!
//! - closed loop ([`Lanes`]): `in_flight` lanes per socket, each a ping-pong of its own. Lane `i`
//!   sends seqs `i+1, i+1+W, i+1+2W, ...` (W = `in_flight`), so a reply's seq names its lane
//!   (`(seq - 1) % W`) and whether it is the one awaited (equal to the lane's last seq) or late
//!   (smaller). When a lane's request is answered, lost or refused, the lane sends its next one
//!   while the socket's quota lasts. A lost request is an error of the run: none may be lost.
//! - open loop ([`Schedule`]): each socket sends on a fixed timetable (its share of `--rate`,
//!   the sockets' timetables staggered) whatever comes back, and keeps one send time per request
//!   in a table sized from the rate and the run's length at connect time. The loss rate over the
//!   requests sent inside the measured window is the figure, not an error.
//!
//! A socket whose send or receive fails (a refused port reported by ICMP) counts one I/O error and
//! stops; the run goes on with the others. Seqs do not wrap within a run (`args` bounds the
//! per-socket count).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use doorway_core::frame::{kind, Header, HEADER_LEN, MAX_ERROR_BODY};

use crate::report::Stats;
use crate::sys::{self, Epoll, Event, Interest, BATCH};
use crate::{Plan, Request};

/// How often the closed loop looks for requests past their reply timeout.
const EXPIRE_EVERY: u64 = 5_000_000;

/// The receive buffer each client socket asks for, as large as the servers' own, so replies are
/// not dropped at the client while it is busy sending.
const RCVBUF: usize = 4 << 20;

/// Receive batches read from one socket per readable event, so one socket cannot starve others.
const BATCHES_PER_EVENT: usize = 4;

/// What one worker needs to run.
pub struct Worker {
    /// The request template.
    pub request: Arc<Request>,
    /// Closed loop: requests outstanding per socket.
    pub in_flight: usize,
    /// Per-socket request quotas (`u64::MAX`: until the plan stops sending); the vector's length
    /// is this worker's socket count.
    pub quotas: Vec<u64>,
    /// Shared count of verified replies, for the progress line.
    pub progress: Arc<AtomicU64>,
    /// How long a request waits for its reply before it is lost.
    pub reply_timeout: Duration,
    /// Open loop: datagrams per second per socket, and how long the run sends.
    pub open_loop: Option<(f64, Duration)>,
}

/// Bound and connected sockets, waiting for the plan.
pub struct Connected {
    worker: Worker,
    socks: Vec<Sock>,
    stats: Stats,
}

/// One client socket and its bookkeeping.
struct Sock {
    socket: UdpSocket,
    book: Book,
    /// Registered for EPOLLOUT because the kernel refused part of a batch.
    want_write: bool,
    open: bool,
}

/// How a socket decides what to send and what a reply means.
enum Book {
    Closed(Lanes),
    Open(Schedule),
}

impl Worker {
    /// Binds and connects this worker's sockets (no packet is sent).
    pub fn connect(self, addr: SocketAddr) -> Connected {
        let mut stats = Stats::new();
        let mut socks = Vec::with_capacity(self.quotas.len());
        let n_socks = self.quotas.len();
        for (k, &quota) in self.quotas.iter().enumerate() {
            let local: SocketAddr = if addr.is_ipv4() {
                ([127, 0, 0, 1], 0).into()
            } else {
                (std::net::Ipv6Addr::LOCALHOST, 0).into()
            };
            let socket = match UdpSocket::bind(local).and_then(|s| s.connect(addr).map(|()| s)) {
                Ok(socket) => socket,
                Err(_) => {
                    stats.errors.connect += 1;
                    continue;
                }
            };
            if socket
                .set_nonblocking(true)
                .and_then(|()| sys::set_recv_buffer(socket.as_raw_fd(), RCVBUF))
                .is_err()
            {
                stats.errors.io += 1;
                continue;
            }
            let book = match self.open_loop {
                None => Book::Closed(Lanes::new(self.in_flight, quota)),
                Some((rate, sending)) => Book::Open(Schedule::new(rate, sending, k, n_socks)),
            };
            socks.push(Sock { socket, book, want_write: false, open: true });
        }
        Connected { worker: self, socks, stats }
    }
}

/// Buffers shared by a worker's sockets (one socket is served at a time).
struct Buffers {
    send: Box<[u8]>,
    recv: Box<[u8]>,
    slot: usize,
    lens: [usize; BATCH],
}

/// What the loop needs beside a socket: the template, the clock, the bounds, the counters.
struct Env<'a> {
    request: &'a Request,
    plan: &'a Plan,
    timeout: u64,
    stats: &'a mut Stats,
}

impl Connected {
    /// Runs the load until the plan says stop; returns this worker's measurements.
    pub fn run(mut self, plan: &Plan) -> Stats {
        if self.run_inner(plan).is_err() {
            // Only epoll itself failing lands here; count it and give back what was measured.
            self.stats.errors.io += 1;
        }
        for sock in &self.socks {
            if let Book::Open(schedule) = &sock.book {
                schedule.tally(&mut self.stats);
            }
            let port = sock.socket.local_addr().map_or(0, |a| a.port());
            self.stats.datagrams.client_drops += crate::report::udp_drops(port).unwrap_or(0);
        }
        self.stats
    }

    fn run_inner(&mut self, plan: &Plan) -> io::Result<()> {
        let mut epoll = Epoll::new(self.socks.len().max(1))?;
        let request = Arc::clone(&self.worker.request);
        let frame_len = request.frame.len();
        // One byte more than a reply, so a longer one shows; room for an ERROR frame too.
        let slot = (frame_len + 1).max(HEADER_LEN + MAX_ERROR_BODY + 1);
        let mut bufs = Buffers {
            send: vec![0; BATCH * frame_len].into_boxed_slice(),
            recv: vec![0; BATCH * slot].into_boxed_slice(),
            slot,
            lens: [0; BATCH],
        };
        let timeout = self.worker.reply_timeout.as_nanos() as u64;
        let mut env = Env { request: &request, plan, timeout, stats: &mut self.stats };
        for (i, sock) in self.socks.iter_mut().enumerate() {
            epoll.add(sock.socket.as_raw_fd(), i as u64, Interest::Read)?;
            sock.send_due(&mut bufs, &epoll, i, &mut env);
        }
        let open_loop = self.worker.open_loop.is_some();
        // Open loop: wait for late replies until the last request's timeout, within the bound.
        let end = if open_loop {
            plan.stop_sending.saturating_add(timeout).min(plan.hard_deadline)
        } else {
            plan.hard_deadline
        };
        let mut next_expiry = plan.now() + EXPIRE_EVERY;
        let mut events: Vec<Event> = Vec::with_capacity(self.socks.len().max(1));
        loop {
            let now = plan.now();
            let sending = now < plan.stop_sending;
            let busy = self.socks.iter().any(|s| s.open && s.book.busy(sending));
            if !busy {
                return Ok(());
            }
            if now >= end {
                for sock in self.socks.iter_mut().filter(|s| s.open) {
                    sock.book.give_up(env.stats);
                }
                return Ok(());
            }
            if now >= next_expiry {
                for (i, sock) in self.socks.iter_mut().enumerate() {
                    if sock.open && sock.book.expire(now, &mut env) {
                        sock.send_due(&mut bufs, &epoll, i, &mut env);
                    }
                }
                next_expiry = now + EXPIRE_EVERY;
            }
            // The open loop spins while sending (its timetable is finer than epoll's milliseconds);
            // the closed loop sleeps until a reply or the next expiry check.
            let wake = if open_loop && sending { now } else { next_expiry.min(end) };
            let timeout_ms = wake.saturating_sub(now).div_ceil(1_000_000).min(100) as i32;
            events.clear();
            epoll.wait(timeout_ms, |event| events.push(event))?;
            let mut replies = 0;
            for event in &events {
                let idx = event.token as usize;
                let Some(sock) = self.socks.get_mut(idx) else { continue };
                if !sock.open {
                    continue;
                }
                if event.readable {
                    replies += sock.on_readable(&mut bufs, &mut env);
                }
                if sock.open && !open_loop {
                    sock.send_due(&mut bufs, &epoll, idx, &mut env);
                }
                if !sock.open {
                    let _ = epoll.delete(sock.socket.as_raw_fd());
                }
            }
            if open_loop && sending {
                for (i, sock) in self.socks.iter_mut().enumerate() {
                    if sock.open {
                        sock.send_due(&mut bufs, &epoll, i, &mut env);
                    }
                }
            }
            if replies > 0 {
                self.worker.progress.fetch_add(replies, Ordering::Relaxed);
            }
        }
    }
}

impl Sock {
    fn fail(&mut self, env: &mut Env<'_>) {
        env.stats.errors.io += 1;
        self.open = false;
        self.book.abandon();
    }

    /// Reads what has arrived (a few batches) and books every datagram. Returns replies verified.
    fn on_readable(&mut self, bufs: &mut Buffers, env: &mut Env<'_>) -> u64 {
        let mut replies = 0;
        for _ in 0..BATCHES_PER_EVENT {
            let n = match sys::recv_batch(self.socket.as_raw_fd(), &mut bufs.recv, bufs.slot, &mut bufs.lens)
            {
                Ok(n) => n,
                Err(_) => {
                    self.fail(env);
                    return replies;
                }
            };
            let now = env.plan.now();
            for (d, &len) in bufs.lens.iter().enumerate().take(n) {
                let datagram = &bufs.recv[d * bufs.slot..][..len];
                let reply = Reply::classify(datagram, env.request);
                if self.book.on_reply(reply, now, env) {
                    replies += 1;
                }
            }
            if n < BATCH {
                break;
            }
        }
        replies
    }

    /// Sends what the book says is due, in batches, until it is all sent or the kernel refuses.
    fn send_due(&mut self, bufs: &mut Buffers, epoll: &Epoll, idx: usize, env: &mut Env<'_>) {
        let frame_len = env.request.frame.len();
        loop {
            let now = env.plan.now();
            let count = self.book.fill(&mut bufs.send, env.request, now, env.plan);
            if count == 0 {
                break;
            }
            let sent =
                match sys::send_batch(self.socket.as_raw_fd(), &bufs.send[..count * frame_len], frame_len) {
                    Ok(sent) => sent,
                    Err(_) => return self.fail(env),
                };
            self.book.sent(sent, now, env.plan);
            env.stats.datagrams.sent_all += sent as u64;
            if let Book::Closed(_) = self.book {
                env.stats.datagrams.sent += sent as u64;
            }
            if sent < count {
                // The rest stays due. The closed loop waits for writability; the open loop
                // comes back on its next turn anyway.
                if let Book::Closed(_) = self.book {
                    self.set_want_write(true, epoll, idx, env);
                }
                return;
            }
        }
        self.set_want_write(false, epoll, idx, env);
    }

    fn set_want_write(&mut self, on: bool, epoll: &Epoll, idx: usize, env: &mut Env<'_>) {
        if self.want_write == on {
            return;
        }
        self.want_write = on;
        let interest = if on { Interest::ReadWrite } else { Interest::Read };
        if epoll.modify(self.socket.as_raw_fd(), idx as u64, interest).is_err() {
            self.fail(env);
        }
    }
}

/// A received datagram, checked against the request it claims to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// An ECHO frame for `seq`; `ok` if it is exactly request `seq`'s frame.
    Echo { seq: u32, ok: bool },
    /// An ERROR frame (with the seq it names, 0 if none).
    Error { code: u16, seq: u32 },
    /// Not a frame at all.
    Garbage,
}

impl Reply {
    fn classify(datagram: &[u8], request: &Request) -> Reply {
        let Ok(header) = Header::parse(datagram) else { return Reply::Garbage };
        let body = &datagram[HEADER_LEN..];
        if header.kind == kind::ERROR {
            let code = body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            return Reply::Error { code, seq: header.seq };
        }
        let ok = header.kind == doorway_core::demo::kind::ECHO
            && header.length as usize == body.len()
            && request.matches(body, header.seq);
        Reply::Echo { seq: header.seq, ok }
    }
}

/// Records a verified reply to a request sent at `sent` (inside the window if `counted`).
fn record(stats: &mut Stats, now: u64, sent: u64, counted: bool) {
    stats.total += 1;
    if counted {
        stats.messages += 1;
        stats.latency.saturating_record(now.saturating_sub(sent).max(1));
    }
}

impl Book {
    /// Whether the socket still has something to do: requests owed, or (while `sending`) to send.
    fn busy(&self, sending: bool) -> bool {
        match self {
            Book::Closed(lanes) => {
                lanes.waiting > 0 || (sending && (lanes.to_send > 0 || !lanes.pending.is_empty()))
            }
            Book::Open(schedule) => sending || schedule.outstanding > 0,
        }
    }

    /// Writes the requests due now into `out`, end to end; returns how many (at most [`BATCH`]).
    fn fill(&mut self, out: &mut [u8], request: &Request, now: u64, plan: &Plan) -> usize {
        let frame_len = request.frame.len();
        let mut frames = out.chunks_exact_mut(frame_len);
        let mut count = 0;
        match self {
            Book::Closed(lanes) => {
                for &lane in lanes.pending.iter().take(BATCH) {
                    if let Some(frame) = frames.next() {
                        request.write(frame, lanes.next_seq(lane));
                        count += 1;
                    }
                }
            }
            Book::Open(schedule) if now < plan.stop_sending => {
                let due = schedule.due(now).min(schedule.sent_at.len()).saturating_sub(schedule.next);
                for (i, frame) in frames.take(due.min(BATCH)).enumerate() {
                    request.write(frame, (schedule.next + i + 1) as u32);
                    count += 1;
                }
            }
            Book::Open(_) => {}
        }
        count
    }

    /// The first `n` requests [`fill`](Book::fill) wrote were sent at `now`.
    fn sent(&mut self, n: usize, now: u64, plan: &Plan) {
        match self {
            Book::Closed(lanes) => {
                for _ in 0..n {
                    let Some(lane) = lanes.pending.pop_front() else { break };
                    let seq = lanes.next_seq(lane);
                    lanes.last[lane] = seq;
                    lanes.sent_at[lane] = now;
                    lanes.waiting_on[lane] = true;
                    lanes.waiting += 1;
                }
            }
            Book::Open(schedule) => {
                let slots = schedule.sent_at.len();
                for at in &mut schedule.sent_at[schedule.next.min(slots)..(schedule.next + n).min(slots)] {
                    *at = now.max(1);
                }
                if n > 0 && now >= plan.measure_from && now < plan.measure_until {
                    // Send times grow with seqs, so the window's requests are one range of seqs.
                    if schedule.window.0 == 0 {
                        schedule.window.0 = schedule.next as u32 + 1;
                    }
                    schedule.window.1 = (schedule.next + n) as u32;
                }
                schedule.next += n;
                schedule.outstanding += n as u64;
            }
        }
    }

    /// Books one reply; returns whether it verified.
    fn on_reply(&mut self, reply: Reply, now: u64, env: &mut Env<'_>) -> bool {
        let in_window = now >= env.plan.measure_from && now < env.plan.measure_until;
        match self {
            Book::Closed(lanes) => lanes.on_reply(reply, now, in_window, env),
            Book::Open(schedule) => schedule.on_reply(reply, now, env),
        }
    }

    /// Closed loop: counts requests past their timeout as lost and frees their lanes. Returns
    /// whether any lane became free (so something may be due).
    fn expire(&mut self, now: u64, env: &mut Env<'_>) -> bool {
        let Book::Closed(lanes) = self else { return false };
        let mut freed = false;
        for lane in 0..lanes.last.len() {
            if lanes.waiting_on[lane] && now.saturating_sub(lanes.sent_at[lane]) >= env.timeout {
                env.stats.datagrams.lost += 1;
                lanes.free(lane, now < env.plan.stop_sending);
                freed = true;
            }
        }
        freed
    }

    /// The run's time bound ran out: whatever the closed loop still awaits is a timeout error.
    /// (The open loop's unanswered requests are its losses, counted by [`Schedule::tally`].)
    fn give_up(&mut self, stats: &mut Stats) {
        if let Book::Closed(lanes) = self {
            stats.errors.timeout += lanes.waiting as u64;
        }
        self.abandon();
    }

    /// The socket failed: nothing more is sent or awaited.
    fn abandon(&mut self) {
        match self {
            Book::Closed(lanes) => {
                lanes.waiting = 0;
                lanes.to_send = 0;
                lanes.pending.clear();
                lanes.waiting_on.fill(false);
            }
            Book::Open(schedule) => schedule.outstanding = 0,
        }
    }
}

/// Closed loop: `in_flight` lanes, each one request outstanding at most.
struct Lanes {
    /// Per lane: the seq it sent last (0 before its first).
    last: Vec<u32>,
    /// Per lane: when it sent `last` (ns on the plan's clock).
    sent_at: Vec<u64>,
    /// Per lane: whether `last` awaits its reply.
    waiting_on: Vec<bool>,
    /// Lanes with a request due, in order.
    pending: std::collections::VecDeque<usize>,
    /// Lanes waiting.
    waiting: usize,
    /// Requests this socket may still queue (`u64::MAX`: until the plan stops sending).
    to_send: u64,
}

impl Lanes {
    fn new(in_flight: usize, quota: u64) -> Lanes {
        let mut lanes = Lanes {
            last: vec![0; in_flight],
            sent_at: vec![0; in_flight],
            waiting_on: vec![false; in_flight],
            pending: std::collections::VecDeque::with_capacity(in_flight),
            waiting: 0,
            to_send: quota,
        };
        for lane in 0..in_flight {
            lanes.queue(lane);
        }
        lanes
    }

    /// The seq lane `lane` sends next.
    fn next_seq(&self, lane: usize) -> u32 {
        match self.last[lane] {
            0 => lane as u32 + 1,
            last => last.wrapping_add(self.last.len() as u32),
        }
    }

    /// Queues lane `lane`'s next request if the quota allows.
    fn queue(&mut self, lane: usize) {
        if self.to_send > 0 {
            self.to_send -= 1;
            self.pending.push_back(lane);
        }
    }

    /// Lane `lane` no longer waits; it sends again if `sending`.
    fn free(&mut self, lane: usize, sending: bool) {
        self.waiting_on[lane] = false;
        self.waiting -= 1;
        if sending {
            self.queue(lane);
        }
    }

    fn on_reply(&mut self, reply: Reply, now: u64, in_window: bool, env: &mut Env<'_>) -> bool {
        let seq = match reply {
            Reply::Garbage => {
                env.stats.errors.mismatch += 1;
                return false;
            }
            Reply::Error { code, seq } => {
                env.stats.errors.error_frame(code);
                seq
            }
            Reply::Echo { seq, .. } => seq,
        };
        let lane = (seq.wrapping_sub(1) as usize) % self.last.len();
        if seq == 0 || seq > self.last[lane] {
            // A seq this socket never sent.
            if let Reply::Echo { .. } = reply {
                env.stats.errors.mismatch += 1;
            }
            return false;
        }
        if seq < self.last[lane] || !self.waiting_on[lane] {
            env.stats.datagrams.late += 1;
            return false;
        }
        // Answered (rightly, wrongly or with an ERROR): not lost, and the lane moves on.
        self.free(lane, now < env.plan.stop_sending);
        match reply {
            Reply::Echo { ok: true, .. } => {
                record(env.stats, now, self.sent_at[lane], in_window);
                true
            }
            Reply::Echo { ok: false, .. } => {
                env.stats.errors.mismatch += 1;
                false
            }
            Reply::Error { .. } | Reply::Garbage => false,
        }
    }
}

/// Open loop: a fixed timetable and one send time per request.
struct Schedule {
    /// Datagrams per nanosecond.
    rate: f64,
    /// This socket's offset in the timetable, so sockets do not send in lockstep.
    phase: u64,
    /// Send time of request `seq` at `seq - 1` (0: not sent; [`ANSWERED`]; [`LATE`]).
    sent_at: Vec<u64>,
    /// Requests sent so far (the next seq is `next + 1`).
    next: usize,
    /// Requests neither answered nor given up.
    outstanding: u64,
    /// Seqs sent inside the measured window: `window.0 ..= window.1` (empty if `window.0 == 0`).
    window: (u32, u32),
}

/// A request answered in time.
const ANSWERED: u64 = u64::MAX;
/// A request answered after its timeout.
const LATE: u64 = u64::MAX - 1;

impl Schedule {
    /// Socket `k` of `n`, sending `rate` datagrams/s for `sending`.
    fn new(rate: f64, sending: Duration, k: usize, n: usize) -> Schedule {
        let rate = rate / 1e9;
        let planned = (rate * sending.as_nanos() as f64).ceil() as usize + 1;
        let phase = (k as f64 / (n.max(1) as f64 * rate.max(1e-12))) as u64;
        Schedule { rate, phase, sent_at: vec![0; planned], next: 0, outstanding: 0, window: (0, 0) }
    }

    /// Requests due by `now`.
    fn due(&self, now: u64) -> usize {
        match now.checked_sub(self.phase) {
            Some(t) => (t as f64 * self.rate) as usize + 1,
            None => 0,
        }
    }

    fn on_reply(&mut self, reply: Reply, now: u64, env: &mut Env<'_>) -> bool {
        let (seq, ok) = match reply {
            Reply::Echo { seq, ok } => (seq, ok),
            Reply::Error { code, seq } => {
                env.stats.errors.error_frame(code);
                (seq, false)
            }
            Reply::Garbage => {
                env.stats.errors.mismatch += 1;
                return false;
            }
        };
        let idx = seq.wrapping_sub(1) as usize;
        let Some(at) = self.sent_at.get(idx).copied().filter(|&at| at != 0 && idx < self.next) else {
            if !matches!(reply, Reply::Error { .. }) {
                env.stats.errors.mismatch += 1;
            }
            return false;
        };
        if at == ANSWERED || at == LATE {
            env.stats.datagrams.late += 1;
            return false;
        }
        self.outstanding -= 1;
        if now.saturating_sub(at) >= env.timeout {
            self.sent_at[idx] = LATE;
            env.stats.datagrams.late += 1;
            return false;
        }
        if !ok {
            // Answered, wrongly: an error, and not a loss.
            self.sent_at[idx] = ANSWERED;
            if matches!(reply, Reply::Echo { .. }) {
                env.stats.errors.mismatch += 1;
            }
            return false;
        }
        self.sent_at[idx] = ANSWERED;
        let counted = at >= env.plan.measure_from && at < env.plan.measure_until;
        record(env.stats, now, at, counted);
        true
    }

    /// Adds this socket's window figures: requests sent inside the window, and those of them not
    /// answered in time (lost).
    fn tally(&self, stats: &mut Stats) {
        let (first, last) = self.window;
        let Some(range) = self.sent_at.get((first as usize).saturating_sub(1)..last as usize) else { return };
        if first == 0 {
            return;
        }
        stats.datagrams.sent += range.len() as u64;
        stats.datagrams.lost += range.iter().filter(|&&at| at != ANSWERED).count() as u64;
    }
}
