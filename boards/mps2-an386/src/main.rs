//! doorway firmware for the QEMU machine `mps2-an386` (Cortex-M4F, LAN9118 Ethernet).
//!
//! Boot: SysTick/TIMER0 time driver ([`time`]), the LAN9118 driver ([`lan9118`]), an embassy-net
//! stack with the static address 10.0.2.15/24 (gateway 10.0.2.2, QEMU user networking), and
//! `doorway_embedded::serve_until` running the demo service (ECHO, BROADCAST, STATS) on port 7200.
//!
//! # Stopping
//!
//! A byte received on UART0 ([`uart`], IRQ 0) is the stop signal: `serve_until` stops accepting,
//! answers what clients already sent, sends ERROR 7 and closes every connection within the drain
//! timeout, and returns. The firmware logs the final counters (INFO, `doorway stopped: ...`, named
//! as in STATS) and ends QEMU through semihosting with exit status 0. `cargo xtask qemu` connects UART0 to a
//! TCP control socket; under plain `cargo run` (`-serial none`) nothing can stop it but QEMU.
//!
//! # Sleeping
//!
//! The executor is embassy's raw executor with our own loop: poll, then, with interrupts masked,
//! sleep in WFI unless the pender asked for another poll. WFI wakes on a pending interrupt even
//! while masked, and the ISR runs as soon as the mask drops, so no wake-up is lost; QEMU's WFE
//! does not sleep on M-profile, which is why the stock thread executor is not used.
//!
//! # Test builds
//!
//! `DOORWAY_IDLE_TIMEOUT_MS`, `DOORWAY_CONNECTIONS` and `DOORWAY_DRAIN_TIMEOUT_MS` (read at
//! compile time) shorten the idle timeout, set the connection count and the drain timeout, so the
//! conformance suite and the stop test can exercise them. A panic or a hard fault logs (defmt)
//! and ends QEMU through semihosting with a failing exit status.
#![no_std]
#![no_main]

/// Logs at INFO through defmt, or nothing without the `defmt` feature.
macro_rules! info {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        {
            $( let _ = &$arg; )*
        }
    }};
}

mod lan9118;
mod stack;
mod time;
mod uart;

use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::interrupt::InterruptNumber;
use doorway_core::demo::Demo;
use doorway_embedded::{new_stack, serve_until, Config, ServerStack, Storage};
use embassy_executor::{raw, Spawner};
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_time::Duration;
use static_cell::{ConstStaticCell, StaticCell};

use crate::lan9118::Lan9118;

#[cfg(feature = "defmt")]
use defmt_semihosting as _;

/// Parses a decimal compile-time setting, or falls back to `default`.
const fn env_or(value: Option<&str>, default: u64) -> u64 {
    let Some(value) = value else { return default };
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut n = 0u64;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "not a decimal number");
        n = n * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// Connections served at once (one more is refused with ERROR 5).
const CONNECTIONS: usize = env_or(option_env!("DOORWAY_CONNECTIONS"), 4) as usize;
/// Idle timeout in milliseconds.
const IDLE_TIMEOUT_MS: u64 = env_or(option_env!("DOORWAY_IDLE_TIMEOUT_MS"), 60_000);
/// Drain timeout of a graceful stop in milliseconds (the embedded default, 5 s).
const DRAIN_TIMEOUT_MS: u64 = env_or(option_env!("DOORWAY_DRAIN_TIMEOUT_MS"), 5_000);
/// Sockets: two more than connections, so a reconnect never waits for the old FIN exchange.
const SOCKETS: usize = CONNECTIONS + 2;
/// `max_body` 1 KiB (+ 12-byte header), 2 frames of output, 1 KiB socket buffers.
type BoardStorage = Storage<SOCKETS, 1036, 2072, 1024, 1024>;

static STORAGE: ConstStaticCell<BoardStorage> = ConstStaticCell::new(BoardStorage::new());
/// The stack's sockets: the server's only (a static address takes none of its own).
static STACK_RESOURCES: StaticCell<StackResources<{ BoardStorage::SOCKETS }>> = StaticCell::new();
static NIC: StaticCell<Lan9118> = StaticCell::new();
static EXECUTOR: StaticCell<raw::Executor> = StaticCell::new();

/// Set by the pender (any context), cleared by the main loop before each poll.
static WORK: AtomicBool = AtomicBool::new(true);

#[export_name = "__pender"]
fn pender(_context: *mut ()) {
    // Release pairs with the Acquire load in `main`'s sleep check.
    WORK.store(true, Ordering::Release);
}

/// The device interrupts this firmware uses.
#[derive(Clone, Copy)]
enum Irq {
    Uart0Rx = 0,
    Timer0 = 8,
    Ethernet = 13,
}

// SAFETY: the values are valid external interrupt numbers of mps2-an386 (32 lines).
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// The device part of the vector table (cortex-m-rt's `device` feature): IRQ 0..32.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [Option<extern "C" fn()>; 32] = {
    let mut table: [Option<extern "C" fn()>; 32] = [None; 32];
    table[Irq::Uart0Rx as usize] = Some(uart::uart0_rx_isr);
    table[Irq::Timer0 as usize] = Some(time::timer0_isr);
    table[Irq::Ethernet as usize] = Some(lan9118::eth_isr);
    table
};

#[cortex_m_rt::entry]
fn main() -> ! {
    stack::paint();
    let core = cortex_m::Peripherals::take().unwrap_or_else(|| fail("core peripherals taken"));
    time::init(core.SYST);
    info!(
        "doorway mps2-an386: {} connections, idle timeout {} ms, drain timeout {} ms",
        CONNECTIONS, IDLE_TIMEOUT_MS, DRAIN_TIMEOUT_MS
    );
    let executor: &'static raw::Executor = EXECUTOR.init(raw::Executor::new(core::ptr::null_mut()));
    if executor.spawner().spawn(boot(executor.spawner())).is_err() {
        fail("spawn boot");
    }
    // SAFETY: the handler is installed in `__INTERRUPTS` and touches only the time driver.
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq::Timer0) };
    uart::init();
    // SAFETY: the handler is installed in `__INTERRUPTS` and touches only UART0 (which nothing
    // else uses after `init`) and the stop signal.
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq::Uart0Rx) };
    loop {
        WORK.store(false, Ordering::Relaxed);
        // SAFETY: the executor is polled from this loop only, never re-entrantly (the pender
        // just sets a flag).
        unsafe { executor.poll() };
        cortex_m::interrupt::free(|_| {
            if !WORK.load(Ordering::Acquire) {
                cortex_m::asm::wfi();
            }
        });
    }
}

#[embassy_executor::task]
async fn boot(spawner: Spawner) {
    let nic = match Lan9118::new() {
        Ok(nic) => {
            // Only now: until the driver set IRQ_CFG to active-high, the line idles asserted.
            // SAFETY: the handler is installed in `__INTERRUPTS` and touches only the NIC's
            // interrupt status and the receive waker.
            unsafe { cortex_m::peripheral::NVIC::unmask(Irq::Ethernet) };
            NIC.init(nic)
        }
        Err(_) => fail("no LAN9118 at 0x40200000"),
    };
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: Default::default(),
    });
    let seed = u64::from(Lan9118::entropy()) ^ 0x646f_6f72_7761_7921;
    let Ok((stack, runner)) = new_stack(&mut *nic, config, STACK_RESOURCES.init(StackResources::new()), seed)
    else {
        fail("the network stack has no room for the server's sockets");
    };
    if spawner.spawn(net(runner)).is_err()
        || spawner.spawn(server(stack)).is_err()
        || spawner.spawn(stack::watch()).is_err()
    {
        fail("spawn tasks");
    }
}

#[embassy_executor::task]
async fn net(mut runner: Runner<'static, &'static mut Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn server(mut stack: ServerStack<'static>) -> ! {
    let config = Config {
        max_connections: CONNECTIONS,
        idle_timeout: Some(Duration::from_millis(IDLE_TIMEOUT_MS)),
        drain_timeout: Duration::from_millis(DRAIN_TIMEOUT_MS),
        ..Config::new()
    };
    info!("doorway listening on 10.0.2.15:{}; a byte on UART0 stops it", config.port);
    let stop = async {
        let byte = uart::stop_requested().await;
        info!("stop requested (byte {=u8:#04x} on UART0)", byte);
    };
    // The final counters are read from the storage, not taken from `serve_until`'s return value
    // (the same snapshot; only whether it started is looked at): using the counters made rustc
    // build the 3.9 KB `serve_until` future on this task's stack and copy it into the task, a
    // frame that every later poll reserves too (stack high-water 11 KB -> 15 KB).
    let storage = STORAGE.take();
    if serve_until(&mut stack, &mut *storage, Demo, config, stop).await.is_err() {
        fail("the network stack has no room for the server's sockets");
    }
    stopped(&storage.counters())
}

/// Logs the final counters and ends the run with a successful semihosting exit.
fn stopped(c: &doorway_core::stats::Counters) -> ! {
    // The names are the STATS keys, so `cargo xtask qemu --test` can check them.
    info!(
        "doorway stopped: connections_open={=u64} connections_accepted={=u64} \
         connections_refused={=u64} frames_in={=u64} frames_out={=u64} bytes_in={=u64} \
         bytes_out={=u64} errors_sent_1..7={}",
        c.connections_open,
        c.connections_accepted,
        c.connections_refused,
        c.frames_in,
        c.frames_out,
        c.bytes_in,
        c.bytes_out,
        c.errors_sent
    );
    semihosting::process::exit(0)
}

/// Logs `why` and ends the run with a failing semihosting exit.
fn fail(why: &str) -> ! {
    #[cfg(feature = "defmt")]
    defmt::error!("doorway firmware failed: {}", why);
    let _ = why;
    semihosting::process::exit(1)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    #[cfg(feature = "defmt")]
    defmt::error!("panic: {}", defmt::Display2Format(info));
    let _ = info;
    semihosting::process::exit(101)
}

#[cortex_m_rt::exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    fail("hard fault")
}
