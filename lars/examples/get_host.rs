//! Asks a Lars agent for nodes of a module, the way an application does.
//!
//! ```text
//! cargo run -p doorway-lars --example get_host -- MODID CMDID [CALLS] [AGENT_IP:BASE_PORT]
//! cargo run -p doorway-lars --example get_host -- 1 1            # one node of (1, 1)
//! cargo run -p doorway-lars --example get_host -- 1 1 10000      # 10,000 calls, then calls/s
//! ```
//!
//! It registers the module first (`reg_init`: the agent fetches the route from `lars-dns`), prints
//! the route, then calls `get_host` `CALLS` times (1 by default), printing how often each node came
//! back and the rate. The agent is 127.0.0.1:8888 unless the fourth argument says otherwise.

use doorway_lars::client::{Config, Node};
use doorway_lars::Client;
use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: get_host MODID CMDID [CALLS] [AGENT_IP:BASE_PORT]";

fn run(args: &[String]) -> Result<(), Box<dyn Error>> {
    let (modid, cmdid) = match args {
        [modid, cmdid, ..] => (modid.parse::<i32>()?, cmdid.parse::<i32>()?),
        _ => return Err(USAGE.into()),
    };
    let calls: u32 = args.get(2).map_or(Ok(1), |calls| calls.parse())?;
    let mut config = Config::default();
    if let Some(agent) = args.get(3) {
        let agent: SocketAddrV4 = agent.parse()?;
        config.agent = *agent.ip();
        config.base_port = agent.port();
    }
    let mut client = Client::with_config(config)?;

    let route = client.reg_init(modid, cmdid)?;
    let route: Vec<String> = route.iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
    println!("route of ({modid}, {cmdid}): {}", route.join(" "));

    let mut counts: BTreeMap<Node, u32> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..calls {
        *counts.entry(client.get_host(modid, cmdid)?).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    for ((ip, port), n) in &counts {
        println!("host {ip}:{port} x {n}");
    }
    if calls > 1 {
        let rate = f64::from(calls) / elapsed.as_secs_f64();
        println!("{calls} get_host calls in {elapsed:.2?}: {rate:.0} calls/s, one at a time");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("get_host: {error}");
            ExitCode::FAILURE
        }
    }
}
