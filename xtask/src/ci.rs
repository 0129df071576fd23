//! `cargo xtask test` and `cargo xtask ci <job>`: the jobs a change must pass.
//!
//! The matrix is data ([`JOBS`]), not a script. `test` runs every job in order and stops at the
//! first failure; `ci <job>` runs one. Each job names the setup pieces it needs
//! ([`setup::Piece`]), which are provisioned (when missing) just before it runs: `ci tidy` installs
//! nothing, `test --quick` no QEMU.
//!
//! `host-tests` is `cargo test --workspace`, and xtask is a workspace member, so xtask's own unit
//! tests (setup's package choices, the tidy checks' self-tests) run there too.

use crate::setup::{self, Piece};
use crate::util::{cargo, run, Result};

/// One CI job: a name, what it needs provisioned, and the function that runs it.
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
    pub needs: &'static [Piece],
    pub run: fn() -> Result,
}

/// Jobs `cargo xtask test --quick` leaves out: the slow ones (release builds, firmware, QEMU,
/// fuzzing). CI always runs everything.
const SLOW: &[&str] = &["loom", "fuzz-smoke", "lars", "bench-quick", "boards", "qemu"];

/// Every job, in the order `test` runs them (cheap first).
pub const JOBS: &[Job] = &[
    Job { name: "fmt", about: "cargo fmt --check", needs: &[], run: fmt },
    Job { name: "clippy", about: "clippy, warnings denied", needs: &[], run: clippy },
    Job {
        name: "host-tests",
        about: "all host tests (unit, property, integration; xtask's own included)",
        needs: &[Piece::Mariadb],
        run: host_tests,
    },
    Job {
        name: "tidy",
        about: "module docs, SAFETY comments, no log/alloc in core, no links outside the repository",
        needs: &[],
        run: tidy,
    },
    Job { name: "loom", about: "loom model checks of the queues and doors", needs: &[], run: loom },
    Job {
        name: "no-std",
        about: "doorway-core for thumbv7em/thumbv6m, each log feature",
        needs: &[Piece::Cross],
        run: no_std,
    },
    Job {
        name: "fuzz-smoke",
        about: "build and run the decode fuzz target for 10 s",
        needs: &[Piece::Tool(setup::CARGO_FUZZ)],
        run: fuzz_smoke,
    },
    Job {
        name: "lars",
        about: "cargo xtask lars --smoke: the three Lars programs start, answer and stop cleanly",
        needs: &[],
        run: || crate::lars::run(None, true),
    },
    Job {
        name: "bench-quick",
        about: "cargo xtask bench --quick (harness check, no thresholds)",
        needs: &[],
        run: crate::bench::quick,
    },
    Job {
        name: "boards",
        about: "build every board's firmware (real boards compile only)",
        needs: &[Piece::Cross],
        run: crate::qemu::build_all,
    },
    Job {
        name: "qemu",
        about: "conformance suite against the mps2-an386 firmware in QEMU",
        needs: setup::QEMU_RUN,
        run: crate::qemu::ci_test,
    },
];

pub fn test(quick: bool) -> Result {
    let mut passed = 0;
    for job in JOBS {
        if quick && SLOW.contains(&job.name) {
            eprintln!("==> ci job {}: skipped by --quick", job.name);
            continue;
        }
        eprintln!("==> ci job {}: {}", job.name, job.about);
        let started = std::time::Instant::now();
        setup::ensure(job.needs).map_err(|e| format!("ci job `{}`: setup failed: {e}", job.name))?;
        (job.run)().map_err(|e| format!("ci job `{}` failed: {e}", job.name))?;
        eprintln!("==> ci job {} passed in {:.0?}", job.name, started.elapsed());
        passed += 1;
    }
    eprintln!("==> all {passed} ci jobs passed");
    Ok(())
}

pub fn job(name: &str) -> Result {
    if name == "list" {
        for job in JOBS {
            println!("{:12} {}", job.name, job.about);
        }
        return Ok(());
    }
    let job = JOBS.iter().find(|j| j.name == name).ok_or_else(|| format!("no ci job named `{name}`"))?;
    setup::ensure(job.needs)?;
    (job.run)()
}

fn fmt() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))
}

fn clippy() -> Result {
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

fn host_tests() -> Result {
    run(cargo().args(["test", "--workspace"]))
}

fn tidy() -> Result {
    run(cargo().args(["test", "-p", "xtask", "--", "tidy"]))
}

/// The loom models in `core/tests/loom_*.rs`, in their own target dir (the `--cfg loom` build
/// shares nothing with the normal one).
fn loom() -> Result {
    let target_dir = crate::util::project_root().join("target/loom");
    run(cargo()
        .args(["test", "-p", "doorway-core", "--release", "--test", "loom*"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", target_dir)
        .env("LOOM_MAX_PREEMPTIONS", "3"))
}

/// doorway-core for both no_std targets with no logging, `defmt` and `log`, and with atomics from
/// `portable-atomic` (which brings `door` and `queue::mpsc` to `thumbv6m-none-eabi`).
fn no_std() -> Result {
    let root = crate::util::project_root();
    for target in setup::TARGETS {
        for features in ["", "defmt", "log", "portable-atomic,portable-atomic/critical-section"] {
            let mut cmd = setup::cross_cargo("build", target, &root, "doorway-core")?;
            cmd.arg("--no-default-features").env("RUSTFLAGS", "-D warnings");
            if !features.is_empty() {
                cmd.args(["--features", features]);
            }
            run(&mut cmd)?;
        }
    }
    Ok(())
}

fn fuzz_smoke() -> Result {
    fuzz("decode", 10)
}

/// `cargo xtask fuzz <target> --seconds N`: runs a cargo-fuzz target of `core/fuzz` for N
/// seconds. cargo-fuzz needs nightly compiler flags: the `nightly` toolchain when installed,
/// else the active toolchain with `RUSTC_BOOTSTRAP=1`. The decoder is safe code, so no sanitizer:
/// libFuzzer's coverage, debug assertions and the target's own consistency checks find the bugs.
pub fn fuzz(target: &str, seconds: u64) -> Result {
    setup::ensure(&[Piece::Tool(setup::CARGO_FUZZ)])?;
    let core_dir = crate::util::project_root().join("core");
    let targets = std::fs::read_dir(core_dir.join("fuzz/fuzz_targets"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".rs")).map(str::to_owned))
        .collect::<Vec<_>>();
    if !targets.iter().any(|t| t == target) {
        return Err(format!("no fuzz target `{target}` (have: {})", targets.join(", ")).into());
    }
    let nightly = crate::util::output(std::process::Command::new("rustup").args(["toolchain", "list"]))
        .map(|list| list.lines().any(|l| l.starts_with("nightly")))
        .unwrap_or(false);
    let mut cmd = if nightly {
        let mut cmd = std::process::Command::new("rustup");
        cmd.args(["run", "nightly", "cargo"]);
        cmd
    } else {
        let mut cmd = cargo();
        cmd.env("RUSTC_BOOTSTRAP", "1");
        cmd
    };
    if nightly {
        // The outer `cargo xtask` exported its own toolchain; the nightly child must not inherit it.
        for var in ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER"] {
            cmd.env_remove(var);
        }
    }
    let max_time = format!("-max_total_time={seconds}");
    cmd.current_dir(&core_dir).args([
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        target,
        "--",
        &max_time,
        "-max_len=4096",
    ]);
    run(&mut cmd)
}
