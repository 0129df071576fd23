//! cargo xtask: every project chore behind one alias (matklad/cargo-xtask).
//!
//! `cargo xtask <command>`; each command lives in its own module. Only `std::process::Command`
//! spawns; [`util::run`] prints the command and turns a non-zero exit into an error.

mod bench;
mod bench_ab;
mod ci;
mod flags;
mod json;
mod lars;
mod lars_interop;
mod qemu;
mod server;
mod setup;
mod tidy;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match flags::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        flags::Command::Help => {
            println!("{}", flags::USAGE);
            Ok(())
        }
        flags::Command::Setup => setup::run(),
        flags::Command::Test { quick } => ci::test(quick),
        flags::Command::Ci { job } => ci::job(&job),
        flags::Command::LinuxServer { args } => server::run(&args),
        flags::Command::Lars { db, smoke } => lars::run(db, smoke),
        flags::Command::LarsInterop => lars_interop::run(),
        flags::Command::Qemu { board, port, test } => qemu::run(&board, port, test),
        flags::Command::Flash { board } => qemu::flash(&board),
        flags::Command::Bench { quick, args } => bench::run(quick, &args),
        flags::Command::BenchAb { args } => bench_ab::run(&args),
        flags::Command::Fuzz { target, seconds } => ci::fuzz(&target, seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
