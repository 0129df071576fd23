//! The three Lars programs started together in-process on free ports, on one database: what the
//! whole-system tests share.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use doorway_core::wire::Lars;
use doorway_lars::agent::{self, Endpoints};
use doorway_lars::balance;
use doorway_lars::dns::{DnsServer, DnsSettings};
use doorway_lars::reporter::{ReporterServer, ReporterSettings};
use doorway_lars::service::lars_server;
use doorway_lars::store::DbUrl;
use doorway_linux::{LinkOptions, Running};

/// Three consecutive free UDP ports on 127.0.0.1 (the agent binds base, base+1, base+2).
pub fn free_udp_base() -> u16 {
    for _ in 0..200 {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base > 65_000 {
            continue;
        }
        let rest: Vec<_> = (1..3).map(|i| UdpSocket::bind(("127.0.0.1", base + i))).collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no three consecutive free UDP ports");
}

/// Link options that reconnect within 50-300 ms, so a test sees a restarted peer at once.
pub fn fast_links() -> LinkOptions {
    LinkOptions {
        backoff_floor: Duration::from_millis(50),
        backoff_ceiling: Duration::from_millis(300),
        ..LinkOptions::default()
    }
}

/// Doorway's lars-agent on `endpoints`, with `balance`, on `shards` loops, its links reconnecting
/// fast.
pub fn start_agent(endpoints: &Endpoints, balance: balance::Config, shards: usize) -> Running<Lars> {
    let server = doorway_linux::Config { shards, ..Default::default() };
    agent::start(server, endpoints, balance, fast_links(), false).unwrap()
}

pub fn dns_settings(db: &DbUrl, listen: SocketAddr) -> DnsSettings {
    DnsSettings {
        server: doorway_linux::Config { listen, ..lars_server(0) },
        db: db.clone(),
        check_interval: Duration::from_millis(100),
        ..DnsSettings::default()
    }
}

pub fn reporter_settings(db: &DbUrl, listen: SocketAddr) -> ReporterSettings {
    ReporterSettings {
        server: doorway_linux::Config { listen, ..lars_server(0) },
        db: db.clone(),
        ..ReporterSettings::default()
    }
}

/// lars-dns (100 ms poll), lars-reporter and lars-agent (short timeouts, fast link backoff).
pub struct System {
    pub dns: DnsServer,
    pub dns_addr: SocketAddr,
    pub reporter: ReporterServer,
    pub agent: Running<Lars>,
    /// The agent's first UDP port.
    pub udp_base: u16,
}

impl System {
    /// Starts the three on `db`, the agent's nodes overloaded for at most `overload_timeout`.
    pub fn start(db: &DbUrl, overload_timeout: Duration) -> System {
        System::start_with(db, overload_timeout, 1)
    }

    /// [`System::start`] with the agent on `agent_shards` loops (3: one per UDP port).
    pub fn start_with(db: &DbUrl, overload_timeout: Duration, agent_shards: usize) -> System {
        let dns = DnsServer::start(&dns_settings(db, "127.0.0.1:0".parse().unwrap()), false).unwrap();
        let dns_addr = dns.local_addr();
        let reporter =
            ReporterServer::start(&reporter_settings(db, "127.0.0.1:0".parse().unwrap()), false).unwrap();
        let udp_base = free_udp_base();
        let endpoints = Endpoints {
            udp_base: SocketAddr::from(([127, 0, 0, 1], udp_base)),
            dns: dns_addr,
            reporter: reporter.local_addr(),
        };
        let balance = balance::Config {
            idle_timeout: Duration::from_secs(3),
            overload_timeout,
            update_timeout: Duration::from_secs(1),
            report_interval: Duration::from_millis(200),
            ..balance::Config::default()
        };
        let agent = start_agent(&endpoints, balance, agent_shards);
        System { dns, dns_addr, reporter, agent, udp_base }
    }

    /// Stops all three.
    pub fn stop(self) {
        self.agent.stop();
        self.agent.wait().unwrap();
        self.dns.handle().stop();
        self.dns.wait().unwrap();
        self.reporter.handle().stop();
        self.reporter.wait().unwrap();
    }
}
