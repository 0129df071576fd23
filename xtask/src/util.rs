//! Helpers shared by the xtask commands: paths, cargo, and running commands loudly.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// xtask's error type (cargo-xtask's convention).
pub type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// The workspace root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// The cargo that runs us.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Prints and runs `cmd`; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd.status().map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed: {status}").into());
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, failing on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd.output().map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(
            format!("`{shown}` failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr)).into()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program can be found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
