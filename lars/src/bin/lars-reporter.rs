//! `lars-reporter`: receives Lars agents' call statistics and writes them to the database (thin:
//! parse, configure logging, serve; see `doorway_lars::reporter`).
//!
//! Prints `lars-reporter listening on <addr>` once accepting. On SIGTERM/SIGINT it reads what its
//! sockets hold, writes every queued row, prints `lars-reporter stopped: R reports, W rows
//! written` and exits 0 (1 if rows had to be given up). An invalid setting exits 2.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use doorway_lars::reporter::{ReporterServer, ReporterSettings};
use doorway_linux::config::SettingsArgs;

#[derive(Parser)]
#[command(
    name = "lars-reporter",
    version,
    about = "Lars reporter: agents' call statistics into ServerCallStatus"
)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs<ReporterSettings>,
}

fn main() -> ExitCode {
    let settings = match Cli::parse().settings.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("lars-reporter: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(settings.server.log_level.filter())
        .target(env_logger::Target::Stderr)
        .init();
    let server = match ReporterServer::start(&settings, true) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("lars-reporter: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "lars-reporter listening on {} (db {}, {} writers)",
        server.local_addr(),
        settings.db,
        settings.writers
    );
    if let Some(m) = server.metrics_addr() {
        let _ = writeln!(out, "lars-reporter metrics on http://{m}/metrics");
    }
    let _ = out.flush();
    drop(out);
    match server.wait() {
        Ok(totals) => {
            println!(
                "lars-reporter stopped: {} reports, {} rows written",
                totals.reports, totals.rows_written
            );
            if totals.rows_lost > 0 {
                eprintln!("lars-reporter: {} rows given up: the database stayed away", totals.rows_lost);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lars-reporter: {e}");
            ExitCode::FAILURE
        }
    }
}
