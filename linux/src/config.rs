//! Runtime settings: a typed [`Config`], read from a TOML file and command-line flags (flags win),
//! validated once at the edge.
//!
//! Strings are parsed here and nowhere else: the rest of the server sees `SocketAddr`s, `Model`s and
//! integers. An invalid setting is a [`ConfigError`] naming the setting; the binary prints it and
//! exits with status 2. TOML keys are the flag names without dashes' prefix, in kebab-case or
//! snake_case (`max-connections = 100` or `max_connections = 100`); an unknown key is an error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

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

/// Every runtime setting of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (port 0: the OS picks one).
    pub listen: SocketAddr,
    /// Thread placement.
    pub model: Model,
    /// Independent role sets sharing the port with `SO_REUSEPORT`.
    pub shards: usize,
    /// Admitted connections at once; more are refused with ERROR 5.
    pub max_connections: usize,
    /// Largest accepted frame body in bytes.
    pub max_body: u32,
    /// Close a connection with ERROR 4 after this long without a complete frame.
    pub idle_timeout: Duration,
    /// Close with ERROR 6 after output stays above the high watermark this long.
    pub write_timeout: Duration,
    /// Pending output (bytes) above which a connection is no longer read.
    pub high_watermark: usize,
    /// Pending output (bytes) below which reading resumes.
    pub low_watermark: usize,
    /// On SIGTERM/SIGINT, the time allowed to flush before closing everything.
    pub drain_timeout: Duration,
    /// After the server closes a connection, how long it discards input waiting for the peer's FIN.
    pub linger: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// What a panicking service hook does.
    pub on_panic: OnPanic,
    /// Bytes all connections' input and output buffers may hold together; past it, new output to
    /// the connections holding the most unsent bytes ends them with ERROR 6.
    pub memory_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7200)),
            model: Model::Fused,
            shards: 1,
            max_connections: 10_000,
            max_body: 65_536,
            idle_timeout: Duration::from_millis(60_000),
            write_timeout: Duration::from_millis(5_000),
            high_watermark: 1 << 20,
            low_watermark: 256 << 10,
            drain_timeout: Duration::from_millis(5_000),
            linger: Duration::from_millis(2_000),
            metrics_addr: None,
            log_level: LogLevel::Info,
            on_panic: OnPanic::Close,
            memory_limit: default_memory_limit(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key or a wrongly typed value.
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: toml::de::Error,
    },
    /// A setting is out of range.
    Invalid {
        /// The setting, as a flag name.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "cannot read config {}: {error}", path.display()),
            ConfigError::Parse { path, error } => write!(f, "invalid config {}: {error}", path.display()),
            ConfigError::Invalid { setting, reason } => write!(f, "invalid --{setting}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The `doorway` command line. Every flag overrides the same key of `--config`.
#[derive(Debug, Default, Parser)]
#[command(name = "doorway", version, about = "doorway access server: PROTOCOL.md over TCP, demo service")]
pub struct Cli {
    /// TOML file with any of the settings below (keys as the flag names); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 lets the OS choose [default: 127.0.0.1:7200].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Thread placement: all roles in one loop per shard (fused) or one thread per role
    /// (pipeline) [default: fused, measured faster on small machines: see bench/RESULTS.md].
    #[arg(long, value_enum)]
    pub model: Option<Model>,
    /// Independent shards sharing the port with SO_REUSEPORT [default: 1].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Admitted connections at once; beyond it new ones get ERROR 5. Capped so that admitted and
    /// lingering-refused connections fit in the open-file limit together.
    /// [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest frame body in bytes; a larger header gets ERROR 1 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<u32>,
    /// Close after this long without a complete frame, with ERROR 4 [default: 60000].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Close with ERROR 6 after output stays above the high watermark this long [default: 5000].
    #[arg(long, value_name = "MS")]
    pub write_timeout_ms: Option<u64>,
    /// Pending output per connection above which it is no longer read [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub high_watermark: Option<usize>,
    /// Pending output below which reading resumes [default: 262144].
    #[arg(long, value_name = "BYTES")]
    pub low_watermark: Option<usize>,
    /// On SIGTERM/SIGINT, time allowed to answer and flush before closing [default: 5000].
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// After closing a connection, how long to discard input waiting for the peer [default: 2000].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Serve Prometheus text at http://ADDR/metrics (port 0 allowed) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log level on stderr [default: info].
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// A panic in a service hook: close that connection and serve on (counted as handler_panics),
    /// or abort the process [default: close].
    #[arg(long, value_enum)]
    pub on_panic: Option<OnPanic>,
    /// Memory for all connections' input and output buffers together (suffixes K, M, G, KiB, MiB,
    /// GiB); buffers are held to 3/4 of it, the rest is allocator headroom. Past it, new output to
    /// the connections holding more than their share of unsent bytes ends them with ERROR 6;
    /// well-behaved connections are unaffected [default: a quarter of physical memory].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
}

/// The same settings as they appear in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    model: Option<Model>,
    shards: Option<usize>,
    max_connections: Option<usize>,
    max_body: Option<u32>,
    idle_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    high_watermark: Option<usize>,
    low_watermark: Option<usize>,
    drain_timeout_ms: Option<u64>,
    linger_ms: Option<u64>,
    metrics_addr: Option<SocketAddr>,
    log_level: Option<LogLevel>,
    on_panic: Option<OnPanic>,
    memory_limit: Option<Size>,
}

/// A byte count in a TOML file: an integer or a string with a suffix (`"128MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(usize),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<usize, ConfigError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t).map_err(|_| ConfigError::Invalid {
                setting: "memory-limit",
                reason: "must be a byte count such as 134217728, 128MiB or 1G",
            }),
        }
    }
}

/// Parses a byte count: digits, optionally followed by K, M, G (powers of 1000) or KiB, MiB, GiB
/// (powers of 1024), case-insensitive.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("`{text}` is not a byte count"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("`{text}`: unknown unit (use K, M, G, KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// The default `memory_limit`: a quarter of physical memory (1 GiB where it cannot be read).
pub fn default_memory_limit() -> usize {
    crate::sys::mem::physical_bytes().map_or(1 << 30, |b| (b / 4) as usize)
}

impl FileConfig {
    fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        FileConfig::parse(&text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), error })
    }

    fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        let table: toml::Table = toml::from_str(text)?;
        // Accept snake_case keys too: normalise them to the flags' kebab-case.
        let table: toml::Table = table.into_iter().map(|(k, v)| (k.replace('_', "-"), v)).collect();
        FileConfig::deserialize(toml::Value::Table(table))
    }
}

impl Cli {
    /// Merges defaults, the config file (if any) and the flags, then validates.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let ms = Duration::from_millis;
        let cfg = Config {
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            model: self.model.or(file.model).unwrap_or(d.model),
            shards: self.shards.or(file.shards).unwrap_or(d.shards),
            max_connections: self.max_connections.or(file.max_connections).unwrap_or(d.max_connections),
            max_body: self.max_body.or(file.max_body).unwrap_or(d.max_body),
            idle_timeout: self.idle_timeout_ms.or(file.idle_timeout_ms).map(ms).unwrap_or(d.idle_timeout),
            write_timeout: self.write_timeout_ms.or(file.write_timeout_ms).map(ms).unwrap_or(d.write_timeout),
            high_watermark: self.high_watermark.or(file.high_watermark).unwrap_or(d.high_watermark),
            low_watermark: self.low_watermark.or(file.low_watermark).unwrap_or(d.low_watermark),
            drain_timeout: self.drain_timeout_ms.or(file.drain_timeout_ms).map(ms).unwrap_or(d.drain_timeout),
            linger: self.linger_ms.or(file.linger_ms).map(ms).unwrap_or(d.linger),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            log_level: self.log_level.or(file.log_level).unwrap_or(d.log_level),
            on_panic: self.on_panic.or(file.on_panic).unwrap_or(d.on_panic),
            memory_limit: match (self.memory_limit, &file.memory_limit) {
                (Some(n), _) => n,
                (None, Some(size)) => size.bytes()?,
                (None, None) => d.memory_limit,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The largest `max_body` accepted (16 MiB): a frame must fit a reasonable receive buffer.
pub const MAX_MAX_BODY: u32 = 16 << 20;
/// The most shards.
pub const MAX_SHARDS: usize = 64;
/// The smallest `memory_limit` accepted.
pub const MIN_MEMORY_LIMIT: usize = 1 << 20;
/// The longest timeout accepted (one day), so tick arithmetic never overflows.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

impl Config {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting, reason| Err(ConfigError::Invalid { setting, reason });
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return bad("shards", "must be between 1 and 64");
        }
        if self.max_connections == 0 {
            return bad("max-connections", "must be at least 1");
        }
        if self.max_body == 0 || self.max_body > MAX_MAX_BODY {
            return bad("max-body", "must be between 1 and 16777216");
        }
        for (setting, value) in [
            ("idle-timeout-ms", self.idle_timeout),
            ("write-timeout-ms", self.write_timeout),
            ("drain-timeout-ms", self.drain_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return bad(setting, "must be between 1 and 86400000");
            }
        }
        if self.linger > MAX_TIMEOUT {
            return bad("linger-ms", "must be at most 86400000");
        }
        if self.high_watermark == 0 {
            return bad("high-watermark", "must be at least 1");
        }
        if self.low_watermark >= self.high_watermark {
            return bad("low-watermark", "must be below --high-watermark");
        }
        if self.memory_limit < MIN_MEMORY_LIMIT {
            return bad("memory-limit", "must be at least 1MiB");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("doorway").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_the_contract() {
        let cfg = cli(&[]).into_config().unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7200");
        assert_eq!((cfg.high_watermark, cfg.low_watermark), (1_048_576, 262_144));
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("doorway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        std::fs::write(&path, "model = \"fused\"\nshards = 3\nmax_body = 100\nidle-timeout-ms = 5\n")
            .unwrap();
        let cfg = cli(&["--config", path.to_str().unwrap(), "--shards", "2"]).into_config().unwrap();
        assert_eq!((cfg.model, cfg.shards, cfg.max_body), (Model::Fused, 2, 100));
        assert_eq!(cfg.idle_timeout, Duration::from_millis(5));
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let err = cli(&["--config", path.to_str().unwrap()]).into_config().unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ranges_are_checked() {
        for args in [
            &["--shards", "0"][..],
            &["--max-body", "0"],
            &["--low-watermark", "10", "--high-watermark", "10"],
            &["--idle-timeout-ms", "0"],
            &["--max-connections", "0"],
            &["--memory-limit", "1000"],
        ] {
            let err = cli(args).into_config().unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{args:?}: {err}");
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_suffixes() {
        assert_eq!(parse_size("134217728"), Ok(134_217_728));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("2g"), Ok(2_000_000_000));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        let cli = Cli::try_parse_from(["doorway", "--memory-limit", "64MiB", "--on-panic", "abort"]).unwrap();
        let cfg = cli.into_config().unwrap();
        assert_eq!((cfg.memory_limit, cfg.on_panic), (64 << 20, OnPanic::Abort));
        assert!(Config::default().memory_limit >= MIN_MEMORY_LIMIT);
    }
}
