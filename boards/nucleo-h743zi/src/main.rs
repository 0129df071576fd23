//! doorway firmware for NUCLEO-H743ZI: STM32H743ZI at 400 MHz, LAN8742A PHY over RMII.
//!
//! The same server as the QEMU board: `doorway_embedded::serve` with the demo service on port
//! 7200, here on embassy-stm32's `eth` driver with an address from DHCP. embassy's thread
//! executor sleeps in WFE between events (real Cortex-M7 silicon does sleep there). Logs go out
//! over RTT with defmt, and a panic prints through `panic-probe`; `cargo xtask flash
//! nucleo-h743zi` builds, flashes and runs it with `probe-rs run`, which decodes both.
//!
//! # Identity
//!
//! The MAC address comes from all 96 bits of the chip's unique ID ([`mac`]): unique per board,
//! the same at every boot. The stack's random seed (TCP initial sequence numbers, local ports)
//! comes from the hardware RNG, so it differs at every boot, as in embassy's STM32H7 Ethernet
//! example; a seed from the unique ID would repeat the same sequence numbers after each reset.
#![no_std]
#![no_main]

mod mac;

use doorway_core::demo::Demo;
use doorway_embedded::{new_stack, serve, Config, DefaultStorage, ServerStack};
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue};
use embassy_stm32::peripherals::{ETH, RNG};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::{bind_interrupts, eth};
use static_cell::{ConstStaticCell, StaticCell};

#[cfg(feature = "defmt")]
use defmt_rtt as _;
use panic_probe as _;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<RNG>;
});

/// The stack's sockets: the server's (the storage's count, 6 for 4 connections) and DHCP's.
const STACK_SOCKETS: usize = DefaultStorage::SOCKETS + 1;

type Device = Ethernet<'static, ETH, GenericPhy>;

static STORAGE: ConstStaticCell<DefaultStorage> = ConstStaticCell::new(DefaultStorage::new());
static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
static STACK_RESOURCES: StaticCell<StackResources<STACK_SOCKETS>> = StaticCell::new();

/// Logs at `$level` through defmt, or nothing without the `defmt` feature.
macro_rules! log {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::$level!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        {
            $( let _ = &$arg; )*
        }
    }};
}

macro_rules! info {
    ($($arg:tt)*) => { log!(info, $($arg)*) };
}

macro_rules! error {
    ($($arg:tt)*) => { log!(error, $($arg)*) };
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut config = embassy_stm32::Config::default();
    {
        use embassy_stm32::rcc::*;
        config.rcc.hsi = Some(HSIPrescaler::DIV1);
        config.rcc.csi = true;
        config.rcc.pll1 = Some(Pll {
            source: PllSource::HSI,
            prediv: PllPreDiv::DIV4,
            mul: PllMul::MUL50,
            divp: Some(PllDiv::DIV2),
            divq: None,
            divr: None,
        });
        config.rcc.sys = Sysclk::PLL1_P; // 400 MHz
        config.rcc.ahb_pre = AHBPrescaler::DIV2; // 200 MHz
        config.rcc.apb1_pre = APBPrescaler::DIV2;
        config.rcc.apb2_pre = APBPrescaler::DIV2;
        config.rcc.apb3_pre = APBPrescaler::DIV2;
        config.rcc.apb4_pre = APBPrescaler::DIV2;
        config.rcc.voltage_scale = VoltageScale::Scale1;
        config.rcc.hsi48 = Some(Hsi48Config::new()); // the RNG's clock
    }
    let p = embassy_stm32::init(config);
    info!("doorway nucleo-h743zi booting");

    // The board's own MAC, and a seed that is new at every boot (see "Identity").
    let mac = mac::from_uid(embassy_stm32::uid::uid());
    let seed = Rng::new(p.RNG, Irqs).next_u64();

    // Pins of the NUCLEO-144 RMII wiring (UM1974): REF_CLK PA1, MDIO PA2, MDC PC1, CRS_DV PA7,
    // RXD0 PC4, RXD1 PC5, TXD0 PG13, TXD1 PB13, TX_EN PG11.
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::<4, 4>::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA2,
        p.PC1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        GenericPhy::new_auto(),
        mac,
    );
    let net_config = embassy_net::Config::dhcpv4(Default::default());
    match new_stack(device, net_config, STACK_RESOURCES.init(StackResources::new()), seed) {
        Ok((stack, runner)) => {
            spawner.must_spawn(net(runner));
            spawner.must_spawn(server(stack));
        }
        Err(e) => error!("doorway cannot start: {}", e),
    }
}

#[embassy_executor::task]
async fn net(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn server(mut stack: ServerStack<'static>) {
    let net = stack.stack();
    net.wait_config_up().await;
    if let Some(v4) = net.config_v4() {
        info!("doorway listening on {}:7200", v4.address.address());
        let _ = v4;
    }
    // `serve` returns only if it cannot start.
    let e = serve(&mut stack, STORAGE.take(), Demo, Config::new()).await;
    error!("doorway cannot start: {}", e);
}
