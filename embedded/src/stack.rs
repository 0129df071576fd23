//! The network stack a server runs on, sized from its [`Storage`](crate::Storage).
//!
//! embassy-net keeps its sockets in a fixed set, `StackResources<SOCK>`, and smoltcp panics when a
//! socket is added to a full set. The server adds `SOCKETS` TCP sockets (a const generic of
//! `Storage`) and the stack adds its own (one for DHCP), so a `StackResources` sized on its own
//! would turn a miscount into a panic inside [`serve`](crate::serve). Instead:
//!
//! - the count has one source: size the resources from the storage type,
//!   `StackResources<{ MyStorage::SOCKETS }>` with a static address, `{ MyStorage::SOCKETS + 1 }`
//!   with DHCP (see [`Storage::SOCKETS`](crate::Storage::SOCKETS));
//! - [`new_stack`] wraps `embassy_net::new` and records how many sockets the set has left once the
//!   stack took its own: the [`ServerStack`]'s room;
//! - `serve` and `serve_until` take a `ServerStack`, never a bare `Stack`, and check the room
//!   against `SOCKETS` before creating a socket. A mismatch is [`StartError::TooFewSockets`],
//!   which they return at once, naming both counts.
//!
//! The server borrows the `ServerStack` mutably while it runs, so two servers cannot count the
//! same room. What the check cannot see are sockets created elsewhere (the firmware's own UDP
//! socket, or the one embassy-net's `dns` feature adds): count them in `StackResources` as well,
//! or the last socket created still panics in smoltcp.

use core::fmt;

use embassy_net::driver::Driver;
use embassy_net::{ConfigV4, Runner, Stack, StackResources};

/// An embassy-net stack with a known number of sockets free for a server ([`new_stack`]).
///
/// Copy out [`stack`](Self::stack) for the rest of the firmware (waiting for DHCP, other
/// sockets); hand `&mut` of this to [`serve`](crate::serve) or [`serve_until`](crate::serve_until).
pub struct ServerStack<'d> {
    stack: Stack<'d>,
    /// Sockets left in the set once the stack took its own.
    room: usize,
    /// The size of the set, for error messages.
    size: usize,
}

impl<'d> ServerStack<'d> {
    /// The embassy-net stack.
    pub fn stack(&self) -> Stack<'d> {
        self.stack
    }

    /// Sockets the stack left for the server.
    pub fn room(&self) -> usize {
        self.room
    }

    /// `Ok` if `sockets` server sockets fit.
    pub(crate) fn check_room(&self, sockets: usize) -> Result<(), StartError> {
        if sockets <= self.room {
            Ok(())
        } else {
            Err(StartError::TooFewSockets { needed: sockets + (self.size - self.room), available: self.size })
        }
    }
}

/// Why a server could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// The stack's `StackResources` has `available` sockets, and the server's sockets plus the
    /// stack's own (DHCP) need `needed`. Size it from the storage: see [`crate::stack`].
    TooFewSockets {
        /// Sockets needed: the storage's `SOCKETS`, plus one for DHCP if configured.
        needed: usize,
        /// The `SOCK` of the `StackResources<SOCK>` the stack was made with.
        available: usize,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::TooFewSockets { needed, available } => write!(
                f,
                "the network stack has {available} sockets and the server needs {needed}: size \
                 StackResources from Storage::SOCKETS"
            ),
        }
    }
}

impl core::error::Error for StartError {}

/// Creates the embassy-net stack for a server: `embassy_net::new`, plus the count of sockets it
/// leaves free (see the module docs).
///
/// Fails, before creating anything, if the configuration needs a socket of the stack's own (DHCP)
/// and `resources` has none, which would panic inside `embassy_net::new`.
pub fn new_stack<'d, D: Driver, const SOCK: usize>(
    driver: D,
    config: embassy_net::Config,
    resources: &'d mut StackResources<SOCK>,
    random_seed: u64,
) -> Result<(ServerStack<'d>, Runner<'d, D>), StartError> {
    let own = stack_sockets(&config);
    if own > SOCK {
        return Err(StartError::TooFewSockets { needed: own, available: SOCK });
    }
    let (stack, runner) = embassy_net::new(driver, config, resources, random_seed);
    Ok((ServerStack { stack, room: SOCK - own, size: SOCK }, runner))
}

/// Sockets embassy-net adds to the set itself for `config`: one for a DHCP client.
fn stack_sockets(config: &embassy_net::Config) -> usize {
    // `ConfigV4::Dhcp` exists only with embassy-net's `dhcpv4` feature, so it is "neither of
    // the others".
    usize::from(!matches!(config.ipv4, ConfigV4::None | ConfigV4::Static(_)))
}
