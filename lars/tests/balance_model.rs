//! Property tests of the agent's balancer against a simple model.
//!
//! Any sequence of choices, reports (with and without latency), route updates (nodes added,
//! removed, duplicated, emptied), clock steps (forward, and back), route-request drains,
//! resubscriptions and reports upstream, under any mix of settings, keeps these true:
//!
//! - every node of a module is in exactly one queue, the one its state names, and the nodes are
//!   the module's current route (the model's set), no more, no less;
//! - a chosen node is in the current route; an empty or unknown route gives NOEXIST;
//! - a node removed from the route is never handed out, and a report for it is refused;
//! - an idle choice is an idle node, a probe an overloaded one, and a panic choice happens only
//!   with panic mode on and the module in panic: with panic mode off, an overloaded node is only
//!   handed out as a probe, and at least `probe_num` idle choices or refusals pass between probes;
//! - OVERLOAD only when no node is idle;
//! - counts never underflow: an idle node's virtual successes are `init_succ_cnt` plus its real
//!   ones and its virtual errors its real ones (the reverse for an overloaded node), one of the
//!   consecutive counts is zero, and its outstanding choices are at most its choices;
//! - a report upstream covers exactly the module's route, with each node's state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use doorway_lars::balance::{Balancer, ChoiceKind, Config, GetHostError, Instant, ModuleId, NodeState};
use doorway_lars::balance::{ReportError, RouteError};
use doorway_lars::HostInfo;
use proptest::prelude::*;

const MODULES: [ModuleId; 3] = [ModuleId::new(1, 1), ModuleId::new(1, 2), ModuleId::new(-7, i32::MAX)];

fn pool() -> [HostInfo; 6] {
    let addr = |a, b, c, d, port| HostInfo::from_addr(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port));
    [
        addr(10, 0, 0, 1, 7001),
        addr(10, 0, 0, 2, 7002),
        addr(192, 168, 1, 1, 80),
        addr(192, 168, 1, 1, 81),
        HostInfo { ip: -1, port: -1 },
        HostInfo { ip: 0, port: 0 },
    ]
}

#[derive(Clone, Debug)]
enum Op {
    GetHost(usize),
    GetRoute(usize),
    Report {
        module: usize,
        host: usize,
        success: bool,
        latency_ms: Option<u16>,
    },
    /// A route of pool indices (duplicates allowed, empty allowed).
    Route(usize, Vec<usize>),
    Forward(u32),
    Back(u16),
    Refresh,
    Resubscribe,
    TakeReport,
}

fn op() -> impl Strategy<Value = Op> {
    let module = 0..MODULES.len();
    prop_oneof![
        8 => module.clone().prop_map(Op::GetHost),
        1 => module.clone().prop_map(Op::GetRoute),
        8 => (module.clone(), 0..6usize, any::<bool>(), proptest::option::of(0..500u16))
            .prop_map(|(module, host, success, latency_ms)| Op::Report { module, host, success, latency_ms }),
        2 => (module, proptest::collection::vec(0..6usize, 0..8)).prop_map(|(m, hosts)| Op::Route(m, hosts)),
        3 => (0..20_000u32).prop_map(Op::Forward),
        1 => (0..3_000u16).prop_map(Op::Back),
        1 => Just(Op::Refresh),
        1 => Just(Op::Resubscribe),
        1 => Just(Op::TakeReport),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        (0..4u32, 0..30u32, 0..6u32, 1..6u32, 1..6u32),
        (0..=100u8, any::<bool>(), 0..20u64, 0..20u64, 0..20u64, any::<u64>()),
        (
            prop_oneof![Just(0.0), Just(0.1), Just(0.5), Just(1.0)],
            prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
        ),
    )
        .prop_map(
            |(
                (probe_num, init_succ_cnt, init_err_cnt, contin_err_limit, contin_succ_limit),
                (panic_percent, latency_aware, idle_s, overload_s, update_s, seed),
                (err_rate, succ_rate),
            )| Config {
                probe_num,
                init_succ_cnt,
                init_err_cnt,
                contin_err_limit,
                contin_succ_limit,
                err_rate,
                succ_rate,
                panic_percent: [0, 50, 100, panic_percent][usize::from(panic_percent % 4)],
                latency_aware,
                idle_timeout: Duration::from_secs(idle_s),
                overload_timeout: Duration::from_secs(overload_s),
                update_timeout: Duration::from_secs(update_s),
                seed,
                ..Config::default()
            },
        )
}

/// What the model knows of one module the balancer holds.
#[derive(Default)]
struct ModelModule {
    /// The route, once one arrived.
    route: Option<BTreeSet<(i32, i32)>>,
    /// Choices per node since it (last) joined the route.
    choices: HashMap<(i32, i32), u32>,
    /// Idle choices and refusals since the last probe.
    since_probe: u32,
}

fn key(host: HostInfo) -> (i32, i32) {
    (host.ip, host.port)
}

/// Checks the structural invariants of one module against the model.
fn check_module(balancer: &Balancer, id: ModuleId, model: &ModelModule) -> Result<(), TestCaseError> {
    let config = balancer.config();
    let view = balancer.module(id).ok_or_else(|| TestCaseError::fail(format!("{id} not held")))?;
    let route = model.route.clone().unwrap_or_default();
    prop_assert_eq!(view.route_known(), model.route.is_some());
    let nodes: BTreeSet<_> = view.nodes().map(|s| key(s.host)).collect();
    prop_assert_eq!(&nodes, &route, "the nodes are the route");
    prop_assert_eq!(view.nodes().count(), route.len());
    let idle: Vec<_> = view.idle().map(key).collect();
    let overloaded: Vec<_> = view.overloaded().map(key).collect();
    let mut queued: Vec<_> = idle.iter().chain(&overloaded).copied().collect();
    queued.sort();
    prop_assert_eq!(queued, route.iter().copied().collect::<Vec<_>>(), "each node in exactly one queue");
    for status in view.nodes() {
        let in_idle = idle.contains(&key(status.host));
        prop_assert_eq!(in_idle, status.state == NodeState::Idle, "the queue is the state");
        let (base_succ, base_err) = match status.state {
            NodeState::Idle => (config.init_succ_cnt, 0),
            NodeState::Overloaded => (0, config.init_err_cnt),
        };
        prop_assert_eq!(status.vsucc, base_succ + status.rsucc);
        prop_assert_eq!(status.verr, base_err + status.rerr);
        prop_assert!(status.contin_succ == 0 || status.contin_err == 0);
        prop_assert!(status.contin_succ <= status.rsucc && status.contin_err <= status.rerr);
        let chosen = model.choices.get(&key(status.host)).copied().unwrap_or(0);
        prop_assert!(status.outstanding <= chosen, "outstanding {} > choices {}", status.outstanding, chosen);
    }
    prop_assert_eq!(view.in_panic(), idle.len() * 100 < usize::from(config.panic_percent) * route.len());
    Ok(())
}

fn run(config: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let pool = pool();
    let probe_num = config.probe_num;
    let panic_on = config.panic_percent > 0;
    let mut balancer = Balancer::new(config).unwrap();
    let mut model: HashMap<ModuleId, ModelModule> = HashMap::new();
    // Per node, the calls reported to the balancer since its last report upstream.
    let mut unreported: HashMap<(ModuleId, (i32, i32)), (u32, u32)> = HashMap::new();
    let mut now: u64 = 1_000_000;
    for op in ops {
        let at = Instant::from_millis(now);
        match op {
            Op::GetHost(m) => {
                let id = MODULES[m];
                let result = balancer.get_host(id, at);
                let module = model.entry(id).or_default();
                let route = module.route.clone().unwrap_or_default();
                let view = balancer.module(id).unwrap();
                match result {
                    Err(GetHostError::NoExist) => prop_assert!(route.is_empty()),
                    Err(GetHostError::Overload) => {
                        prop_assert!(!route.is_empty());
                        prop_assert_eq!(view.idle().count(), 0, "OVERLOAD only with no idle node");
                        prop_assert!(!view.in_panic());
                        module.since_probe += 1;
                    }
                    Err(GetHostError::ModuleLimit) => prop_assert!(false, "within max_modules"),
                    Ok(choice) => {
                        prop_assert!(
                            route.contains(&key(choice.host)),
                            "chosen {:?} not in route",
                            choice.host
                        );
                        let state = view.node(choice.host).unwrap().state;
                        match choice.kind {
                            ChoiceKind::Idle => {
                                prop_assert_eq!(state, NodeState::Idle);
                                module.since_probe += 1;
                            }
                            ChoiceKind::Probe => {
                                prop_assert_eq!(state, NodeState::Overloaded);
                                prop_assert!(
                                    module.since_probe >= probe_num,
                                    "probe after {}",
                                    module.since_probe
                                );
                                module.since_probe = 0;
                            }
                            ChoiceKind::Panic => prop_assert!(panic_on && view.in_panic()),
                        }
                        *module.choices.entry(key(choice.host)).or_default() += 1;
                    }
                }
            }
            Op::GetRoute(m) => {
                let id = MODULES[m];
                let result = balancer.get_route(id, at);
                let module = model.entry(id).or_default();
                match &module.route {
                    None => prop_assert!(result.is_err()),
                    Some(route) => {
                        let got: BTreeSet<_> = result.unwrap().into_iter().map(key).collect();
                        prop_assert_eq!(&got, route);
                    }
                }
            }
            Op::Report { module, host, success, latency_ms } => {
                let id = MODULES[module];
                let host = pool[host];
                let latency = latency_ms.map(|ms| Duration::from_millis(u64::from(ms)));
                let result = balancer.report(id, host, if success { 0 } else { 2 }, latency, at);
                match model.get(&id) {
                    None => prop_assert_eq!(result, Err(ReportError::UnknownModule)),
                    Some(module) if !module.route.as_ref().is_some_and(|r| r.contains(&key(host))) => {
                        prop_assert_eq!(result, Err(ReportError::UnknownHost));
                    }
                    Some(_) => {
                        let calls = unreported.entry((id, key(host))).or_insert((0, 0));
                        if success {
                            calls.0 += 1;
                        } else {
                            calls.1 += 1;
                        }
                        let transition = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        if let Some(transition) = transition {
                            let state = balancer.module(id).unwrap().node(host).unwrap().state;
                            prop_assert_eq!(state, transition.to());
                        }
                    }
                }
            }
            Op::Route(m, indices) => {
                let id = MODULES[m];
                let hosts: Vec<HostInfo> = indices.iter().map(|&i| pool[i]).collect();
                let result = balancer.update_route(id, &hosts, at);
                match model.get_mut(&id) {
                    None => prop_assert_eq!(result, Err(RouteError::UnknownModule)),
                    Some(module) => {
                        let change = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let new: BTreeSet<_> = hosts.iter().copied().map(key).collect();
                        let old = module.route.take().unwrap_or_default();
                        prop_assert_eq!(change.added, new.difference(&old).count());
                        prop_assert_eq!(change.removed, old.difference(&new).count());
                        module.choices.retain(|host, _| new.contains(host) && old.contains(host));
                        // A removed node's unreported calls are lost (counted by the balancer).
                        unreported
                            .retain(|(m, host), _| *m != id || (new.contains(host) && old.contains(host)));
                        module.route = Some(new);
                    }
                }
            }
            Op::Forward(ms) => now += u64::from(ms),
            Op::Back(ms) => now = now.saturating_sub(u64::from(ms)),
            Op::Refresh => {
                let asked = balancer.modules_to_refresh();
                let distinct: HashSet<_> = asked.iter().collect();
                prop_assert_eq!(distinct.len(), asked.len(), "each module asked for once");
                prop_assert!(asked.iter().all(|id| model.contains_key(id)));
            }
            Op::Resubscribe => {
                balancer.resubscribe_all(at);
                let mut asked = balancer.modules_to_refresh();
                asked.sort();
                let mut held: Vec<_> = model.keys().copied().collect();
                held.sort();
                prop_assert_eq!(asked, held, "every module asked for again");
            }
            Op::TakeReport => {
                for report in balancer.take_report(at, 7) {
                    let id = ModuleId::new(report.modid, report.cmdid);
                    let route = model.get(&id).and_then(|m| m.route.clone()).unwrap_or_default();
                    let hosts: BTreeSet<_> = report.results.iter().map(|r| (r.ip, r.port)).collect();
                    prop_assert_eq!(hosts.len(), report.results.len());
                    prop_assert_eq!(&hosts, &route, "a report covers the route");
                    let view = balancer.module(id).unwrap();
                    for result in &report.results {
                        let status = view.node(HostInfo { ip: result.ip, port: result.port }).unwrap();
                        prop_assert_eq!(result.overload, status.state == NodeState::Overloaded);
                        // A report carries the calls since the node's last one in its window,
                        // never more than the window holds.
                        let _ = status;
                        // Exactly the calls reported since the node's last report, whatever
                        // windows and transitions came between.
                        let calls = unreported.remove(&(id, (result.ip, result.port))).unwrap_or((0, 0));
                        prop_assert_eq!((result.succ, result.err), calls);
                    }
                }
            }
        }
        prop_assert_eq!(balancer.len(), model.len());
        for (id, module) in &model {
            check_module(&balancer, *id, module)?;
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_sequence_keeps_the_queues_the_route_and_the_counts_consistent(
        config in config(),
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        run(config, ops)?;
    }

    #[test]
    fn with_the_defaults_any_sequence_keeps_them_consistent_too(ops in proptest::collection::vec(op(), 0..300)) {
        run(Config::default(), ops)?;
    }
}
