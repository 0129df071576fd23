//! timerfd: the monitor's periodic tick (docs/ARCHITECTURE.md#the-timing-wheel: "timers in every
//! thread, ticked by monitor").

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A periodic, non-blocking monotonic timer.
#[derive(Debug)]
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    /// A timer expiring every `period`.
    pub fn periodic(period: Duration) -> io::Result<TimerFd> {
        // `timerfd_create` takes a clock id and flags.
        let fd = syscall!(timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC))?;
        let fd = super::owned(fd);
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec { it_interval: ts, it_value: ts };
        // `spec` is a valid itimerspec that outlives the call; the old value pointer may be null.
        syscall!(timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()))?;
        Ok(TimerFd { fd })
    }

    /// Reads and resets the expiration count (0 when none).
    pub fn expirations(&self) -> u64 {
        super::read_counter(self.fd.as_raw_fd())
    }

    /// The descriptor, for epoll registration.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
