//! `doorway-conformance`: runs the protocol conformance suite against a server at an address.
//!
//! The same cases the Linux integration tests run, for any target reachable over TCP (the QEMU
//! firmware through `hostfwd`, a server on another machine, a new implementation). The flags
//! declare the target's profile so that every case stays inside its limits. Exit status: 0 when
//! every selected case passed, 1 when one failed, 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use doorway_testkit::suite::{run_suite, Target, CASES};

const USAGE: &str = "\
usage: doorway-conformance --addr IP:PORT [options]

Runs the docs/PROTOCOL.md conformance suite against the server at IP:PORT.

options:
  --addr IP:PORT            the server (required)
  --max-body N              the server's max_body (default 65536)
  --idle-timeout-ms MS      the server's idle timeout; enables the idle case (keep it short)
  --max-connections N       the server's max_connections; enables the SERVER_FULL case
  --full-may-close          a refused connection may be closed without ERROR 5
  --concurrent N            connections the suite may hold at once (default 16)
  --timeout-ms MS           longest wait for an expected reply (default 5000)
  --settle-ms MS            pause between cases (default 0)
  --only NAME               run only this case (repeatable)
  --skip NAME               skip this case (repeatable)
  --list                    list the cases and exit
  -h, --help                this text
";

fn parse(args: &[String]) -> Result<Option<Target>, String> {
    let mut target = Target::new(([127, 0, 0, 1], 0).into());
    let mut have_addr = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--list" => {
                for case in CASES {
                    println!("{:<24} {}", case.name, case.rule);
                }
                return Ok(None);
            }
            "--addr" => {
                let v = value()?;
                target.addr = v.parse().map_err(|_| format!("--addr: {v:?} is not IP:PORT"))?;
                have_addr = true;
            }
            "--max-body" => {
                target.max_body =
                    u32::try_from(number(value()?)?).map_err(|_| "--max-body too large".to_string())?
            }
            "--idle-timeout-ms" => target.idle_timeout = Some(Duration::from_millis(number(value()?)?)),
            "--max-connections" => target.max_connections = Some(number(value()?)? as usize),
            "--full-may-close" => target.full_may_close_silently = true,
            "--concurrent" => target.max_concurrent = (number(value()?)? as usize).max(1),
            "--timeout-ms" => target.timeout = Duration::from_millis(number(value()?)?),
            "--settle-ms" => target.settle = Duration::from_millis(number(value()?)?),
            "--only" | "--skip" => {
                let name = value()?;
                if !CASES.iter().any(|c| c.name == name) {
                    return Err(format!("{flag}: no case named {name:?} (see --list)"));
                }
                if flag == "--only" { &mut target.only } else { &mut target.skip }.push(name);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !have_addr {
        return Err("--addr is required".into());
    }
    Ok(Some(target))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = match parse(&args) {
        Ok(Some(target)) => target,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("doorway-conformance: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = run_suite(&target);
    println!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
