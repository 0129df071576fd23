//! The send role: one gathered write per connection per batch.

use super::*;

impl<W: Wire> Shard<W> {
    /// The send role over a batch of slots.
    pub fn send_batch(&self, batch: &[u32], c: &Counters, touched: &mut Sched) {
        let io = self.io(c);
        for &idx in batch {
            let s = match self.slots[idx as usize].lock().as_mut() {
                Some(conn) => conn.send(&io, &self.doors, idx),
                None => 0,
            };
            self.schedule(idx, s, touched);
        }
    }
}
