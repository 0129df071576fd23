//! `cargo xtask lars-interop`: doorway's Lars programs against the original C++ Lars and back.
//!
//! 1. Finds the built original: `LARS_ORIGINAL_SRC` (a source tree the original-Lars measuring
//!    kit's `build.sh` built), or, with the kit at `LARS_ORIGINAL` (and `LARS_MIRROR`, the aceld/Lars
//!    snapshot it builds from), the kit's own tree (`LARS_SRC`, default /tmp/lars-src), built with
//!    `build.sh` when a binary is missing. The same for the push-fixed tree
//!    (`LARS_ORIGINAL_PUSHFIX_SRC`, or the kit's `build.sh --pushfix` into `LARS_SRC_PUSHFIX`,
//!    default /tmp/lars-src-pushfix); without one the test skips its push check.
//! 2. Builds `lars/tests/original_programs.rs` and `lars/tests/client_vs_original_agent.rs` in
//!    release mode (`cargo test --release --no-run`).
//! 3. Runs `original_programs` in a fresh network namespace (`unshare --net`, loopback up; needs
//!    root), because the original's UDP ports 8888-8890 are fixed: nothing else on the machine is
//!    met there. It starts the originals, doorway's programs and a private MariaDB itself, runs
//!    `client_vs_original_agent` against the original stack, and stops every process by its PID.
//!    The namespace goes when its last process exits. The run is bounded: past 10 minutes its
//!    process group is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::json;
use crate::util::{cargo, have, output, run as run_cmd, Result};

/// The kit's default trees (its `build.sh`: `LARS_SRC`, `LARS_SRC_PUSHFIX`).
const KIT_SRC: &str = "/tmp/lars-src";
const KIT_PUSHFIX_SRC: &str = "/tmp/lars-src-pushfix";
const LIMIT: Duration = Duration::from_secs(600);

/// What the test needs of a built tree.
const BUILT: [&str; 5] = [
    "lars_dns/bin/lars_dns",
    "lars_reporter/bin/lars_reporter",
    "lars_loadbalance_agent/bin/lars_lb_agent",
    "api/cpp/example/qps",
    "base/sql/lars_dns.sql",
];

fn built(src: &Path) -> bool {
    BUILT.iter().all(|f| src.join(f).is_file())
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Builds `tree` with the kit's `build.sh [--pushfix]` (the kit picks the tree from `tree_var`).
fn kit_build(kit: &Path, tree_var: &str, tree: &Path, pushfix: bool) -> Result {
    if env_path("LARS_MIRROR").is_none() {
        return Err(format!(
            "{} is not built and LARS_MIRROR (the aceld/Lars snapshot the kit builds from) is not set",
            tree.display()
        )
        .into());
    }
    let mut build = Command::new("bash");
    build.arg(kit.join("build.sh")).env(tree_var, tree);
    if pushfix {
        build.arg("--pushfix");
    }
    run_cmd(&mut build)
}

/// The original's tree and the push-fixed one (if any), built.
fn original_trees() -> Result<(PathBuf, Option<PathBuf>)> {
    let kit = env_path("LARS_ORIGINAL");
    let src = match (env_path("LARS_ORIGINAL_SRC"), &kit) {
        (Some(src), _) => src,
        (None, Some(_)) => env_path("LARS_SRC").unwrap_or_else(|| KIT_SRC.into()),
        (None, None) => {
            return Err("set LARS_ORIGINAL_SRC to a built original Lars tree, or LARS_ORIGINAL (the \
                        original-Lars measuring kit) and LARS_MIRROR to build one"
                .into())
        }
    };
    if !built(&src) {
        let Some(kit) = &kit else {
            return Err(format!(
                "{} lacks one of {BUILT:?}: build it with the kit's build.sh",
                src.display()
            )
            .into());
        };
        kit_build(kit, "LARS_SRC", &src, false)?;
        if !built(&src) {
            return Err(format!("the kit's build.sh did not produce {BUILT:?} in {}", src.display()).into());
        }
    }
    let pushfix = match (env_path("LARS_ORIGINAL_PUSHFIX_SRC"), &kit) {
        (Some(tree), _) => Some(tree),
        (None, Some(_)) => Some(env_path("LARS_SRC_PUSHFIX").unwrap_or_else(|| KIT_PUSHFIX_SRC.into())),
        (None, None) => None,
    };
    let pushfix = match pushfix {
        Some(tree) if built(&tree) => Some(tree),
        Some(tree) => match &kit {
            Some(kit) => {
                kit_build(kit, "LARS_SRC_PUSHFIX", &tree, true)?;
                Some(tree).filter(|t| built(t))
            }
            None => {
                eprintln!("lars-interop: {} is not built: the push check is skipped", tree.display());
                None
            }
        },
        None => {
            eprintln!(
                "lars-interop: no push-fixed tree (LARS_ORIGINAL_PUSHFIX_SRC): the push check is skipped"
            );
            None
        }
    };
    Ok((src, pushfix))
}

/// Builds the two tests in release mode; their executables, by test name.
fn build_tests() -> Result<(PathBuf, PathBuf)> {
    // Cargo's progress and diagnostics go to the terminal; its JSON messages come back here.
    let text = output(cargo().stderr(Stdio::inherit()).args([
        "test",
        "--release",
        "-p",
        "doorway-lars",
        "--test",
        "original_programs",
        "--test",
        "client_vs_original_agent",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    let mut found = (None, None);
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let message = json::parse(line)?;
        let name = message.get("target").and_then(|t| t.get("name")).and_then(json::Value::as_str);
        let exe = message.get("executable").and_then(json::Value::as_str).map(PathBuf::from);
        match name {
            Some("original_programs") => found.0 = exe.or(found.0),
            Some("client_vs_original_agent") => found.1 = exe.or(found.1),
            _ => {}
        }
    }
    match found {
        (Some(test), Some(client)) => Ok((test, client)),
        _ => Err("cargo built no original_programs or client_vs_original_agent executable".into()),
    }
}

pub fn run() -> Result {
    let started = Instant::now();
    if output(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("lars-interop needs root (a network namespace of its own: unshare --net)".into());
    }
    for tool in ["unshare", "ip", "stdbuf"] {
        if !have(tool) {
            return Err(format!("lars-interop needs `{tool}` (util-linux, iproute2, coreutils)").into());
        }
    }
    let (src, pushfix) = original_trees()?;
    let (test, client_test) = build_tests()?;

    // `unshare` and `sh` exec the test in place: the child's PID is the test's, and its process
    // group (its own) holds every process it starts.
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$0\""])
        .arg(&test)
        .env("LARS_ORIGINAL_SRC", &src)
        .env("LARS_CLIENT_VS_ORIGINAL_AGENT_BIN", &client_test)
        .env_remove("LARS_ORIGINAL_PUSHFIX_SRC");
    if let Some(tree) = &pushfix {
        cmd.env("LARS_ORIGINAL_PUSHFIX_SRC", tree);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    eprintln!(
        "$ LARS_ORIGINAL_SRC={} LARS_ORIGINAL_PUSHFIX_SRC={} unshare --net -- sh -c 'ip link set lo up && exec \"$0\"' {}",
        src.display(),
        pushfix.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        test.display()
    );
    let ran = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start unshare: {e}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if ran.elapsed() > LIMIT {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            return Err(format!("original_programs ran over {LIMIT:?}: its process group was killed").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!("original_programs failed: {status}").into());
    }
    eprintln!(
        "lars-interop passed: the test ran {:.1} s ({:.1} s in all)",
        ran.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
