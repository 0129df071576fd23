//! Time as the core sees it: ticks handed in by the caller, never read from a clock.
//!
//! An [`Instant`] is a count of ticks since an epoch the binding chooses (server start, boot); a
//! [`Duration`] is a count of ticks. What a tick is (a millisecond on Linux's timerfd, a SysTick
//! period on a board) is the binding's choice; [`Duration::from_millis`] and friends assume the
//! common one, 1 tick = 1 ms. Arithmetic saturates rather than wraps or panics: a `u64` of
//! milliseconds lasts 584 million years, so saturation only ever clamps a bogus input.
//!
//! ```
//! use doorway_core::time::{Duration, Instant};
//! let start = Instant::from_ticks(1_000);
//! let deadline = start + Duration::from_secs(2);
//! assert_eq!(deadline.ticks(), 3_000);
//! assert_eq!(deadline - start, Duration::from_millis(2_000));
//! assert_eq!(start.saturating_duration_since(deadline), Duration::ZERO);
//! ```

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in ticks since the binding's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

/// A span of time, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);
    /// The last representable instant ("never").
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `ticks` after the epoch.
    pub const fn from_ticks(ticks: u64) -> Instant {
        Instant(ticks)
    }

    /// Ticks since the epoch.
    pub const fn ticks(self) -> u64 {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` on overflow.
    pub const fn checked_add(self, d: Duration) -> Option<Instant> {
        match self.0.checked_add(d.0) {
            Some(t) => Some(Instant(t)),
            None => None,
        }
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);

    /// A span of `ticks` ticks.
    pub const fn from_ticks(ticks: u64) -> Duration {
        Duration(ticks)
    }

    /// `ms` milliseconds at 1 tick per millisecond.
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(ms)
    }

    /// `s` seconds at 1 tick per millisecond.
    pub const fn from_secs(s: u64) -> Duration {
        Duration(s.saturating_mul(1_000))
    }

    /// The span in ticks.
    pub const fn ticks(self) -> u64 {
        self.0
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, other: Duration) -> Duration {
        Duration(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ticks", self.0)
    }
}
