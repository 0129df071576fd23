//! The bench's only unsafe code: a minimal level-triggered epoll, batched datagram I/O
//! (`sendmmsg`/`recvmmsg`), the open-file limit, and the clock-tick rate for reading another
//! process's CPU time from `/proc`.
//!
//! The load generator deliberately does not use the server's `sys` module: it must stay an
//! independent client of the protocol, sharing only the frame codec with the server.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Interest in readability, writability, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// EPOLLIN only.
    Read,
    /// EPOLLIN and EPOLLOUT.
    ReadWrite,
}

impl Interest {
    fn bits(self) -> u32 {
        let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        match self {
            Interest::Read => read,
            Interest::ReadWrite => read | libc::EPOLLOUT as u32,
        }
    }
}

/// A readiness event: the registration's token and what is ready.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Readable, or the peer closed or errored (a read will say which).
    pub readable: bool,
    /// Writable.
    pub writable: bool,
}

/// A level-triggered epoll instance with its event buffer, allocated once.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new epoll instance able to report `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut event = libc::epoll_event { events: interest.bits(), u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; `fd` is checked by
        // the kernel.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` with `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the interest of a registered `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Removes `fd` (closing it also does).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and calls `f` for every event. EINTR counts as no events.
    pub fn wait(&mut self, timeout_ms: i32, mut f: impl FnMut(Event)) -> io::Result<usize> {
        let cap = self.events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the buffer holds `cap` writable epoll_events and outlives the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        let n = n as usize;
        for event in &self.events[..n] {
            // Copy the fields out: epoll_event is packed on x86_64, so no references into it.
            let (bits, token) = (event.events, event.u64);
            let hup = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
            f(Event {
                token,
                readable: bits & (libc::EPOLLIN as u32 | hup) != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
            });
        }
        Ok(n)
    }
}

/// Most datagrams one [`send_batch`] or [`recv_batch`] moves.
pub const BATCH: usize = 64;

/// `[T; BATCH]` of a plain C struct, all zero bytes.
fn zeroed_batch<T: Copy>() -> [T; BATCH] {
    // SAFETY: only called for libc's `iovec` and `mmsghdr`: plain C structs of integers and raw
    // pointers, for which all-zero bytes (null pointers, zero lengths) are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Sends the datagrams laid end to end in `buf`, `len` bytes each (at most [`BATCH`] of them), on
/// the connected socket `fd` with one `sendmmsg`, without waiting. Returns how many were sent (the
/// first ones); 0 when the socket's buffer is full.
pub fn send_batch(fd: RawFd, buf: &[u8], len: usize) -> io::Result<usize> {
    let count = buf.len().checked_div(len).unwrap_or(0).min(BATCH);
    if count == 0 {
        return Ok(0);
    }
    let mut iov = zeroed_batch::<libc::iovec>();
    for (io, chunk) in iov.iter_mut().zip(buf.chunks_exact(len)) {
        // The kernel only reads through this pointer (sendmmsg does not write the data).
        *io = libc::iovec { iov_base: chunk.as_ptr() as *mut libc::c_void, iov_len: len };
    }
    let mut msgs = zeroed_batch::<libc::mmsghdr>();
    for (msg, io) in msgs.iter_mut().zip(iov.iter_mut()).take(count) {
        msg.msg_hdr.msg_iov = io;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers each point at one iovec, which points at `len` bytes of
    // `buf`; `iov`, `msgs` and `buf` outlive the call. No address is given: `fd` is connected.
    let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// Receives up to [`BATCH`] datagrams on `fd` with one `recvmmsg`, without waiting, into `buf`'s
/// slots of `slot` bytes; datagram `i` is `buf[i * slot..][..lens[i]]`. Returns how many arrived;
/// 0 when none is queued. A datagram longer than a slot is cut to the slot (and so mismatches).
pub fn recv_batch(fd: RawFd, buf: &mut [u8], slot: usize, lens: &mut [usize; BATCH]) -> io::Result<usize> {
    let count = buf.len().checked_div(slot).unwrap_or(0).min(BATCH);
    if count == 0 {
        return Ok(0);
    }
    let mut iov = zeroed_batch::<libc::iovec>();
    for (io, chunk) in iov.iter_mut().zip(buf.chunks_exact_mut(slot)) {
        *io = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: slot };
    }
    let mut msgs = zeroed_batch::<libc::mmsghdr>();
    for (msg, io) in msgs.iter_mut().zip(iov.iter_mut()).take(count) {
        msg.msg_hdr.msg_iov = io;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers each point at one iovec, which points at its own `slot`
    // bytes of `buf` (disjoint chunks); `iov`, `msgs` and `buf` outlive the call; no address or
    // control buffer is asked for; a null timeout is allowed.
    let n = unsafe {
        libc::recvmmsg(fd, msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    let n = n as usize;
    for (len, msg) in lens.iter_mut().zip(&msgs).take(n) {
        *len = msg.msg_len as usize;
    }
    Ok(n)
}

/// Asks for a receive buffer of `bytes` on socket `fd` (the kernel caps it at
/// `net.core.rmem_max`).
pub fn set_recv_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `size` outlives the call and its length is passed with it; `fd` is checked by the
    // kernel.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Clock ticks per second, the unit of utime/stime in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}
