//! The balancer's clock: an [`Instant`] the caller passes into every call.
//!
//! The balancer never reads a clock (as smoltcp's `Interface::poll(timestamp, ..)` does not), so a
//! test steps time by hand and the agent passes one reading per batch of requests. An `Instant` is
//! milliseconds since an epoch the caller picks (a monotonic clock's start, typically); only
//! differences between instants mean anything.
//!
//! Time may go backwards (a caller mixing clocks, a test stepping back): every difference
//! saturates at zero, so a step back delays timeouts and never panics or underflows.

use std::ops::Add;
use std::time::Duration;

/// A point in time, in milliseconds since the caller's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whether `timeout` has passed between `start` and `self` (a zero timeout always has).
    pub fn has_elapsed(self, start: Instant, timeout: Duration) -> bool {
        self.saturating_since(start) >= timeout
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of time rather than overflowing; sub-millisecond parts are dropped.
    fn add(self, rhs: Duration) -> Instant {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_going_backwards_reads_as_no_time_passed() {
        let later = Instant::from_millis(5_000);
        let earlier = Instant::from_millis(1_000);
        assert_eq!(later.saturating_since(earlier), Duration::from_secs(4));
        assert_eq!(earlier.saturating_since(later), Duration::ZERO);
        assert!(!earlier.has_elapsed(later, Duration::from_millis(1)));
        assert!(earlier.has_elapsed(later, Duration::ZERO));
    }

    #[test]
    fn adding_past_the_end_of_time_saturates() {
        assert_eq!(
            Instant::from_millis(u64::MAX - 1) + Duration::from_secs(1),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::from_millis(u64::MAX));
        assert_eq!(Instant::ZERO + Duration::from_micros(1_999), Instant::from_millis(1));
    }
}
