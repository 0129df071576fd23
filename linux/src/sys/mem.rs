//! Memory and the OS: returning freed heap memory after a burst (glibc `malloc_trim`), serving large
//! buffers straight from the kernel (`mallopt`), and the size of physical memory (the default memory
//! limit is a share of it).
//!
//! Why large buffers bypass the heap: buffers of large frames come in a few sizes (a frame, a
//! `max_body` input buffer) and are freed in any order when connections close. In the heap their
//! holes cannot all be reused and stay resident: under `tests/memory_limit.rs` that was about 15 MiB
//! of resident memory beyond the live buffers. Mapped one by one, a freed buffer leaves nothing.
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

/// Asks the C library to map allocations of `bytes` and more directly (each returned to the OS when
/// freed) instead of carving them from the heap. Process-wide; called once at server start.
pub fn map_large_allocations(bytes: usize) {
    #[cfg(target_env = "gnu")]
    {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` sets an allocator parameter; it takes plain integers and is thread-safe.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = bytes;
}
