//! Settings declared once: the [`settings!`](crate::settings) macro and the layers it merges.
//!
//! A setting is one line of a `settings!` block: its doc comment (the field's rustdoc and its
//! `--help` text), its name (the field; the flag and the file key are the field in kebab-case), its
//! type and [`Kind`] (how it is parsed and shown), its default, any old names (`alias`), its range
//! (`check`) and, where the default is computed, how `--help` describes it (`shown`). From that the
//! macro generates the struct with public fields, its `Default`, one clap flag per setting (help
//! text ending in `[default: ..]` and the kind's units), the file lookup, the merge and `validate`.
//! Nothing about a setting is written twice, so a setting cannot be a flag and forget to be a key,
//! or have a default in `--help` that differs from the one in the code.
//!
//! Three layers give each setting its value, the first that has one winning:
//!
//! ```text
//!   flags (clap, typed by the kind's parser)    --idle-timeout 1s
//!   file  (--config FILE, a flat TOML table)    idle-timeout = "1s"  |  idle_timeout_ms = 1000
//!   default (the `= expr` of the declaration)   Some(Duration::from_secs(60))
//! ```
//!
//! then `validate` runs every `check` and reports the first refusal as
//! [`ConfigError::Invalid`], naming the flag and the bound it checks, shown in the setting's own
//! units (`invalid --idle-timeout: must be between 1ms and 24h`).
//!
//! The file is flat: keys are the flag names in kebab-case or snake_case, an alias counts as the
//! setting, a key naming no setting is an error ([`ConfigError::UnknownKey`]), and two keys naming
//! the same setting are one too ([`ConfigError::Twice`]). Each setting takes its key out of the
//! table; what is left when every group has taken its own is unknown.
//!
//! Another binary reuses all of this by declaring its own group with `settings!`, flattening
//! [`Config`](super::Config) (or any other group) into it with `#[flatten]` and parsing it with
//! [`SettingsArgs`] (see `linux/tests/settings.rs`):
//!
//! ```
//! use std::path::PathBuf;
//! use std::time::Duration;
//!
//! use clap::Parser;
//! use doorway_linux::config::{between, Settings, SettingsArgs, MAX_TIMEOUT};
//!
//! doorway_linux::settings! {
//!     /// What `lars-agent` reads from its flags and its file.
//!     #[derive(Debug)]
//!     pub struct AgentSettings {
//!         // Every `doorway` flag and key, with a default of its own for `--listen`.
//!         #[flatten]
//!         server: doorway_linux::Config = doorway_linux::Config {
//!             listen: "0.0.0.0:7300".parse().unwrap(),
//!             ..Default::default()
//!         };
//!         /// The database of backends.
//!         db: PathBuf = PathBuf::from("lars.db");
//!         /// How often each backend is probed.
//!         check_interval: Duration = Duration::from_secs(1),
//!             check between(Duration::from_millis(10), MAX_TIMEOUT);
//!     }
//! }
//!
//! #[derive(Parser)]
//! #[command(name = "lars-agent")]
//! struct Cli {
//!     #[command(flatten)]
//!     settings: SettingsArgs<AgentSettings>,
//! }
//!
//! let cli = Cli::try_parse_from(["lars-agent", "--check-interval", "500ms", "--shards", "2"]).unwrap();
//! let settings = cli.settings.resolve().unwrap();
//! assert_eq!(settings.check_interval, Duration::from_millis(500));
//! assert_eq!((settings.server.shards, settings.server.listen.port()), (2, 7300));
//! ```
//!
//! A binary that wants only a few of the server's settings declares those few itself (same kinds,
//! same checks: [`between`], [`MAX_SHARDS`](super::MAX_SHARDS), ...) and builds a
//! [`Config`](super::Config) from them with `..Config::default()`.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::value::{Kind, ValueError};

/// A group of settings, declared with [`settings!`](crate::settings) (which implements this).
pub trait Settings: Default {
    /// Adds one flag per setting (the flattened groups' flags too), showing `defaults` in `--help`.
    fn add_flags(cmd: Command, defaults: &Self) -> Command;

    /// Gives every setting the value of the first layer that has one: a flag in `flags`, a key
    /// (taken out of `file`), else its value in `defaults`. Does not [`validate`](Settings::validate).
    fn resolve(flags: &mut ArgMatches, file: &mut File, defaults: Self) -> Result<Self, ConfigError>;

    /// Checks every setting's range.
    fn validate(&self) -> Result<(), ConfigError>;
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
    /// The config file is not valid TOML.
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: toml::de::Error,
    },
    /// The config file has a key that names no setting.
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },
    /// The config file sets one setting twice, under two spellings or a name and an alias.
    Twice {
        /// The file.
        path: PathBuf,
        /// The two keys as written.
        keys: [String; 2],
    },
    /// A value in the config file cannot be read (flags are checked by clap).
    Value {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// What is wrong with the value.
        error: ValueError,
    },
    /// A setting is out of range.
    Invalid {
        /// The setting, as a flag name.
        setting: &'static str,
        /// What is wrong with it.
        reason: Refusal,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "cannot read config {}: {error}", path.display()),
            ConfigError::Parse { path, error } => write!(f, "invalid config {}: {error}", path.display()),
            ConfigError::UnknownKey { path, key } => {
                write!(
                    f,
                    "invalid config {}: unknown key `{key}` (keys are the flags' names)",
                    path.display()
                )
            }
            ConfigError::Twice { path, keys: [a, b] } => {
                write!(f, "invalid config {}: `{a}` and `{b}` are the same setting", path.display())
            }
            ConfigError::Value { path, key, error } => {
                write!(f, "invalid config {}: `{key}`: {error}", path.display())
            }
            ConfigError::Invalid { setting, reason } => write!(f, "invalid --{setting}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            ConfigError::Parse { error, .. } => Some(error),
            ConfigError::Value { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why a `check` refused a value. `T` is the setting's value; [`ConfigError`] carries the bounds
/// as the setting's kind shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<T = String> {
    /// Outside `min..=max` (a missing bound is unbounded).
    OutOfRange {
        /// The smallest value accepted.
        min: Option<T>,
        /// The largest value accepted.
        max: Option<T>,
    },
    /// Not below another setting's value.
    NotBelow {
        /// The other setting, as a flag name.
        other: &'static str,
        /// Its value.
        value: T,
    },
}

impl<T> Refusal<T> {
    /// The same refusal with its values converted.
    pub fn map<U>(self, f: impl Fn(T) -> U) -> Refusal<U> {
        match self {
            Refusal::OutOfRange { min, max } => Refusal::OutOfRange { min: min.map(&f), max: max.map(&f) },
            Refusal::NotBelow { other, value } => Refusal::NotBelow { other, value: f(value) },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OutOfRange { min: Some(min), max: Some(max) } => {
                write!(f, "must be between {min} and {max}")
            }
            Refusal::OutOfRange { min: Some(min), max: None } => write!(f, "must be at least {min}"),
            Refusal::OutOfRange { min: None, max: Some(max) } => write!(f, "must be at most {max}"),
            Refusal::OutOfRange { min: None, max: None } => write!(f, "is out of range"),
            Refusal::NotBelow { other, value } => write!(f, "must be below --{other} ({value})"),
        }
    }
}

/// A `check`: accepts `min..=max`.
pub fn between<T: PartialOrd + Clone>(min: T, max: T) -> impl Fn(&T) -> Result<(), Refusal<T>> {
    move |v| match *v >= min && *v <= max {
        true => Ok(()),
        false => Err(Refusal::OutOfRange { min: Some(min.clone()), max: Some(max.clone()) }),
    }
}

/// A `check`: accepts `min..`.
pub fn at_least<T: PartialOrd + Clone>(min: T) -> impl Fn(&T) -> Result<(), Refusal<T>> {
    move |v| match *v >= min {
        true => Ok(()),
        false => Err(Refusal::OutOfRange { min: Some(min.clone()), max: None }),
    }
}

/// A `check`: accepts `..=max`.
pub fn at_most<T: PartialOrd + Clone>(max: T) -> impl Fn(&T) -> Result<(), Refusal<T>> {
    move |v| match *v <= max {
        true => Ok(()),
        false => Err(Refusal::OutOfRange { min: None, max: Some(max.clone()) }),
    }
}

/// A `check`: accepts values below `value`, the value of the setting `other` (a flag name).
pub fn below<T: PartialOrd + Clone>(value: T, other: &'static str) -> impl Fn(&T) -> Result<(), Refusal<T>> {
    move |v| match *v < value {
        true => Ok(()),
        false => Err(Refusal::NotBelow { other, value: value.clone() }),
    }
}

/// A `check` of an optional setting: `None` (off) passes, `Some(v)` must pass `check`.
pub fn when_set<T: Clone>(
    check: impl Fn(&T) -> Result<(), Refusal<T>>,
) -> impl Fn(&Option<T>) -> Result<(), Refusal<Option<T>>> {
    move |v| match v {
        None => Ok(()),
        Some(v) => check(v).map_err(|r| r.map(Some)),
    }
}

/// The settings file of one run: the entries of a flat TOML table, each taken out by the setting
/// it names; what is left over is unknown.
#[derive(Debug, Default)]
pub struct File {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// The key as written.
    key: String,
    /// The key in kebab-case.
    name: String,
    value: toml::Value,
}

impl File {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        File::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<File, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), error })?;
        let entries =
            table.into_iter().map(|(key, value)| Entry { name: key.replace('_', "-"), key, value }).collect();
        Ok(File { path: path.to_path_buf(), entries })
    }

    /// Takes the entry for the setting `name` (or one of its `aliases`) out of the file and reads
    /// its value as a `K`.
    pub fn take<K: Kind>(&mut self, name: &str, aliases: &[&str]) -> Result<Option<K::Value>, ConfigError> {
        let (mine, rest) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition::<Vec<Entry>, _>(|e| e.name == name || aliases.contains(&e.name.as_str()));
        self.entries = rest;
        let mut mine = mine.into_iter();
        let Some(entry) = mine.next() else { return Ok(None) };
        if let Some(second) = mine.next() {
            return Err(ConfigError::Twice { path: self.path.clone(), keys: [entry.key, second.key] });
        }
        K::from_toml(&entry.value).map(Some).map_err(|error| ConfigError::Value {
            path: self.path.clone(),
            key: entry.key,
            error,
        })
    }

    /// Refuses the file if an entry is left that no setting took.
    pub fn finish(self) -> Result<(), ConfigError> {
        match self.entries.into_iter().next() {
            Some(entry) => Err(ConfigError::UnknownKey { path: self.path, key: entry.key }),
            None => Ok(()),
        }
    }
}

/// The flag naming the settings file.
const CONFIG: &str = "config";

/// The command line of a settings group `S`: `--config FILE` and one flag per setting. Flatten it
/// into a binary's `clap::Parser` (`#[command(flatten)]`) and call [`SettingsArgs::resolve`].
pub struct SettingsArgs<S> {
    config: Option<PathBuf>,
    flags: ArgMatches,
    settings: PhantomData<fn() -> S>,
}

impl<S: Settings> SettingsArgs<S> {
    /// The file given with `--config`, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Merges flags over the file over the defaults, refuses unknown file keys, then validates.
    pub fn resolve(self) -> Result<S, ConfigError> {
        let mut file = match &self.config {
            Some(path) => File::load(path)?,
            None => File::default(),
        };
        let mut flags = self.flags;
        let settings = S::resolve(&mut flags, &mut file, S::default())?;
        file.finish()?;
        settings.validate()?;
        Ok(settings)
    }
}

impl<S> Default for SettingsArgs<S> {
    /// No flags and no file: every setting at its default.
    fn default() -> Self {
        SettingsArgs { config: None, flags: ArgMatches::default(), settings: PhantomData }
    }
}

impl<S> fmt::Debug for SettingsArgs<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsArgs").field("config", &self.config).field("flags", &self.flags).finish()
    }
}

impl<S: Settings> clap::Args for SettingsArgs<S> {
    fn augment_args(cmd: Command) -> Command {
        let cmd = cmd.arg(
            Arg::new(CONFIG)
                .long(CONFIG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .action(ArgAction::Set)
                .help(
                    "TOML file with any of the settings below, each under its flag's name (max-body = 100 or \
                     max_body = 100; durations and sizes as strings: idle-timeout = \"30s\"); flags override \
                     it [default: none]",
                ),
        );
        S::add_flags(cmd, &S::default())
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<S: Settings> clap::FromArgMatches for SettingsArgs<S> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let config = matches.try_remove_one::<PathBuf>(CONFIG).ok().flatten();
        Ok(SettingsArgs { config, flags: matches.clone(), settings: PhantomData })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// What the code `settings!` generates calls; not an API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use clap::{ArgMatches, Command};

    /// `idle_timeout` → `idle-timeout` (or `IDLE-TIMEOUT`), at compile time so names are `'static`.
    pub const fn rename<const N: usize>(field: &str, upper: bool) -> [u8; N] {
        let bytes = field.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = match bytes[i] {
                b'_' => b'-',
                b if upper => b.to_ascii_uppercase(),
                b => b,
            };
            i += 1;
        }
        out
    }

    /// The flag of one setting.
    pub fn flag<K: Kind>(
        name: &'static str,
        upper_name: &'static str,
        aliases: &'static [&'static str],
        doc: &[&str],
        shown: Option<&str>,
        default: &K::Value,
    ) -> Arg {
        let mut help = String::new();
        for line in doc.iter().map(|l| l.trim()) {
            match (line.is_empty(), help.is_empty() || help.ends_with('\n')) {
                (true, _) => help.push_str("\n\n"),
                (false, true) => help.push_str(line),
                (false, false) => {
                    help.push(' ');
                    help.push_str(line);
                }
            }
        }
        help.retain(|c| c != '`');
        let default = shown.map_or_else(|| K::show(default), str::to_string);
        help.push_str(&format!(" [default: {default}]"));
        if let Some(units) = K::UNITS {
            help.push_str(&format!(" [units: {units}]"));
        }
        Arg::new(name)
            .long(name)
            .visible_aliases(aliases.iter().copied())
            .value_name(K::VALUE_NAME.unwrap_or(upper_name))
            .value_parser(K::value_parser())
            .action(ArgAction::Set)
            .help(help)
    }

    /// One setting's value: its flag, else its file key, else `default`.
    pub fn layer<K: Kind>(
        flags: &mut ArgMatches,
        file: &mut File,
        name: &'static str,
        aliases: &[&str],
        default: K::Value,
    ) -> Result<K::Value, ConfigError> {
        // The file's key is taken even when the flag wins, so it is never reported as unknown.
        let from_file = file.take::<K>(name, aliases)?;
        let from_flag = match flags.try_remove_one::<K::Value>(name) {
            Ok(value) => value,
            // No such flag in these matches (`SettingsArgs::default()`, or a binary without it).
            Err(clap::parser::MatchesError::UnknownArgument { .. }) => None,
            Err(e) => panic!("the flag --{name} holds another type than its setting: {e}"),
        };
        Ok(from_flag.or(from_file).unwrap_or(default))
    }

    /// Runs one setting's `check`, showing the bounds in the setting's units.
    pub fn check<K: Kind>(
        setting: &'static str,
        value: &K::Value,
        check: impl Fn(&K::Value) -> Result<(), Refusal<K::Value>>,
    ) -> Result<(), ConfigError> {
        check(value).map_err(|reason| ConfigError::Invalid { setting, reason: reason.map(|v| K::show(&v)) })
    }
}

/// Declares a group of settings once; see the [`config::settings`](crate::config::settings) docs.
///
/// ```text
/// settings! {
///     /// docs of the struct
///     #[derive(...)]
///     pub struct Name {
///         #[flatten]
///         group: OtherSettings;                       // or `= OtherSettings { .. }` for own defaults
///         /// The help text (the field's docs too).
///         field: Type [as Kind] = default
///             [, alias "old-name"]... [, check expr] [, shown "how --help shows the default"];
///     }
/// }
/// ```
///
/// A `check` expression sees every field of the struct by reference, by name, so a setting can be
/// checked against another (`check below(*high_watermark, "high-watermark")`).
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Name:ident {
            $(
                #[flatten]
                $group:ident : $Group:ty $(= $group_default:expr)? ;
            )*
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty $(as $kind:ty)? = $default:expr
                    $(, alias $alias:literal)*
                    $(, check $check:expr)?
                    $(, shown $shown:literal)?
                ;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis struct $Name {
            $(
                #[doc = concat!(
                    "The [`", stringify!($Group), "`] settings, flattened: their flags and file keys are these."
                )]
                pub $group: $Group,
            )*
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
        }

        impl ::core::default::Default for $Name {
            fn default() -> Self {
                $Name {
                    $( $group: $crate::__settings_or_default!($($group_default)?), )*
                    $( $field: $default, )*
                }
            }
        }

        impl $Name {
            /// Checks every setting's range (and those of the groups flattened in).
            pub fn validate(&self) -> ::core::result::Result<(), $crate::config::ConfigError> {
                #[allow(unused_variables)]
                let $Name { $($group,)* $($field,)* } = self;
                $( <$Group as $crate::config::Settings>::validate($group)?; )*
                $( $crate::__settings_check!($field, [$ty $(, $kind)?] $(, $check)?); )*
                ::core::result::Result::Ok(())
            }
        }

        impl $crate::config::Settings for $Name {
            fn add_flags(
                cmd: $crate::config::__private::Command,
                defaults: &Self,
            ) -> $crate::config::__private::Command {
                $( let cmd = <$Group as $crate::config::Settings>::add_flags(cmd, &defaults.$group); )*
                $(
                    let cmd = cmd.arg($crate::config::__private::flag::<$crate::__settings_kind!($ty $(, $kind)?)>(
                        $crate::__settings_name!($field, false),
                        $crate::__settings_name!($field, true),
                        &[$($alias),*],
                        &[$($doc),+],
                        $crate::__settings_shown!($($shown)?),
                        &defaults.$field,
                    ));
                )*
                cmd
            }

            fn resolve(
                flags: &mut $crate::config::__private::ArgMatches,
                file: &mut $crate::config::File,
                defaults: Self,
            ) -> ::core::result::Result<Self, $crate::config::ConfigError> {
                let $Name { $($group,)* $($field,)* } = defaults;
                ::core::result::Result::Ok($Name {
                    $( $group: <$Group as $crate::config::Settings>::resolve(flags, file, $group)?, )*
                    $(
                        $field: $crate::config::__private::layer::<$crate::__settings_kind!($ty $(, $kind)?)>(
                            flags,
                            file,
                            $crate::__settings_name!($field, false),
                            &[$($alias),*],
                            $field,
                        )?,
                    )*
                })
            }

            fn validate(&self) -> ::core::result::Result<(), $crate::config::ConfigError> {
                $Name::validate(self)
            }
        }
    };
}

/// The kind of a setting: the one named with `as`, else its type.
#[doc(hidden)]
#[macro_export]
macro_rules! __settings_kind {
    ($ty:ty) => {
        $ty
    };
    ($ty:ty, $kind:ty) => {
        $kind
    };
}

/// Runs a setting's `check`, if it has one, returning its refusal from the enclosing `validate`.
#[doc(hidden)]
#[macro_export]
macro_rules! __settings_check {
    ($field:ident, [$($kind:tt)*]) => {};
    ($field:ident, [$($kind:tt)*], $check:expr) => {
        $crate::config::__private::check::<$crate::__settings_kind!($($kind)*)>(
            $crate::__settings_name!($field, false),
            $field,
            $check,
        )?
    };
}

/// A setting's flag name (`idle-timeout`) or value name (`IDLE-TIMEOUT`), as a `&'static str`.
#[doc(hidden)]
#[macro_export]
macro_rules! __settings_name {
    ($field:ident, $upper:literal) => {{
        const BYTES: [u8; stringify!($field).len()] =
            $crate::config::__private::rename(stringify!($field), $upper);
        const NAME: &str = match ::core::str::from_utf8(&BYTES) {
            ::core::result::Result::Ok(name) => name,
            ::core::result::Result::Err(_) => panic!("a setting's name is ASCII"),
        };
        NAME
    }};
}

/// How `--help` shows a default: as written, or by the kind.
#[doc(hidden)]
#[macro_export]
macro_rules! __settings_shown {
    () => {
        ::core::option::Option::None
    };
    ($shown:literal) => {
        ::core::option::Option::Some($shown)
    };
}

/// A flattened group's default: as written, or the group's `Default`.
#[doc(hidden)]
#[macro_export]
macro_rules! __settings_or_default {
    () => {
        ::core::default::Default::default()
    };
    ($default:expr) => {
        $default
    };
}
