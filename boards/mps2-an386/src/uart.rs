//! UART0 as the firmware's stop line: one byte received ends the server gracefully.
//!
//! mps2-an386's UART0 is a CMSDK APB UART at 0x4000_4000; its receive interrupt is IRQ 0 (QEMU
//! `hw/arm/mps2.c`: UART n raises RX on `uartirq[n]` = 0, 2, 4, 18, 20 and TX on the next line).
//! [`init`] enables the receiver and its interrupt only; nothing is ever transmitted. In QEMU the
//! UART is whatever `-serial` names: `cargo xtask qemu` connects it to a TCP control socket.
//!
//! The receive interrupt is level-triggered on INTSTATUS.RX, which stays set until written 1 to.
//! [`uart0_rx_isr`] clears it *before* reading DATA: reading DATA lets QEMU deliver the next byte,
//! whose interrupt must not be erased by a clear that comes after it. The ISR then raises
//! [`STOP`], which [`stop_requested`] awaits, so the core sleeps in WFI until a byte arrives:
//! nothing polls the UART.
//!
//! Invariant: after [`init`], only the ISR touches UART0's registers, so they need no lock.

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;

mod reg {
    //! CMSDK APB UART registers and bits (Cortex-M System Design Kit TRM, "APB UART").
    pub const BASE: usize = 0x4000_4000;
    pub const DATA: usize = BASE;
    pub const CTRL: usize = BASE + 0x08;
    pub const INTCLEAR: usize = BASE + 0x0C;
    pub const BAUDDIV: usize = BASE + 0x10;
    pub const CTRL_RX_ENABLE: u32 = 1 << 1;
    pub const CTRL_RX_IRQ_ENABLE: u32 = 1 << 3;
    pub const INT_RX: u32 = 1 << 1;
}

/// 25 MHz / 115,200 baud. QEMU ignores the rate; real hardware needs a divider of at least 16.
const BAUDDIV: u32 = 217;

/// Raised by the ISR with the byte received; awaited by the server's `stop` future.
static STOP: Signal<CriticalSectionRawMutex, u8> = Signal::new();

fn write_reg(addr: usize, value: u32) {
    // SAFETY: `addr` is one of UART0's word-aligned registers (from `reg`), always mapped on this
    // machine; a volatile store to device memory has no effect on Rust-visible memory.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

fn read_reg(addr: usize) -> u32 {
    // SAFETY: as in `write_reg`. Reading DATA pops the received byte, which is the intent.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Enables the receiver and its interrupt (the transmitter stays off). Call before unmasking
/// IRQ 0.
pub fn init() {
    write_reg(reg::CTRL, 0);
    write_reg(reg::INTCLEAR, u32::MAX);
    write_reg(reg::BAUDDIV, BAUDDIV);
    write_reg(reg::CTRL, reg::CTRL_RX_ENABLE | reg::CTRL_RX_IRQ_ENABLE);
}

/// Completes with the first byte received on UART0.
pub async fn stop_requested() -> u8 {
    STOP.wait().await
}

/// UART0 receive interrupt (IRQ 0): acknowledge, take the byte, raise [`STOP`].
pub extern "C" fn uart0_rx_isr() {
    write_reg(reg::INTCLEAR, reg::INT_RX);
    let byte = read_reg(reg::DATA) as u8;
    STOP.signal(byte);
}
