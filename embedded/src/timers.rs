//! Connection timers on core's timing wheel: idle timeouts and service timers.
//!
//! One [`doorway_core::wheel::Wheel`] serves every connection of a server, with room for
//! [`PER_SLOT`] timers per socket (its idle timeout and [`crate::hub::TIMERS`] service
//! timers), so inserting can only fail if a slot exceeds its own share, which the hub prevents.
//! Ticks are embassy-time ticks: the wheel knows no clock, the hub passes `now` in.
//!
//! Hot path: a connection that receives frames moves its idle timer later with one O(1)
//! `reset` per batch of frames. The clock future (see [`crate::server`]) sleeps until
//! [`Wheel::poll_at`](doorway_core::wheel::Wheel::poll_at), fires what is due and marks the
//! owning slots; it is only woken early when a timer is set *earlier* than what it waits for,
//! which idle resets never do.
//!
//! The wheel lives in [`serve`](crate::serve)'s future, not in [`Storage`](crate::Storage): its
//! vacant entries are not all-zero bytes, and a `static` holding them would move the whole
//! storage from `.bss` to `.data`, costing its size again in flash.
//!
//! A payload carries its slot's generation, so a timer that fires for a connection that has
//! since closed and been replaced is ignored.
//!
//! # Deadlines saturate
//!
//! Every deadline of the server is `now` plus a configured duration, and any duration is a valid
//! setting, up to `Duration::MAX`. So deadlines are added with [`deadline`], which stops at
//! `Instant::MAX` (never) instead of overflowing, and waits are bounded with [`within`], never
//! with embassy-time's `with_timeout` (which adds with `+` and panics on overflow). The wheel
//! takes any `u64` tick, `Instant::MAX` included.

use core::future::Future;

use doorway_core::wheel::{Entry, Wheel};
use embassy_time::{with_deadline, Duration, Instant, TimeoutError};

use crate::hub::TIMERS;

/// Timers per socket: the idle timeout and the service timers.
pub const PER_SLOT: usize = 1 + TIMERS;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Due {
    /// The connection's idle timeout.
    Idle,
    /// A service timer with this token ([`Context::set_timer`](doorway_core::dispatch::Context)).
    Service(u32),
}

/// A timer's payload: whose it is and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Payload {
    /// Socket slot.
    pub slot: u32,
    /// The slot's generation when the timer was set.
    pub generation: u32,
    /// What the timer is for.
    pub due: Due,
}

/// Inline wheel storage: [`PER_SLOT`] entries for each of `N` sockets.
pub struct Entries<const N: usize>([[Entry<Payload>; PER_SLOT]; N]);

impl<const N: usize> Entries<N> {
    /// Vacant storage.
    pub const NEW: Entries<N> = Entries([const { [const { Entry::VACANT }; PER_SLOT] }; N]);
}

impl<const N: usize> AsRef<[Entry<Payload>]> for Entries<N> {
    fn as_ref(&self) -> &[Entry<Payload>] {
        self.0.as_flattened()
    }
}

impl<const N: usize> AsMut<[Entry<Payload>]> for Entries<N> {
    fn as_mut(&mut self) -> &mut [Entry<Payload>] {
        self.0.as_flattened_mut()
    }
}

/// The server's timing wheel.
pub type TimerWheel<const N: usize> = Wheel<Payload, Entries<N>>;

/// Core ticks from embassy-time ticks (the same unit).
pub fn tick(at: embassy_time::Instant) -> doorway_core::time::Instant {
    doorway_core::time::Instant::from_ticks(at.as_ticks())
}

/// `start + after`, saturating at `Instant::MAX`: a deadline that far away never comes.
pub fn deadline(start: Instant, after: Duration) -> Instant {
    start.saturating_add(after)
}

/// Runs `future` for at most `after` from now (`with_timeout` with a saturating deadline).
pub fn within<F: Future>(
    after: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, TimeoutError>> {
    with_deadline(deadline(Instant::now(), after), future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_at_never() {
        let start = Instant::from_ticks(1_000);
        assert_eq!(deadline(start, Duration::from_ticks(500)), Instant::from_ticks(1_500));
        assert_eq!(deadline(start, Duration::MAX), Instant::MAX);
        assert_eq!(deadline(Instant::MAX, Duration::from_ticks(1)), Instant::MAX);
    }
}
