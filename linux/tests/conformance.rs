//! The conformance suite of `doorway-testkit` against a spawned `doorway`, in every thread model.
//!
//! One server per run, so the suite's broadcast and connection-limit cases see only their own
//! connections. The profile declared to the suite matches the flags given to the server: a short
//! idle timeout (so the idle case runs), a small `max_connections` (so SERVER_FULL runs), and in
//! one run the embedded firmware's `max_body` of 1,024 bytes.

mod common;

use std::time::Duration;

use doorway_testkit::{run_suite, Target};

use common::{args, name, spawn, MODELS};

const IDLE_MS: u64 = 1500;
const MAX_CONNECTIONS: usize = 40;

fn run(model: &[&str], max_body: u32) {
    let idle = IDLE_MS.to_string();
    let max_conns = MAX_CONNECTIONS.to_string();
    let body = max_body.to_string();
    let extra = ["--idle-timeout-ms", &idle, "--max-connections", &max_conns, "--max-body", &body];
    let mut server = spawn(&args(model, &extra));
    let mut target = Target::new(server.addr());
    target.max_body = max_body;
    target.idle_timeout = Some(Duration::from_millis(IDLE_MS));
    target.max_connections = Some(MAX_CONNECTIONS);
    target.max_concurrent = 16;
    let report = run_suite(&target);
    let alive = server.is_running();
    println!("{} (max_body {max_body}):\n{report}", name(model));
    assert!(report.passed(), "{}:\n{report}\nserver stderr:\n{}", name(model), server.stderr_text());
    assert!(alive, "the server died during the suite:\n{}", server.stderr_text());
    assert_eq!(report.count_skipped(), 0, "every case must run against doorway");
}

#[test]
fn suite_pipeline() {
    run(MODELS[0], 65_536);
}

#[test]
fn suite_fused() {
    run(MODELS[1], 65_536);
}

#[test]
fn suite_fused_two_shards() {
    run(MODELS[2], 65_536);
}

#[test]
fn suite_pipeline_two_shards() {
    run(&["--model", "pipeline", "--shards", "2"], 65_536);
}

#[test]
fn suite_small_max_body() {
    run(MODELS[1], 1024);
}
