//! Subscriptions: which connections asked about which module, per shard.
//!
//! A connection is subscribed to every module it has asked about until it closes. The ids are
//! doorway's generation-tagged [`ConnId`]s, so a new connection that inherits a closed one's slot
//! (or fd) never receives its pushes; the original keys by fd and can push to a stranger.
//!
//! Each shard's service instance owns one [`Subs`] behind its own mutex, registered in the
//! [`Registry`] the first time it is used: a query locks only its shard's set, which only the
//! poller's push (a few times a minute) ever contends for. Every connection is served by one
//! shard, so its `on_close` reaches the same set as its queries did.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use doorway_core::slab::ConnId;

use crate::store::Module;

/// One shard's subscriptions, both ways round.
#[derive(Debug, Default)]
pub struct Subs {
    by_module: HashMap<Module, HashSet<ConnId>>,
    by_conn: HashMap<ConnId, Vec<Module>>,
}

impl Subs {
    /// Subscribes `conn` to `module`; whether it is new.
    pub fn subscribe(&mut self, conn: ConnId, module: Module) -> bool {
        let new = self.by_module.entry(module).or_default().insert(conn);
        if new {
            self.by_conn.entry(conn).or_default().push(module);
        }
        new
    }

    /// Ends every subscription of `conn`; returns how many it had.
    pub fn drop_conn(&mut self, conn: ConnId) -> usize {
        let Some(modules) = self.by_conn.remove(&conn) else { return 0 };
        for module in &modules {
            if let Some(conns) = self.by_module.get_mut(module) {
                conns.remove(&conn);
                if conns.is_empty() {
                    self.by_module.remove(module);
                }
            }
        }
        modules.len()
    }

    /// Appends the connections subscribed to `module` to `out`.
    pub fn subscribers(&self, module: Module, out: &mut Vec<ConnId>) {
        if let Some(conns) = self.by_module.get(&module) {
            out.extend(conns.iter().copied());
        }
    }

    /// Subscribed connections.
    pub fn conns(&self) -> usize {
        self.by_conn.len()
    }
}

/// Locks a set; a panic while holding it (none is expected: the code under it allocates at most)
/// leaves the maps consistent, so the poison is ignored.
pub fn lock(subs: &Mutex<Subs>) -> MutexGuard<'_, Subs> {
    subs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every shard's [`Subs`].
#[derive(Debug, Default)]
pub struct Registry {
    shards: Mutex<Vec<Arc<Mutex<Subs>>>>,
}

impl Registry {
    /// A new set for one shard's instance, registered.
    pub fn add(&self) -> Arc<Mutex<Subs>> {
        let subs = Arc::new(Mutex::new(Subs::default()));
        self.shards.lock().unwrap_or_else(PoisonError::into_inner).push(subs.clone());
        subs
    }

    /// Every registered set (a copy of the list: sets added later are not in it).
    pub fn shards(&self) -> Vec<Arc<Mutex<Subs>>> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every connection subscribed to `module`, on every shard, into `out` (cleared first).
    pub fn subscribers(&self, module: Module, out: &mut Vec<ConnId>) {
        out.clear();
        for subs in self.shards() {
            lock(&subs).subscribers(module, out);
        }
    }

    /// Subscribed connections on every shard.
    pub fn conns(&self) -> usize {
        self.shards().iter().map(|s| lock(s).conns()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_gets_no_push_and_a_repeated_question_subscribes_once() {
        let (a, b) = (ConnId::from_u64(1), ConnId::from_u64(2));
        let (m1, m2) = (Module { modid: 1, cmdid: 1 }, Module { modid: 1, cmdid: 2 });
        let mut subs = Subs::default();
        assert!(subs.subscribe(a, m1));
        assert!(!subs.subscribe(a, m1));
        assert!(subs.subscribe(a, m2));
        assert!(subs.subscribe(b, m1));
        let mut out = Vec::new();
        subs.subscribers(m1, &mut out);
        out.sort();
        assert_eq!(out, [a, b]);
        assert_eq!(subs.drop_conn(a), 2);
        assert_eq!(subs.drop_conn(a), 0);
        out.clear();
        subs.subscribers(m1, &mut out);
        assert_eq!(out, [b]);
        out.clear();
        subs.subscribers(m2, &mut out);
        assert!(out.is_empty());
        assert_eq!(subs.conns(), 1);
        assert_eq!(subs.by_module.len(), 1, "an empty module set is removed");
    }
}
