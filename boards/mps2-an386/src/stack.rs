//! Stack high-water mark: how much of the 64 KiB RAM budget the stack really needs.
//!
//! The stack grows down from the top of RAM toward the end of `.bss` (cortex-m-rt's `__sheap`);
//! nothing else lives in between. At boot [`paint`] fills that gap, up to just below the current
//! stack pointer, with a pattern; [`watch`] scans every few seconds for the lowest overwritten word
//! and logs the deepest stack so far when it grows (so an idle firmware logs nothing). RAM use is
//! then `.data + .bss` (from `size`) plus this mark.

use core::ptr::{addr_of, read_volatile, write_volatile};

use embassy_time::Timer;

const PATTERN: u32 = 0x5A5A_A5A5;

extern "C" {
    /// End of `.bss`/`.uninit`, start of the free gap (cortex-m-rt's link.x).
    static __sheap: u32;
    /// Top of RAM, where the stack starts (cortex-m-rt's link.x).
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken (no read), which needs no `unsafe`.
    (addr_of!(__sheap) as usize, addr_of!(_stack_start) as usize)
}

/// Fills the gap between `.bss` and the live stack with the pattern. Call first thing in `main`.
pub fn paint() {
    let (low, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut addr = low;
    while addr + 256 < sp {
        // SAFETY: `addr` is word-aligned RAM between the end of `.bss` and 256 bytes below the
        // stack pointer: no Rust object lives there, and the stack has not grown there yet.
        unsafe { write_volatile(addr as *mut u32, PATTERN) };
        addr += 4;
    }
}

/// Bytes of stack used so far (from the top of RAM to the lowest overwritten word).
pub fn used() -> usize {
    let (low, top) = bounds();
    let mut addr = low;
    // SAFETY: `addr` stays in RAM between the end of `.bss` and the stack top, word-aligned; a
    // volatile read of a word the stack may be using at the same time is still a valid read.
    while addr < top && unsafe { read_volatile(addr as *const u32) } == PATTERN {
        addr += 4;
    }
    top - addr
}

/// Logs the stack high-water mark whenever it grows.
#[embassy_executor::task]
pub async fn watch() -> ! {
    let mut reported = 0;
    loop {
        Timer::after_secs(5).await;
        let now = used();
        if now > reported {
            reported = now;
            let (low, top) = bounds();
            info!("stack high-water: {} of {} bytes", now, top - low);
        }
    }
}
