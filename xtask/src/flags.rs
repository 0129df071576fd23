//! Command-line parsing for xtask: arguments become one [`Command`] (rust-analyzer's flags.rs).

/// Usage text printed by `cargo xtask help` and on a parse error.
pub const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                         provision toolchains and tools this machine lacks
  test [--quick]                everything a change must pass (calls setup when needed);
                                --quick skips loom, fuzzing, bench, boards and QEMU
  ci <job>                      one job of `test` (see `cargo xtask ci list`)
  linux-server [-- ARGS]        build the server in release mode and run it (ARGS go to `doorway`)
  lars [--db URL] [--smoke]     lars-dns, lars-reporter and lars-agent on a fresh SQLite demo
                                database (or URL); --smoke checks a query and a clean stop
  lars-interop                  doorway's Lars programs against the original C++ Lars and back
                                (lars/tests/original_programs.rs) in a private network namespace;
                                needs root and LARS_ORIGINAL_SRC, or LARS_ORIGINAL + LARS_MIRROR
  qemu [--board B] [--port P] [--test]
                                run the firmware in QEMU with hostfwd 127.0.0.1:P
  flash <board>                 flash a real board with probe-rs (QEMU boards run in QEMU)
  bench [--quick] [-- ARGS]     doorway against the tokio peer, side by side
  bench-ab BEFORE [AFTER] [--rounds N]
                                two doorway binaries alternated: did a change keep the speed?
  fuzz <target> [--seconds N]   run a cargo-fuzz target of the frame decoder";

/// One xtask command.
#[derive(Debug)]
pub enum Command {
    Help,
    Setup,
    Test { quick: bool },
    Ci { job: String },
    LinuxServer { args: Vec<String> },
    Lars { db: Option<String>, smoke: bool },
    LarsInterop,
    Qemu { board: String, port: u16, test: bool },
    Flash { board: String },
    Bench { quick: bool, args: Vec<String> },
    BenchAb { args: Vec<String> },
    Fuzz { target: String, seconds: u64 },
}

/// The QEMU board used when none is named.
pub const DEFAULT_BOARD: &str = "mps2-an386";
/// The host port QEMU forwards to the firmware when none is named.
pub const DEFAULT_QEMU_PORT: u16 = 7300;

pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let Some(name) = args.next() else { return Ok(Command::Help) };
    let mut rest: Vec<String> = args.collect();
    let passthrough = match rest.iter().position(|a| a == "--") {
        Some(i) => {
            let tail = rest.split_off(i + 1);
            rest.pop();
            tail
        }
        None => Vec::new(),
    };
    let mut rest = rest.into_iter();
    let take_value = |flag: &str, rest: &mut std::vec::IntoIter<String>| {
        rest.next().ok_or_else(|| format!("{flag} needs a value"))
    };
    let command = match name.as_str() {
        "help" | "--help" | "-h" => Command::Help,
        "setup" => Command::Setup,
        "test" => {
            let mut quick = false;
            for a in rest.by_ref() {
                match a.as_str() {
                    "--quick" => quick = true,
                    other => return Err(format!("unknown flag for test: {other}")),
                }
            }
            Command::Test { quick }
        }
        "ci" => Command::Ci { job: rest.next().unwrap_or_else(|| "list".to_string()) },
        "linux-server" => {
            let mut args: Vec<String> = rest.by_ref().collect();
            args.extend(passthrough.iter().cloned());
            Command::LinuxServer { args }
        }
        "lars" => {
            let (mut db, mut smoke) = (None, false);
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--db" => db = Some(take_value("--db", &mut rest)?),
                    "--smoke" => smoke = true,
                    other => return Err(format!("unknown flag for lars: {other}")),
                }
            }
            Command::Lars { db, smoke }
        }
        "lars-interop" => Command::LarsInterop,
        "qemu" => {
            let (mut board, mut port, mut test) = (DEFAULT_BOARD.to_string(), DEFAULT_QEMU_PORT, false);
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--board" => board = take_value("--board", &mut rest)?,
                    "--port" => {
                        port = take_value("--port", &mut rest)?.parse().map_err(|e| format!("--port: {e}"))?
                    }
                    "--test" | "test" => test = true,
                    other => return Err(format!("unknown flag for qemu: {other}")),
                }
            }
            Command::Qemu { board, port, test }
        }
        "flash" => Command::Flash {
            board: rest.next().ok_or("flash needs a board name (e.g. mps2-an386, nucleo-h743zi)")?,
        },
        "bench" => {
            let mut quick = false;
            let mut args = Vec::new();
            for a in rest.by_ref() {
                match a.as_str() {
                    "--quick" => quick = true,
                    _ => args.push(a),
                }
            }
            args.extend(passthrough.iter().cloned());
            Command::Bench { quick, args }
        }
        "bench-ab" => Command::BenchAb { args: rest.by_ref().chain(passthrough.iter().cloned()).collect() },
        "fuzz" => {
            let target = rest.next().unwrap_or_else(|| "decode".to_string());
            let mut seconds = 30;
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "--seconds" => {
                        seconds = take_value("--seconds", &mut rest)?
                            .parse()
                            .map_err(|e| format!("--seconds: {e}"))?
                    }
                    other => return Err(format!("unknown flag for fuzz: {other}")),
                }
            }
            Command::Fuzz { target, seconds }
        }
        other => return Err(format!("unknown command `{other}`")),
    };
    if let Some(extra) = rest.next() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    Ok(command)
}
