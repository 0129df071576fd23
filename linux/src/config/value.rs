//! Setting values: how one kind of value is read from a flag or a TOML file and shown in `--help`.
//!
//! A [`Kind`] is the one parser a setting's value goes through, wherever it comes from. The flag
//! text `--idle-timeout 1s` and the file entry `idle-timeout = "1s"` are the same string to it, and
//! a TOML integer (`idle-timeout-ms = 5000`) is read as its digits, so a file can never accept what
//! the command line refuses or the other way round. The same kind also prints the default in
//! `--help` (`[default: 60s]`) and the bounds of a range check (`must be between 1ms and 24h`), so a
//! value is written the same way in all three places.
//!
//! Most field types are their own kind (numbers, addresses, paths, [`Duration`], `Option<K>`). Where
//! one Rust type carries different units the kind is named beside the type: a byte count is a
//! `usize` read as [`Bytes`] (`128MiB`), an enum is read through clap's `ValueEnum` as [`Choice`].
//!
//! Units:
//!
//! - durations: digits with `ms`, `s`, `m` or `h`; a bare number is milliseconds (every duration
//!   setting was a `-ms` flag once, and `--idle-timeout-ms 5000` keeps meaning 5 s);
//! - byte counts: digits with `K`, `M`, `G` (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of
//!   1024), case-insensitive; bare digits are bytes;
//! - `Option<K>`: `off`, or anything `K` reads (a value `K` calls "off", such as a zero duration,
//!   is `None` too).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{EnumValueParser, ValueParser};

/// A value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The text as given (a TOML value as TOML).
    pub text: String,
    /// What was expected instead, e.g. "a duration such as 500ms, 1s, 2m or 1h".
    pub expected: Cow<'static, str>,
}

impl ValueError {
    fn new(text: &str, expected: impl Into<Cow<'static, str>>) -> ValueError {
        ValueError { text: text.to_string(), expected: expected.into() }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not {}", self.text, self.expected)
    }
}

impl std::error::Error for ValueError {}

/// How one kind of setting value is parsed and shown. See the module docs.
pub trait Kind: 'static {
    /// The value a setting of this kind holds.
    type Value: Clone + Send + Sync + 'static;
    /// How `--help` names the value (`N`, `BYTES`, `DURATION`); `None`: the flag's name.
    const VALUE_NAME: Option<&'static str>;
    /// The units `--help` lists after the default, if the value has any.
    const UNITS: Option<&'static str> = None;

    /// Reads a value from a flag's text (or a TOML string or integer's text).
    fn parse(text: &str) -> Result<Self::Value, ValueError>;

    /// Writes a value the way [`Kind::parse`] reads it.
    fn show(value: &Self::Value) -> String;

    /// Whether `value` means "off" when the setting is an `Option` (a zero duration does).
    fn is_off(value: &Self::Value) -> bool {
        let _ = value;
        false
    }

    /// The clap parser for the flag: [`Kind::parse`], unless clap knows better (enums).
    fn value_parser() -> ValueParser {
        ValueParser::new(Self::parse)
    }

    /// Reads a value from a TOML file: strings, integers and booleans as their text.
    fn from_toml(value: &toml::Value) -> Result<Self::Value, ValueError> {
        match value {
            toml::Value::String(text) => Self::parse(text),
            toml::Value::Integer(n) => Self::parse(&n.to_string()),
            toml::Value::Boolean(b) => Self::parse(&b.to_string()),
            other => Err(ValueError::new(&other.to_string(), "a string or a number")),
        }
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Kind for $t {
            type Value = $t;
            const VALUE_NAME: Option<&'static str> = Some("N");

            fn parse(text: &str) -> Result<$t, ValueError> {
                text.trim().parse().map_err(|_| ValueError::new(text, format!("a whole number from 0 to {}", <$t>::MAX)))
            }

            fn show(value: &$t) -> String {
                value.to_string()
            }
        }
    )*};
}

whole_numbers!(u16, u32, u64, usize);

impl Kind for SocketAddr {
    type Value = SocketAddr;
    const VALUE_NAME: Option<&'static str> = Some("ADDR");

    fn parse(text: &str) -> Result<SocketAddr, ValueError> {
        text.trim().parse().map_err(|_| ValueError::new(text, "an address such as 127.0.0.1:7200"))
    }

    fn show(value: &SocketAddr) -> String {
        value.to_string()
    }
}

impl Kind for PathBuf {
    type Value = PathBuf;
    const VALUE_NAME: Option<&'static str> = Some("PATH");

    fn parse(text: &str) -> Result<PathBuf, ValueError> {
        Ok(PathBuf::from(text))
    }

    fn show(value: &PathBuf) -> String {
        value.display().to_string()
    }
}

impl Kind for String {
    type Value = String;
    const VALUE_NAME: Option<&'static str> = Some("TEXT");

    fn parse(text: &str) -> Result<String, ValueError> {
        Ok(text.to_string())
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

impl Kind for Duration {
    type Value = Duration;
    const VALUE_NAME: Option<&'static str> = Some("DURATION");
    const UNITS: Option<&'static str> = Some("ms, s, m (minutes), h; a bare number is milliseconds");

    fn parse(text: &str) -> Result<Duration, ValueError> {
        parse_duration(text)
    }

    fn show(value: &Duration) -> String {
        show_duration(*value)
    }

    fn is_off(value: &Duration) -> bool {
        value.is_zero()
    }
}

/// `off`, or a value of `K` (one `K` calls off, such as `0` for a duration, is `None` too).
impl<K: Kind> Kind for Option<K> {
    type Value = Option<K::Value>;
    const VALUE_NAME: Option<&'static str> = K::VALUE_NAME;
    const UNITS: Option<&'static str> = K::UNITS;

    fn parse(text: &str) -> Result<Option<K::Value>, ValueError> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        K::parse(text).map(|v| if K::is_off(&v) { None } else { Some(v) })
    }

    fn show(value: &Option<K::Value>) -> String {
        value.as_ref().map_or_else(|| "off".to_string(), K::show)
    }

    fn is_off(value: &Option<K::Value>) -> bool {
        value.is_none()
    }
}

/// A byte count held as `T` (`usize` unless named): `65536`, `64KiB`, `1M`. See [`parse_size`].
pub struct Bytes<T = usize>(PhantomData<T>);

impl<T> Kind for Bytes<T>
where
    T: TryFrom<usize> + Copy + Send + Sync + 'static,
    usize: TryFrom<T>,
{
    type Value = T;
    const VALUE_NAME: Option<&'static str> = Some("BYTES");
    const UNITS: Option<&'static str> =
        Some("bytes, or K, M, G (powers of 1000) or KiB, MiB, GiB (powers of 1024)");

    fn parse(text: &str) -> Result<T, ValueError> {
        let n = parse_size(text)?;
        T::try_from(n).map_err(|_| ValueError::new(text, "a byte count this setting can hold"))
    }

    fn show(value: &T) -> String {
        let n = usize::try_from(*value).unwrap_or(usize::MAX);
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|&(shift, _)| n != 0 && n % (1 << shift) == 0)
        {
            Some((shift, unit)) => format!("{}{unit}", n >> shift),
            None => n.to_string(),
        }
    }
}

/// One of a `clap::ValueEnum`'s values, by name (case-insensitive); `--help` lists them.
pub struct Choice<T>(PhantomData<T>);

impl<T: clap::ValueEnum + Clone + Send + Sync + 'static> Kind for Choice<T> {
    type Value = T;
    const VALUE_NAME: Option<&'static str> = None;

    fn parse(text: &str) -> Result<T, ValueError> {
        T::from_str(text.trim(), true).map_err(|_| {
            let names: Vec<String> = T::value_variants().iter().map(Self::show).collect();
            ValueError::new(text, format!("one of {}", names.join(", ")))
        })
    }

    fn show(value: &T) -> String {
        value.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
    }

    fn value_parser() -> ValueParser {
        EnumValueParser::<T>::new().into()
    }
}

/// Parses a byte count: digits, optionally followed by K, M, G (powers of 1000) or KiB, MiB, GiB
/// (powers of 1024), case-insensitive.
pub fn parse_size(text: &str) -> Result<usize, ValueError> {
    const EXPECTED: &str = "a byte count such as 134217728, 128MiB or 1G";
    let (n, unit) = split_number(text).ok_or_else(|| ValueError::new(text, EXPECTED))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(ValueError::new(text, "a byte count (units: K, M, G, KiB, MiB or GiB)")),
    };
    n.checked_mul(scale)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| ValueError::new(text, "a byte count this machine can address"))
}

/// Parses a duration: digits followed by `ms`, `s`, `m` or `h`; bare digits are milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    const EXPECTED: &str = "a duration such as 500ms, 1s, 2m or 1h (a bare number is milliseconds)";
    let (n, unit) = split_number(text).ok_or_else(|| ValueError::new(text, EXPECTED))?;
    let ms_per: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(ValueError::new(text, EXPECTED)),
    };
    n.checked_mul(ms_per).map(Duration::from_millis).ok_or_else(|| ValueError::new(text, EXPECTED))
}

/// Writes a duration in the largest unit that shows it exactly: `60s`, `2m`, `1h`, `1500ms`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .into_iter()
        .find(|&(per, _)| ms != 0 && ms % per == 0)
    {
        Some((per, unit)) => format!("{}{unit}", ms / per),
        None => format!("{ms}ms"),
    }
}

/// Splits `" 128 MiB "` into `(128, "MiB")`; `None` without leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n = t[..end].parse().ok()?;
    Some((n, t[end..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_suffixes() {
        assert_eq!(parse_size("134217728"), Ok(134_217_728));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("2g"), Ok(2_000_000_000));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert_eq!(Bytes::<usize>::show(&(1 << 20)), "1MiB");
        assert_eq!(Bytes::<u32>::show(&65_536), "64KiB");
        assert_eq!(Bytes::<usize>::show(&1000), "1000");
        assert!(Bytes::<u32>::parse("8GiB").is_err(), "a u32 cannot hold 8 GiB");
    }

    #[test]
    fn durations_take_units_and_bare_numbers_are_milliseconds() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1s", ms(1_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("5000", ms(5_000)),
            (" 3 S ", ms(3_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
        for bad in ["", "s", "1.5s", "-1s", "1d", "10 fortnights", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        for (d, shown) in
            [(ms(60_000), "1m"), (ms(5_000), "5s"), (ms(1_500), "1500ms"), (ms(86_400_000), "24h")]
        {
            assert_eq!(show_duration(d), shown);
            assert_eq!(parse_duration(shown), Ok(d), "show and parse agree on {shown}");
        }
    }

    #[test]
    fn an_optional_duration_is_off_as_off_or_zero() {
        type Timeout = Option<Duration>;
        assert_eq!(Timeout::parse("off"), Ok(None));
        assert_eq!(Timeout::parse("OFF"), Ok(None));
        assert_eq!(Timeout::parse("0"), Ok(None));
        assert_eq!(Timeout::parse("0s"), Ok(None));
        assert_eq!(Timeout::parse("300ms"), Ok(Some(Duration::from_millis(300))));
        assert_eq!(Timeout::show(&None), "off");
        assert!(Timeout::parse("never").is_err());
    }

    #[test]
    fn toml_integers_and_strings_read_like_flags() {
        let read = |v: toml::Value| Duration::from_toml(&v);
        assert_eq!(read(toml::Value::Integer(5000)), Ok(Duration::from_millis(5000)));
        assert_eq!(read(toml::Value::String("1s".into())), Ok(Duration::from_secs(1)));
        let err = read(toml::Value::Float(1.5)).unwrap_err();
        assert_eq!(err.to_string(), "`1.5` is not a string or a number");
        assert!(usize::from_toml(&toml::Value::Integer(-1)).is_err());
    }
}
