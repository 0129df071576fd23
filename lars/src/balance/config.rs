//! The balancer's settings, with the original's defaults (`docs/LARS.md`, "lars-agent: the
//! load-balancing algorithm") and doorway's additions.
//!
//! A [`Config`] is plain data: the agent parses its flags and file into one, and
//! [`Config::check`] refuses values the algorithm cannot use (a rate outside `0..=1`, a panic
//! share over 100 %) before a [`Balancer`](super::Balancer) is built, so nothing later has to.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Every setting of the balancing algorithm.
///
/// The first eleven are the original's, with its names and defaults; the rest are doorway's.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// After this many idle choices (or refusals, when no node is idle), the next choice probes an
    /// overloaded node. Default 10: every 11th call is a probe while some node is overloaded.
    pub probe_num: u32,
    /// The virtual successes an idle node starts with. Default 180.
    pub init_succ_cnt: u32,
    /// The virtual errors an overloaded node starts with. Default 5.
    pub init_err_cnt: u32,
    /// An idle node turns overloaded on a failure when its virtual error rate exceeds this.
    /// Default 0.1 (with 180 virtual successes: the 21st straight failure).
    pub err_rate: f64,
    /// An overloaded node turns idle on a success when its virtual success rate exceeds this.
    /// Default 0.5 (with 5 virtual errors: the 6th straight success).
    pub succ_rate: f64,
    /// An idle node turns overloaded when its consecutive failures reach this. Default 15.
    pub contin_err_limit: u32,
    /// An overloaded node turns idle when its consecutive successes reach this. Default 15.
    pub contin_succ_limit: u32,
    /// At the end of an idle node's window, it turns overloaded if its real error rate in the
    /// window is at least this. Default 0.7.
    pub window_err_rate: f64,
    /// The length of an idle node's window. Default 15 s.
    pub idle_timeout: Duration,
    /// How long a node stays overloaded at most before it is idle again. Default 15 s.
    pub overload_timeout: Duration,
    /// A module's route is asked for again once this has passed since it was last asked for or
    /// received, and an unknown module is asked for at most once per this. Default 15 s.
    pub update_timeout: Duration,
    /// Reports to `lars-reporter` are aggregated per module over this. Default 1 s.
    pub report_interval: Duration,
    /// When fewer than this share (percent) of a module's nodes are idle, every node of the module
    /// is chosen in turn, overloaded or not (panic mode). Default 50; 0 turns panic mode off.
    pub panic_percent: u8,
    /// Choose among idle nodes by power of two choices on a Peak-EWMA latency cost instead of
    /// round robin. Default off.
    pub latency_aware: bool,
    /// The Peak-EWMA's decay time: a latency sample weighs `1/e` after this. Default 10 s.
    pub latency_decay: Duration,
    /// The latency a node is assumed to have before its first sample. Default 50 ms.
    pub latency_initial: Duration,
    /// Seed of the random choices of [`latency_aware`](Self::latency_aware) (the balancer has no
    /// other randomness), so a run can be repeated. Default 1.
    pub seed: u64,
    /// The agent's IPv4 address, sent as `caller` in every report. Default 0.0.0.0.
    pub caller: Ipv4Addr,
    /// The most modules the balancer holds; a request for a new module beyond it is refused, so
    /// clients asking for random modules cannot grow the agent without bound. Default 100,000.
    pub max_modules: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_num: 10,
            init_succ_cnt: 180,
            init_err_cnt: 5,
            err_rate: 0.1,
            succ_rate: 0.5,
            contin_err_limit: 15,
            contin_succ_limit: 15,
            window_err_rate: 0.7,
            idle_timeout: Duration::from_secs(15),
            overload_timeout: Duration::from_secs(15),
            update_timeout: Duration::from_secs(15),
            report_interval: Duration::from_secs(1),
            panic_percent: 50,
            latency_aware: false,
            latency_decay: Duration::from_secs(10),
            latency_initial: Duration::from_millis(50),
            seed: 1,
            caller: Ipv4Addr::UNSPECIFIED,
            max_modules: 100_000,
        }
    }
}

/// Why a [`Config`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConfigError {
    /// A rate (`err_rate`, `succ_rate`, `window_err_rate`) is not a number in `0..=1`.
    Rate {
        /// The setting's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// `panic_percent` is over 100.
    PanicPercent(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Rate { name, value } => write!(f, "{name} is {value}, not a rate in 0..=1"),
            ConfigError::PanicPercent(value) => write!(f, "panic_percent is {value}, over 100"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks that every value is one the algorithm can use.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("err_rate", self.err_rate),
            ("succ_rate", self.succ_rate),
            ("window_err_rate", self.window_err_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Rate { name, value });
            }
        }
        if self.panic_percent > 100 {
            return Err(ConfigError::PanicPercent(self.panic_percent));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_originals_and_pass_the_check() {
        let config = Config::default();
        assert_eq!((config.probe_num, config.init_succ_cnt, config.init_err_cnt), (10, 180, 5));
        assert_eq!((config.err_rate, config.succ_rate, config.window_err_rate), (0.1, 0.5, 0.7));
        assert_eq!((config.contin_err_limit, config.contin_succ_limit), (15, 15));
        assert_eq!(config.idle_timeout, Duration::from_secs(15));
        assert_eq!(config.overload_timeout, Duration::from_secs(15));
        assert_eq!(config.update_timeout, Duration::from_secs(15));
        assert_eq!((config.panic_percent, config.latency_aware), (50, false));
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn a_rate_outside_zero_to_one_or_nan_is_refused_by_name() {
        let config = Config { succ_rate: 1.5, ..Config::default() };
        assert_eq!(config.check(), Err(ConfigError::Rate { name: "succ_rate", value: 1.5 }));
        let config = Config { err_rate: -0.1, ..Config::default() };
        assert_eq!(config.check().unwrap_err().to_string(), "err_rate is -0.1, not a rate in 0..=1");
        let config = Config { window_err_rate: f64::NAN, ..Config::default() };
        assert!(matches!(config.check(), Err(ConfigError::Rate { name: "window_err_rate", .. })));
        let config = Config { panic_percent: 101, ..Config::default() };
        assert_eq!(config.check(), Err(ConfigError::PanicPercent(101)));
    }
}
