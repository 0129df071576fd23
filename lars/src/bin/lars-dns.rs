//! `lars-dns`: the Lars route service (thin: parse, configure logging, serve or edit routes).
//!
//! `lars-dns [SETTINGS]` serves; `lars-dns route set MODID CMDID [IP:PORT ...] --db URL` and
//! `lars-dns route list [MODID CMDID] --db URL` edit and print routes (see `doorway_lars::dns` and
//! `doorway_lars::route_cmd`). Prints `lars-dns listening on <addr>` once accepting, drains on
//! SIGTERM/SIGINT and exits 0; an invalid setting or argument exits 2, a database or server
//! failure 1.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use doorway_lars::dns::{DnsServer, DnsSettings};
use doorway_lars::route_cmd;
use doorway_lars::service::default_db;
use doorway_lars::store::{DbUrl, Module};
use doorway_linux::config::{Kind, SettingsArgs};

#[derive(Parser)]
#[command(
    name = "lars-dns",
    version,
    about = "Lars route service: GetRoute answers from memory, pushes on change"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: SettingsArgs<DnsSettings>,
}

#[derive(Subcommand)]
enum Command {
    /// Edit or print routes (RouteData, RouteChange and RouteVersion in one transaction).
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Replace a module's nodes (none: the module has no route).
    Set {
        /// The module's modid.
        modid: i32,
        /// The module's cmdid.
        cmdid: i32,
        /// The nodes, IP:PORT each.
        nodes: Vec<String>,
        /// The route database (sqlite://PATH or mysql://user:pass@host:port/db).
        #[arg(long, value_parser = <DbUrl as Kind>::value_parser(), default_value_t = default_db())]
        db: DbUrl,
    },
    /// Print routes, one `MODID CMDID IP:PORT` line per node.
    List {
        /// Only this module's (with CMDID).
        #[arg(requires = "cmdid")]
        modid: Option<i32>,
        /// The module's cmdid.
        cmdid: Option<i32>,
        /// The route database (sqlite://PATH or mysql://user:pass@host:port/db).
        #[arg(long, value_parser = <DbUrl as Kind>::value_parser(), default_value_t = default_db())]
        db: DbUrl,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Some(Command::Route(RouteCommand::Set { modid, cmdid, nodes, db })) => {
            route_cmd::set(&db, Module { modid, cmdid }, &nodes, &mut out).map(drop)
        }
        Some(Command::Route(RouteCommand::List { modid, cmdid, db })) => {
            let module = modid.zip(cmdid).map(|(modid, cmdid)| Module { modid, cmdid });
            route_cmd::list(&db, module, &mut out).map(drop)
        }
        None => return serve(cli.settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ route_cmd::RouteCmdError::Node(_)) => {
            eprintln!("lars-dns: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("lars-dns: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: SettingsArgs<DnsSettings>) -> ExitCode {
    let settings = match settings.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("lars-dns: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(settings.server.log_level.filter())
        .target(env_logger::Target::Stderr)
        .init();
    let server = match DnsServer::start(&settings, true) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("lars-dns: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "lars-dns listening on {} (db {})", server.local_addr(), settings.db);
    if let Some(m) = server.metrics_addr() {
        let _ = writeln!(out, "lars-dns metrics on http://{m}/metrics");
    }
    let _ = out.flush();
    drop(out);
    match server.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lars-dns: {e}");
            ExitCode::FAILURE
        }
    }
}
