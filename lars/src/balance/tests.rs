//! The balancer as the agent sees it: one test per transition `docs/LARS.md` names, the choice
//! rules, routes, reports upstream, panic mode and the latency-aware choice, and each place where
//! the original is wrong.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::*;

const M: ModuleId = ModuleId::new(1, 1);
const FAIL: i32 = 1;
const OK: i32 = 0;

fn host(n: u8) -> HostInfo {
    HostInfo::from_addr(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n), 7000 + u16::from(n)))
}

fn hosts(n: u8) -> Vec<HostInfo> {
    (1..=n).map(host).collect()
}

fn ms(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

/// A balancer holding module `M` with nodes `host(1..=n)`, created at `now`.
fn balancer_with(config: Config, n: u8, now: Instant) -> Balancer {
    let mut balancer = Balancer::new(config).unwrap();
    assert_eq!(balancer.get_host(M, now), Err(GetHostError::NoExist));
    balancer.update_route(M, &hosts(n), now).unwrap();
    balancer
}

fn state(balancer: &Balancer, h: HostInfo) -> NodeState {
    balancer.module(M).unwrap().node(h).unwrap().state
}

fn status(balancer: &Balancer, h: HostInfo) -> NodeStatus {
    balancer.module(M).unwrap().node(h).unwrap()
}

/// Reports `times` calls to `h` ending with `retcode` at `now`; the transition of the last one.
fn report_n(
    balancer: &mut Balancer,
    h: HostInfo,
    retcode: i32,
    times: u32,
    now: Instant,
) -> Option<Transition> {
    let mut last = None;
    for _ in 0..times {
        last = balancer.report(M, h, retcode, None, now).unwrap();
    }
    last
}

/// Overloads `h` at `now` with `contin_err_limit` straight failures.
fn overload(balancer: &mut Balancer, h: HostInfo, now: Instant) {
    let limit = balancer.config().contin_err_limit;
    report_n(balancer, h, FAIL, limit, now);
    assert_eq!(state(balancer, h), NodeState::Overloaded);
}

fn choices(balancer: &mut Balancer, n: usize, now: Instant) -> Vec<Result<HostChoice, GetHostError>> {
    (0..n).map(|_| balancer.get_host(M, now)).collect()
}

// Transitions, one test each.

#[test]
fn a_new_node_is_idle_with_init_succ_cnt_virtual_successes_and_its_window_starting_then() {
    let balancer = balancer_with(Config::default(), 1, secs(100));
    let s = status(&balancer, host(1));
    assert_eq!((s.state, s.since, s.vsucc, s.verr), (NodeState::Idle, secs(100), 180, 0));
    assert_eq!((s.rsucc, s.rerr, s.contin_succ, s.contin_err, s.outstanding), (0, 0, 0, 0, 0));
}

#[test]
fn contin_err_limit_straight_failures_overload_an_idle_node() {
    let mut balancer = balancer_with(Config::default(), 2, secs(1));
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 14, secs(1)), None);
    assert_eq!(state(&balancer, host(1)), NodeState::Idle);
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 1, secs(1)), Some(Transition::ContinErr));
    let s = status(&balancer, host(1));
    assert_eq!(
        (s.state, s.since, s.vsucc, s.verr, s.rerr, s.contin_err),
        (NodeState::Overloaded, secs(1), 0, 5, 0, 0)
    );
    assert_eq!(balancer.module(M).unwrap().overloaded().collect::<Vec<_>>(), [host(1)]);
    assert_eq!(balancer.module(M).unwrap().idle().collect::<Vec<_>>(), [host(2)]);
}

#[test]
fn a_virtual_error_rate_over_err_rate_overloads_an_idle_node() {
    // 20 failures against 180 virtual successes are exactly 10 %, not over; the 21st is.
    let config = Config { contin_err_limit: 1000, ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(1));
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 20, secs(1)), None);
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 1, secs(1)), Some(Transition::ErrRate));
    assert_eq!(state(&balancer, host(1)), NodeState::Overloaded);
}

#[test]
fn successes_between_failures_keep_an_idle_node_idle() {
    let mut balancer = balancer_with(Config::default(), 1, secs(1));
    for _ in 0..100 {
        report_n(&mut balancer, host(1), FAIL, 14, secs(1));
        report_n(&mut balancer, host(1), OK, 200, secs(1));
    }
    assert_eq!(state(&balancer, host(1)), NodeState::Idle);
}

#[test]
fn a_virtual_success_rate_over_succ_rate_returns_an_overloaded_node_to_idle() {
    // 5 successes against 5 virtual errors are 50 %, not over; the 6th is.
    let mut balancer = balancer_with(Config::default(), 2, secs(1));
    overload(&mut balancer, host(1), secs(1));
    assert_eq!(report_n(&mut balancer, host(1), OK, 5, secs(2)), None);
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, secs(2)), Some(Transition::SuccRate));
    let s = status(&balancer, host(1));
    assert_eq!((s.state, s.since, s.vsucc, s.verr, s.rsucc), (NodeState::Idle, secs(2), 180, 0, 0));
    assert_eq!(balancer.module(M).unwrap().idle().collect::<Vec<_>>(), [host(2), host(1)]);
}

#[test]
fn contin_succ_limit_straight_successes_return_an_overloaded_node_to_idle() {
    // With 100 virtual errors the success rate stays low, so only the streak can do it.
    let config = Config { init_err_cnt: 100, ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(1));
    overload(&mut balancer, host(1), secs(1));
    report_n(&mut balancer, host(1), OK, 10, secs(2));
    report_n(&mut balancer, host(1), FAIL, 1, secs(2));
    assert_eq!(report_n(&mut balancer, host(1), OK, 14, secs(2)), None);
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, secs(2)), Some(Transition::ContinSucc));
    assert_eq!(state(&balancer, host(1)), NodeState::Idle);
}

#[test]
fn an_overloaded_node_turns_idle_after_overload_timeout_on_its_next_report() {
    let config = Config { init_err_cnt: 1000, contin_succ_limit: 1000, ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(1));
    overload(&mut balancer, host(1), secs(10));
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, ms(24_999)), None);
    assert_eq!(state(&balancer, host(1)), NodeState::Overloaded);
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 1, secs(25)), Some(Transition::OverloadTimeout));
    // The failure counts against the fresh idle node instead of being thrown away.
    let s = status(&balancer, host(1));
    assert_eq!((s.state, s.since, s.rerr, s.contin_err), (NodeState::Idle, secs(25), 1, 1));
    assert_eq!(balancer.stats().to_idle, 1);
}

#[test]
fn an_overloaded_node_turns_idle_after_overload_timeout_on_the_modules_next_choice() {
    let config = Config { panic_percent: 0, ..Config::default() };
    let mut balancer = balancer_with(config, 1, secs(1));
    overload(&mut balancer, host(1), secs(10));
    assert_eq!(balancer.get_host(M, ms(24_999)), Err(GetHostError::Overload));
    let choice = balancer.get_host(M, secs(25)).unwrap();
    assert_eq!(choice, HostChoice { host: host(1), kind: ChoiceKind::Idle });
    assert_eq!(status(&balancer, host(1)).since, secs(25));
}

#[test]
fn an_idle_window_ending_with_a_high_real_error_rate_overloads_the_node() {
    // 7 failures in 10 calls is 70 %, at least window_err_rate; the thresholds are out of reach.
    let config = Config { err_rate: 1.0, contin_err_limit: 1000, ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(0));
    report_n(&mut balancer, host(1), FAIL, 7, secs(1));
    report_n(&mut balancer, host(1), OK, 3, secs(1));
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, ms(14_999)), None);
    assert_eq!(status(&balancer, host(1)).rsucc, 4);
    // 7 in 11: under 70 %, the window restarts.
    assert_eq!(report_n(&mut balancer, host(1), FAIL, 1, secs(15)), Some(Transition::NewWindow));

    let mut balancer =
        balancer_with(Config { err_rate: 1.0, contin_err_limit: 1000, ..Config::default() }, 2, secs(0));
    report_n(&mut balancer, host(1), FAIL, 7, secs(1));
    report_n(&mut balancer, host(1), OK, 3, secs(1));
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, secs(15)), Some(Transition::WindowErrRate));
    let s = status(&balancer, host(1));
    // The ended window is judged without the late report, which counts in the new state.
    assert_eq!((s.state, s.since, s.rsucc, s.rerr, s.verr), (NodeState::Overloaded, secs(15), 1, 0, 5));
}

#[test]
fn an_idle_window_ending_with_a_low_error_rate_starts_a_new_window() {
    let mut balancer = balancer_with(Config::default(), 1, secs(0));
    report_n(&mut balancer, host(1), OK, 50, secs(5));
    report_n(&mut balancer, host(1), FAIL, 10, secs(5));
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, secs(15)), Some(Transition::NewWindow));
    let s = status(&balancer, host(1));
    assert_eq!((s.state, s.since, s.vsucc, s.rsucc, s.rerr), (NodeState::Idle, secs(15), 181, 1, 0));
    assert_eq!(balancer.stats().new_windows, 1);
}

#[test]
fn a_window_with_no_calls_restarts_rather_than_dividing_by_zero() {
    let config = Config { window_err_rate: 0.0, ..Config::default() };
    let mut balancer = balancer_with(config, 1, secs(0));
    assert_eq!(report_n(&mut balancer, host(1), OK, 1, secs(60)), Some(Transition::NewWindow));
}

// Where the original is wrong.

#[test]
fn a_new_nodes_first_failure_does_not_overload_it() {
    // The original leaves idle_ts at 0, so at any real time the first report finds the window
    // over, with an error rate of 100 %, and overloads the node.
    let mut balancer = balancer_with(Config::default(), 2, secs(1_700_000_000));
    assert_eq!(
        report_n(&mut balancer, host(1), FAIL, 1, secs(1_700_000_000) + Duration::from_millis(5)),
        None
    );
    assert_eq!(state(&balancer, host(1)), NodeState::Idle);
    assert_eq!(status(&balancer, host(1)).since, secs(1_700_000_000), "still its first window");
    assert_eq!(balancer.stats().new_windows, 0);
    // A node added later gets its own window from then, too.
    balancer.update_route(M, &hosts(3), secs(1_700_000_100)).unwrap();
    assert_eq!(report_n(&mut balancer, host(3), FAIL, 1, secs(1_700_000_101)), None);
    assert_eq!(state(&balancer, host(3)), NodeState::Idle);
}

#[test]
fn a_node_removed_from_the_route_is_never_handed_out_again_and_comes_back_fresh() {
    let config = Config { panic_percent: 0, probe_num: 0, ..Config::default() };
    let mut balancer = balancer_with(config, 3, secs(1));
    overload(&mut balancer, host(2), secs(1));
    let change = balancer.update_route(M, &[host(1), host(3)], secs(2)).unwrap();
    assert_eq!(change, RouteChange { added: 0, removed: 1, kept: 2 });
    // probe_num 0 probes on every call while a node is overloaded: none is any more.
    for choice in choices(&mut balancer, 100, secs(2)) {
        let choice = choice.unwrap();
        assert_ne!(choice.host, host(2));
        assert_eq!(choice.kind, ChoiceKind::Idle);
    }
    assert_eq!(balancer.get_route(M, secs(2)).unwrap(), [host(1), host(3)]);
    assert_eq!(balancer.report(M, host(2), OK, None, secs(2)), Err(ReportError::UnknownHost));
    let module = balancer.module(M).unwrap();
    assert_eq!(module.idle().chain(module.overloaded()).filter(|h| *h == host(2)).count(), 0);

    // Added again (the original never hands a re-added node out): a new idle node.
    balancer.update_route(M, &hosts(3), secs(3)).unwrap();
    assert_eq!(status(&balancer, host(2)).since, secs(3));
    assert_eq!(state(&balancer, host(2)), NodeState::Idle);
    assert!(choices(&mut balancer, 3, secs(3))
        .contains(&Ok(HostChoice { host: host(2), kind: ChoiceKind::Idle })));
}

#[test]
fn an_unknown_module_costs_one_route_request_per_update_timeout() {
    let mut balancer = Balancer::new(Config::default()).unwrap();
    for t in 0..1_000 {
        assert_eq!(balancer.get_host(M, ms(t * 10)), Err(GetHostError::NoExist));
        assert_eq!(balancer.get_route(M, ms(t * 10)), Err(GetRouteError::NoExist));
    }
    assert_eq!(balancer.modules_to_refresh(), [M]);
    assert_eq!(balancer.modules_to_refresh(), []);
    // The reply was lost (lars-dns down): asked again once update_timeout has passed.
    balancer.get_host(M, ms(14_999)).unwrap_err();
    assert_eq!(balancer.modules_to_refresh(), []);
    balancer.get_host(M, secs(15)).unwrap_err();
    balancer.get_host(M, secs(16)).unwrap_err();
    assert_eq!(balancer.modules_to_refresh(), [M]);
    assert_eq!(balancer.stats().route_requests, 2);
    assert_eq!(balancer.stats().noexist_refusals, 1_003);
}

// Routes.

#[test]
fn a_known_route_is_asked_for_again_update_timeout_after_it_arrived() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    assert_eq!(balancer.modules_to_refresh(), [], "the reply answered the queued request");
    balancer.get_host(M, ms(14_999)).unwrap();
    assert_eq!(balancer.modules_to_refresh(), []);
    balancer.get_host(M, secs(15)).unwrap();
    assert_eq!(balancer.modules_to_refresh(), [M]);
}

#[test]
fn a_route_update_keeps_the_state_of_the_nodes_that_stay_and_adds_new_ones_idle() {
    let mut balancer = balancer_with(Config::default(), 3, secs(0));
    overload(&mut balancer, host(1), secs(1));
    report_n(&mut balancer, host(3), OK, 7, secs(1));
    let change = balancer.update_route(M, &[host(4), host(3), host(1), host(4)], secs(2)).unwrap();
    assert_eq!(change, RouteChange { added: 1, removed: 1, kept: 2 });
    assert_eq!(state(&balancer, host(1)), NodeState::Overloaded);
    assert_eq!(status(&balancer, host(3)).rsucc, 7);
    let module = balancer.module(M).unwrap();
    assert_eq!(module.idle().collect::<Vec<_>>(), [host(3), host(4)]);
    assert_eq!(module.nodes().count(), 3, "a duplicate counts once");
    assert_eq!(balancer.stats().nodes_removed, 1);
}

#[test]
fn an_empty_route_answers_noexist_until_nodes_come_back() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    balancer.update_route(M, &[], secs(1)).unwrap();
    assert_eq!(balancer.get_host(M, secs(1)), Err(GetHostError::NoExist));
    assert_eq!(balancer.get_route(M, secs(1)), Ok(vec![]));
    assert!(balancer.module(M).unwrap().route_known());
    balancer.update_route(M, &hosts(1), secs(2)).unwrap();
    assert_eq!(balancer.get_host(M, secs(2)).unwrap().host, host(1));
}

#[test]
fn a_route_for_a_module_nobody_asked_about_is_refused() {
    let mut balancer = Balancer::new(Config::default()).unwrap();
    assert_eq!(balancer.update_route(M, &hosts(1), secs(0)), Err(RouteError::UnknownModule));
    assert!(balancer.is_empty());
}

#[test]
fn resubscribe_all_asks_for_every_module_again_at_once() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    balancer.get_host(ModuleId::new(2, 1), secs(0)).unwrap_err();
    let mut asked = balancer.modules_to_refresh();
    assert_eq!(asked, [ModuleId::new(2, 1)]);
    balancer.resubscribe_all(secs(1));
    asked = balancer.modules_to_refresh();
    asked.sort();
    assert_eq!(asked, [M, ModuleId::new(2, 1)]);
}

#[test]
fn a_new_module_past_max_modules_is_refused_with_system_error() {
    let mut balancer = balancer_with(Config { max_modules: 1, ..Config::default() }, 1, secs(0));
    let error = balancer.get_host(ModuleId::new(9, 9), secs(0)).unwrap_err();
    assert_eq!((error, error.retcode()), (GetHostError::ModuleLimit, RetCode::SystemError));
    assert_eq!(balancer.get_route(ModuleId::new(9, 9), secs(0)), Err(GetRouteError::ModuleLimit));
    assert!(balancer.get_host(M, secs(0)).is_ok());
    assert_eq!((balancer.len(), balancer.stats().module_limit_refusals), (1, 2));
}

#[test]
fn a_report_for_an_unknown_module_or_node_is_ignored_and_counted() {
    let mut balancer = balancer_with(Config::default(), 1, secs(0));
    assert_eq!(
        balancer.report(ModuleId::new(5, 5), host(1), OK, None, secs(0)),
        Err(ReportError::UnknownModule)
    );
    assert_eq!(balancer.report(M, host(9), FAIL, None, secs(0)), Err(ReportError::UnknownHost));
    assert_eq!((balancer.stats().reports, balancer.stats().reports_ignored), (0, 2));
    assert_eq!(balancer.take_report(secs(1), 1), []);
}

#[test]
fn a_route_longer_than_a_frame_can_carry_is_refused_whole() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    let route: Vec<HostInfo> = (0..=MAX_NODES as i32).map(|ip| HostInfo { ip, port: 1 }).collect();
    assert_eq!(balancer.update_route(M, &route, secs(1)), Err(RouteError::TooManyNodes(MAX_NODES + 1)));
    assert_eq!(balancer.get_route(M, secs(1)).unwrap(), hosts(2));
    let most = &route[..MAX_NODES];
    assert_eq!(balancer.update_route(M, most, secs(1)).unwrap().added, MAX_NODES);
    assert_eq!(balancer.report(M, route[MAX_NODES - 1], OK, None, secs(1)), Ok(None));
}

// Choosing.

#[test]
fn idle_nodes_are_handed_out_in_turn() {
    let mut balancer = balancer_with(Config::default(), 3, secs(0));
    let got: Vec<HostInfo> =
        choices(&mut balancer, 6, secs(0)).into_iter().map(|c| c.unwrap().host).collect();
    assert_eq!(got, [host(1), host(2), host(3), host(1), host(2), host(3)]);
    assert_eq!(status(&balancer, host(1)).outstanding, 2);
}

#[test]
fn an_overloaded_node_is_probed_after_every_probe_num_idle_choices() {
    let mut balancer = balancer_with(Config::default(), 3, secs(0));
    overload(&mut balancer, host(1), secs(0));
    let got = choices(&mut balancer, 33, secs(1));
    for (n, choice) in got.into_iter().enumerate() {
        let choice = choice.unwrap();
        if n % 11 == 10 {
            assert_eq!(choice, HostChoice { host: host(1), kind: ChoiceKind::Probe }, "call {n}");
        } else {
            assert_eq!(choice.kind, ChoiceKind::Idle, "call {n}");
            assert_ne!(choice.host, host(1));
        }
    }
    assert_eq!(balancer.stats().probes, 3);
}

#[test]
fn with_no_idle_node_get_host_refuses_probe_num_times_then_probes() {
    let config = Config { panic_percent: 0, ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(0));
    overload(&mut balancer, host(1), secs(0));
    overload(&mut balancer, host(2), secs(0));
    let got = choices(&mut balancer, 22, secs(1));
    let expected = |n: usize| match n {
        10 => Ok(HostChoice { host: host(1), kind: ChoiceKind::Probe }),
        21 => Ok(HostChoice { host: host(2), kind: ChoiceKind::Probe }),
        _ => Err(GetHostError::Overload),
    };
    for (n, choice) in got.into_iter().enumerate() {
        assert_eq!(choice, expected(n), "call {n}");
    }
    assert_eq!(GetHostError::Overload.retcode(), RetCode::Overload);
    assert_eq!(balancer.stats().overload_refusals, 20);
}

#[test]
fn panic_mode_hands_out_every_node_in_turn_when_too_few_are_idle() {
    let mut balancer = balancer_with(Config::default(), 3, secs(0));
    overload(&mut balancer, host(1), secs(0));
    assert!(!balancer.module(M).unwrap().in_panic(), "2 of 3 idle is not under 50 %");
    overload(&mut balancer, host(2), secs(0));
    assert!(balancer.module(M).unwrap().in_panic());
    assert_eq!(balancer.modules_in_panic(), 1);
    let got: Vec<_> = choices(&mut balancer, 6, secs(1)).into_iter().map(|c| c.unwrap()).collect();
    let hosts_got: Vec<_> = got.iter().map(|c| c.host).collect();
    assert_eq!(hosts_got, [host(1), host(2), host(3), host(1), host(2), host(3)]);
    assert!(got.iter().all(|c| c.kind == ChoiceKind::Panic));
    assert_eq!(balancer.stats().panic_choices, 6);
    assert!(balancer.stats().pairs().contains(&("panic_choices", 6)), "the metric by its name");
}

#[test]
fn half_the_nodes_idle_is_not_panic_at_the_default_threshold() {
    // docs/LARS.md: panic when *fewer than* panic_percent are idle.
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    overload(&mut balancer, host(1), secs(0));
    assert!(!balancer.module(M).unwrap().in_panic());
    assert_eq!(balancer.get_host(M, secs(0)).unwrap().kind, ChoiceKind::Idle);
}

#[test]
fn panic_percent_zero_turns_panic_mode_off() {
    let config = Config { panic_percent: 0, ..Config::default() };
    let mut balancer = balancer_with(config, 3, secs(0));
    for n in 1..=3 {
        overload(&mut balancer, host(n), secs(0));
    }
    assert_eq!(balancer.modules_in_panic(), 0);
    assert_eq!(balancer.get_host(M, secs(0)), Err(GetHostError::Overload));
}

// Reports upstream.

#[test]
fn reports_are_sent_once_per_module_per_report_interval() {
    let config = Config { caller: Ipv4Addr::new(192, 168, 1, 9), ..Config::default() };
    let mut balancer = balancer_with(config, 2, secs(0));
    balancer.get_host(ModuleId::new(2, 2), secs(0)).unwrap_err();
    report_n(&mut balancer, host(1), OK, 100, secs(0));
    report_n(&mut balancer, host(2), FAIL, 3, secs(0));
    let batch = balancer.take_report(secs(0), 1_700_000_000);
    assert_eq!(batch.len(), 1, "module [2, 2] had no reports");
    let report = &batch[0];
    assert_eq!((report.modid, report.cmdid, report.ts), (1, 1, 1_700_000_000));
    assert_eq!(crate::proto::ip_from_wire(report.caller), Ipv4Addr::new(192, 168, 1, 9));
    let counts: Vec<_> = report.results.iter().map(|r| (r.ip, r.port, r.succ, r.err, r.overload)).collect();
    assert_eq!(counts, [(host(1).ip, host(1).port, 100, 0, false), (host(2).ip, host(2).port, 0, 3, false)]);

    report_n(&mut balancer, host(1), OK, 100, ms(500));
    assert_eq!(balancer.take_report(ms(999), 0), [], "not due before report_interval");
    assert_eq!(balancer.report_due_at(), secs(1));
    let batch = balancer.take_report(secs(1), 0);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].results[0].succ, 100, "a report carries the calls since the last one");
    assert_eq!(balancer.take_report(secs(2), 0), [], "nothing reported since");
    assert_eq!(balancer.stats().status_reports, 2);
}

#[test]
fn a_report_shows_overloaded_nodes_after_the_idle_ones() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    overload(&mut balancer, host(1), secs(0));
    balancer.take_report(secs(0), 0);
    report_n(&mut balancer, host(1), FAIL, 2, secs(2));
    let batch = balancer.take_report(secs(2), 0);
    let results: Vec<_> = batch[0].results.iter().map(|r| (r.port, r.err, r.overload)).collect();
    assert_eq!(results, [(host(2).port, 0, false), (host(1).port, 2, true)]);
}

#[test]
fn a_reporter_outage_loses_no_call_whatever_the_windows_in_between() {
    let mut balancer = balancer_with(Config::default(), 1, secs(0));
    // One success a second for 60 s, nothing taken: windows end at 15, 30 and 45 s.
    for t in 0..60 {
        report_n(&mut balancer, host(1), OK, 1, secs(t));
    }
    let batch = balancer.take_report(secs(60), 0);
    assert_eq!(batch.len(), 1, "one report per module, however long the outage");
    assert_eq!(batch[0].results[0].succ, 60, "every call since the last report");
    assert_eq!(balancer.stats().calls_unreported, 0);
}

#[test]
fn calls_on_a_removed_node_not_yet_reported_are_counted_as_lost() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    report_n(&mut balancer, host(2), OK, 4, secs(0));
    balancer.take_report(secs(0), 0);
    report_n(&mut balancer, host(2), OK, 3, secs(0));
    balancer.update_route(M, &hosts(1), secs(0)).unwrap();
    assert_eq!(balancer.stats().calls_unreported, 3);
}

#[test]
fn take_report_keeps_to_its_grid_and_starts_a_new_one_after_a_pause() {
    let mut balancer = balancer_with(Config::default(), 1, secs(0));
    balancer.take_report(secs(0), 0);
    balancer.take_report(ms(1_020), 0);
    assert_eq!(balancer.report_due_at(), secs(2));
    balancer.take_report(secs(10), 0);
    assert_eq!(balancer.report_due_at(), secs(11));
}

// The latency-aware choice.

fn latency_config() -> Config {
    Config { latency_aware: true, ..Config::default() }
}

#[test]
fn latency_aware_never_chooses_the_slowest_of_three_idle_nodes() {
    let mut balancer = balancer_with(latency_config(), 3, secs(0));
    for (n, latency) in [(1, 10), (2, 20), (3, 200)] {
        balancer.report(M, host(n), OK, Some(Duration::from_millis(latency)), secs(0)).unwrap();
    }
    let mut count = [0; 3];
    for _ in 0..300 {
        let choice = balancer.get_host(M, secs(0)).unwrap();
        let n = usize::from(choice.host.ip.to_be_bytes()[3]);
        count[n - 1] += 1;
        // Reported at once with the same latency, so costs stay put.
        let latency = [10, 20, 200][n - 1];
        balancer.report(M, choice.host, OK, Some(Duration::from_millis(latency)), secs(0)).unwrap();
    }
    assert_eq!(count[2], 0, "{count:?}");
    // The fastest wins whenever it is drawn: 2 pairs in 3.
    assert!(count[0] > 150 && count[1] > 50, "{count:?}");
}

#[test]
fn latency_aware_spreads_unreported_choices_by_outstanding_count() {
    let mut balancer = balancer_with(latency_config(), 2, secs(0));
    for _ in 0..100 {
        balancer.get_host(M, secs(0)).unwrap();
    }
    let (a, b) = (status(&balancer, host(1)).outstanding, status(&balancer, host(2)).outstanding);
    assert_eq!(a + b, 100);
    assert!(a.abs_diff(b) <= 1, "{a} vs {b}");
}

#[test]
fn peak_ewma_jumps_to_a_slower_sample_and_decays_towards_faster_ones() {
    let mut balancer = balancer_with(latency_config(), 1, secs(0));
    let latency = |balancer: &Balancer, now| balancer.module(M).unwrap().latency(host(1), now).unwrap();
    assert_eq!(latency(&balancer, secs(0)), Duration::from_millis(50), "latency_initial");
    balancer.report(M, host(1), OK, Some(Duration::from_millis(100)), secs(0)).unwrap();
    assert_eq!(latency(&balancer, secs(0)), Duration::from_millis(100));
    balancer.report(M, host(1), OK, Some(Duration::from_millis(10)), secs(0)).unwrap();
    assert_eq!(latency(&balancer, secs(0)), Duration::from_millis(100), "no time passed: no weight");
    // One decay time later: 100 ms × e^-1 + 10 ms × (1 − e^-1) ≈ 43.1 ms.
    balancer.report(M, host(1), OK, Some(Duration::from_millis(10)), secs(10)).unwrap();
    let ms = latency(&balancer, secs(10)).as_secs_f64() * 1e3;
    assert!((ms - 43.1).abs() < 0.1, "{ms}");
    // A failure's fast answer does not make the node look faster.
    balancer.report(M, host(1), FAIL, Some(Duration::from_millis(1)), secs(20)).unwrap();
    let after = latency(&balancer, secs(20)).as_secs_f64() * 1e3;
    assert!((after - 43.1 / std::f64::consts::E).abs() < 0.1, "{after}");
}

#[test]
fn latency_reports_do_not_change_round_robin_when_latency_aware_is_off() {
    let mut balancer = balancer_with(Config::default(), 2, secs(0));
    balancer.report(M, host(1), OK, Some(Duration::from_millis(1)), secs(0)).unwrap();
    balancer.report(M, host(2), OK, Some(Duration::from_secs(5)), secs(0)).unwrap();
    let got: Vec<_> = choices(&mut balancer, 4, secs(0)).into_iter().map(|c| c.unwrap().host).collect();
    assert_eq!(got, [host(1), host(2), host(1), host(2)]);
}

#[test]
fn a_config_the_algorithm_cannot_use_builds_no_balancer() {
    let error = Balancer::new(Config { panic_percent: 150, ..Config::default() }).unwrap_err();
    assert_eq!(error, ConfigError::PanicPercent(150));
}
