//! `RLIMIT_NOFILE`: raise the soft limit to the hard limit at start.

use std::io;

/// Raises the soft open-file limit to the hard limit and returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // `lim` is a valid rlimit the kernel fills.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // `want` is a valid rlimit within the hard limit.
        if syscall!(setrlimit(libc::RLIMIT_NOFILE, &want)).is_ok() {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}
