//! The embassy-time driver: SysTick is the clock, CMSDK TIMER0 the alarm. Tickless.
//!
//! # Clock
//!
//! SysTick runs free from the 25 MHz core clock with the largest reload (2^24 cycles, 0.67 s);
//! its interrupt only counts wraps in `PERIODS`. `now` = `PERIODS` * 2^24 + cycles into the
//! current period, read in a critical section: if a wrap is pending (the ISR has not run yet) the
//! period is counted here and the counter re-read, so time never goes backwards. Ticks are 1 MHz
//! (embassy-time's `tick-hz-1_000_000`): cycles / 25.
//!
//! # Alarm
//!
//! SysTick has no compare register, so the next wake-up is a one-shot countdown of TIMER0
//! (0x4000_0000, IRQ 8, also 25 MHz). Between events the core sleeps in WFI: an idle firmware
//! wakes 1.5 times a second (SysTick wraps) plus once per armed timer, so QEMU does not spin.
//! Expired timers live in embassy's integrated queue (`embassy-time-queue-utils`).

use core::cell::RefCell;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core and timer clock of the board.
const CLOCK_HZ: u64 = 25_000_000;
/// Cycles per embassy-time tick.
const CYCLES_PER_TICK: u64 = CLOCK_HZ / embassy_time_driver::TICK_HZ;
const SYST_RELOAD: u32 = 0x00FF_FFFF;

/// SysTick wraps since boot. Written only by the SysTick ISR; Relaxed suffices because every
/// reader is inside a critical section on this single core (no other observer).
static PERIODS: AtomicU32 = AtomicU32::new(0);

mod timer0 {
    //! CMSDK APB timer 0 registers.
    pub const BASE: usize = 0x4000_0000;
    pub const CTRL: usize = BASE;
    pub const VALUE: usize = BASE + 0x04;
    pub const RELOAD: usize = BASE + 0x08;
    pub const INTCLEAR: usize = BASE + 0x0C;
    pub const CTRL_ENABLE: u32 = 1 << 0;
    pub const CTRL_IRQ_ENABLE: u32 = 1 << 3;
}

fn write_reg(addr: usize, value: u32) {
    // SAFETY: `addr` is one of TIMER0's word-aligned registers, always mapped on this machine;
    // a volatile store has no effect on Rust-visible memory.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

struct TimeDriver {
    queue: Mutex<CriticalSectionRawMutex, RefCell<Queue>>,
}

impl TimeDriver {
    fn cycles(&self) -> u64 {
        critical_section::with(|_| {
            let mut periods = PERIODS.load(Ordering::Relaxed);
            let mut value = SYST::get_current();
            if SCB::is_pendst_pending() {
                periods = periods.wrapping_add(1);
                value = SYST::get_current();
            }
            (u64::from(periods) << 24) + u64::from(SYST_RELOAD - value)
        })
    }

    /// Arms TIMER0 for tick `at`; `false` if `at` has already passed (the caller re-checks).
    fn set_alarm(&self, at: u64) -> bool {
        write_reg(timer0::CTRL, 0);
        if at == u64::MAX {
            return true;
        }
        let now = self.now();
        if at <= now {
            return false;
        }
        // Clamp to half the 32-bit range (~86 s): an early alarm just re-arms.
        let cycles = ((at - now) * CYCLES_PER_TICK).min(u64::from(u32::MAX / 2)) as u32;
        write_reg(timer0::VALUE, cycles.max(1));
        write_reg(timer0::RELOAD, cycles.max(1));
        write_reg(timer0::CTRL, timer0::CTRL_ENABLE | timer0::CTRL_IRQ_ENABLE);
        true
    }

    /// Wakes what is due and arms the alarm for the rest.
    fn on_alarm(&self) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            let mut next = queue.next_expiration(self.now());
            while !self.set_alarm(next) {
                next = queue.next_expiration(self.now());
            }
        })
    }
}

impl Driver for TimeDriver {
    fn now(&self) -> u64 {
        self.cycles() / CYCLES_PER_TICK
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let mut next = queue.next_expiration(self.now());
                while !self.set_alarm(next) {
                    next = queue.next_expiration(self.now());
                }
            }
        })
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimeDriver = TimeDriver {
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts SysTick; TIMER0 is armed on demand. Call once, before the executor runs.
pub fn init(mut syst: SYST) {
    write_reg(timer0::CTRL, 0);
    write_reg(timer0::INTCLEAR, 1);
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYST_RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[cortex_m_rt::exception]
fn SysTick() {
    PERIODS.fetch_add(1, Ordering::Relaxed);
}

/// TIMER0 interrupt (IRQ 8): the alarm fired.
pub extern "C" fn timer0_isr() {
    write_reg(timer0::INTCLEAR, 1);
    write_reg(timer0::CTRL, 0);
    DRIVER.on_alarm();
}
