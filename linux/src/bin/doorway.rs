//! `doorway`: the access server binary (thin: parse, configure logging, serve the demo service).
//!
//! Prints `doorway listening on <addr> (model=<m> shards=<n>)` once accepting, then the metrics
//! line when asked, then `doorway udp on <addr>` for each `--udp` endpoint (in the order given,
//! with the real port when port 0 was asked); logs to stderr, drains on SIGTERM/SIGINT and exits 0.
//! An invalid configuration exits 2.
//!
//! `--udp ADDR` is a flag of this binary, not a [`Config`](doorway_linux::Config) setting: it is
//! repeatable (one endpoint each), and endpoints are a [`Builder`](doorway_linux::Builder) matter
//! (`Builder::udp`), so the settings file knows nothing of them.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use doorway_core::demo::Demo;
use doorway_linux::{Cli, Server};

/// doorway access server: PROTOCOL.md over TCP (and UDP with --udp), demo service.
#[derive(Debug, Parser)]
#[command(name = "doorway", version)]
struct Args {
    // Every setting of `Config`, and `--config FILE`.
    #[command(flatten)]
    cli: Cli,
    /// Also serve on a UDP endpoint at ADDR (port 0 lets the OS choose): each datagram is one
    /// frame, its reply goes back to its source. Repeat for more endpoints.
    #[arg(long = "udp", value_name = "ADDR")]
    udp: Vec<SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match args.cli.into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("doorway: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new().filter_level(cfg.log_level.filter()).target(env_logger::Target::Stderr).init();
    let builder = args.udp.iter().fold(Server::builder(), |builder, &addr| builder.udp(addr));
    let running = match builder.config(cfg.clone()).handle_signals(true).start(Demo) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doorway: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "doorway listening on {} (model={} shards={})",
        running.local_addr(),
        cfg.model.name(),
        cfg.shards
    );
    if let Some(m) = running.metrics_addr() {
        let _ = writeln!(out, "doorway metrics on http://{m}/metrics");
    }
    for addr in running.udp_addrs() {
        let _ = writeln!(out, "doorway udp on {addr}");
    }
    let _ = out.flush();
    drop(out);
    match running.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorway: {e}");
            ExitCode::FAILURE
        }
    }
}
