//! The steady-load worker: one thread, one level-triggered epoll, many connections.
//!
//! Each connection keeps `in_flight` ECHO requests outstanding. A readable event does one large
//! `read`, verifies every whole reply in it (kind, seq, body) in place, queues one new request per
//! reply and sends them all with one `write`. Buffers are allocated once per connection at
//! connect time and sized so they can never overflow:
//!
//! - unsent output is at most `outstanding` requests, and `outstanding <= in_flight`, so the write
//!   buffer holds `in_flight` frames;
//! - unread replies are at most `in_flight` frames (a correct server sends no more), so the read
//!   buffer holds `in_flight` frames plus slack; a reply that does not fit is a protocol error
//!   caught by the decoder's length limit.
//!
//! Replies arrive in order (`docs/PROTOCOL.md`, Guarantees), so the expected `seq` is a counter and
//! the send time of request `seq` lives in a ring of `in_flight` slots at `seq % in_flight`.
//!
//! Any wrong reply, ERROR frame or unexpected close counts as an error and closes that connection:
//! its stream can no longer be trusted. The run goes on with the others.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use doorway_core::frame::{kind, Decoder};

use crate::report::Stats;
use crate::sys::{Epoll, Event, Interest};
use crate::{Plan, Request, CONNECT_TIMEOUT};

/// One connection's state; buffers are allocated once.
struct Conn {
    stream: TcpStream,
    rbuf: Box<[u8]>,
    rlen: usize,
    wbuf: Box<[u8]>,
    wpos: usize,
    wlen: usize,
    next_seq: u32,
    expect_seq: u32,
    outstanding: usize,
    /// Requests this connection may still send (`u64::MAX`: unlimited).
    to_send: u64,
    /// Send time (ns since the plan's base) of request `seq`, at `seq % in_flight`.
    sent_at: Box<[u64]>,
    /// Registered for EPOLLOUT because a write was partial.
    want_write: bool,
    open: bool,
}

/// What one worker needs to run.
pub struct Worker {
    /// The request template.
    pub request: Arc<Request>,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Per-connection request quotas; the vector's length is this worker's connection count.
    pub quotas: Vec<u64>,
    /// Shared count of verified replies, for the progress line.
    pub progress: Arc<AtomicU64>,
}

/// Connected connections, waiting for the plan.
pub struct Connected {
    worker: Worker,
    conns: Vec<Conn>,
    stats: Stats,
}

impl Worker {
    /// Opens this worker's connections (blocking, bounded by [`CONNECT_TIMEOUT`] each).
    pub fn connect(self, addr: std::net::SocketAddr) -> Connected {
        let mut stats = Stats::new();
        let frame_len = self.request.frame.len();
        let mut conns = Vec::with_capacity(self.quotas.len());
        for &quota in &self.quotas {
            let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => stream,
                Err(_) => {
                    stats.errors.connect += 1;
                    continue;
                }
            };
            if stream.set_nodelay(true).and_then(|()| stream.set_nonblocking(true)).is_err() {
                stats.errors.io += 1;
                continue;
            }
            conns.push(Conn {
                stream,
                rbuf: vec![0; (self.in_flight * frame_len + 4096).max(16 << 10)].into_boxed_slice(),
                rlen: 0,
                wbuf: vec![0; self.in_flight * frame_len].into_boxed_slice(),
                wpos: 0,
                wlen: 0,
                next_seq: 1,
                expect_seq: 1,
                outstanding: 0,
                to_send: quota,
                sent_at: vec![0; self.in_flight].into_boxed_slice(),
                want_write: false,
                open: true,
            });
        }
        Connected { worker: self, conns, stats }
    }
}

impl Connected {
    /// Runs the load until the plan says stop; returns this worker's measurements.
    pub fn run(mut self, plan: &Plan) -> Stats {
        match self.run_inner(plan) {
            Ok(()) => {}
            // Only epoll itself failing lands here; count it and give back what was measured.
            Err(_) => self.stats.errors.io += 1,
        }
        self.stats
    }

    fn run_inner(&mut self, plan: &Plan) -> io::Result<()> {
        let mut epoll = Epoll::new(self.conns.len().min(1024))?;
        let request = Arc::clone(&self.worker.request);
        let decoder = Decoder::new(request.body.len().max(64) as u32);
        let in_flight = self.worker.in_flight;
        let now = plan.now();
        for (i, conn) in self.conns.iter_mut().enumerate() {
            epoll.add(conn.stream.as_raw_fd(), i as u64, Interest::Read)?;
            while conn.outstanding < in_flight && conn.to_send > 0 {
                push_request(conn, &request, in_flight, now);
            }
            flush(conn, &epoll, i, &mut self.stats);
        }
        // Totals over open connections, kept up to date per event rather than recounted per wake-up,
        // so a wake-up costs what it handles, not the number of connections.
        let mut totals = Tally::default();
        for conn in &self.conns {
            totals.add(conn.tally());
        }
        let mut events: Vec<Event> = Vec::with_capacity(1024);
        loop {
            let now = plan.now();
            if totals.open == 0
                || (totals.outstanding == 0 && (totals.sending == 0 || now >= plan.stop_sending))
            {
                return Ok(());
            }
            if now >= plan.hard_deadline {
                self.stats.errors.timeout += totals.outstanding as u64;
                return Ok(());
            }
            let next = if now < plan.stop_sending { plan.stop_sending } else { plan.hard_deadline };
            let timeout_ms = (next - now).div_ceil(1_000_000).min(100) as i32;
            events.clear();
            epoll.wait(timeout_ms, |event| events.push(event))?;
            let mut replies = 0;
            for event in &events {
                let idx = event.token as usize;
                let Some(conn) = self.conns.get_mut(idx) else { continue };
                if !conn.open {
                    continue;
                }
                totals.remove(conn.tally());
                if event.writable {
                    flush(conn, &epoll, idx, &mut self.stats);
                }
                if event.readable && conn.open {
                    replies += on_readable(conn, &decoder, &request, in_flight, plan, &mut self.stats);
                    if conn.open {
                        flush(conn, &epoll, idx, &mut self.stats);
                    }
                }
                if !conn.open {
                    let _ = epoll.delete(conn.stream.as_raw_fd());
                }
                totals.add(conn.tally());
            }
            if replies > 0 {
                self.worker.progress.fetch_add(replies, Ordering::Relaxed);
            }
        }
    }
}

/// Counts over open connections: how many, requests outstanding, and how many may still send.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    open: usize,
    outstanding: usize,
    sending: usize,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.open += t.open;
        self.outstanding += t.outstanding;
        self.sending += t.sending;
    }

    fn remove(&mut self, t: Tally) {
        self.open -= t.open;
        self.outstanding -= t.outstanding;
        self.sending -= t.sending;
    }
}

impl Conn {
    /// This connection's share of the [`Tally`] (nothing once closed).
    fn tally(&self) -> Tally {
        if !self.open {
            return Tally::default();
        }
        Tally { open: 1, outstanding: self.outstanding, sending: usize::from(self.to_send > 0) }
    }
}

/// Appends the next request to the connection's write buffer and stamps its send time.
fn push_request(conn: &mut Conn, request: &Request, in_flight: usize, now: u64) {
    let len = request.frame.len();
    if conn.wlen + len > conn.wbuf.len() {
        // Compact: unsent bytes never exceed (in_flight - 1) frames here, so the frame then fits.
        conn.wbuf.copy_within(conn.wpos..conn.wlen, 0);
        conn.wlen -= conn.wpos;
        conn.wpos = 0;
    }
    let seq = conn.next_seq;
    request.write(&mut conn.wbuf[conn.wlen..conn.wlen + len], seq);
    conn.wlen += len;
    conn.sent_at[seq as usize % in_flight] = now;
    conn.next_seq = seq.wrapping_add(1);
    conn.outstanding += 1;
    conn.to_send = conn.to_send.saturating_sub(1);
}

/// Writes as much pending output as the socket takes; registers for EPOLLOUT if it is partial.
fn flush(conn: &mut Conn, epoll: &Epoll, idx: usize, stats: &mut Stats) {
    while conn.wpos < conn.wlen {
        match (&conn.stream).write(&conn.wbuf[conn.wpos..conn.wlen]) {
            Ok(n) => conn.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !conn.want_write {
                    conn.want_write = true;
                    if epoll.modify(conn.stream.as_raw_fd(), idx as u64, Interest::ReadWrite).is_err() {
                        fail(conn, &mut stats.errors.io);
                    }
                }
                return;
            }
            Err(_) => {
                fail(conn, &mut stats.errors.io);
                return;
            }
        }
    }
    conn.wpos = 0;
    conn.wlen = 0;
    if conn.want_write {
        conn.want_write = false;
        if epoll.modify(conn.stream.as_raw_fd(), idx as u64, Interest::Read).is_err() {
            fail(conn, &mut stats.errors.io);
        }
    }
}

fn fail(conn: &mut Conn, counter: &mut u64) {
    *counter += 1;
    conn.open = false;
    conn.outstanding = 0;
}

/// Reads once, verifies every whole reply, queues the next requests. Returns replies verified.
fn on_readable(
    conn: &mut Conn,
    decoder: &Decoder,
    request: &Request,
    in_flight: usize,
    plan: &Plan,
    stats: &mut Stats,
) -> u64 {
    let n = loop {
        match (&conn.stream).read(&mut conn.rbuf[conn.rlen..]) {
            Ok(0) => {
                if conn.outstanding > 0 || (conn.to_send > 0 && plan.now() < plan.stop_sending) {
                    fail(conn, &mut stats.errors.closed);
                } else {
                    conn.open = false;
                }
                return 0;
            }
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
            Err(_) => {
                fail(conn, &mut stats.errors.io);
                return 0;
            }
        }
    };
    conn.rlen += n;
    let now = plan.now();
    let in_window = now >= plan.measure_from && now < plan.measure_until;
    let mut pos = 0;
    let mut replies = 0;
    loop {
        let frame = match decoder.decode(&conn.rbuf[pos..conn.rlen]) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                fail(conn, &mut stats.errors.mismatch);
                return replies;
            }
        };
        pos += frame.wire_len();
        let header = frame.header;
        if header.kind == kind::ERROR {
            let code = frame.body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            stats.errors.error_frame(code);
            conn.open = false;
            conn.outstanding = 0;
            return replies;
        }
        if conn.outstanding == 0
            || header.kind != doorway_core::demo::kind::ECHO
            || header.seq != conn.expect_seq
            || !request.matches(frame.body, header.seq)
        {
            fail(conn, &mut stats.errors.mismatch);
            return replies;
        }
        let sent = conn.sent_at[header.seq as usize % in_flight];
        conn.expect_seq = conn.expect_seq.wrapping_add(1);
        conn.outstanding -= 1;
        replies += 1;
        stats.total += 1;
        if in_window {
            stats.messages += 1;
            stats.latency.saturating_record(now.saturating_sub(sent).max(1));
        }
    }
    conn.rbuf.copy_within(pos..conn.rlen, 0);
    conn.rlen -= pos;
    if now < plan.stop_sending {
        while conn.outstanding < in_flight && conn.to_send > 0 {
            push_request(conn, request, in_flight, now);
        }
    }
    replies
}
