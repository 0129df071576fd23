//! The inbox: messages for a shard's deal role from other shards and from `Handle`s on any thread
//! (`send_to`, broadcasts, resumes), bounded in bytes; the deal role drains it on every pass.

use super::*;

/// Bytes of bodies one shard's inbox may hold. The inbox is drained on every pass of the deal
/// role, so only a shard starved of CPU while others keep sending to it comes near this; past it,
/// memory stays bounded: `send_to` answers `Full`, and a broadcast that does not fit marks the
/// inbox, which then closes every open connection of that shard as a slow consumer (ERROR 6), since
/// each of them missed a message (PROTOCOL.md: nothing is silently dropped).
pub const INBOX_CAP_BYTES: usize = 16 << 20;

/// Messages for a shard's deal role from other shards, with their size kept against
/// [`INBOX_CAP_BYTES`].
#[derive(Default)]
pub struct Inbox {
    msgs: Vec<Remote>,
    bytes: usize,
    missed_broadcast: bool,
}

impl Inbox {
    /// Queues `msg`, or hands it back when the inbox is full (a broadcast is then remembered as
    /// missed).
    pub fn push(&mut self, msg: Remote) -> Result<(), Remote> {
        let cost = msg.body().len() + std::mem::size_of::<Remote>();
        if self.bytes + cost > INBOX_CAP_BYTES && !self.msgs.is_empty() {
            self.missed_broadcast |= matches!(msg, Remote::Broadcast { .. });
            return Err(msg);
        }
        self.bytes += cost;
        self.msgs.push(msg);
        Ok(())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && !self.missed_broadcast
    }

    /// Moves every waiting message into `out` (which should be empty; its capacity is reused);
    /// returns whether a broadcast was missed since the last call.
    pub fn take_into(&mut self, out: &mut Vec<Remote>) -> bool {
        std::mem::swap(&mut self.msgs, out);
        self.bytes = 0;
        std::mem::take(&mut self.missed_broadcast)
    }
}

/// A message for another shard's deal role.
pub enum Remote {
    /// `send_to` a connection of that shard.
    SendTo {
        /// The target.
        to: ConnId,
        /// Kind.
        kind: u16,
        /// Seq.
        seq: u32,
        /// Body.
        body: Vec<u8>,
    },
    /// A frame for one of that shard's upstream links.
    SendLink {
        /// The link.
        link: doorway_core::dispatch::LinkId,
        /// Kind.
        kind: u16,
        /// Seq.
        seq: u32,
        /// Body.
        body: Vec<u8>,
    },
    /// Resume reading a connection its service paused (`Handle::resume`).
    Resume {
        /// The connection.
        to: ConnId,
    },
    /// A broadcast to every connection of that shard.
    Broadcast {
        /// Kind.
        kind: u16,
        /// Seq.
        seq: u32,
        /// Body.
        body: Vec<u8>,
    },
}

impl Remote {
    fn body(&self) -> &[u8] {
        match self {
            Remote::SendTo { body, .. } | Remote::Broadcast { body, .. } | Remote::SendLink { body, .. } => {
                body
            }
            Remote::Resume { .. } => &[],
        }
    }
}

impl<W: Wire> Shard<W> {
    /// Whether messages from other shards wait.
    pub fn inbox_pending(&self) -> bool {
        !self.inbox.lock().is_empty()
    }

    /// Deal role: delivers inbox messages from other shards.
    pub fn run_inbox(&self, env: &mut DealEnv) {
        let missed_broadcast = {
            let mut inbox = self.inbox.lock();
            if inbox.is_empty() {
                return;
            }
            inbox.take_into(&mut env.remote)
        };
        let counters = env.counters.clone();
        let io = self.io(&counters);
        let mut msgs = std::mem::take(&mut env.remote);
        for msg in msgs.drain(..) {
            match msg {
                Remote::SendTo { to, kind, seq, body } => {
                    let (_, local) = split_index(to.index());
                    let _ = self.push_local(local, Some(to), kind, seq, &body, &io, env);
                }
                Remote::Broadcast { kind, seq, body } => {
                    for local in 0..self.high_index() {
                        let _ = self.push_local(local, None, kind, seq, &body, &io, env);
                    }
                }
                Remote::SendLink { link, kind, seq, body } => {
                    if let Err(e) = self.send_link_local(link, kind, seq, &body, &io, env, None) {
                        log::debug!("{link}: a frame from another shard was not queued ({e})");
                    }
                }
                Remote::Resume { to } => {
                    let (_, local) = split_index(to.index());
                    let Some(slot) = self.slots.get(local as usize) else { continue };
                    let mut slot = slot.lock();
                    let Some(conn) = slot.as_mut().filter(|c| c.st.id == to) else { continue };
                    let sched = conn.st.resume(&io);
                    self.arm_check(&mut conn.st, env);
                    drop(slot);
                    self.schedule(local, sched, &mut env.touched);
                }
            }
        }
        env.remote = msgs;
        if missed_broadcast {
            for local in 0..self.high_index() {
                let Some(slot) = self.slots.get(local as usize) else { continue };
                let mut slot = slot.lock();
                let Some(conn) = slot.as_mut() else { continue };
                if !conn.st.admitted {
                    continue;
                }
                let sched = conn.st.slow_consumer(&io);
                self.arm_check(&mut conn.st, env);
                drop(slot);
                self.schedule(local, sched, &mut env.touched);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Inbox, Remote, INBOX_CAP_BYTES};
    use doorway_core::slab::ConnId;

    fn note(len: usize) -> Remote {
        Remote::SendTo { to: ConnId::new(1, 0), kind: 1, seq: 0, body: vec![0; len] }
    }

    #[test]
    fn an_inbox_refuses_past_its_byte_cap_and_takes_again_once_drained() {
        let mut inbox = Inbox::default();
        let mut accepted = 0;
        while inbox.push(note(64 << 10)).is_ok() {
            accepted += 1;
            assert!(accepted <= INBOX_CAP_BYTES / (64 << 10), "the cap is not enforced");
        }
        assert!(accepted >= INBOX_CAP_BYTES / (64 << 10) - 1);
        let mut out = Vec::new();
        assert!(!inbox.take_into(&mut out), "a refused send_to is answered, not a missed broadcast");
        assert_eq!(out.len(), accepted);
        assert!(inbox.is_empty());
        assert!(inbox.push(note(64 << 10)).is_ok(), "a drained inbox takes messages again");
    }

    #[test]
    fn a_broadcast_that_does_not_fit_is_remembered_as_missed() {
        let mut inbox = Inbox::default();
        assert!(inbox.push(note(INBOX_CAP_BYTES)).is_ok());
        assert!(inbox.push(Remote::Broadcast { kind: 65, seq: 0, body: vec![1] }).is_err());
        assert!(!inbox.is_empty());
        let mut out = Vec::new();
        assert!(inbox.take_into(&mut out), "the missed broadcast is reported");
        assert!(inbox.is_empty());
        out.clear();
        assert!(!inbox.take_into(&mut out), "and reported once");
    }

    #[test]
    fn an_empty_inbox_takes_even_an_oversized_message() {
        let mut inbox = Inbox::default();
        assert!(inbox.push(note(INBOX_CAP_BYTES + 1)).is_ok());
        assert!(inbox.push(note(1)).is_err());
    }
}
