//! The client against the original C++ `lars_lb_agent`, when one runs here.
//!
//! The real peer of the client is the original agent (aceld/Lars), with the original `lars_dns`
//! behind it reading routes from MariaDB. This test needs that stack up with the demo routes of the
//! Lars build scripts (`run.sh start`):
//!
//! | module | route |
//! |---|---|
//! | (1, 1) | 192.168.1.101:7001, 192.168.1.102:7002, 192.168.1.103:7003 |
//! | (1, 2) | 10.0.0.1:8001, 10.0.0.2:8002, 10.0.0.3:8003 |
//! | (1, 3) | 127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003 |
//!
//! and runs only when `LARS_ORIGINAL_AGENT` names the agent's address and first port:
//!
//! ```text
//! LARS_ORIGINAL_AGENT=127.0.0.1:8888 cargo test -p doorway-lars --test client_vs_original_agent
//! ```
//!
//! Without it, it prints that it skipped and passes. It has its own `main` (`harness = false`), so
//! that message shows in `cargo test`'s output, and so the scenarios run one after another: they
//! change the agent's state (nodes turned overloaded, then back to idle), and each uses its own
//! module so that a scenario's reports do not change another's choices.

use doorway_lars::client::{Config, Error, Node};
use doorway_lars::{Client, RetCode};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const ENV: &str = "LARS_ORIGINAL_AGENT";

fn route(a: [u8; 3], last: [u8; 3], ports: [u16; 3]) -> Vec<Node> {
    let mut route: Vec<Node> = (0..3).map(|i| (Ipv4Addr::new(a[0], a[1], a[2], last[i]), ports[i])).collect();
    route.sort();
    route
}

fn sorted(mut route: Vec<Node>) -> Vec<Node> {
    route.sort();
    route
}

/// Counts how often each node comes back from `n` calls of `get_host`, and how many calls were
/// refused with `Overload`.
fn choices(client: &mut Client, modid: i32, cmdid: i32, n: usize) -> (BTreeMap<Node, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut overloaded = 0;
    for _ in 0..n {
        match client.get_host(modid, cmdid) {
            Ok(node) => *counts.entry(node).or_insert(0) += 1,
            Err(Error::Overload) => overloaded += 1,
            Err(error) => panic!("get_host({modid}, {cmdid}): {error}"),
        }
    }
    (counts, overloaded)
}

fn report_many(client: &mut Client, modid: i32, cmdid: i32, nodes: &[Node], retcode: RetCode, n: usize) {
    for node in nodes {
        for _ in 0..n {
            client.report(modid, cmdid, *node, retcode).unwrap();
        }
    }
    // Reports have no reply; give the agent's thread time to count them before the next choice.
    std::thread::sleep(Duration::from_millis(100));
}

fn reg_init_and_get_route_return_the_route_in_the_database(client: &mut Client) {
    let expected = route([192, 168, 1], [101, 102, 103], [7001, 7002, 7003]);
    assert_eq!(sorted(client.reg_init(1, 1).unwrap()), expected);
    assert_eq!(sorted(client.get_route(1, 1).unwrap()), expected);
    let expected = route([10, 0, 0], [1, 2, 3], [8001, 8002, 8003]);
    assert_eq!(sorted(client.reg_init(1, 2).unwrap()), expected);
}

fn an_unknown_module_is_no_exist(client: &mut Client) {
    // The original answers NOEXIST to every request about a module lars_dns has no nodes for.
    assert!(matches!(client.get_host(9_999, 1), Err(Error::NoExist)));
    assert!(matches!(client.reg_init(9_999, 1), Err(Error::NoExist)));
    assert_eq!(client.get_route(9_999, 1).unwrap(), []);
}

fn get_host_goes_round_the_route_and_reports_overload_a_node(client: &mut Client) {
    let nodes = route([192, 168, 1], [101, 102, 103], [7001, 7002, 7003]);
    client.reg_init(1, 1).unwrap();
    // Every node is idle (a previous run's state is reset by its closing successes): round robin.
    let (counts, overloaded) = choices(client, 1, 1, 9);
    assert_eq!(overloaded, 0);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), nodes, "{counts:?}");
    assert!(counts.values().all(|&n| n == 3), "round robin over 3 nodes: {counts:?}");
    // 192.168.1.101 is a negative int32 on the wire: the agent must find the node we name.
    let bad = nodes[0];
    report_many(client, 1, 1, &[bad], RetCode::SystemError, 20);
    let (counts, overloaded) = choices(client, 1, 1, 9);
    assert_eq!(overloaded, 0);
    assert!(counts.get(&bad).copied().unwrap_or(0) <= 1, "an overloaded node is only probed: {counts:?}");
    report_many(client, 1, 1, &[bad], RetCode::Succ, 20);
}

fn every_node_overloaded_is_overload(client: &mut Client) {
    let nodes = route([127, 0, 0], [1, 1, 1], [9001, 9002, 9003]);
    assert_eq!(sorted(client.reg_init(1, 3).unwrap()), nodes);
    report_many(client, 1, 3, &nodes, RetCode::Overload, 20);
    let (counts, overloaded) = choices(client, 1, 3, 20);
    assert!(overloaded >= 15, "{overloaded} of 20 refused, probes {counts:?}");
    // Back to idle for whoever uses the module next.
    report_many(client, 1, 3, &nodes, RetCode::Succ, 20);
    let (_, overloaded) = choices(client, 1, 3, 6);
    assert_eq!(overloaded, 0, "the nodes are idle again");
}

/// One scenario against the agent; it panics when the agent does not do what it expects.
type Scenario = fn(&mut Client);

/// The scenarios with their names, each written once.
macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {
        [$((stringify!($scenario), $scenario as Scenario)),*]
    };
}

fn main() {
    let Ok(agent) = std::env::var(ENV) else {
        println!(
            "client_vs_original_agent: SKIPPED, {ENV} is not set. Start the original Lars stack \
             (run.sh start) and run with {ENV}=127.0.0.1:8888."
        );
        return;
    };
    let agent: SocketAddrV4 = agent.parse().unwrap_or_else(|e| panic!("{ENV}={agent:?}: {e}"));
    let config = Config { agent: *agent.ip(), base_port: agent.port(), ..Config::default() };
    let mut client = Client::with_config(config).unwrap();
    let scenarios: [(&str, Scenario); 4] = scenarios![
        reg_init_and_get_route_return_the_route_in_the_database,
        an_unknown_module_is_no_exist,
        get_host_goes_round_the_route_and_reports_overload_a_node,
        every_node_overloaded_is_overload,
    ];
    for (name, scenario) in scenarios {
        print!("client_vs_original_agent::{name} ... ");
        scenario(&mut client);
        println!("ok");
    }
    println!("client_vs_original_agent: {} scenarios passed against {agent}", scenarios.len());
}
