//! Edge-triggered epoll (mio's `selector/epoll.rs`, reduced to what doorway needs).
//!
//! Registrations carry a `u64` token chosen by the caller (a packed `ConnId` or a reserved
//! constant). Connections are registered once, for `IN | OUT | RDHUP | ET`, and never modified:
//! with edge triggering an `OUT` edge only arrives after a write has met a full kernel buffer, so
//! "EPOLLOUT only when the kernel buffer is full" needs no `epoll_ctl(MOD)` per write.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its sending side.
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Hang-up.
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// Error condition.
pub const ERR: u32 = libc::EPOLLERR as u32;
/// Edge-triggered.
pub const ET: u32 = libc::EPOLLET as u32;

/// One ready event: the token and the readiness bits.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// What the descriptor was registered with.
    pub token: u64,
    /// Readiness bits ([`IN`], [`OUT`], ...).
    pub events: u32,
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// Caller-owned storage for [`Epoll::wait`] (mio's `Events::with_capacity`).
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait.
    pub fn with_capacity(capacity: usize) -> Events {
        Events { buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)], len: 0 }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| Event { token: e.u64, events: e.events })
    }
}

impl Epoll {
    /// A new close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // `epoll_create1` takes only flags.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        Ok(Epoll { fd: super::owned(fd) })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // `ev` outlives the call; the kernel copies it.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev)).map(drop)
    }

    /// Registers `fd` for `events` with `token`.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Removes `fd` (closing a descriptor removes it too).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`. `EINTR` is an empty result.
    pub fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        let cap = events.buf.len().min(i32::MAX as usize) as i32;
        // The kernel writes at most `cap` events into the buffer we exclusively borrow.
        match syscall!(epoll_wait(self.fd.as_raw_fd(), events.buf.as_mut_ptr(), cap, timeout_ms)) {
            Ok(n) => {
                events.len = n as usize;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.len = 0;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
