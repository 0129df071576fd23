//! The only module of doorway-linux with `unsafe`: thin, typed wrappers over the libc calls the
//! server needs (mio's `sys/unix` shape).
//!
//! Every call goes through `syscall!`, which turns a `-1` return into
//! `io::Error::last_os_error()`. Every file descriptor is an `OwnedFd`,
//! so it is closed exactly once, when its owner drops it. Callers above this module never see a raw
//! pointer; buffers are passed as slices whose lengths bound what the kernel may touch.
//!
//! - [`epoll`]: the edge-triggered poller.
//! - [`socket`]: listening sockets (`SO_REUSEPORT`), `accept4`, reads, `writev`, `shutdown`.
//! - [`eventfd`], [`timerfd`], [`signalfd`]: the wake-up, tick and signal descriptors.
//! - [`rlimit`]: raising `RLIMIT_NOFILE`.
//! - [`udp`]: bound UDP sockets, `recvmmsg` and `sendmmsg` batches.

/// Calls a libc function and maps a `-1` result to the last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of the macro upholds the libc function's contract (documented at each
        // use); a -1 return is turned into an error before the value is used.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod epoll;
pub mod eventfd;
pub mod mem;
pub mod rlimit;
pub mod signalfd;
pub mod socket;
pub mod timerfd;
pub mod udp;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Wraps a descriptor a successful syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall that creates a descriptor, so it is
    // open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Reads up to `buf.len()` bytes from `fd`; `Ok(0)` is end of stream.
pub fn read(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // The kernel writes at most `buf.len()` bytes into memory we exclusively borrow.
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// Reads and resets an eventfd or timerfd counter: its value, or 0 when there is none to read.
pub fn read_counter(fd: RawFd) -> u64 {
    let mut buf = [0u8; 8];
    match read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// Writes up to `buf.len()` bytes to `fd`.
pub fn write(fd: RawFd, buf: &[u8]) -> std::io::Result<usize> {
    // The kernel reads at most `buf.len()` bytes from memory we borrow.
    syscall!(write(fd, buf.as_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`) at nice 19, so its work (a
/// service's background reload, say) takes only CPU the server's threads leave over.
///
/// Nice 19 alone is not enough for a latency bound: under the kernel's fair scheduler a woken
/// server thread may still wait for the niced thread's slice to run out (a millisecond or more)
/// before it gets the CPU. A `SCHED_IDLE` thread is preempted by any normal thread that wakes on
/// its CPU as soon as it is in user space (measured in `lars/tests/dns_scale.rs`: p99 of queries
/// during a reload 0.2-0.8 ms, against 3-4 ms at normal priority), and is never starved outright
/// (it keeps a tiny share). Such a thread should hold a lock it shares with server threads only
/// briefly: a server thread waiting on it waits for it to get a CPU back. A server thread that is
/// already runnable on its CPU (preempted, not woken) may still wait for it until the next tick:
/// its long jobs call [`Pace::step`](crate::Pace::step) as well.
pub fn lower_thread_priority() -> std::io::Result<()> {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    // `setpriority` takes only integers; on Linux a thread id names that one thread.
    syscall!(setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19))?;
    let param = libc::sched_param { sched_priority: 0 };
    // `param` is a valid `sched_param` borrowed for the call; on Linux a thread id names that one
    // thread. Moving to a lower class needs no privilege.
    syscall!(sched_setscheduler(tid, libc::SCHED_IDLE, &param)).map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lowered_thread_is_in_the_idle_class_and_the_others_are_not() {
        let lowered = std::thread::spawn(|| {
            super::lower_thread_priority().expect("lowering needs no privilege");
            // SAFETY: no preconditions; 0 names the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .expect("the thread ran");
        assert_eq!(lowered, libc::SCHED_IDLE);
        // SAFETY: as above.
        assert_ne!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE, "only the calling thread moves");
    }
}
