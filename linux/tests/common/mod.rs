//! Shared helpers of the Linux integration tests: spawning `doorway`, the thread models, STATS.
//!
//! Every test runs the real `doorway` binary (cargo builds it for integration tests and passes its
//! path in `CARGO_BIN_EXE_doorway`) as a child process listening on `127.0.0.1:0`, through
//! `doorway_testkit::ServerProcess`, which kills the child on drop. Each test owns its servers,
//! so tests in one binary run in parallel without sharing state.
#![allow(dead_code)]

use std::time::Duration;

use doorway_core::demo::kind::STATS;
use doorway_testkit::client::Client;
use doorway_testkit::json;
use doorway_testkit::ServerProcess;

/// The thread placements every rule is checked in: pipeline, fused, and a sharded run.
pub const MODELS: &[&[&str]] =
    &[&["--model", "pipeline"], &["--model", "fused"], &["--model", "fused", "--shards", "2"]];

/// Two models only, for the heavy tests.
pub const MAIN_MODELS: &[&[&str]] = &[&["--model", "pipeline"], &["--model", "fused"]];

/// Waits for replies in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The path of the `doorway` binary under test: `$DOORWAY_BIN` when set (to hold another build
/// or implementation to the same tests), else the one cargo built for these tests.
pub fn doorway_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match (std::env::var("DOORWAY_BIN"), option_env!("CARGO_BIN_EXE_doorway")) {
        (Ok(path), _) => path,
        (Err(_), Some(path)) => path.to_string(),
        (Err(_), None) => panic!("the doorway-linux package has no `doorway` binary yet"),
    })
}

/// Starts `doorway --listen 127.0.0.1:0 --log-level warn <args>` and waits for its listening line.
pub fn spawn(args: &[&str]) -> ServerProcess {
    // The tests hold hundreds to thousands of sockets: lift our own soft fd limit first.
    let _ = doorway_testkit::raise_nofile_limit();
    let mut all = vec!["--listen", "127.0.0.1:0", "--log-level", "warn"];
    all.extend_from_slice(args);
    match ServerProcess::spawn(doorway_bin(), &all, Duration::from_secs(20)) {
        Ok(server) => server,
        Err(e) => panic!("doorway {all:?}: {e}"),
    }
}

/// `a` followed by `b`.
pub fn args<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

/// A readable name for a model's arguments.
pub fn name(model: &[&str]) -> String {
    model.join(" ")
}

/// Fetches STATS on a new connection and returns the counters.
pub fn stats(server: &ServerProcess) -> Vec<(String, i128)> {
    let mut c = Client::connect(server.addr(), TIMEOUT).expect("connect for STATS");
    let frame = c.request(STATS, 1, b"", TIMEOUT).expect("STATS reply");
    assert_eq!((frame.kind(), frame.seq()), (STATS, 1), "{frame:?}");
    json::parse_int_object(&frame.body).expect("STATS body is a flat JSON object")
}

/// One STATS counter (0 when missing).
pub fn stat(stats: &[(String, i128)], key: &str) -> i128 {
    json::get(stats, key).unwrap_or_else(|| panic!("STATS has no {key}: {stats:?}"))
}

/// Polls STATS until `connections_open` is at most `at_most` (the STATS connection itself counts),
/// returning the last value seen.
pub fn wait_open_at_most(server: &ServerProcess, at_most: i128, timeout: Duration) -> i128 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let open = stat(&stats(server), "connections_open");
        if open <= at_most || std::time::Instant::now() >= deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The p-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs `test` once per model and fails afterwards if any run failed, naming every failing model
/// (a failure in one model does not hide the others').
pub fn each_model(models: &[&[&str]], test: impl Fn(&[&str])) {
    let mut failed = Vec::new();
    for model in models {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(model)));
        if let Err(panic) = run {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("[{}] {message}", name(model)));
        }
    }
    assert!(
        failed.is_empty(),
        "failed in {} of {} models:\n{}",
        failed.len(),
        models.len(),
        failed.join("\n")
    );
}
