//! Memory facts from the OS: returning freed heap memory after a burst (glibc `malloc_trim`), and
//! the size of physical memory (the default memory limit is a share of it).
//!
//! Blocks beyond what the pools keep are freed to the allocator, which keeps them mapped; after a
//! burst of many connections (each reading into a block at once) that would stay in the RSS for
//! good. The monitor calls [`trim`] at most once a second, and only after the pools dropped blocks.

/// Releases free heap pages to the OS (a no-op where the C library has no `malloc_trim`).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: `malloc_trim` takes a padding size and only walks the allocator's own free lists;
        // it is thread-safe and touches no memory we own.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Bytes of physical memory, if the OS says.
pub fn physical_bytes() -> Option<u64> {
    // SAFETY: `sysconf` reads a system constant; it has no memory effects.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}
