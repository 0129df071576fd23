//! One module's route: its nodes, the idle and overloaded queues, choosing and route updates.
//!
//! # Layout and invariants
//!
//! `nodes` holds the route, sorted by `(ip, port)` with no duplicates, so a report finds its node
//! by binary search without a map per module. `idle` and `overloaded` hold indices into `nodes`,
//! in queue order; every node's index is in exactly one of them, the one its state names. Indices
//! are `u16`: a route comes in one Lars frame (65,527 bytes, at least 4 per host), so it cannot
//! reach 65,536 nodes; [`Module::update_route`] refuses a longer list rather than trusting that.
//!
//! A state change moves an index from one queue to the other's tail (O(queue length), rare); a
//! route update rebuilds both queues, keeping the order of the nodes that stay and putting new
//! nodes at the idle tail.
//!
//! # Choosing
//!
//! As the original (`docs/LARS.md`, "Choosing"), with one counter, `since_probe`:
//!
//! - some node idle, none overloaded: the idle head, moved to the tail;
//! - some node idle, some overloaded: after `probe_num` idle choices the overloaded head (a probe,
//!   moved to its tail), otherwise the idle head;
//! - none idle: after `probe_num` refusals a probe, otherwise a refusal (OVERLOAD).
//!
//! In panic mode (fewer than `panic_percent` of the nodes idle) every node is chosen in turn by a
//! cursor over `nodes`, whatever its state. With `latency_aware`, an idle choice draws two idle
//! nodes at random and takes the cheaper by Peak-EWMA cost; probes and panic choices stay as above.
//!
//! Overloads time out by the clock: `overload_expiry` is a lower bound of the earliest time an
//! overloaded node turns idle, so a choice or report checks the queue only when one may have.

use std::collections::VecDeque;

use super::clock::Instant;
use super::config::Config;
use super::node::{Node, NodeState, NodeStatus, Transition};
use super::{ChoiceKind, HostChoice, RouteChange, RouteError, Stats};
use crate::proto::{HostCallResult, HostInfo};

/// The most nodes a route may have (indices are `u16`).
pub const MAX_NODES: usize = u16::MAX as usize + 1;

/// The sort key of a node.
fn key(host: &HostInfo) -> (i32, i32) {
    (host.ip, host.port)
}

/// An index into `nodes`; callers keep `nodes.len() <= MAX_NODES`.
fn index(i: usize) -> u16 {
    debug_assert!(i < MAX_NODES);
    i as u16
}

/// Why a module gave no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoChoice {
    /// The route is empty (or not known yet).
    Empty,
    /// Every node is overloaded and it is not a probe's turn.
    Overload,
}

/// One module's balancing state.
#[derive(Debug, Default)]
pub(super) struct Module {
    /// The route, sorted by `(ip, port)`.
    nodes: Vec<Node>,
    idle: VecDeque<u16>,
    overloaded: VecDeque<u16>,
    /// Idle choices or refusals since the last probe.
    since_probe: u32,
    /// The next node a panic choice takes.
    panic_next: u16,
    /// No overloaded node turns idle by the clock before this (`None`: none is overloaded).
    overload_expiry: Option<Instant>,
    /// Whether a route has ever been received.
    pub(super) route_known: bool,
    /// When the route was last asked for or received.
    pub(super) route_checked_at: Option<Instant>,
    /// Whether the module waits in the balancer's list of route requests to send.
    pub(super) fetch_pending: bool,
    /// Whether the module waits in the balancer's list of reports to send.
    pub(super) report_pending: bool,
}

impl Module {
    pub(super) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub(super) fn idle(&self) -> impl Iterator<Item = &Node> + '_ {
        self.idle.iter().map(|&i| &self.nodes[usize::from(i)])
    }

    pub(super) fn overloaded(&self) -> impl Iterator<Item = &Node> + '_ {
        self.overloaded.iter().map(|&i| &self.nodes[usize::from(i)])
    }

    pub(super) fn node(&self, host: HostInfo) -> Option<&Node> {
        self.find(host).map(|i| &self.nodes[i])
    }

    fn find(&self, host: HostInfo) -> Option<usize> {
        self.nodes.binary_search_by_key(&key(&host), |node| key(&node.host())).ok()
    }

    /// Whether fewer than `panic_percent` of the nodes are idle (never with no nodes).
    pub(super) fn in_panic(&self, config: &Config) -> bool {
        !self.nodes.is_empty() && self.idle.len() * 100 < usize::from(config.panic_percent) * self.nodes.len()
    }

    /// Whether the route is due to be asked for at `now`.
    pub(super) fn wants_route(&self, now: Instant, config: &Config) -> bool {
        !self.fetch_pending
            && self.route_checked_at.is_none_or(|at| now.has_elapsed(at, config.update_timeout))
    }

    /// Chooses a node at `now` (see the module docs).
    pub(super) fn choose(
        &mut self,
        now: Instant,
        config: &Config,
        rng: &mut Rng,
        stats: &mut Stats,
    ) -> Result<HostChoice, NoChoice> {
        self.expire_overloads(now, config, stats);
        if self.nodes.is_empty() {
            return Err(NoChoice::Empty);
        }
        let (i, kind) = if self.in_panic(config) {
            let i = usize::from(self.panic_next) % self.nodes.len();
            self.panic_next = index((i + 1) % self.nodes.len());
            (i, ChoiceKind::Panic)
        } else if !self.overloaded.is_empty() && self.since_probe >= config.probe_num {
            self.since_probe = 0;
            (rotate(&mut self.overloaded).ok_or(NoChoice::Empty)?, ChoiceKind::Probe)
        } else if self.idle.is_empty() {
            self.since_probe = self.since_probe.saturating_add(1);
            return Err(NoChoice::Overload);
        } else {
            if !self.overloaded.is_empty() {
                self.since_probe = self.since_probe.saturating_add(1);
            }
            let i = if config.latency_aware {
                self.cheaper_of_two(now, config, rng)
            } else {
                rotate(&mut self.idle).ok_or(NoChoice::Empty)?
            };
            (i, ChoiceKind::Idle)
        };
        let node = &mut self.nodes[i];
        node.chosen();
        Ok(HostChoice { host: node.host(), kind })
    }

    /// Power of two choices over the idle queue: two distinct idle nodes at random, the one of
    /// lower Peak-EWMA cost (the first on a tie). The queue is not rotated.
    fn cheaper_of_two(&self, now: Instant, config: &Config, rng: &mut Rng) -> usize {
        let len = self.idle.len();
        if len == 1 {
            return usize::from(self.idle[0]);
        }
        let a = rng.below(len);
        let b = (a + 1 + rng.below(len - 1)) % len;
        let (a, b) = (usize::from(self.idle[a]), usize::from(self.idle[b]));
        if self.nodes[b].cost(now, config) < self.nodes[a].cost(now, config) {
            b
        } else {
            a
        }
    }

    /// Counts a reported call to `host` at `now`; `None` if `host` is not in the route.
    pub(super) fn report(
        &mut self,
        host: HostInfo,
        success: bool,
        latency: Option<std::time::Duration>,
        now: Instant,
        config: &Config,
        stats: &mut Stats,
    ) -> Option<Option<Transition>> {
        let i = self.find(host)?;
        let mut last = None;
        if let Some(transition) = self.nodes[i].by_clock(now, config) {
            self.transition(i, transition, now, config, stats);
            last = Some(transition);
        }
        // Other nodes' overloads time out on the next choice: this report decides only its node,
        // with at most one transition by the clock (with zero timeouts, a loop would never end).
        let node = &mut self.nodes[i];
        if let Some(latency) = latency {
            node.observe_latency(latency, success, now, config);
        }
        if let Some(transition) = node.count(success, config) {
            self.transition(i, transition, now, config, stats);
            last = Some(transition);
        }
        Some(last)
    }

    /// Applies `transition` to node `i`, moving it between the queues if its state changes.
    fn transition(
        &mut self,
        i: usize,
        transition: Transition,
        now: Instant,
        config: &Config,
        stats: &mut Stats,
    ) {
        let node = &mut self.nodes[i];
        let from = node.state();
        node.apply(transition, now, config);
        stats.count(transition);
        let to = node.state();
        if from == to {
            return;
        }
        let (leave, join) = match to {
            NodeState::Idle => (&mut self.overloaded, &mut self.idle),
            NodeState::Overloaded => (&mut self.idle, &mut self.overloaded),
        };
        let i = index(i);
        leave.retain(|&j| j != i);
        join.push_back(i);
        if let Some(expiry) = self.nodes[usize::from(i)].overload_expiry(config) {
            self.overload_expiry = Some(self.overload_expiry.map_or(expiry, |at| at.min(expiry)));
        }
    }

    /// Turns idle every overloaded node that has been overloaded for `overload_timeout` at `now`.
    fn expire_overloads(&mut self, now: Instant, config: &Config, stats: &mut Stats) {
        match self.overload_expiry {
            Some(at) if now >= at => {}
            _ => return,
        }
        let expired: Vec<usize> = self
            .overloaded
            .iter()
            .map(|&i| usize::from(i))
            .filter(|&i| self.nodes[i].by_clock(now, config) == Some(Transition::OverloadTimeout))
            .collect();
        for i in expired {
            self.transition(i, Transition::OverloadTimeout, now, config, stats);
        }
        self.overload_expiry =
            self.overloaded.iter().filter_map(|&i| self.nodes[usize::from(i)].overload_expiry(config)).min();
    }

    /// Makes `hosts` the route at `now`: nodes not in it are dropped, new ones start idle (their
    /// window starting now), the others keep their state. Duplicates count once.
    pub(super) fn update_route(
        &mut self,
        hosts: &[HostInfo],
        now: Instant,
        config: &Config,
        stats: &mut Stats,
    ) -> Result<RouteChange, RouteError> {
        let mut wanted = hosts.to_vec();
        wanted.sort_unstable_by_key(key);
        wanted.dedup();
        if wanted.len() > MAX_NODES {
            return Err(RouteError::TooManyNodes(wanted.len()));
        }
        let old = std::mem::take(&mut self.nodes);
        let mut moved_to: Vec<Option<u16>> = vec![None; old.len()];
        let mut added = Vec::new();
        let mut change = RouteChange::default();
        let mut nodes = Vec::with_capacity(wanted.len());
        let mut old = old.into_iter().enumerate().peekable();
        for host in wanted {
            while let Some((_, node)) = old.next_if(|(_, node)| key(&node.host()) < key(&host)) {
                change.removed += 1;
                stats.calls_unreported = stats.calls_unreported.saturating_add(u64::from(node.unreported()));
            }
            match old.next_if(|(_, node)| node.host() == host) {
                Some((was, node)) => {
                    moved_to[was] = Some(index(nodes.len()));
                    nodes.push(node);
                    change.kept += 1;
                }
                None => {
                    added.push(index(nodes.len()));
                    nodes.push(Node::new(host, now, config));
                    change.added += 1;
                }
            }
        }
        for (_, node) in old {
            change.removed += 1;
            stats.calls_unreported = stats.calls_unreported.saturating_add(u64::from(node.unreported()));
        }
        let remap = |queue: &VecDeque<u16>| -> VecDeque<u16> {
            queue.iter().filter_map(|&i| moved_to[usize::from(i)]).collect()
        };
        let mut idle = remap(&self.idle);
        idle.extend(added);
        self.overloaded = remap(&self.overloaded);
        self.idle = idle;
        self.nodes = nodes;
        if usize::from(self.panic_next) >= self.nodes.len() {
            self.panic_next = 0;
        }
        self.route_known = true;
        self.route_checked_at = Some(now);
        stats.nodes_added = stats.nodes_added.saturating_add(change.added as u64);
        stats.nodes_removed = stats.nodes_removed.saturating_add(change.removed as u64);
        Ok(change)
    }

    /// Every node's window and state, idle queue first, for one report upstream.
    pub(super) fn take_report(&mut self) -> Vec<HostCallResult> {
        let nodes = &mut self.nodes;
        self.idle.iter().chain(&self.overloaded).map(|&i| nodes[usize::from(i)].take_report()).collect()
    }

    /// Every node's status, in route order.
    pub(super) fn statuses(&self) -> impl Iterator<Item = NodeStatus> + '_ {
        self.nodes.iter().map(|node| node.status)
    }
}

/// Takes the head of `queue`, moves it to the tail, and returns it as an index into `nodes`
/// (`None` only for an empty queue, which callers rule out first).
fn rotate(queue: &mut VecDeque<u16>) -> Option<usize> {
    let head = queue.pop_front()?;
    queue.push_back(head);
    Some(usize::from(head))
}

/// The balancer's only randomness (for power of two choices): SplitMix64, seeded from the config
/// so a run repeats. Not for anything secret.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` is not zero (callers check). The modulo bias is below 2^-40 for
    /// any `n` a route can have.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
