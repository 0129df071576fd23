//! `cargo xtask setup`: provision what a fresh machine lacks, and say how to cross-build.
//!
//! What the project needs beyond a stable host toolchain comes in [`Piece`]s, and each command
//! asks only for the pieces it uses (`cargo xtask flash` for a real board needs the cross target
//! and probe-rs, not QEMU or cargo-fuzz):
//!
//! - [`Piece::Cross`], **no_std cross builds** for `thumbv7em-none-eabihf` and
//!   `thumbv6m-none-eabi`. Where `rustup target add` works, the stable toolchain with those
//!   targets is used ([`Toolchain::Rustup`]). Where it cannot download, on Debian, the
//!   distribution's toolchain, its standard-library source and an `lld` are installed, linked as
//!   the rustup toolchain `debian`, and `core` is built from source with `-Zbuild-std=core` and
//!   `RUSTC_BOOTSTRAP=1` ([`Toolchain::Debian`]). Which packages is asked of `apt-cache`, not
//!   assumed ([`debian_packages`]): the Rust package set with the newest candidate (`rustc-web` or
//!   `rustc`) and the highest-numbered `lld-N` the distribution has. Before building with that
//!   toolchain, its `rustc --version` is compared with what the crate's dependency graph declares
//!   ([`requirement`], [`check_rustc`]), so a too-old distribution compiler is a clear error
//!   naming both versions, not a failure deep inside a build.
//! - [`Piece::Qemu`] (`qemu-system-arm`) for the board tests, from apt.
//! - [`Piece::Mariadb`] (`mariadbd`, `mariadb-install-db`) for doorway-lars's MySQL tests, which
//!   start a private server of their own, from apt.
//! - [`Piece::Tool`]: cargo-fuzz for `cargo xtask fuzz`, defmt-print for decoding board logs,
//!   probe-rs for flashing, each from `cargo install` when missing.
//!
//! [`ensure`] provisions the pieces a command needs: it only looks (a few process spawns) and
//! installs only what is missing, printing every step. [`run`] (`cargo xtask setup`) provisions
//! [`EVERYTHING`] and also reports what is already there. [`cross_cargo`] is the one place that
//! knows how to invoke cargo for a no_std target.

use crate::json;
use crate::util::{cargo, output, run as run_cmd, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The no_std targets the project builds for.
pub const TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

/// The name under which the Debian toolchain is linked into rustup.
const DEBIAN_TOOLCHAIN: &str = "debian";

/// Where Debian's `rust-web-src` (or `rust-src`) puts the standard library's source.
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

/// The Debian Rust package sets, in order of preference when their candidates tie: the `-web`
/// set is the newer toolchain Debian stable carries for browser builds; the plain set is the
/// distribution's own.
const DEBIAN_RUST_SETS: &[[&str; 3]] =
    &[["rustc-web", "cargo-web", "rust-web-src"], ["rustc", "cargo", "rust-src"]];

/// The Debian packages for QEMU.
const QEMU_PACKAGES: &[&str] = &["qemu-system-arm"];

/// The Debian packages for MariaDB (server and `mariadb-install-db`).
const MARIADB_PACKAGES: &[&str] = &["mariadb-server"];

/// How long `rustup target add` may try before we fall back to the Debian toolchain.
const RUSTUP_ADD_TIMEOUT: Duration = Duration::from_secs(300);

/// A tool installed with `cargo install`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CargoTool {
    /// The program it puts on PATH (or in cargo's bin directory).
    pub program: &'static str,
    /// The crate `cargo install` builds it from.
    pub krate: &'static str,
}

/// cargo-fuzz, for `cargo xtask fuzz` and the `fuzz-smoke` job.
pub const CARGO_FUZZ: CargoTool = CargoTool { program: "cargo-fuzz", krate: "cargo-fuzz" };
/// defmt-print, which decodes the firmware's defmt log in QEMU runs.
pub const DEFMT_PRINT: CargoTool = CargoTool { program: "defmt-print", krate: "defmt-print" };
/// probe-rs, which flashes real boards.
pub const PROBE_RS: CargoTool = CargoTool { program: "probe-rs", krate: "probe-rs-tools" };

/// One part of what setup provisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The no_std targets: rustup's, or the Debian toolchain.
    Cross,
    /// `qemu-system-arm`, from apt.
    Qemu,
    /// `mariadbd`, from apt.
    Mariadb,
    /// A tool from `cargo install`.
    Tool(CargoTool),
}

/// What `cargo xtask setup` provisions: everything `cargo xtask test` uses. probe-rs is left to
/// `cargo xtask flash`, the one command that needs it.
pub const EVERYTHING: &[Piece] =
    &[Piece::Cross, Piece::Qemu, Piece::Mariadb, Piece::Tool(CARGO_FUZZ), Piece::Tool(DEFMT_PRINT)];
/// What running firmware in QEMU needs (`cargo xtask qemu`, the `qemu` job).
pub const QEMU_RUN: &[Piece] = &[Piece::Cross, Piece::Qemu, Piece::Tool(DEFMT_PRINT)];
/// What flashing a real board needs.
pub const FLASH: &[Piece] = &[Piece::Cross, Piece::Tool(PROBE_RS)];

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
    provision(EVERYTHING, true)?;
    eprintln!("setup: done");
    Ok(())
}

/// Provision only what is missing of `pieces`.
pub fn ensure(pieces: &[Piece]) -> Result {
    provision(pieces, false)
}

fn provision(pieces: &[Piece], verbose: bool) -> Result {
    for piece in pieces {
        match *piece {
            Piece::Cross => match detect()? {
                Some(toolchain) if verbose => {
                    eprintln!("setup: no_std targets: {toolchain:?} toolchain ready")
                }
                Some(_) => {}
                None => {
                    provision_cross()?;
                }
            },
            Piece::Qemu => {
                if have_program("qemu-system-arm") {
                    if verbose {
                        eprintln!("setup: qemu-system-arm present");
                    }
                } else {
                    eprintln!("setup: qemu-system-arm missing: installing it with apt");
                    apt_install(QEMU_PACKAGES)?;
                }
            }
            Piece::Mariadb => {
                if have_program("mariadbd") || Path::new("/usr/sbin/mariadbd").is_file() {
                    if verbose {
                        eprintln!("setup: mariadbd present");
                    }
                } else {
                    eprintln!("setup: mariadbd missing: installing it with apt");
                    apt_install(MARIADB_PACKAGES)?;
                }
            }
            Piece::Tool(tool) => {
                if have_program(tool.program) {
                    if verbose {
                        eprintln!("setup: {} present", tool.program);
                    }
                } else {
                    eprintln!("setup: {} missing: cargo install {}", tool.program, tool.krate);
                    run_cmd(cargo().args(["install", "--locked", tool.krate]))?;
                }
            }
        }
    }
    Ok(())
}

/// The toolchain `DOORWAY_CROSS_TOOLCHAIN` forces, if set. An unknown value is an error, not a
/// silent fallback.
fn forced_toolchain(var: Option<&str>) -> std::result::Result<Option<Toolchain>, String> {
    match var {
        None | Some("") => Ok(None),
        Some("debian") => Ok(Some(Toolchain::Debian)),
        Some("rustup") => Ok(Some(Toolchain::Rustup)),
        Some(other) => Err(format!("DOORWAY_CROSS_TOOLCHAIN={other}: expected `debian` or `rustup`")),
    }
}

/// Which toolchain builds the no_std targets, given what is forced and what is ready; `None`
/// when the one to use still has to be provisioned.
fn choose_toolchain(forced: Option<Toolchain>, rustup_ready: bool, debian_ready: bool) -> Option<Toolchain> {
    match forced {
        Some(Toolchain::Debian) => debian_ready.then_some(Toolchain::Debian),
        Some(Toolchain::Rustup) => rustup_ready.then_some(Toolchain::Rustup),
        None if rustup_ready => Some(Toolchain::Rustup),
        None if debian_ready => Some(Toolchain::Debian),
        None => None,
    }
}

fn forced_from_env() -> Result<Option<Toolchain>> {
    let var = std::env::var("DOORWAY_CROSS_TOOLCHAIN").ok();
    Ok(forced_toolchain(var.as_deref())?)
}

/// Which toolchain can build the no_std targets right now, if any (no provisioning).
///
/// `DOORWAY_CROSS_TOOLCHAIN=debian` (or `rustup`) forces one, to test the path a machine without
/// downloads takes: a forced toolchain that is not ready is provisioned, never swapped for the
/// other one.
pub fn detect() -> Result<Option<Toolchain>> {
    let forced = forced_from_env()?;
    // Only look at what matters: a forced choice needs only its own readiness.
    let rustup_ready = forced != Some(Toolchain::Debian) && rustup_has_targets();
    let debian_ready = forced != Some(Toolchain::Rustup) && debian_ready();
    Ok(choose_toolchain(forced, rustup_ready, debian_ready))
}

/// Makes the no_std targets buildable: `rustup target add`, else the Debian toolchain (only the
/// Debian toolchain when it is forced).
fn provision_cross() -> Result<Toolchain> {
    let forced = forced_from_env()?;
    if forced != Some(Toolchain::Debian) {
        if !have_program("rustup") {
            return Err("setup: no rustup on PATH: install rustup, then run `cargo xtask setup` again".into());
        }
        eprintln!("setup: no_std targets missing: trying `rustup target add {}`", TARGETS.join(" "));
        let mut cmd = Command::new("rustup");
        cmd.arg("target").arg("add").args(TARGETS);
        match run_with_timeout(&mut cmd, RUSTUP_ADD_TIMEOUT) {
            Ok(true) if rustup_has_targets() => {
                eprintln!("setup: no_std targets installed through rustup");
                return Ok(Toolchain::Rustup);
            }
            Ok(_) if forced == Some(Toolchain::Rustup) => {
                return Err(
                    "setup: DOORWAY_CROSS_TOOLCHAIN=rustup but `rustup target add` did not work".into()
                )
            }
            Ok(_) => eprintln!("setup: `rustup target add` did not work here; using the Debian toolchain"),
            Err(e) => eprintln!("setup: `rustup target add` could not run ({e}); using the Debian toolchain"),
        }
    }
    provision_debian()?;
    Ok(Toolchain::Debian)
}

/// Installs (what is missing of) the Debian toolchain and links it into rustup as `debian`.
fn provision_debian() -> Result {
    let have_packages = Path::new("/usr/bin/rustc").is_file()
        && Path::new("/usr/bin/cargo").is_file()
        && Path::new(DEBIAN_RUST_SRC).is_dir()
        && installed_lld().is_some();
    if !have_packages {
        let packages = match ask_apt_for_debian_packages()? {
            Ok(packages) => packages,
            Err(_) => {
                // apt-cache knows nothing before the first `apt-get update`.
                eprintln!("setup: apt-cache does not list the Debian Rust packages; running apt-get update");
                run_cmd(&mut apt_get(&["update"])?)?;
                ask_apt_for_debian_packages()?.map_err(|e| format!("setup: {e}"))?
            }
        };
        eprintln!("setup: installing the Debian Rust toolchain: {}", packages.join(" "));
        let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
        apt_install(&packages)?;
    }
    if !debian_linked() {
        if !have_program("rustup") {
            return Err("setup: no rustup on PATH to link the Debian toolchain into; install rustup".into());
        }
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
    Ok(())
}

/// Asks apt-cache which Debian toolchain packages to install; the inner error says what the
/// distribution lacks.
fn ask_apt_for_debian_packages() -> Result<std::result::Result<Vec<String>, String>> {
    if !have_program("apt-cache") {
        return Err(
            "setup: the Debian toolchain needs apt-cache, and this is not a Debian-like system".into()
        );
    }
    let names: Vec<&str> = DEBIAN_RUST_SETS.iter().map(|set| set[0]).collect();
    let policy = output(Command::new("apt-cache").arg("policy").args(&names))?;
    let search = output(Command::new("apt-cache").args(["search", "--names-only", "^lld-[0-9]+$"]))?;
    Ok(debian_packages(&policy, &search))
}

/// The Debian packages of the no-download toolchain, from `apt-cache policy rustc-web rustc`
/// and `apt-cache search --names-only '^lld-[0-9]+$'`: the Rust set whose compiler has the
/// newest candidate, and the highest-numbered `lld-N`.
pub fn debian_packages(apt_policy: &str, apt_search: &str) -> std::result::Result<Vec<String>, String> {
    let candidates = policy_candidates(apt_policy);
    let mut best: Option<(&[&str; 3], RustVersion)> = None;
    for set in DEBIAN_RUST_SETS {
        let version = candidates.iter().find(|(name, _)| name == set[0]).and_then(|(_, v)| *v);
        if let Some(version) = version {
            if best.is_none_or(|(_, best_version)| version > best_version) {
                best = Some((set, version));
            }
        }
    }
    let (set, _) = best.ok_or_else(|| {
        let names: Vec<&str> = DEBIAN_RUST_SETS.iter().map(|set| set[0]).collect();
        format!(
            "apt-cache has no candidate for any of {} (is the package list up to date?)",
            names.join(", ")
        )
    })?;
    let lld = choose_lld(apt_search)
        .ok_or("apt-cache lists no `lld-N` package (searched `^lld-[0-9]+$`); the no_std builds need one")?;
    let mut packages: Vec<String> = set.iter().map(|name| name.to_string()).collect();
    packages.push(lld);
    Ok(packages)
}

/// The highest-numbered `lld-N` in `apt-cache search --names-only '^lld-[0-9]+$'` output
/// (lines like `lld-19 - LLVM-based linker`).
pub fn choose_lld(apt_search: &str) -> Option<String> {
    apt_search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| Some((numbered(name, "lld-")?, name)))
        .max()
        .map(|(_, name)| name.to_string())
}

/// `N` of a name `<prefix>N` with N all digits.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// (package, candidate version) for each package of `apt-cache policy` output; `None` where the
/// candidate is `(none)` or unparsable.
fn policy_candidates(apt_policy: &str) -> Vec<(String, Option<RustVersion>)> {
    let mut out: Vec<(String, Option<RustVersion>)> = Vec::new();
    for line in apt_policy.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.trim_end().strip_suffix(':') {
                out.push((name.to_string(), None));
            }
        } else if let Some(candidate) = line.trim().strip_prefix("Candidate:") {
            if let Some(last) = out.last_mut() {
                last.1 = RustVersion::parse_debian(candidate.trim());
            }
        }
    }
    out
}

/// The `ld.lld-N` with the highest N on PATH, else a plain `ld.lld`.
fn installed_lld() -> Option<String> {
    let paths = std::env::var_os("PATH")?;
    let mut names = Vec::new();
    for dir in std::env::split_paths(&paths) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            names.extend(entries.flatten().filter_map(|e| e.file_name().into_string().ok()));
        }
    }
    choose_installed_lld(names.iter().map(String::as_str))
}

/// [`installed_lld`]'s choice among the program names found.
fn choose_installed_lld<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut plain = false;
    let mut best: Option<(u32, &str)> = None;
    for name in names {
        plain |= name == "ld.lld";
        if let Some(n) = numbered(name, "ld.lld-") {
            best = best.max(Some((n, name)));
        }
    }
    best.map(|(_, name)| name.to_string()).or(plain.then(|| "ld.lld".to_string()))
}

/// A Rust version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RustVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl RustVersion {
    /// `1.85`, `1.85.0` or `1.85.0-nightly` (a `rust-version` field or a rustc version).
    pub fn parse(text: &str) -> Option<RustVersion> {
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(patch) => patch.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(RustVersion { major, minor, patch })
    }

    /// A Debian package version of a Rust package: `1.85.0+dfsg3-1~deb12u3` (an epoch `N:` is
    /// skipped). Versions of the old scheme (`cargo`'s `0.66.0+ds1-1`) parse as what they say.
    fn parse_debian(text: &str) -> Option<RustVersion> {
        let text = text.split_once(':').map_or(text, |(_, rest)| rest);
        RustVersion::parse(text.split('~').next()?)
    }

    /// The oldest rustc that knows `edition`.
    fn for_edition(edition: &str) -> Option<RustVersion> {
        let minor = match edition {
            "2015" => 0,
            "2018" => 31,
            "2021" => 56,
            "2024" => 85,
            _ => return None,
        };
        Some(RustVersion { major: 1, minor, patch: 0 })
    }
}

impl fmt::Display for RustVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version of `rustc --version` output: `rustc 1.85.0 (4d91de4e4 2025-02-17) (built from a
/// source tarball)`.
pub fn parse_rustc_version(rustc_version: &str) -> Option<RustVersion> {
    RustVersion::parse(rustc_version.trim().strip_prefix("rustc ")?)
}

/// The newest rustc a crate's dependency graph asks for, and which package asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub version: RustVersion,
    /// `name@version` of the package that asks for it.
    pub package: String,
    /// Why: `rust-version = "1.91"` or `edition = "2024"`.
    pub reason: String,
}

/// What `root` needs, from `cargo metadata --format-version 1 --filter-platform <target>`:
/// the highest `rust-version` (or edition minimum) over `root` and everything it depends on
/// for a build (normal and build dependencies; dev-dependencies don't build for the target).
/// `None` when nothing declares a requirement.
pub fn requirement(metadata: &json::Value, root: &str) -> std::result::Result<Option<Requirement>, String> {
    let packages = metadata.get("packages").map(json::Value::items).unwrap_or_default();
    let nodes =
        metadata.get("resolve").and_then(|r| r.get("nodes")).map(json::Value::items).unwrap_or_default();
    let id_of = |value: &json::Value| value.get("id").and_then(json::Value::as_str).map(str::to_string);
    let root_id = packages
        .iter()
        .find(|p| p.get("name").and_then(json::Value::as_str) == Some(root))
        .and_then(id_of)
        .ok_or_else(|| format!("cargo metadata lists no package `{root}`"))?;
    // The build closure of root, following only non-dev edges.
    let mut seen = vec![root_id.clone()];
    let mut todo = vec![root_id];
    while let Some(id) = todo.pop() {
        let Some(node) = nodes.iter().find(|n| id_of(n).as_deref() == Some(id.as_str())) else { continue };
        for dep in node.get("deps").map(json::Value::items).unwrap_or_default() {
            let builds = dep
                .get("dep_kinds")
                .map(json::Value::items)
                .unwrap_or_default()
                .iter()
                .any(|k| k.get("kind").and_then(json::Value::as_str) != Some("dev"));
            if let Some(pkg) = dep.get("pkg").and_then(json::Value::as_str) {
                if builds && !seen.iter().any(|s| s == pkg) {
                    seen.push(pkg.to_string());
                    todo.push(pkg.to_string());
                }
            }
        }
    }
    let mut best: Option<Requirement> = None;
    for package in packages {
        if !id_of(package).is_some_and(|id| seen.contains(&id)) {
            continue;
        }
        let field = |key| package.get(key).and_then(json::Value::as_str);
        let name = format!("{}@{}", field("name").unwrap_or("?"), field("version").unwrap_or("?"));
        let mut asks = Vec::new();
        if let Some(v) = field("rust_version").and_then(RustVersion::parse) {
            asks.push((v, format!("rust-version = \"{}\"", field("rust_version").unwrap_or_default())));
        }
        if let Some(v) = field("edition").and_then(RustVersion::for_edition) {
            asks.push((v, format!("edition = \"{}\"", field("edition").unwrap_or_default())));
        }
        for (version, reason) in asks {
            if best.as_ref().is_none_or(|b| version > b.version) {
                best = Some(Requirement { version, package: name.clone(), reason });
            }
        }
    }
    Ok(best)
}

/// Whether the Debian toolchain's rustc (its `rustc --version` output) is new enough for
/// `root`'s requirement; the error names both versions and the package that sets the bar.
pub fn check_rustc(
    rustc_version: &str,
    root: &str,
    need: Option<&Requirement>,
) -> std::result::Result<(), String> {
    let found = parse_rustc_version(rustc_version).ok_or_else(|| {
        format!("cannot read the Debian toolchain's version from `{}`", rustc_version.trim())
    })?;
    match need {
        Some(need) if found < need.version => Err(format!(
            "the Debian toolchain's rustc is {found}, but building `{root}` needs rustc {} or newer \
             ({} has {}). This distribution's Rust is too old for it: use a machine where \
             `rustup target add {}` works, or a distribution with a newer rustc",
            need.version,
            need.package,
            need.reason,
            TARGETS.join(" ")
        )),
        _ => Ok(()),
    }
}

/// Fails with [`check_rustc`]'s message when the Debian toolchain is too old for `package` (in
/// the workspace at `dir`) on `target`. When `cargo metadata` itself fails (no network for the
/// index, say) the check is skipped with a note: cargo's own rust-version check still applies.
fn check_debian_rustc(dir: &Path, package: &str, target: &str) -> Result {
    let rustc_version = output(debian_command("rustc").arg("--version"))?;
    let metadata = cargo()
        .current_dir(dir)
        .args(["metadata", "--format-version", "1", "--filter-platform", target])
        .stderr(Stdio::inherit())
        .output();
    let need = match metadata {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            requirement(&json::parse(&text)?, package)?
        }
        _ => {
            eprintln!(
                "setup: `cargo metadata` failed; not checking the Debian rustc against `{package}`'s needs"
            );
            return Ok(());
        }
    };
    check_rustc(&rustc_version, package, need.as_ref()).map_err(|e| format!("setup: {e}").into())
}

/// A cargo command building `package` (in the workspace at `dir`) for a no_std `target`:
/// `cargo <subcommand> --target <target> -p <package>`, plus `-Zbuild-std=core`,
/// `RUSTC_BOOTSTRAP=1` and the linker on the Debian toolchain, whose rustc is first checked
/// against the package's needs. The caller adds the rest (`--release`, features). Provisions
/// first if nothing can build.
pub fn cross_cargo(subcommand: &str, target: &str, dir: &Path, package: &str) -> Result<Command> {
    let toolchain = match detect()? {
        Some(toolchain) => toolchain,
        None => provision_cross()?,
    };
    if toolchain == Toolchain::Debian {
        check_debian_rustc(dir, package, target)?;
    }
    let mut cmd = cross_cargo_with(toolchain, subcommand, target);
    cmd.current_dir(dir).args(["-p", package]);
    Ok(cmd)
}

/// A command running `program` of the Debian toolchain. `rustup run` finds the linked
/// toolchain without relying on the proxy being first on PATH. The outer `cargo xtask` exported
/// which toolchain, cargo and rustc it runs with; a child on another toolchain must not inherit
/// them.
fn debian_command(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", DEBIAN_TOOLCHAIN, program]);
    for var in ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    cmd
}

/// [`cross_cargo`] for a known toolchain, run from the project root.
pub fn cross_cargo_with(toolchain: Toolchain, subcommand: &str, target: &str) -> Command {
    match toolchain {
        Toolchain::Rustup => {
            let mut cmd = cargo();
            cmd.args([subcommand, "--target", target]);
            cmd
        }
        Toolchain::Debian => {
            let mut cmd = debian_command("cargo");
            cmd.args([subcommand, "--target", target, "-Zbuild-std=core"]);
            cmd.env("RUSTC_BOOTSTRAP", "1");
            // Debian's rustc ships no `rust-lld`; name the distribution's lld (any version links
            // these ELF objects; LTO happens inside rustc).
            if let Some(lld) = installed_lld() {
                cmd.env(linker_var(target), lld);
            }
            cmd.current_dir(crate::util::project_root());
            cmd
        }
    }
}

/// Cargo's per-target linker variable: `CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER`.
fn linker_var(target: &str) -> String {
    format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace(['-', '.'], "_"))
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
    Path::new(DEBIAN_RUST_SRC).is_dir() && debian_linked() && installed_lld().is_some()
}

/// An `apt-get` command with `args`, through `sudo` when not root.
fn apt_get(args: &[&str]) -> Result<Command> {
    if !have_program("apt-get") {
        return Err(format!(
            "setup: `apt-get {}` is needed but this is not a Debian-like system (no apt-get)",
            args.join(" ")
        )
        .into());
    }
    let root = output(Command::new("id").arg("-u")).map(|uid| uid.trim() == "0").unwrap_or(false);
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("apt-get");
        cmd
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null());
    Ok(cmd)
}

/// `apt-get install -y`, with `apt-get update` and a retry when the first attempt fails.
fn apt_install(packages: &[&str]) -> Result {
    let mut install: Vec<&str> = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    if run_cmd(&mut apt_get(&install)?).is_ok() {
        return Ok(());
    }
    eprintln!("setup: apt-get install failed; running apt-get update and trying again");
    run_cmd(&mut apt_get(&["update"])?)?;
    run_cmd(&mut apt_get(&install)?)
}

/// Whether `program` is on PATH or in cargo's bin directory.
pub fn have_program(program: &str) -> bool {
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

#[cfg(test)]
mod tests;
