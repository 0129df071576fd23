//! The Linux [`Context`]: what a handler running on a deal role can do.
//!
//! - `reply` queues on the current connection (in reply order), `send_to` on any connection: the
//!   same shard directly (its lock is taken briefly; the deal role is the only one that ever holds
//!   two connection locks, so no cycle exists), another shard through that shard's inbox (the frame
//!   is delivered on its deal thread shortly after). Across shards, an id whose connection is
//!   gone answers `Closed` at once, from the target slot's published generation; a connection
//!   that dies while the frame is on its way drops it, as a reply queued just before a close is.
//! - `broadcast` reaches every connection still accepting requests on every shard. It returns the
//!   connections that took it on this shard plus the open connections of the other shards at the
//!   time of the call (their copies are queued through the inboxes). An inbox holds at most
//!   [`crate::shard::INBOX_CAP_BYTES`] of bodies: past it, `send_to` answers `Full`, and a
//!   broadcast is not counted for that shard, whose open connections are closed with ERROR 6 (each
//!   missed a message), so memory stays bounded and nothing is dropped silently.
//! - The handler runs under its own slot's lock, so nothing here ever locks that slot again: an id
//!   of the same slot that is not the current one is a stale id (`Closed`), and `broadcast` serves
//!   its own slot through `st` directly. `on_close` runs after the slot lock is released.
//! - Timers are per connection, on the deal role's wheel (`doorway_core::wheel`, millisecond ticks,
//!   fired at the monitor's 10 ms tick), and die with the connection.
//! - `counters` sums every thread's counters (STATS).

use doorway_core::dispatch::{Context, LinkId, Outbox, SendError, TimerError};
use doorway_core::slab::ConnId;
use doorway_core::wire::Wire;

use doorway_core::time::Instant as Tick;

use crate::conn::{ConnState, Io, Sched, SEND};
use crate::shard::{DealEnv, Shard, TimerEntry, TimerKind};

/// Most shard timers (`Outbox::set_timer`) one shard's service may have armed.
pub const MAX_SHARD_TIMERS: usize = 64;
/// Most service timers one connection may have armed.
pub const MAX_TIMERS_PER_CONN: usize = 16;
/// Longest service timer (one day).
pub const MAX_TIMER_MS: u32 = 86_400_000;

/// The context handed to handlers on the Linux server.
pub struct Cx<'a, 'io, W> {
    pub(crate) shard: &'a Shard<W>,
    pub(crate) idx: u32,
    pub(crate) st: &'a mut ConnState,
    pub(crate) env: &'a mut DealEnv,
    pub(crate) io: &'a Io<'io, W>,
    pub(crate) sched: Sched,
}

impl<W: Wire> Cx<'_, '_, W> {
    fn push_other(
        &mut self,
        local: u32,
        to: Option<ConnId>,
        kind: u16,
        seq: u32,
        body: &[u8],
    ) -> Result<(), SendError> {
        self.shard.push_local(local, to, kind, seq, body, self.io, self.env)
    }
}

impl<W: Wire> Context for Cx<'_, '_, W> {
    fn conn(&self) -> ConnId {
        self.st.id
    }

    #[inline]
    fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        self.st.push_frame(self.io, kind, seq, body)?;
        self.sched |= SEND;
        Ok(())
    }

    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        if to == self.st.id {
            return self.reply(kind, seq, body);
        }
        let (shard, local) = crate::shard::split_index(to.index());
        if shard == self.shard.index {
            if local == self.idx {
                // An earlier occupant of this very slot: its connection is gone. (Taking the slot's
                // lock again here would spin forever on the lock this handler runs under.)
                return Err(SendError::Closed);
            }
            self.push_other(local, Some(to), kind, seq, body)
        } else {
            self.shard
                .server
                .deliver(shard, crate::shard::Remote::SendTo { to, kind, seq, body: body.to_vec() })
        }
    }

    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
        let mut n = 0;
        for local in 0..self.shard.high_index() {
            if local == self.idx {
                if self.st.phase == crate::conn::Phase::Open && self.st.admitted && self.st.link.is_none() {
                    match self.st.push_frame(self.io, kind, seq, body) {
                        Ok(()) => {
                            n += 1;
                            self.sched |= SEND;
                        }
                        Err(_) => self.sched |= self.st.slow_consumer(self.io),
                    }
                }
            } else if self.push_other(local, None, kind, seq, body).is_ok() {
                n += 1;
            }
        }
        n + self.shard.server.broadcast(Some(self.shard.index), kind, seq, body)
    }

    fn pause(&mut self) -> bool {
        self.st.hold(self.io);
        true
    }

    fn link(&self) -> Option<LinkId> {
        self.st.link
    }

    fn send_link(&mut self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let owner = usize::from(link.0) % self.shard.server.cfg.shards;
        if owner != self.shard.index {
            return self.shard.server.send_link(link, kind, seq, body);
        }
        let result =
            self.shard.send_link_local(link, kind, seq, body, self.io, self.env, Some(&mut *self.st));
        if result.is_ok() && self.st.link == Some(link) {
            self.sched |= SEND;
        }
        result
    }

    fn resume(&mut self) {
        self.sched |= self.st.resume(self.io);
    }

    fn close(&mut self) {
        self.sched |= self.st.begin_close(self.io, None);
    }

    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError> {
        if after_ms > MAX_TIMER_MS {
            return Err(TimerError::OutOfRange);
        }
        let deadline = Tick::from_ticks(self.io.now + after_ms as u64);
        if let Some(pos) = self.st.timers.iter().position(|t| t.0 == token) {
            if self.env.wheel.reset(self.st.timers[pos].1, deadline) {
                return Ok(());
            }
            self.st.timers.swap_remove(pos);
        }
        if self.st.timers.len() >= MAX_TIMERS_PER_CONN || self.env.service_timers >= self.env.service_budget {
            return Err(TimerError::Full);
        }
        let entry = TimerEntry { id: self.st.id, kind: TimerKind::Service { token } };
        match self.env.wheel.insert(deadline, entry) {
            Ok(timer) => {
                self.env.service_timers += 1;
                self.st.timers.push((token, timer));
                Ok(())
            }
            Err(_) => Err(TimerError::Full),
        }
    }

    fn cancel_timer(&mut self, token: u32) {
        if let Some(pos) = self.st.timers.iter().position(|t| t.0 == token) {
            let (_, timer) = self.st.timers.swap_remove(pos);
            if self.env.wheel.cancel(timer).is_some() {
                self.env.service_timers -= 1;
            }
        }
    }

    fn counters(&self, visit: &mut dyn FnMut(&str, u64)) {
        self.shard.server.stats().visit(visit);
    }
}

/// The context of the shard-wide hooks (`Service::on_start`, `Service::on_shard_timer`): the deal
/// role's state with no connection current, so no connection lock is held and `send_to` may reach
/// any slot of this shard directly.
pub struct ShardCx<'a, 'io, W> {
    pub(crate) shard: &'a Shard<W>,
    pub(crate) env: &'a mut DealEnv,
    pub(crate) io: &'a Io<'io, W>,
}

impl<W: Wire> Outbox for ShardCx<'_, '_, W> {
    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let (shard, local) = crate::shard::split_index(to.index());
        if shard == self.shard.index {
            self.shard.push_local(local, Some(to), kind, seq, body, self.io, self.env)
        } else {
            self.shard
                .server
                .deliver(shard, crate::shard::Remote::SendTo { to, kind, seq, body: body.to_vec() })
        }
    }

    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
        let local = (0..self.shard.high_index())
            .filter(|&idx| self.shard.push_local(idx, None, kind, seq, body, self.io, self.env).is_ok())
            .count();
        local + self.shard.server.broadcast(Some(self.shard.index), kind, seq, body)
    }

    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError> {
        set_owned_timer(self.env, self.io, TimerKind::Shard { token }, after_ms)
    }

    fn cancel_timer(&mut self, token: u32) {
        cancel_owned_timer(self.env, TimerKind::Shard { token });
    }

    fn send_link(&mut self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let owner = usize::from(link.0) % self.shard.server.cfg.shards;
        if owner != self.shard.index {
            return self.shard.server.send_link(link, kind, seq, body);
        }
        self.shard.send_link_local(link, kind, seq, body, self.io, self.env, None)
    }

    fn counters(&self, visit: &mut dyn FnMut(&str, u64)) {
        self.shard.server.stats().visit(visit);
    }
}

/// The `ConnId` a datagram context reports for UDP endpoint `id`: outside every shard's range, so
/// `send_to` it answers `Closed`.
pub fn endpoint_conn_id(id: u32) -> ConnId {
    ConnId::new(0xFF00_0000 | id, 0)
}

/// The context of a datagram (or of an endpoint's timer): `reply` goes to the datagram's source in
/// the batch's `sendmmsg`; `send_to` and `broadcast` reach the server's TCP connections; timers
/// belong to the endpoint.
pub struct UdpCx<'a, 'io, W> {
    inner: ShardCx<'a, 'io, W>,
    endpoint: u32,
    peer: Option<std::net::SocketAddr>,
    out: &'a mut crate::sys::udp::SendBatch,
}

impl<'a, 'io, W: Wire> UdpCx<'a, 'io, W> {
    /// The context of a datagram from `peer` (`None`: an endpoint timer) on the shard's endpoint
    /// `endpoint`.
    pub(crate) fn new(
        shard: &'a Shard<W>,
        env: &'a mut DealEnv,
        io: &'a Io<'io, W>,
        endpoint: u32,
        peer: Option<std::net::SocketAddr>,
        out: &'a mut crate::sys::udp::SendBatch,
    ) -> Self {
        UdpCx { inner: ShardCx { shard, env, io }, endpoint, peer, out }
    }
}

impl<W: Wire> Context for UdpCx<'_, '_, W> {
    fn conn(&self) -> ConnId {
        endpoint_conn_id(self.inner.shard.udp[self.endpoint as usize].id)
    }

    fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let Some(peer) = self.peer else { return Err(SendError::Closed) };
        let wire = &self.inner.io.p.wire;
        if body.len() > wire.max_body() as usize {
            return Err(SendError::TooLarge);
        }
        let mut head = [0u8; doorway_core::wire::MAX_HEAD_LEN];
        let n = wire.encode_head(&mut head, kind, seq, body.len());
        self.out.push(peer, &head[..n], body);
        Ok(())
    }

    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        self.inner.send_to(to, kind, seq, body)
    }

    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
        self.inner.broadcast(kind, seq, body)
    }

    /// A datagram has no connection to close.
    fn close(&mut self) {}

    fn send_link(&mut self, link: LinkId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        self.inner.send_link(link, kind, seq, body)
    }

    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError> {
        let owner = crate::shard::TimerKind::Udp { endpoint: self.endpoint, token };
        set_owned_timer(self.inner.env, self.inner.io, owner, after_ms)
    }

    fn cancel_timer(&mut self, token: u32) {
        cancel_owned_timer(self.inner.env, crate::shard::TimerKind::Udp { endpoint: self.endpoint, token });
    }

    fn counters(&self, visit: &mut dyn FnMut(&str, u64)) {
        self.inner.counters(visit);
    }
}

/// Arms (or re-arms) a timer owned by the shard rather than a connection (a shard timer, an
/// endpoint's timer), at most [`MAX_SHARD_TIMERS`] of them per shard.
fn set_owned_timer<W: Wire>(
    env: &mut DealEnv,
    io: &Io<'_, W>,
    owner: TimerKind,
    after_ms: u32,
) -> Result<(), TimerError> {
    if after_ms > MAX_TIMER_MS {
        return Err(TimerError::OutOfRange);
    }
    let deadline = Tick::from_ticks(io.now + after_ms as u64);
    if let Some(pos) = env.shard_timers.iter().position(|t| t.0 == owner) {
        if env.wheel.reset(env.shard_timers[pos].1, deadline) {
            return Ok(());
        }
        env.shard_timers.swap_remove(pos);
    }
    if env.shard_timers.len() >= MAX_SHARD_TIMERS {
        return Err(TimerError::Full);
    }
    let timer = env
        .wheel
        .insert(deadline, TimerEntry { id: ConnId::new(0, 0), kind: owner })
        .map_err(|_| TimerError::Full)?;
    env.shard_timers.push((owner, timer));
    Ok(())
}

fn cancel_owned_timer(env: &mut DealEnv, owner: TimerKind) {
    if let Some(pos) = env.shard_timers.iter().position(|t| t.0 == owner) {
        let (_, timer) = env.shard_timers.swap_remove(pos);
        env.wheel.cancel(timer);
    }
}
