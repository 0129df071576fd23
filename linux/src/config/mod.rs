//! Runtime settings: a typed [`Config`], read from command-line flags and a TOML file (flags win
//! over the file, the file over the defaults), validated once at the edge.
//!
//! Strings are parsed here and nowhere else: the rest of the server sees `SocketAddr`s, `Model`s,
//! `Duration`s and integers. Every setting is declared once, in the [`settings!`](crate::settings)
//! block below: its doc comment is both the field's rustdoc and its `--help` text, its name is the
//! flag and the file key, and its default, units and range check are written beside it. How that
//! block becomes the struct, the flags, the file lookup, the merge and the checks is
//! [`settings`]'s story; how a value is parsed (`1s`, `128MiB`, `off`) is [`value`]'s.
//!
//! An invalid setting is a [`ConfigError`] naming the flag; the binary prints it and exits with
//! status 2 (clap does the same for a flag it cannot parse). TOML keys are the flag names in
//! kebab-case or snake_case (`max-connections = 100` or `max_connections = 100`); an unknown key is
//! an error.
//!
//! Durations were once milliseconds only (`--idle-timeout-ms 5000`). Those flags and keys remain as
//! aliases of the new ones (`--idle-timeout 5s`), and a bare number still means milliseconds on
//! either spelling. The idle timeout can be `off` (or 0): [`Config::idle_timeout`] is `None` then.
//!
//! Other binaries (the Lars programs) declare their own settings with the same macro, flatten
//! [`Config`] into them and parse both with [`SettingsArgs`]; see [`settings`].

pub mod settings;
pub mod value;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

#[doc(hidden)]
pub use settings::__private;
pub use settings::{
    at_least, at_most, below, between, when_set, ConfigError, File, Refusal, Settings, SettingsArgs,
};
pub use value::{parse_duration, parse_size, show_duration, Bytes, Choice, Kind, ValueError};

/// How the four roles (monitor, receive, deal, send) are placed on threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// One thread per role per shard (seed 000's picture).
    Pipeline,
    /// All four roles in one loop per shard thread (one loop per thread).
    Fused,
}

impl Model {
    /// The name used on the command line and in the startup line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Pipeline => "pipeline",
            Model::Fused => "fused",
        }
    }
}

/// What a panic in a service hook (a handler, `on_open`, `on_timer`, `on_close`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnPanic {
    /// Close the connection the hook ran for (its owed replies are flushed first), count it as
    /// `handler_panics`, log it, and serve on.
    Close,
    /// Abort the process (for operators who prefer a crash and a restart by their supervisor).
    Abort,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Startup, shutdown and other rare events.
    Info,
    /// Anomalies: refused frames, slow consumers, timeouts.
    Debug,
    /// Routine per-connection events.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

crate::settings! {
    /// Every runtime setting of the server.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Config {
        /// Address to listen on; port 0 lets the OS choose.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7200));
        /// Thread placement: all roles in one loop per shard (fused, measured faster on small
        /// machines: see bench/RESULTS.md) or one thread per role (pipeline).
        model: Model as Choice<Model> = Model::Fused;
        /// Independent shards sharing the port with SO_REUSEPORT.
        shards: usize = 1, check between(1, MAX_SHARDS);
        /// Admitted connections at once; beyond it new ones get ERROR 5. Capped so that admitted
        /// and lingering-refused connections fit in the open-file limit together.
        max_connections: usize = 10_000, check at_least(1);
        /// Largest accepted frame body; a larger header gets ERROR 1.
        max_body: u32 as Bytes<u32> = 65_536, check between(1, MAX_MAX_BODY);
        /// Close a connection with ERROR 4 after this long without a complete frame; `off` (or 0)
        /// never closes an idle connection.
        idle_timeout: Option<Duration> = Some(Duration::from_secs(60)),
            alias "idle-timeout-ms", check when_set(between(MIN_TIMEOUT, MAX_TIMEOUT));
        /// Close a connection with ERROR 6 after its output stays above the high watermark this
        /// long.
        write_timeout: Duration = Duration::from_secs(5),
            alias "write-timeout-ms", check between(MIN_TIMEOUT, MAX_TIMEOUT);
        /// Pending output per connection above which it is no longer read.
        high_watermark: usize as Bytes = 1 << 20, check at_least(1);
        /// Pending output below which reading resumes.
        low_watermark: usize as Bytes = 256 << 10, check below(*high_watermark, "high-watermark");
        /// On SIGTERM/SIGINT, the time allowed to answer and flush before closing everything.
        drain_timeout: Duration = Duration::from_secs(5),
            alias "drain-timeout-ms", check between(MIN_TIMEOUT, MAX_TIMEOUT);
        /// After the server closes a connection, how long it discards input waiting for the
        /// peer's FIN.
        linger: Duration = Duration::from_secs(2), alias "linger-ms", check at_most(MAX_TIMEOUT);
        /// Serve Prometheus text at http://ADDR/metrics (port 0 allowed); `off`: nowhere.
        metrics_addr: Option<SocketAddr> = None;
        /// Log level on stderr.
        log_level: LogLevel as Choice<LogLevel> = LogLevel::Info;
        /// A panic in a service hook: close that connection and serve on (counted as
        /// handler_panics), or abort the process.
        on_panic: OnPanic as Choice<OnPanic> = OnPanic::Close;
        /// Memory for all connections' input and output buffers together; buffers are held to 3/4
        /// of it, the rest is allocator headroom. Past it, new output to the connections holding
        /// more than their share of unsent bytes ends them with ERROR 6; well-behaved connections
        /// are unaffected.
        memory_limit: usize as Bytes = default_memory_limit(),
            check at_least(MIN_MEMORY_LIMIT), shown "a quarter of physical memory";
    }
}

/// The largest `max_body` accepted (16 MiB): a frame must fit a reasonable receive buffer.
pub const MAX_MAX_BODY: u32 = 16 << 20;
/// The most shards.
pub const MAX_SHARDS: usize = 64;
/// The smallest `memory_limit` accepted.
pub const MIN_MEMORY_LIMIT: usize = 1 << 20;
/// The shortest timeout accepted (the server counts time in milliseconds).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest timeout accepted (one day), so tick arithmetic never overflows.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The default `memory_limit`: a quarter of physical memory (1 GiB where it cannot be read).
pub fn default_memory_limit() -> usize {
    crate::sys::mem::physical_bytes().map_or(1 << 30, |b| (b / 4) as usize)
}

/// The `doorway` command line: `--config FILE` and one flag per [`Config`] setting.
#[derive(Debug, Default, Parser)]
#[command(name = "doorway", version, about = "doorway access server: PROTOCOL.md over TCP, demo service")]
pub struct Cli {
    // Every flag of `Config`, and the file.
    #[command(flatten)]
    settings: SettingsArgs<Config>,
}

impl Cli {
    /// Merges defaults, the config file (if any) and the flags, then validates.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.settings.resolve()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("doorway").chain(args.iter().copied())).unwrap()
    }

    /// A file in a per-test temporary directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(test: &str, contents: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!("doorway-config-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("doorway.toml");
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let cfg = cli(&[]).into_config().unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(Cli::default().into_config().unwrap(), Config::default());
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7200");
        assert_eq!((cfg.high_watermark, cfg.low_watermark), (1_048_576, 262_144));
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(60)));
        let secs = Duration::from_secs;
        assert_eq!((cfg.write_timeout, cfg.drain_timeout, cfg.linger), (secs(5), secs(5), secs(2)));
    }

    #[test]
    fn flags_win_over_file() {
        let file =
            TempFile::new("flags", "model = \"fused\"\nshards = 3\nmax_body = 100\nidle-timeout-ms = 5\n");
        let cfg = cli(&["--config", file.path(), "--shards", "2"]).into_config().unwrap();
        assert_eq!((cfg.model, cfg.shards, cfg.max_body), (Model::Fused, 2, 100));
        assert_eq!(cfg.idle_timeout, Some(Duration::from_millis(5)));
        let cfg = cli(&["--config", file.path(), "--idle-timeout", "1s"]).into_config().unwrap();
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(1)), "the flag wins over the file's alias");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        let file = TempFile::new("unknown", "shards = 2\nbogus = 1\n");
        let err = cli(&["--config", file.path()]).into_config().unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "bogus"), "{err}");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn durations_take_units_in_flags_and_in_the_file() {
        let ms = Duration::from_millis;
        let cfg = cli(&[
            "--idle-timeout",
            "1s",
            "--write-timeout",
            "500ms",
            "--drain-timeout",
            "2m",
            "--linger",
            "1h",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            (cfg.idle_timeout, cfg.write_timeout, cfg.drain_timeout, cfg.linger),
            (Some(ms(1_000)), ms(500), ms(120_000), ms(3_600_000))
        );
        // The old flags are aliases, and a bare number still means milliseconds.
        let cfg = cli(&[
            "--idle-timeout-ms",
            "1500",
            "--write-timeout-ms",
            "2s",
            "--drain-timeout-ms",
            "7",
            "--linger-ms",
            "0",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            (cfg.idle_timeout, cfg.write_timeout, cfg.drain_timeout, cfg.linger),
            (Some(ms(1_500)), ms(2_000), ms(7), ms(0))
        );
        let file = TempFile::new(
            "durations",
            "idle-timeout = \"1s\"\nwrite_timeout_ms = 5000\ndrain-timeout = \"2m\"\nlinger = 250\n",
        );
        let cfg = cli(&["--config", file.path()]).into_config().unwrap();
        assert_eq!(
            (cfg.idle_timeout, cfg.write_timeout, cfg.drain_timeout, cfg.linger),
            (Some(ms(1_000)), ms(5_000), ms(120_000), ms(250))
        );
        assert!(Cli::try_parse_from(["doorway", "--idle-timeout", "1 fortnight"]).is_err());
        let bad = TempFile::new("bad-duration", "drain-timeout = \"soon\"\n");
        let err = cli(&["--config", bad.path()]).into_config().unwrap_err();
        assert!(matches!(&err, ConfigError::Value { key, .. } if key == "drain-timeout"), "{err}");
    }

    #[test]
    fn the_idle_timeout_turns_off_with_off_or_zero() {
        for value in ["off", "0", "0s"] {
            let cfg = cli(&["--idle-timeout", value]).into_config().unwrap();
            assert_eq!(cfg.idle_timeout, None, "--idle-timeout {value}");
        }
        assert_eq!(cli(&["--idle-timeout-ms", "0"]).into_config().unwrap().idle_timeout, None);
        let file = TempFile::new("idle-off", "idle_timeout = \"off\"\n");
        assert_eq!(cli(&["--config", file.path()]).into_config().unwrap().idle_timeout, None);
        // The other timeouts cannot be off.
        let err = cli(&["--write-timeout", "0"]).into_config().unwrap_err();
        assert_eq!(err.to_string(), "invalid --write-timeout: must be between 1ms and 24h");
    }

    #[test]
    fn a_setting_given_twice_in_the_file_is_refused() {
        for (test, text) in [
            ("alias", "idle-timeout = \"1s\"\nidle-timeout-ms = 5\n"),
            ("case", "max-body = 1\nmax_body = 2\n"),
        ] {
            let file = TempFile::new(test, text);
            let err = cli(&["--config", file.path()]).into_config().unwrap_err();
            assert!(matches!(err, ConfigError::Twice { .. }), "{test}: {err}");
        }
        assert!(Cli::try_parse_from(["doorway", "--idle-timeout", "1s", "--idle-timeout-ms", "5"]).is_err());
    }

    #[test]
    fn ranges_are_checked_and_name_their_bound() {
        for (args, message) in [
            (&["--shards", "0"][..], "invalid --shards: must be between 1 and 64"),
            (&["--shards", "65"], "invalid --shards: must be between 1 and 64"),
            (&["--max-body", "0"], "invalid --max-body: must be between 1 and 16MiB"),
            (
                &["--low-watermark", "10", "--high-watermark", "10"],
                "invalid --low-watermark: must be below --high-watermark (10)",
            ),
            (&["--idle-timeout", "25h"], "invalid --idle-timeout: must be between 1ms and 24h"),
            (&["--linger", "2d"], ""),
            (&["--max-connections", "0"], "invalid --max-connections: must be at least 1"),
            (&["--memory-limit", "1000"], "invalid --memory-limit: must be at least 1MiB"),
        ] {
            match Cli::try_parse_from(std::iter::once("doorway").chain(args.iter().copied())) {
                Ok(cli) => {
                    let err = cli.into_config().unwrap_err();
                    assert!(matches!(err, ConfigError::Invalid { .. }), "{args:?}: {err}");
                    assert_eq!(err.to_string(), message, "{args:?}");
                }
                // A value the flag's parser refuses (no `d` unit) is clap's error.
                Err(_) => assert!(message.is_empty(), "{args:?} did not parse"),
            }
        }
    }

    #[test]
    fn sizes_and_choices_parse_on_the_command_line() {
        let cfg = cli(&[
            "--memory-limit",
            "64MiB",
            "--on-panic",
            "abort",
            "--max-body",
            "1KiB",
            "--high-watermark",
            "2M",
        ])
        .into_config()
        .unwrap();
        assert_eq!((cfg.memory_limit, cfg.on_panic), (64 << 20, OnPanic::Abort));
        assert_eq!((cfg.max_body, cfg.high_watermark), (1024, 2_000_000));
        assert!(Config::default().memory_limit >= MIN_MEMORY_LIMIT);
        let file = TempFile::new(
            "sizes",
            "memory-limit = \"128MiB\"\nlog-level = \"debug\"\nmodel = \"pipeline\"\n",
        );
        let cfg = cli(&["--config", file.path()]).into_config().unwrap();
        assert_eq!(
            (cfg.memory_limit, cfg.log_level, cfg.model),
            (128 << 20, LogLevel::Debug, Model::Pipeline)
        );
    }

    #[test]
    fn help_shows_every_setting_with_its_default() {
        let cmd = Cli::command();
        let mut n = 0;
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("[default: "), "--{long} has no default in its help: {help}");
            n += 1;
        }
        assert_eq!(n, 16, "--config and the 15 settings of Config");
        let help = Cli::command().render_long_help().to_string();
        for shown in [
            "--idle-timeout <DURATION>",
            "[default: 1m]",
            "[alias: --idle-timeout-ms]",
            "--memory-limit <BYTES>",
            "[default: a quarter of physical memory]",
            "[default: 1MiB]",
            "[default: fused]",
            "[default: off]",
            "[units: ms, s, m (minutes), h; a bare number is milliseconds]",
        ] {
            assert!(help.contains(shown), "--help lacks {shown:?}:\n{help}");
        }
    }
}
