//! The receive role: reads sockets into pooled blocks and lets the wire cut whole frames; in the
//! fused model each read connection is dealt with at once.

use super::*;

impl<W: Wire> Shard<W> {
    /// The receive role over a batch of slots.
    pub fn receive_batch(&self, batch: &[u32], c: &Counters, touched: &mut Sched) {
        let io = self.io(c);
        for &idx in batch {
            let s = self.receive_one(idx, &io);
            self.schedule(idx, s, touched);
        }
    }

    /// Reads one slot's socket (receive role); returns the roles to run next.
    #[inline]
    pub(super) fn receive_one(&self, idx: u32, io: &Io<'_, W>) -> Sched {
        let rdhup = self.doors.leave(idx, door::RDHUP);
        match self.slots[idx as usize].lock().as_mut() {
            Some(conn) => conn.receive(io, rdhup),
            None => 0,
        }
    }

    /// The fused model's receive: each connection read is dealt with at once, under the same
    /// thread, so its input block goes back to the pool before the next connection is read.
    pub fn receive_deal_batch<S: Service>(&self, batch: &[u32], service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        for &idx in batch {
            let s = self.receive_one(idx, &io);
            if s & DEAL != 0 {
                self.deal_one(idx, service, env, &io, true);
            }
            self.schedule(idx, s & !DEAL, &mut env.touched);
        }
    }
}
