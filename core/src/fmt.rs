//! Logging macros over `log`, `defmt` or nothing, chosen by feature (the smoltcp way).
//!
//! Code in this crate calls only `net_trace!` and `net_debug!`, never `log::` or `defmt::`.
//! With neither feature the macros still evaluate their arguments, so warnings do not change with
//! features. Format strings must be literals (defmt's rule).
#![allow(unused_macros)]

#[cfg(feature = "log")]
macro_rules! net_log {
    (trace, $($arg:expr),*) => { log::trace!($($arg),*) };
    (debug, $($arg:expr),*) => { log::debug!($($arg),*) };
}

#[cfg(feature = "defmt")]
macro_rules! net_log {
    (trace, $($arg:expr),*) => { defmt::trace!($($arg),*) };
    (debug, $($arg:expr),*) => { defmt::debug!($($arg),*) };
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! net_log {
    ($level:ident, $($arg:expr),*) => {{ $( let _ = &$arg; )* }};
}

macro_rules! net_trace {
    ($($arg:expr),*) => { net_log!(trace, $($arg),*) };
}

macro_rules! net_debug {
    ($($arg:expr),*) => { net_log!(debug, $($arg),*) };
}
