//! The agent's load-balancing algorithm, as a pure state machine: no sockets, no threads, no
//! clock of its own.
//!
//! `lars-agent` answers "give me one node of module (modid, cmdid)" and "this call to node X went
//! so", keeps each module's route fresh from `lars-dns`, and sends call statistics to
//! `lars-reporter`. All of the deciding is here, in a [`Balancer`]; the agent around it only moves
//! bytes. Every call takes the time as an [`Instant`] the caller reads once per batch, so tests
//! step time by hand and the algorithm never blocks or spawns. The rules are those of
//! `docs/LARS.md` ("lars-agent: the load-balancing algorithm"); [`Config`] holds their settings.
//!
//! # What the agent calls
//!
//! | agent event | call | then |
//! |---|---|---|
//! | GetHostRequest | [`Balancer::get_host`] | answer the node, or the error's [`GetHostError::retcode`] |
//! | ReportRequest | [`Balancer::report`] | nothing to answer |
//! | API_GetRouteRequest | [`Balancer::get_route`] | answer the hosts (none on an error) |
//! | GetRouteResponse from `lars-dns` (reply or push) | [`Balancer::update_route`] | |
//! | after each batch of requests | [`Balancer::modules_to_refresh`] | send a GetRouteRequest for each |
//! | link to `lars-dns` back up | [`Balancer::resubscribe_all`] | then as above |
//! | every `report_interval`, reporter link up | [`Balancer::take_report`] | send each ReportStatusRequest |
//! | a metrics scrape | [`Balancer::stats`], [`Balancer::modules_in_panic`] | |
//!
//! # Modules and routes
//!
//! A module is created by the first `get_host` or `get_route` that names it, with no route: it
//! answers NOEXIST and is queued for a route request. It is asked for again only once
//! `update_timeout` has passed since it was last asked for or received, and only when a request
//! names it: an unknown module costs one route request per `update_timeout`, however many calls
//! name it (the original asks again on every call). `lars-dns` also pushes changed routes, which
//! [`Balancer::update_route`] applies at once: a node that left the route is gone from both queues
//! and never handed out again (the original keeps its freed record in its map), new nodes start
//! idle with their window starting then, and the others keep their state. A module is never
//! forgotten; [`Config::max_modules`] bounds how many there are.
//!
//! # Nodes, queues and choosing
//!
//! See [`node`] for a node's counters and transitions and `module.rs` for the queues
//! and the choice; in short: round robin over idle nodes, an overloaded node probed after every
//! `probe_num` idle choices or refusals, and OVERLOAD when no node is idle and it is not a probe's
//! turn. [`HostChoice::kind`] says which it was.
//!
//! Beyond the original:
//!
//! - **Panic mode**: when fewer than `panic_percent` (default 50) of a module's nodes are idle,
//!   every node is chosen in turn, overloaded or not, as Envoy does: with most nodes overloaded
//!   the detector is more likely wrong than the nodes, and the original would fail 10 calls in 11.
//!   [`ChoiceKind::Panic`], [`Stats::panic_choices`] and [`Balancer::modules_in_panic`] show it.
//! - **Latency-aware choice** (`latency_aware`, off by default): when the API reports a call's
//!   latency, an idle choice is the cheaper of two random idle nodes, cost = Peak-EWMA latency ×
//!   (outstanding choices + 1), as Finagle, tower and Envoy do. Probes and panic stay round robin.
//!
//! # Reports upstream
//!
//! `lars-reporter` adds what it receives to each node's row, so the agent sends, per module, every
//! node's calls since its last report (kept across window ends and transitions) and its state now;
//! the table then holds the total number of calls. Instead of one message per API report (the
//! original), a module with reports since its last one is sent once per `report_interval` by
//! [`Balancer::take_report`]. While the reporter is down the agent simply does not call it: a node
//! holds two counters however long the outage, and the first batch after it carries everything.
//! What is lost is the calls of a node removed from the route before its next report;
//! [`Stats::calls_unreported`] counts them.

mod clock;
mod config;
mod module;
pub mod node;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

pub use clock::Instant;
pub use config::{Config, ConfigError};
pub use module::MAX_NODES;
pub use node::{NodeState, NodeStatus, Transition};

use module::{Module, NoChoice, Rng};

use crate::proto::{ip_to_wire, HostInfo, ReportStatusRequest, RetCode};

/// A module: the pair `(modid, cmdid)` that names a remote service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId {
    /// The module's first half.
    pub modid: i32,
    /// The module's second half.
    pub cmdid: i32,
}

impl ModuleId {
    /// The module `(modid, cmdid)`.
    pub const fn new(modid: i32, cmdid: i32) -> ModuleId {
        ModuleId { modid, cmdid }
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.modid, self.cmdid)
    }
}

/// How a node came to be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChoiceKind {
    /// An idle node, in turn (or the cheaper of two, with `latency_aware`).
    Idle,
    /// An overloaded node, tried after `probe_num` idle choices or refusals.
    Probe,
    /// Any node in turn: too few nodes are idle (panic mode).
    Panic,
}

/// The node `get_host` chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostChoice {
    /// The node.
    pub host: HostInfo,
    /// How it was chosen.
    pub kind: ChoiceKind,
}

/// Why `get_host` chose no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GetHostError {
    /// The module's route is not known yet (it has been asked for), or has no nodes.
    NoExist,
    /// Every node is overloaded and it is not a probe's turn.
    Overload,
    /// The module is new and the balancer already holds [`Config::max_modules`].
    ModuleLimit,
}

impl GetHostError {
    /// The GetHostResponse return code for this error.
    pub fn retcode(self) -> RetCode {
        match self {
            GetHostError::NoExist => RetCode::NoExist,
            GetHostError::Overload => RetCode::Overload,
            GetHostError::ModuleLimit => RetCode::SystemError,
        }
    }
}

impl fmt::Display for GetHostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GetHostError::NoExist => "the module has no known nodes",
            GetHostError::Overload => "every node of the module is overloaded",
            GetHostError::ModuleLimit => "too many modules to add another",
        })
    }
}

impl std::error::Error for GetHostError {}

/// Why `get_route` has no route to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GetRouteError {
    /// The module's route is not known yet (it has been asked for).
    NoExist,
    /// The module is new and the balancer already holds [`Config::max_modules`].
    ModuleLimit,
}

impl fmt::Display for GetRouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GetRouteError::NoExist => "the module's route is not known yet",
            GetRouteError::ModuleLimit => "too many modules to add another",
        })
    }
}

impl std::error::Error for GetRouteError {}

/// Why a report was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportError {
    /// No request has named the module.
    UnknownModule,
    /// The node is not in the module's route (any more).
    UnknownHost,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportError::UnknownModule => "report for a module the agent does not hold",
            ReportError::UnknownHost => "report for a node not in the module's route",
        })
    }
}

impl std::error::Error for ReportError {}

/// Why a route was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteError {
    /// No request has named the module, so the agent did not ask for it.
    UnknownModule,
    /// More distinct nodes than [`MAX_NODES`] (no Lars frame can carry that many).
    TooManyNodes(usize),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::UnknownModule => f.write_str("route for a module the agent does not hold"),
            RouteError::TooManyNodes(n) => write!(f, "route of {n} nodes, over the limit of {MAX_NODES}"),
        }
    }
}

impl std::error::Error for RouteError {}

/// What a route update changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteChange {
    /// New nodes, now idle.
    pub added: usize,
    /// Nodes gone from the route.
    pub removed: usize,
    /// Nodes that stayed, with their state.
    pub kept: usize,
}

/// Declares the counters once: the struct and the name of each, for metrics.
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident { $( $(#[$field_meta:meta])* $field:ident, )* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: u64, )*
        }

        impl $name {
            /// Every counter with its field name, in declaration order (for STATS and /metrics).
            pub fn pairs(&self) -> [(&'static str, u64); [$(stringify!($field)),*].len()] {
                [$( (stringify!($field), self.$field), )*]
            }
        }
    };
}

counters! {
    /// The balancer's counters since it was built, for metrics.
    pub struct Stats {
        /// Idle nodes handed out.
        idle_choices,
        /// Overloaded nodes handed out as probes.
        probes,
        /// Nodes handed out in panic mode.
        panic_choices,
        /// `get_host` answered OVERLOAD.
        overload_refusals,
        /// `get_host` answered NOEXIST.
        noexist_refusals,
        /// A new module refused for [`Config::max_modules`].
        module_limit_refusals,
        /// Route requests queued for `lars-dns`.
        route_requests,
        /// Reports counted.
        reports,
        /// Reports for a module or node the balancer does not hold.
        reports_ignored,
        /// Idle → overloaded transitions.
        to_overloaded,
        /// Overloaded → idle transitions.
        to_idle,
        /// Idle windows that ended with a low error rate and restarted.
        new_windows,
        /// Nodes added by route updates.
        nodes_added,
        /// Nodes removed by route updates.
        nodes_removed,
        /// ReportStatusRequests produced for `lars-reporter`.
        status_reports,
        /// Calls counted in a window that ended, or on a node that was removed, after the module's
        /// last report upstream: they never reach `lars-reporter`.
        calls_unreported,
    }
}

impl Stats {
    fn count(&mut self, transition: Transition) {
        let counter = match transition {
            Transition::NewWindow => &mut self.new_windows,
            _ if transition.to() == NodeState::Overloaded => &mut self.to_overloaded,
            _ => &mut self.to_idle,
        };
        *counter = counter.saturating_add(1);
    }
}

/// Adds one to a counter, saturating.
fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// The agent's balancing state for every module it has been asked about.
#[derive(Debug)]
pub struct Balancer {
    modules: HashMap<ModuleId, Module>,
    /// Everything but the modules, so a module and the rest can be borrowed at once.
    shared: Shared,
}

/// The balancer's state besides its modules.
#[derive(Debug)]
struct Shared {
    config: Config,
    /// Modules whose route request is due (each once: see `Module::fetch_pending`).
    to_fetch: Vec<ModuleId>,
    /// Modules with reports since their last snapshot (each once: `Module::report_pending`).
    to_report: Vec<ModuleId>,
    next_report_at: Instant,
    rng: Rng,
    stats: Stats,
}

impl Shared {
    /// The module of `modules` named by a request at `now`: created if new (within
    /// `max_modules`), and queued for a route request if one is due.
    fn requested<'m>(
        &mut self,
        modules: &'m mut HashMap<ModuleId, Module>,
        id: ModuleId,
        now: Instant,
    ) -> Option<&'m mut Module> {
        if !modules.contains_key(&id) && modules.len() >= self.config.max_modules {
            bump(&mut self.stats.module_limit_refusals);
            return None;
        }
        let module = modules.entry(id).or_default();
        self.fetch_if_due(id, module, now);
        Some(module)
    }

    /// Queues a route request for `module` if one is due at `now`.
    fn fetch_if_due(&mut self, id: ModuleId, module: &mut Module, now: Instant) {
        if module.wants_route(now, &self.config) {
            module.fetch_pending = true;
            module.route_checked_at = Some(now);
            self.to_fetch.push(id);
            bump(&mut self.stats.route_requests);
        }
    }
}

impl Balancer {
    /// A balancer with no modules, or why `config` cannot be used.
    pub fn new(config: Config) -> Result<Balancer, ConfigError> {
        config.check()?;
        let shared = Shared {
            rng: Rng::new(config.seed),
            config,
            to_fetch: Vec::new(),
            to_report: Vec::new(),
            next_report_at: Instant::ZERO,
            stats: Stats::default(),
        };
        Ok(Balancer { modules: HashMap::new(), shared })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats
    }

    /// How many modules the balancer holds.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether the balancer holds no module.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Chooses a node of `module` at `now`.
    pub fn get_host(&mut self, module: ModuleId, now: Instant) -> Result<HostChoice, GetHostError> {
        let Some(state) = self.shared.requested(&mut self.modules, module, now) else {
            return Err(GetHostError::ModuleLimit);
        };
        let Shared { config, rng, stats, .. } = &mut self.shared;
        let outcome = state.choose(now, config, rng, stats);
        bump(match outcome {
            Ok(HostChoice { kind: ChoiceKind::Idle, .. }) => &mut stats.idle_choices,
            Ok(HostChoice { kind: ChoiceKind::Probe, .. }) => &mut stats.probes,
            Ok(HostChoice { kind: ChoiceKind::Panic, .. }) => &mut stats.panic_choices,
            Err(NoChoice::Empty) => &mut stats.noexist_refusals,
            Err(NoChoice::Overload) => &mut stats.overload_refusals,
        });
        outcome.map_err(|no| match no {
            NoChoice::Empty => GetHostError::NoExist,
            NoChoice::Overload => GetHostError::Overload,
        })
    }

    /// Counts a call to `host` of `module` that ended with `retcode` (0 is a success, anything
    /// else a failure) at `now`, with its latency if the API sent one. Returns the node's last
    /// transition, if the report (or the clock, checked first) made one.
    pub fn report(
        &mut self,
        module: ModuleId,
        host: HostInfo,
        retcode: i32,
        latency: Option<Duration>,
        now: Instant,
    ) -> Result<Option<Transition>, ReportError> {
        let shared = &mut self.shared;
        let outcome = match self.modules.get_mut(&module) {
            None => Err(ReportError::UnknownModule),
            Some(state) => {
                let success = retcode == i32::from(RetCode::Succ);
                match state.report(host, success, latency, now, &shared.config, &mut shared.stats) {
                    None => Err(ReportError::UnknownHost),
                    Some(transition) => {
                        if !state.report_pending {
                            state.report_pending = true;
                            shared.to_report.push(module);
                        }
                        Ok(transition)
                    }
                }
            }
        };
        bump(if outcome.is_ok() { &mut shared.stats.reports } else { &mut shared.stats.reports_ignored });
        outcome
    }

    /// Makes `hosts` the route of `module` at `now` (a reply or a push from `lars-dns`).
    pub fn update_route(
        &mut self,
        module: ModuleId,
        hosts: &[HostInfo],
        now: Instant,
    ) -> Result<RouteChange, RouteError> {
        let state = self.modules.get_mut(&module).ok_or(RouteError::UnknownModule)?;
        let change = state.update_route(hosts, now, &self.shared.config, &mut self.shared.stats)?;
        // A request still queued is answered already; `modules_to_refresh` skips it.
        state.fetch_pending = false;
        Ok(change)
    }

    /// The route of `module` at `now`, in `(ip, port)` order.
    pub fn get_route(&mut self, module: ModuleId, now: Instant) -> Result<Vec<HostInfo>, GetRouteError> {
        let state =
            self.shared.requested(&mut self.modules, module, now).ok_or(GetRouteError::ModuleLimit)?;
        if !state.route_known {
            return Err(GetRouteError::NoExist);
        }
        Ok(state.nodes().iter().map(|node| node.status.host).collect())
    }

    /// The modules whose route the agent should ask `lars-dns` for now, each once; they are
    /// counted as asked for from the request that queued them.
    pub fn modules_to_refresh(&mut self) -> Vec<ModuleId> {
        let mut due = std::mem::take(&mut self.shared.to_fetch);
        due.retain(|id| {
            self.modules.get_mut(id).is_some_and(|module| std::mem::take(&mut module.fetch_pending))
        });
        due
    }

    /// Queues a route request for every module (when the link to `lars-dns` comes back, so the
    /// new connection is subscribed to all of them).
    pub fn resubscribe_all(&mut self, now: Instant) {
        for (id, module) in &mut self.modules {
            // Forget when it was last asked for: this connection has not asked yet.
            module.route_checked_at = None;
            self.shared.fetch_if_due(*id, module, now);
        }
    }

    /// When [`take_report`](Self::take_report) next has something to give.
    pub fn report_due_at(&self) -> Instant {
        self.shared.next_report_at
    }

    /// The reports for `lars-reporter`, if `report_interval` has passed since the last batch: one
    /// ReportStatusRequest per module with reports since its last one, stamped `unix_secs`. Call
    /// it only when the batch can be sent (see the module docs); before it is due it returns none.
    pub fn take_report(&mut self, now: Instant, unix_secs: u32) -> Vec<ReportStatusRequest> {
        let shared = &mut self.shared;
        if now < shared.next_report_at {
            return Vec::new();
        }
        // Keep to the grid of the first batch, so a timer firing a little late does not drift;
        // after a long pause, start a new grid.
        let next = shared.next_report_at + shared.config.report_interval;
        shared.next_report_at = if now < next { next } else { now + shared.config.report_interval };
        let caller = ip_to_wire(shared.config.caller);
        let due = std::mem::take(&mut shared.to_report);
        let mut batch = Vec::with_capacity(due.len());
        for id in due {
            let Some(module) = self.modules.get_mut(&id) else { continue };
            module.report_pending = false;
            let results = module.take_report();
            if !results.is_empty() {
                batch.push(ReportStatusRequest {
                    modid: id.modid,
                    cmdid: id.cmdid,
                    caller,
                    results,
                    ts: unix_secs,
                });
            }
        }
        shared.stats.status_reports = shared.stats.status_reports.saturating_add(batch.len() as u64);
        batch
    }

    /// What the balancer holds for `module`, if anything.
    pub fn module(&self, module: ModuleId) -> Option<ModuleView<'_>> {
        self.modules.get(&module).map(|state| ModuleView { state, config: &self.shared.config })
    }

    /// How many modules are in panic mode now (a gauge).
    pub fn modules_in_panic(&self) -> usize {
        self.modules.values().filter(|module| module.in_panic(&self.shared.config)).count()
    }
}

/// A read-only view of one module, for metrics, debugging and tests.
#[derive(Clone, Copy, Debug)]
pub struct ModuleView<'a> {
    state: &'a Module,
    config: &'a Config,
}

impl<'a> ModuleView<'a> {
    /// Whether a route has been received (an empty one counts).
    pub fn route_known(&self) -> bool {
        self.state.route_known
    }

    /// Whether fewer than `panic_percent` of the nodes are idle, so every node is chosen in turn.
    pub fn in_panic(&self) -> bool {
        self.state.in_panic(self.config)
    }

    /// Every node, in `(ip, port)` order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeStatus> + 'a {
        self.state.statuses()
    }

    /// The idle queue, head first.
    pub fn idle(&self) -> impl Iterator<Item = HostInfo> + 'a {
        self.state.idle().map(|node| node.host())
    }

    /// The overloaded queue, head first.
    pub fn overloaded(&self) -> impl Iterator<Item = HostInfo> + 'a {
        self.state.overloaded().map(|node| node.host())
    }

    /// One node's status, if it is in the route.
    pub fn node(&self, host: HostInfo) -> Option<NodeStatus> {
        self.state.node(host).map(|node| node.status)
    }

    /// A node's Peak-EWMA latency estimate at `now`, if it is in the route.
    pub fn latency(&self, host: HostInfo, now: Instant) -> Option<Duration> {
        let micros = self.state.node(host)?.latency_us(now, self.config);
        Some(Duration::from_secs_f64(micros / 1e6))
    }
}
