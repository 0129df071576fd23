//! Returning freed heap memory to the OS after a burst (glibc `malloc_trim`).
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
