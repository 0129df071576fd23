//! `cargo xtask setup`: provision what a fresh machine lacks, and say how to cross-build.
//!
//! What the project needs beyond a stable host toolchain:
//!
//! - **no_std cross builds** for `thumbv7em-none-eabihf` and `thumbv6m-none-eabi`. Where
//!   `rustup target add` works, the stable toolchain with those targets is used
//!   ([`Toolchain::Rustup`]). Where it cannot download, on Debian, the distribution's toolchain and
//!   standard-library source are installed (`rustc-web cargo-web rust-web-src lld-22`), linked as
//!   the rustup toolchain `debian`, and `core` is built from source with `-Zbuild-std=core` and
//!   `RUSTC_BOOTSTRAP=1` ([`Toolchain::Debian`]).
//! - **QEMU** (`qemu-system-arm`) for the board tests, from apt.
//! - **cargo-fuzz** for `cargo xtask fuzz`, and **defmt-print** for decoding board logs, both from
//!   `cargo install` when missing.
//!
//! [`ensure`] is what `cargo xtask test` calls: it only looks (a few process spawns) and provisions
//! only what is missing, printing every step. [`run`] (`cargo xtask setup`) is the same, loudly.
//! [`cross_cargo`] is the one place that knows how to invoke cargo for a no_std target.

use crate::util::{cargo, output, run as run_cmd, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The no_std targets the project builds for.
pub const TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

/// The name under which the Debian toolchain is linked into rustup.
const DEBIAN_TOOLCHAIN: &str = "debian";

/// Where Debian's `rust-web-src` puts the standard library's source.
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

/// Debian packages for the cross toolchain, and for QEMU.
const DEBIAN_TOOLCHAIN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "lld-22"];
const QEMU_PACKAGES: &[&str] = &["qemu-system-arm"];

/// How long `rustup target add` may try before we fall back to the Debian toolchain.
const RUSTUP_ADD_TIMEOUT: Duration = Duration::from_secs(300);

/// How no_std targets are built on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// The active rustup toolchain has the targets' prebuilt `core`.
    Rustup,
    /// The Debian toolchain linked as `+debian`, building `core` from source.
    Debian,
}

/// `cargo xtask setup`: provision everything, reporting what is already there.
pub fn run() -> Result {
    provision(true)
}

/// Called by `cargo xtask test` and the ci jobs: provision only what is missing.
pub fn ensure() -> Result {
    provision(false)
}

fn provision(verbose: bool) -> Result {
    match detect() {
        Some(toolchain) if verbose => eprintln!("setup: no_std targets: {toolchain:?} toolchain ready"),
        Some(_) => {}
        None => {
            provision_cross()?;
        }
    }
    if have_program("qemu-system-arm") {
        if verbose {
            eprintln!("setup: qemu-system-arm present");
        }
    } else {
        eprintln!("setup: qemu-system-arm missing: installing it with apt");
        apt_install(QEMU_PACKAGES)?;
    }
    for (tool, krate) in [("cargo-fuzz", "cargo-fuzz"), ("defmt-print", "defmt-print")] {
        if have_program(tool) {
            if verbose {
                eprintln!("setup: {tool} present");
            }
        } else {
            eprintln!("setup: {tool} missing: cargo install {krate}");
            run_cmd(cargo().args(["install", "--locked", krate]))?;
        }
    }
    if verbose {
        eprintln!("setup: done");
    }
    Ok(())
}

/// Which toolchain can build the no_std targets right now, if any (no provisioning).
///
/// `DOORWAY_CROSS_TOOLCHAIN=debian` (or `rustup`) forces one when it is ready, to test the path a
/// machine without downloads takes.
pub fn detect() -> Option<Toolchain> {
    match std::env::var("DOORWAY_CROSS_TOOLCHAIN").as_deref() {
        Ok("debian") => return debian_ready().then_some(Toolchain::Debian),
        Ok("rustup") => return rustup_has_targets().then_some(Toolchain::Rustup),
        _ => {}
    }
    if rustup_has_targets() {
        Some(Toolchain::Rustup)
    } else if debian_ready() {
        Some(Toolchain::Debian)
    } else {
        None
    }
}

/// Makes the no_std targets buildable: `rustup target add`, else the Debian toolchain.
fn provision_cross() -> Result<Toolchain> {
    if have_program("rustup") {
        eprintln!("setup: no_std targets missing: trying `rustup target add {}`", TARGETS.join(" "));
        let mut cmd = Command::new("rustup");
        cmd.arg("target").arg("add").args(TARGETS);
        match run_with_timeout(&mut cmd, RUSTUP_ADD_TIMEOUT) {
            Ok(true) if rustup_has_targets() => {
                eprintln!("setup: no_std targets installed through rustup");
                return Ok(Toolchain::Rustup);
            }
            Ok(_) => eprintln!("setup: `rustup target add` did not work here; using the Debian toolchain"),
            Err(e) => eprintln!("setup: `rustup target add` could not run ({e}); using the Debian toolchain"),
        }
    } else {
        return Err("setup: no rustup on PATH: install rustup, then run `cargo xtask setup` again".into());
    }
    let have_packages = Path::new("/usr/bin/rustc").is_file()
        && Path::new("/usr/bin/cargo").is_file()
        && Path::new(DEBIAN_RUST_SRC).is_dir()
        && have_program("ld.lld-22");
    if !have_packages {
        eprintln!("setup: installing the Debian Rust toolchain: {}", DEBIAN_TOOLCHAIN_PACKAGES.join(" "));
        apt_install(DEBIAN_TOOLCHAIN_PACKAGES)?;
    }
    if !debian_linked() {
        run_cmd(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    }
    if !debian_ready() {
        return Err(format!(
            "setup: the Debian toolchain is still not usable (need /usr/bin/rustc, {DEBIAN_RUST_SRC} and \
             the rustup toolchain `{DEBIAN_TOOLCHAIN}`)"
        )
        .into());
    }
    eprintln!("setup: no_std targets build with `cargo +{DEBIAN_TOOLCHAIN} -Zbuild-std=core`");
    Ok(Toolchain::Debian)
}

/// A cargo command for building for a no_std `target`: `cargo <subcommand> --target <target>`,
/// plus `-Zbuild-std=core` and `RUSTC_BOOTSTRAP=1` on the Debian toolchain. The caller adds the
/// rest (`-p`, `--manifest-path`, `--release`, features). Provisions first if nothing can build.
pub fn cross_cargo(subcommand: &str, target: &str) -> Result<Command> {
    let toolchain = match detect() {
        Some(toolchain) => toolchain,
        None => provision_cross()?,
    };
    Ok(cross_cargo_with(toolchain, subcommand, target))
}

/// [`cross_cargo`] for a known toolchain.
pub fn cross_cargo_with(toolchain: Toolchain, subcommand: &str, target: &str) -> Command {
    match toolchain {
        Toolchain::Rustup => {
            let mut cmd = cargo();
            cmd.args([subcommand, "--target", target]);
            cmd
        }
        Toolchain::Debian => {
            // `rustup run` finds the linked toolchain's cargo without relying on the proxy being
            // first on PATH. The outer `cargo xtask` exported which toolchain, cargo and rustc it
            // runs with; a child on another toolchain must not inherit them.
            let mut cmd = Command::new("rustup");
            cmd.args(["run", DEBIAN_TOOLCHAIN, "cargo", subcommand, "--target", target, "-Zbuild-std=core"]);
            for var in
                ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
            {
                cmd.env_remove(var);
            }
            cmd.env("RUSTC_BOOTSTRAP", "1");
            cmd.current_dir(crate::util::project_root());
            cmd
        }
    }
}

/// Whether the active rustup toolchain has both no_std targets installed.
fn rustup_has_targets() -> bool {
    if !have_program("rustup") {
        return false;
    }
    match output(Command::new("rustup").args(["target", "list", "--installed"]).stderr(Stdio::null())) {
        Ok(list) => TARGETS.iter().all(|t| list.lines().any(|line| line.trim() == *t)),
        Err(_) => false,
    }
}

fn debian_linked() -> bool {
    if !have_program("rustup") {
        return false;
    }
    match output(Command::new("rustup").args(["toolchain", "list"]).stderr(Stdio::null())) {
        Ok(list) => list.lines().any(|line| line.split_whitespace().next() == Some(DEBIAN_TOOLCHAIN)),
        Err(_) => false,
    }
}

fn debian_ready() -> bool {
    Path::new(DEBIAN_RUST_SRC).is_dir() && debian_linked()
}

/// `apt-get install -y`, with `apt-get update` and a retry when the first attempt fails; `sudo`
/// only when not root.
fn apt_install(packages: &[&str]) -> Result {
    if !have_program("apt-get") {
        return Err(format!(
            "setup: need {} but this is not a Debian-like system (no apt-get); install them by hand",
            packages.join(" ")
        )
        .into());
    }
    let root = output(Command::new("id").arg("-u")).map(|uid| uid.trim() == "0").unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut cmd = Command::new("sudo");
            cmd.arg("apt-get");
            cmd
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null());
        cmd
    };
    let mut install: Vec<&str> = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    if run_cmd(&mut apt(&install)).is_ok() {
        return Ok(());
    }
    eprintln!("setup: apt-get install failed; running apt-get update and trying again");
    run_cmd(&mut apt(&["update"]))?;
    run_cmd(&mut apt(&install))
}

/// Whether `program` is on PATH or in cargo's bin directory.
fn have_program(program: &str) -> bool {
    crate::util::have(program) || cargo_bin_dir().map(|dir| dir.join(program).is_file()).unwrap_or(false)
}

fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// Runs `cmd` (printing it) and reports success, killing it after `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<bool> {
    eprintln!("$ {cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).spawn()?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
