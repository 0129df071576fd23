//! `lars-agent`: the Lars load-balance agent (thin: parse, configure logging, serve; the agent is
//! `doorway_lars::agent`).
//!
//! Serves the original's UDP protocol on three ports from `--udp-base` (8888, 8889, 8890 by
//! default), links to `lars-dns` and `lars-reporter`, and prints `lars-agent udp on <addr>` per
//! port once serving. `--shards 3` runs one loop per port (default 1: one loop for all three; see
//! `doorway_lars::agent`). Drains on SIGTERM/SIGINT and exits 0; an invalid setting exits 2.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use doorway_lars::agent::{self, Endpoints};
use doorway_lars::balance;
use doorway_linux::config::{at_least, between, Choice, SettingsArgs, MAX_TIMEOUT};
use doorway_linux::LinkOptions;

/// A switch setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
}

doorway_linux::settings! {
    /// What `lars-agent` reads from its flags and its `--config` file.
    #[derive(Debug, Clone)]
    pub struct AgentSettings {
        #[flatten]
        server: doorway_linux::Config;
        /// The first of the three UDP ports API clients send to (port + (modid + cmdid) % 3).
        udp_base: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8888));
        /// Where lars-dns listens.
        dns: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7778));
        /// Where lars-reporter listens.
        reporter: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7779));
        /// After this many idle choices (or refusals), the next choice probes an overloaded node.
        probe_num: u32 = 10, check at_least(1);
        /// Virtual successes an idle node starts with.
        init_succ_cnt: u32 = 180;
        /// Virtual errors an overloaded node starts with.
        init_err_cnt: u32 = 5;
        /// Consecutive failures that overload an idle node.
        contin_err_limit: u32 = 15, check at_least(1);
        /// Consecutive successes that return an overloaded node to idle.
        contin_succ_limit: u32 = 15, check at_least(1);
        /// An idle node's window: at its end the node is judged on its real error rate.
        window: Duration = Duration::from_secs(15), check between(Duration::from_millis(1), MAX_TIMEOUT);
        /// How long a node stays overloaded at most.
        overload_timeout: Duration = Duration::from_secs(15), check between(Duration::from_millis(1), MAX_TIMEOUT);
        /// A module's route is asked for again after this; an unknown module at most this often.
        update_timeout: Duration = Duration::from_secs(15), check between(Duration::from_millis(1), MAX_TIMEOUT);
        /// Reports to lars-reporter are aggregated per module over this.
        report_interval: Duration = Duration::from_secs(1), check between(Duration::from_millis(10), MAX_TIMEOUT);
        /// Below this share (percent) of idle nodes, every node of a module is chosen in turn (0: off).
        panic_percent: u16 = 50, check between(0, 100);
        /// The most modules the agent holds.
        max_modules: usize = 100_000, check at_least(1);
        /// Choose among idle nodes by power of two choices on a Peak-EWMA latency cost (the API
        /// reports latency in ReportRequest field 5) instead of round robin.
        latency_aware: Toggle as Choice<Toggle> = Toggle::Off;
        /// The first wait before a link reconnects (doubling up to --link-backoff-ceiling).
        link_backoff_floor: Duration = Duration::from_millis(100), check between(Duration::from_millis(1), MAX_TIMEOUT);
        /// The longest wait between a link's reconnects.
        link_backoff_ceiling: Duration = Duration::from_secs(30), check between(Duration::from_millis(1), MAX_TIMEOUT);
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "lars-agent",
    version,
    about = "Lars load-balance agent on doorway: UDP API, links to lars-dns and lars-reporter"
)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs<AgentSettings>,
}

fn main() -> ExitCode {
    let s = match Cli::parse().settings.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lars-agent: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(s.server.log_level.filter())
        .target(env_logger::Target::Stderr)
        .init();
    let balance = balance::Config {
        probe_num: s.probe_num,
        init_succ_cnt: s.init_succ_cnt,
        init_err_cnt: s.init_err_cnt,
        contin_err_limit: s.contin_err_limit,
        contin_succ_limit: s.contin_succ_limit,
        idle_timeout: s.window,
        overload_timeout: s.overload_timeout,
        update_timeout: s.update_timeout,
        report_interval: s.report_interval,
        panic_percent: s.panic_percent as u8,
        max_modules: s.max_modules,
        latency_aware: s.latency_aware == Toggle::On,
        ..balance::Config::default()
    };
    let links = LinkOptions {
        backoff_floor: s.link_backoff_floor,
        backoff_ceiling: s.link_backoff_ceiling.max(s.link_backoff_floor),
        ..LinkOptions::default()
    };
    let endpoints = Endpoints { udp_base: s.udp_base, dns: s.dns, reporter: s.reporter };
    let running = match agent::start(s.server.clone(), &endpoints, balance, links, true) {
        Ok(r) => r,
        // `start` checks what the flags cannot: --shards against the ports, the balancer's
        // settings together, the UDP base against the port range.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("lars-agent: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("lars-agent: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    for addr in running.udp_addrs() {
        println!("lars-agent udp on {addr}");
    }
    if let Some(m) = running.metrics_addr() {
        println!("lars-agent metrics on http://{m}/metrics");
    }
    match running.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lars-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
