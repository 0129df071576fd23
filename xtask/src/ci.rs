//! `cargo xtask test` and `cargo xtask ci <job>`: the jobs a change must pass.
//!
//! The matrix is data ([`JOBS`]), not a script. `test` runs every job in order and stops at the
//! first failure; `ci <job>` runs one.

use crate::util::{cargo, run, Result};

/// One CI job: a name and the function that runs it.
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn() -> Result,
}

/// Every job, in the order `test` runs them (cheap first).
pub const JOBS: &[Job] = &[
    Job { name: "fmt", about: "cargo fmt --check", run: fmt },
    Job { name: "clippy", about: "clippy, warnings denied", run: clippy },
    Job { name: "host-tests", about: "all host tests (unit, property, integration)", run: host_tests },
    Job {
        name: "bench-quick",
        about: "cargo xtask bench --quick (harness check, no thresholds)",
        run: crate::bench::quick,
    },
    Job {
        name: "boards",
        about: "build every board's firmware (real boards compile only)",
        run: crate::qemu::build_all,
    },
    Job {
        name: "qemu",
        about: "conformance suite against the mps2-an386 firmware in QEMU",
        run: crate::qemu::ci_test,
    },
];

pub fn test(quick: bool) -> Result {
    let _ = quick;
    crate::setup::ensure()?;
    for job in JOBS {
        eprintln!("==> ci job {}: {}", job.name, job.about);
        (job.run)().map_err(|e| format!("ci job `{}` failed: {e}", job.name))?;
    }
    eprintln!("==> all {} ci jobs passed", JOBS.len());
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
    if job.name != "fmt" {
        crate::setup::ensure()?;
    }
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

pub fn fuzz(target: &str, seconds: u64) -> Result {
    let _ = (target, seconds);
    Err("fuzz: not wired yet".into())
}
