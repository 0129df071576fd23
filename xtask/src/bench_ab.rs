//! `cargo xtask bench-ab BEFORE [AFTER] [--rounds N]`: two `doorway` binaries side by side, to show
//! that a change left the server's speed where it was.
//!
//! The main bench compares doorway with the tokio peer; its absolute figures drift with whatever
//! else the machine runs, so "unchanged" is decided here instead: rounds alternate the two binaries
//! (BEFORE, AFTER, BEFORE, ...), each run a fresh server pinned to cpu0 with `doorway-bench` pinned
//! to cpu1 for 2 s, on the workloads whose figures the targets name (1 connection ping-pong, 100
//! connections ping-pong, 100 x 16 pipelined, 16 KiB bodies). It prints, per workload, the medians
//! of messages/s, server CPU per message and p50 latency, and AFTER / BEFORE. AFTER defaults to the
//! release build of the working tree; BEFORE is typically a build of an earlier commit (a `git
//! worktree` of it, `cargo build --release -p doorway-linux --bin doorway`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::json::{self, Value};
use crate::util::{cargo, project_root, run as run_cmd, Result};

/// (name, doorway-bench arguments).
const WORKLOADS: &[(&str, &[&str])] = &[
    ("1 conn ping-pong", &["--connections", "1", "--in-flight", "1"]),
    ("100 conns ping-pong", &["--connections", "100", "--in-flight", "1"]),
    ("100 conns x 16 pipelined", &["--connections", "100", "--in-flight", "16"]),
    ("16 KiB bodies, 100 x 4", &["--connections", "100", "--in-flight", "4", "--body-size", "16384"]),
];

/// The figures compared: (JSON key, label).
const FIGURES: &[(&str, &str)] =
    &[("msgs_per_s", "msgs/s"), ("server_cpu_ns_per_msg", "server CPU ns/msg"), ("p50_ns", "p50 ns")];

fn number(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One measured run of `server` under `args`: doorway-bench's JSON.
fn one_run(server: &Path, bench: &Path, args: &[&str]) -> Result<Value> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(server)
        .args(["--listen", &addr, "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bench)
        .args([
            "--addr",
            &addr,
            "--duration",
            "2",
            "--warmup",
            "0.3",
            "--json",
            "--server-pid",
            &child.id().to_string(),
        ])
        .args(args)
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let out = out?;
    if !out.status.success() {
        return Err(format!("doorway-bench failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(json::parse(String::from_utf8_lossy(&out.stdout).trim())?)
}

/// Runs the comparison.
pub fn run(args: &[String]) -> Result {
    let mut rounds = 7;
    let mut bins: Vec<PathBuf> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .ok_or("--rounds needs a number")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            other => bins.push(PathBuf::from(other)),
        }
    }
    let before = bins.first().cloned().ok_or("usage: cargo xtask bench-ab BEFORE [AFTER] [--rounds N]")?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "doorway-linux",
        "--bin",
        "doorway",
        "--bin",
        "doorway-bench",
    ]))?;
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
        .join("release");
    let after = bins.get(1).cloned().unwrap_or_else(|| release.join("doorway"));
    let bench = release.join("doorway-bench");
    for b in [&before, &after] {
        if !b.exists() {
            return Err(format!("no such binary: {}", b.display()).into());
        }
    }
    println!("bench-ab: BEFORE {}\n          AFTER  {}\n          {rounds} alternating rounds of 2 s, server cpu0, client cpu1; medians\n", before.display(), after.display());
    println!("| workload | figure | before | after | after / before |\n|---|---|---:|---:|---:|");
    for (name, wargs) in WORKLOADS {
        let (mut b, mut a) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            b.push(one_run(&before, &bench, wargs)?);
            a.push(one_run(&after, &bench, wargs)?);
        }
        for (key, label) in FIGURES {
            let mb = median(b.iter().filter_map(|v| number(v, key)).collect());
            let ma = median(a.iter().filter_map(|v| number(v, key)).collect());
            println!("| {name} | {label} | {mb:.1} | {ma:.1} | {:.3} |", ma / mb);
        }
    }
    Ok(())
}
