//! signalfd for SIGTERM and SIGINT: the signals are blocked in every thread (the mask is set before
//! any thread is spawned and inherited) and read as events by the monitor.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

fn term_set() -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // `sigemptyset` initialises the set it is given.
    syscall!(sigemptyset(set.as_mut_ptr()))?;
    // SAFETY: `sigemptyset` succeeded, so the set is initialised.
    let mut set = unsafe { set.assume_init() };
    // `set` is an initialised sigset_t.
    syscall!(sigaddset(&mut set, libc::SIGTERM))?;
    // `set` is an initialised sigset_t.
    syscall!(sigaddset(&mut set, libc::SIGINT))?;
    Ok(set)
}

/// Blocks SIGTERM and SIGINT in the calling thread (and threads it spawns later).
pub fn block_term_signals() -> io::Result<()> {
    let set = term_set()?;
    // SAFETY: `set` is initialised; the old-mask pointer may be null.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// A non-blocking signalfd for SIGTERM and SIGINT.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Creates it. Call [`block_term_signals`] first, or the signals keep their default action.
    pub fn new() -> io::Result<SignalFd> {
        let set = term_set()?;
        // `set` is initialised; -1 asks for a new descriptor.
        let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        Ok(SignalFd { fd: super::owned(fd) })
    }

    /// The next pending signal number, if any.
    pub fn read(&self) -> Option<i32> {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match super::read(self.fd.as_raw_fd(), &mut buf) {
            Ok(n) if n == buf.len() => Some(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as i32),
            _ => None,
        }
    }

    /// The descriptor, for epoll registration.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
