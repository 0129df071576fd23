//! The deal role's timers: one wheel per shard for connection checks (idle, write, closing),
//! service timers of a connection, and the service's shard timers; `on_start` arms the first.

use super::*;

use crate::cx::UdpCx;

/// What a wheel entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The connection's deadline check (idle, write, closing and linger deadlines).
    Check,
    /// A service timer.
    Service {
        /// The service's token.
        token: u32,
    },
    /// A shard timer of the service (`Outbox::set_timer`); the entry's id means nothing.
    Shard {
        /// The service's token.
        token: u32,
    },
    /// A timer of one of the shard's UDP endpoints (`Context::set_timer` in a datagram context).
    Udp {
        /// The endpoint's index in the shard.
        endpoint: u32,
        /// The service's token.
        token: u32,
    },
}

/// One wheel entry: a connection (global id) and what to do.
#[derive(Debug, Clone, Copy)]
pub struct TimerEntry {
    /// The connection.
    pub id: ConnId,
    /// What for.
    pub kind: TimerKind,
}

/// The timing wheel of a deal role: `doorway_core::wheel`, one tick per millisecond.
pub type TimerWheel = Wheel<TimerEntry, Box<[Entry<TimerEntry>]>>;

impl<W: Wire> Shard<W> {
    /// Deal role: advances the wheel to now and runs what expired.
    pub fn run_timers<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        if !self.tick_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let now = Tick::from_ticks(io.now);
        while let Some((timer, entry)) = env.wheel.next_expired(now) {
            if let TimerKind::Service { .. } = entry.kind {
                env.service_timers -= 1;
            }
            if let TimerKind::Shard { .. } | TimerKind::Udp { .. } = entry.kind {
                let Some(pos) = env.shard_timers.iter().position(|t| t.1 == timer) else { continue };
                env.shard_timers.swap_remove(pos);
                match entry.kind {
                    TimerKind::Udp { endpoint, token } => {
                        let mut none = crate::sys::udp::SendBatch::default();
                        let id = self.udp.get(endpoint as usize).map_or(u32::MAX, |e| e.id);
                        let mut cx = UdpCx::new(self, &mut *env, &io, endpoint, None, &mut none);
                        let _ =
                            self.guarded(&io, Hook::Timer(crate::cx::endpoint_conn_id(id), token), || {
                                service.on_timer(&mut cx, token)
                            });
                    }
                    _ => {
                        let token = match entry.kind {
                            TimerKind::Shard { token } => token,
                            _ => 0,
                        };
                        let mut out = ShardCx { shard: self, env: &mut *env, io: &io };
                        let _ = self.guarded(&io, Hook::ShardTimer(self.index, token), || {
                            service.on_shard_timer(&mut out, token)
                        });
                    }
                }
                continue;
            }
            let (_, idx) = split_index(entry.id.index());
            let Some(slot) = self.slots.get(idx as usize) else { continue };
            let mut slot = slot.lock();
            let Some(conn) = slot.as_mut() else { continue };
            if conn.st.id != entry.id || conn.st.phase == Phase::Dead {
                continue;
            }
            let mut sched = 0;
            match entry.kind {
                TimerKind::Check => {
                    if conn.st.check.map(|c| c.0) != Some(timer) {
                        continue;
                    }
                    conn.st.check = None;
                    sched |= conn.check(&io);
                }
                TimerKind::Service { token } => {
                    let Some(pos) = conn.st.timers.iter().position(|t| t.1 == timer) else { continue };
                    conn.st.timers.swap_remove(pos);
                    let id = conn.st.id;
                    let mut cx = Cx { shard: self, idx, st: &mut conn.st, env: &mut *env, io: &io, sched: 0 };
                    let ran = self.guarded(&io, Hook::Timer(id, token), || service.on_timer(&mut cx, token));
                    sched |= cx.sched;
                    if ran.is_none() {
                        sched |= conn.st.begin_close(&io, None);
                    }
                    conn.st.after_output(&io);
                }
                // Handled before the slot lookup.
                TimerKind::Shard { .. } | TimerKind::Udp { .. } => continue,
            }
            if conn.st.phase != Phase::Dead {
                self.arm_check(&mut conn.st, env);
            }
            drop(slot);
            self.schedule(idx, sched, &mut env.touched);
        }
    }

    /// The deal role's first act: the service's `on_start` for this shard.
    pub fn start_service<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let mut out = ShardCx { shard: self, env: &mut *env, io: &io };
        let _ = self.guarded(&io, Hook::Start(self.index), || service.on_start(&mut out));
    }

    /// The deal role's last act, once the shard is done: frees every connection the drain left,
    /// running `on_close` for those the service opened (so each `on_open` gets its `on_close`).
    pub fn close_remaining<S: Service>(&self, service: &mut S, env: &mut DealEnv) {
        for idx in 0..self.high_index() {
            let conn = self.slots[idx as usize].lock().take();
            if let Some(conn) = conn {
                self.free(idx, conn, service, env);
            }
        }
    }
}
