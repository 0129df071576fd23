//! `doorway`: the access server binary (thin: parse, configure logging, serve the demo service).
//!
//! Prints `doorway listening on <addr> (model=<m> shards=<n>)` once accepting (and the metrics
//! line when asked), logs to stderr, drains on SIGTERM/SIGINT and exits 0. An invalid
//! configuration exits 2.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use doorway_core::demo::Demo;
use doorway_linux::{Cli, Server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("doorway: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new().filter_level(cfg.log_level.filter()).target(env_logger::Target::Stderr).init();
    let running = match Server::builder().config(cfg.clone()).handle_signals(true).start(Demo) {
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
