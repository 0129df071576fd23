//! eventfd: the "event notification" half of the roles' spin lock + event synchronisation
//! (docs/ARCHITECTURE.md#the-four-roles).
//!
//! A producer writes 1; a consumer reads the accumulated count, which resets it. Two flavours:
//! non-blocking (registered in an epoll set) and blocking (a role thread parks in `read`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// An eventfd counter.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd; `blocking` decides whether [`EventFd::wait`] parks.
    pub fn new(blocking: bool) -> io::Result<EventFd> {
        let flags = libc::EFD_CLOEXEC | if blocking { 0 } else { libc::EFD_NONBLOCK };
        // `eventfd` takes an initial value and flags.
        let fd = syscall!(eventfd(0, flags))?;
        Ok(EventFd { fd: super::owned(fd) })
    }

    /// Adds 1 to the counter, waking a reader.
    pub fn notify(&self) {
        // A full counter (2^64 - 2) or EAGAIN still leaves the reader woken; nothing to do.
        let _ = super::write(self.fd.as_raw_fd(), &1u64.to_ne_bytes());
    }

    /// Reads and resets the counter (parks first if blocking and zero). Returns the count, or 0.
    pub fn wait(&self) -> u64 {
        super::read_counter(self.fd.as_raw_fd())
    }

    /// The descriptor, for epoll registration.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
