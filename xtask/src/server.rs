//! `cargo xtask linux-server [-- ARGS]`: builds `doorway` in release mode and runs it in the
//! foreground with ARGS (default: listen on 127.0.0.1:7200, the demo service). The server prints
//! where it listens; Ctrl-C (SIGINT) drains it and it exits 0.

use std::path::PathBuf;
use std::process::Command;

use crate::util::{cargo, project_root, Result};

/// Builds the release binary and runs it with `args` in the foreground.
pub fn run(args: &[String]) -> Result {
    crate::util::run(cargo().args(["build", "--release", "-p", "doorway-linux", "--bin", "doorway"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    let bin = target.join("release").join("doorway");
    let mut cmd = Command::new(&bin);
    cmd.args(args);
    eprintln!("$ {} {}", bin.display(), args.join(" "));
    let status = cmd.status().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if !status.success() {
        return Err(format!("doorway exited with {status}").into());
    }
    Ok(())
}
