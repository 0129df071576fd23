//! Settings as a service author and an operator meet them beyond `doorway`'s own flags:
//!
//! - another binary (a Lars program) declares its own settings with `doorway_linux::settings!`,
//!   flattens the server's `Config` into them, and reads both from one command line and one TOML
//!   file with the same rules as `doorway` (flags over file over defaults, unknown keys refused);
//! - `idle_timeout: None` (`--idle-timeout off`) keeps a silent connection open, over a real socket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use doorway_core::demo::kind::ECHO;
use doorway_core::demo::Demo;
use doorway_core::frame::ErrorCode;
use doorway_linux::config::{between, ConfigError, SettingsArgs, MAX_TIMEOUT};
use doorway_linux::{Config, Model, Running, Server};
use doorway_testkit::client::{Frame, RecvError};
use doorway_testkit::Client;

const T: Duration = Duration::from_secs(5);

doorway_linux::settings! {
    /// What a `lars-reporter`-like program reads: the server's settings and two of its own.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ReporterSettings {
        #[flatten]
        server: Config;
        /// The database the reports are written to.
        db: PathBuf = PathBuf::from("lars.db");
        /// How often the backends are checked.
        check_interval: Duration = Duration::from_secs(1),
            check between(Duration::from_millis(10), MAX_TIMEOUT);
    }
}

#[derive(Debug, Parser)]
#[command(name = "lars-reporter")]
struct ReporterCli {
    #[command(flatten)]
    settings: SettingsArgs<ReporterSettings>,
}

fn reporter(args: &[&str]) -> Result<ReporterSettings, ConfigError> {
    let cli = ReporterCli::try_parse_from(std::iter::once("lars-reporter").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    cli.settings.resolve()
}

/// A file in a per-test temporary directory.
fn temp_file(test: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("doorway-settings-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lars.toml");
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn another_binary_reads_its_own_settings_beside_the_servers_from_flags_and_one_file() {
    let path = temp_file(
        "reporter",
        "# lars-reporter settings\n\
         listen = \"127.0.0.1:0\"\n\
         shards = 3\n\
         idle-timeout-ms = 30000\n\
         db = \"/var/lib/lars/reports.db\"\n\
         check_interval = \"2s\"\n",
    );
    let file = path.to_str().unwrap();

    // The file alone: the server's keys and the program's own, in either spelling.
    let s = reporter(&["--config", file]).unwrap();
    assert_eq!((s.server.listen.port(), s.server.shards), (0, 3));
    assert_eq!(s.server.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.db, PathBuf::from("/var/lib/lars/reports.db"));
    assert_eq!(s.check_interval, Duration::from_secs(2));
    assert_eq!(s.server.model, Config::default().model, "a setting in neither layer keeps its default");

    // Flags win over the file, for both groups.
    let s =
        reporter(&["--config", file, "--check-interval", "250ms", "--shards", "2", "--model", "pipeline"])
            .unwrap();
    assert_eq!(
        (s.check_interval, s.server.shards, s.server.model),
        (Duration::from_millis(250), 2, Model::Pipeline)
    );
    assert_eq!(s.db, PathBuf::from("/var/lib/lars/reports.db"));

    // No flags, no file: every default.
    assert_eq!(reporter(&[]).unwrap(), ReporterSettings::default());

    // The same rules: the program's own checks, the server's checks, unknown keys.
    let err = reporter(&["--check-interval", "1ms"]).unwrap_err();
    assert_eq!(err.to_string(), "invalid --check-interval: must be between 10ms and 24h");
    let err = reporter(&["--shards", "0"]).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { setting: "shards", .. }), "{err}");
    let unknown = temp_file("reporter-unknown", "db = \"x.db\"\ncheck-intervall = \"1s\"\n");
    let err = reporter(&["--config", unknown.to_str().unwrap()]).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "check-intervall"), "{err}");

    // One --help documents both groups, with defaults.
    let help = ReporterCli::command().render_long_help().to_string();
    for shown in [
        "--db <PATH>",
        "[default: lars.db]",
        "--check-interval <DURATION>",
        "[default: 1s]",
        "--idle-timeout",
    ] {
        assert!(help.contains(shown), "lars-reporter --help lacks {shown:?}:\n{help}");
    }
    for p in [path, unknown] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

fn start(idle_timeout: Option<Duration>) -> Running {
    let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), idle_timeout, ..Config::default() };
    Server::builder().config(cfg).start(Demo).unwrap()
}

/// With the idle timeout off, a connection that sends nothing is never closed for it.
///
/// The issue asks that such a connection still answer after twice the default timeout (60 s), too
/// long for the suite. So this runs two servers side by side: one with a 300 ms idle timeout, where
/// a silent client is closed with ERROR 4 (the comparison: the timeout does work at that scale), and
/// one with the idle timeout off, where the same silent client still answers an ECHO (kind 64)
/// after twice those 300 ms.
#[test]
fn a_silent_connection_stays_open_with_the_idle_timeout_off() {
    const IDLE: Duration = Duration::from_millis(300);
    let (with_timeout, off) = (start(Some(IDLE)), start(None));
    let mut timed = Client::connect(with_timeout.local_addr(), T).unwrap();
    let mut silent = Client::connect(off.local_addr(), T).unwrap();
    let started = Instant::now();

    // The comparison: ERROR 4, then the close.
    let f = timed.recv(T).unwrap_or_else(|e| panic!("no ERROR 4 from a 300 ms idle timeout: {e}"));
    assert_eq!(f.error().map(|(code, _)| code), Some(ErrorCode::IdleTimeout as u16), "{f:?}");
    assert!(matches!(timed.recv(T), Err(RecvError::Closed { .. })), "the timed-out connection stays open");
    assert!(started.elapsed() >= IDLE, "closed after {:?}, before the idle timeout", started.elapsed());

    // The off server: nothing arrived in all that time, and nothing arrives until 2 x 300 ms.
    let rest = (2 * IDLE).saturating_sub(started.elapsed());
    match silent.recv(rest) {
        Err(RecvError::Timeout { buffered: 0 }) => {}
        other => panic!("with the idle timeout off a silent connection got {other:?}"),
    }
    assert!(started.elapsed() >= 2 * IDLE);
    let reply = silent.request(ECHO, 7, b"still here", T).unwrap();
    assert_eq!(reply, Frame::new(ECHO, 7, b"still here"));

    drop((timed, silent));
    for server in [with_timeout, off] {
        server.stop();
        server.wait().unwrap();
    }
}
