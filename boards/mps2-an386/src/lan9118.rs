//! A LAN9118 Ethernet driver implementing `embassy-net-driver` (QEMU's `lan9118` model).
//!
//! The chip sits at 0x4020_0000 and raises IRQ 13. It has FIFOs instead of descriptor rings:
//!
//! - **Receive**: the RX status FIFO holds one word per frame (length in bits 16..30, counting
//!   the 4-byte CRC); the frame's bytes follow in the RX data FIFO, little-endian words. The
//!   interrupt is RSFL ("RX status FIFO level above 0"). The ISR clears the chip's interrupt
//!   status (the line is level-triggered) and wakes the stack; [`Lan9118::receive`] registers the
//!   waker *before* it reads the status count, so a frame arriving between the two is never
//!   missed. The core sleeps in WFI until then: nothing polls the NIC.
//! - **Transmit**: write command A (segment length, first and last segment), command B (frame
//!   length), then the frame as little-endian words. QEMU sends it at once; the TX status word it
//!   queues is popped and ignored.
//!
//! Invariant: only the ISR touches INT_STS, and only the network task touches the FIFOs and the
//! MAC CSRs (the ISR never does), so they need no lock.

use core::task::Context;

use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

const BASE: usize = 0x4020_0000;

mod reg {
    //! Register offsets (LAN9118 datasheet, "System Control and Status Registers").
    pub const RX_DATA_FIFO: usize = 0x00;
    pub const TX_DATA_FIFO: usize = 0x20;
    pub const RX_STATUS_FIFO: usize = 0x40;
    pub const TX_STATUS_FIFO: usize = 0x48;
    pub const IRQ_CFG: usize = 0x54;
    pub const INT_STS: usize = 0x58;
    pub const INT_EN: usize = 0x5C;
    pub const BYTE_TEST: usize = 0x64;
    pub const FIFO_INT: usize = 0x68;
    pub const TX_CFG: usize = 0x70;
    pub const HW_CFG: usize = 0x74;
    pub const RX_FIFO_INF: usize = 0x7C;
    pub const TX_FIFO_INF: usize = 0x80;
    pub const FREE_RUN: usize = 0x9C;
    pub const MAC_CSR_CMD: usize = 0xA4;
    pub const MAC_CSR_DATA: usize = 0xA8;
}

const BYTE_TEST_MAGIC: u32 = 0x8765_4321;
const IRQ_CFG_EN_PUSHPULL_HIGH: u32 = (1 << 8) | (1 << 4) | 1;
const INT_RSFL: u32 = 1 << 3;
const HW_CFG_SRST: u32 = 1;
const TX_CFG_TX_ON: u32 = 1 << 1;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_FDPX: u32 = 1 << 20;
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;

/// Largest Ethernet frame handled (header + 1500 payload), and the receive buffer size (+ CRC).
const MTU: usize = 1514;
const RX_BUF: usize = 1536;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

fn read(offset: usize) -> u32 {
    // SAFETY: BASE + offset is a word-aligned LAN9118 register (offsets from `reg`), always
    // mapped on mps2-an386. FIFO reads pop, which is the intent of every caller.
    unsafe { core::ptr::read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; a volatile store to device memory has no effect on Rust memory.
    unsafe { core::ptr::write_volatile((BASE + offset) as *mut u32, value) }
}

fn mac_read(csr: u32) -> u32 {
    write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | csr);
    while read(reg::MAC_CSR_CMD) & MAC_CSR_BUSY != 0 {}
    read(reg::MAC_CSR_DATA)
}

fn mac_write(csr: u32, value: u32) {
    write(reg::MAC_CSR_DATA, value);
    write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | csr);
    while read(reg::MAC_CSR_CMD) & MAC_CSR_BUSY != 0 {}
}

/// The chip did not answer as a LAN9118.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NotFound;

/// The driver: owns the FIFOs and one receive and one transmit buffer.
pub struct Lan9118 {
    mac: [u8; 6],
    rx_buf: [u8; RX_BUF],
    tx_buf: [u8; RX_BUF],
}

impl Lan9118 {
    /// Resets the chip, enables receive and transmit and the receive interrupt.
    pub fn new() -> Result<Lan9118, NotFound> {
        if read(reg::BYTE_TEST) != BYTE_TEST_MAGIC {
            return Err(NotFound);
        }
        write(reg::HW_CFG, HW_CFG_SRST);
        while read(reg::HW_CFG) & HW_CFG_SRST != 0 {}
        let lo = mac_read(MAC_ADDRL).to_le_bytes();
        let hi = mac_read(MAC_ADDRH).to_le_bytes();
        let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        write(reg::INT_STS, u32::MAX);
        // Interrupt as soon as one RX status word is queued (level 0).
        write(reg::FIFO_INT, 0x4800_0000);
        write(reg::INT_EN, INT_RSFL);
        write(reg::IRQ_CFG, IRQ_CFG_EN_PUSHPULL_HIGH);
        mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX);
        write(reg::TX_CFG, TX_CFG_TX_ON);
        Ok(Lan9118 { mac, rx_buf: [0; RX_BUF], tx_buf: [0; RX_BUF] })
    }

    /// A free-running 25 MHz counter value, to seed the stack's randomness.
    pub fn entropy() -> u32 {
        read(reg::FREE_RUN)
    }

    fn rx_frames() -> u32 {
        (read(reg::RX_FIFO_INF) >> 16) & 0xFF
    }
}

/// The NIC's interrupt (IRQ 13): acknowledge and wake the network task.
pub extern "C" fn eth_isr() {
    let status = read(reg::INT_STS);
    write(reg::INT_STS, status);
    RX_WAKER.wake();
}

/// One received frame, read out of the FIFO when consumed.
pub struct Rx<'a> {
    buf: &'a mut [u8; RX_BUF],
}

/// Room to build one frame to send.
pub struct Tx<'a> {
    buf: &'a mut [u8; RX_BUF],
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        let status = read(reg::RX_STATUS_FIFO);
        let with_crc = ((status >> 16) & 0x3FFF) as usize;
        let words = with_crc.div_ceil(4);
        for i in 0..words {
            let word = read(reg::RX_DATA_FIFO).to_le_bytes();
            if let Some(dst) = self.buf.get_mut(i * 4..i * 4 + 4) {
                dst.copy_from_slice(&word);
            }
        }
        // A frame too long for the buffer was drained above and is handed up truncated: smoltcp
        // then drops it as malformed.
        let len = with_crc.saturating_sub(4).min(RX_BUF);
        f(&mut self.buf[..len])
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let result = f(&mut self.buf[..len]);
        let len_field = len as u32;
        write(reg::TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len_field);
        write(reg::TX_DATA_FIFO, len_field);
        for chunk in self.buf[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            write(reg::TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        // Pop the status word QEMU queued, so the status FIFO never fills.
        if read(reg::TX_FIFO_INF) >> 16 != 0 {
            let _ = read(reg::TX_STATUS_FIFO);
        }
        result
    }
}

impl Driver for Lan9118 {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx<'_>, Tx<'_>)> {
        RX_WAKER.register(cx.waker());
        if Lan9118::rx_frames() == 0 {
            return None;
        }
        Some((Rx { buf: &mut self.rx_buf }, Tx { buf: &mut self.tx_buf }))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Tx<'_>> {
        // QEMU transmits synchronously: the data FIFO is empty whenever we get here. Should it
        // ever be short of room, try again on the next turn of the stack.
        if (read(reg::TX_FIFO_INF) & 0xFFFF) < (MTU + 8) as u32 {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(Tx { buf: &mut self.tx_buf })
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
