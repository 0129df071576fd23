//! Logging macros over `defmt` or nothing, chosen by feature (the smoltcp way, as in core).
//!
//! Code in this crate calls only `net_trace!` and `net_debug!`, never `defmt::` directly. With the
//! feature off the macros still evaluate their arguments, so warnings do not change with features.
//! Format strings must be literals (defmt's rule). Nothing on the per-frame path logs: only
//! connection events (TRACE) and anomalies (DEBUG) do.
#![allow(unused_macros)]

#[cfg(feature = "defmt")]
macro_rules! net_log {
    (trace, $($arg:expr),*) => { defmt::trace!($($arg),*) };
    (debug, $($arg:expr),*) => { defmt::debug!($($arg),*) };
}

#[cfg(not(feature = "defmt"))]
macro_rules! net_log {
    ($level:ident, $($arg:expr),*) => {{ $( let _ = &$arg; )* }};
}

macro_rules! net_trace {
    ($($arg:expr),*) => { net_log!(trace, $($arg),*) };
}

macro_rules! net_debug {
    ($($arg:expr),*) => { net_log!(debug, $($arg),*) };
}
