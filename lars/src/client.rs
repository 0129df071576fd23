//! The client library: what an application uses to talk to its machine's Lars agent over UDP.
//!
//! It does what the original's C++ `lars_client` (and its Python and Go twins) do, on plain
//! blocking `std::net::UdpSocket`s:
//!
//! | call | sends | waits for |
//! |---|---|---|
//! | [`Client::get_host`] | msgid 4 `GetHostRequest { seq, modid, cmdid }` | msgid 5 `GetHostResponse` with that `seq` |
//! | [`Client::report`] | msgid 6 `ReportRequest { modid, cmdid, host, retcode }` | nothing |
//! | [`Client::get_route`] | msgid 7 `GetRouteRequest { modid, cmdid }` | msgid 8 `GetRouteResponse` of that module |
//! | [`Client::reg_init`] | `get_route` until the route is not empty, a bounded number of times | |
//!
//! # Ports
//!
//! The agent listens on three UDP ports, `base`, `base + 1` and `base + 2` (8888 to 8890 by
//! default), and each port's thread owns a third of the modules: the route `lars-dns` sends for a
//! module is filed under `(modid + cmdid) % 3`. So every request about a module must go to
//! `base + (modid + cmdid) % 3` ([`agent_port`]); sent elsewhere, the agent answers NOEXIST
//! forever. Like the original, the client holds one connected socket per port, so the kernel
//! drops datagrams from anyone but the agent, and an ICMP "port unreachable" (no agent) comes back
//! as [`Error::AgentUnreachable`] instead of a timeout.
//!
//! # Tries, timeouts, and stale replies
//!
//! UDP loses datagrams, so `get_host` and `get_route` send up to [`Config::tries`] times, waiting
//! [`Config::timeout`] after each send. Each `get_host` try carries a new `seq`, and a reply to
//! *any* try of the current call answers it (a late reply to the first try is as good as a reply to
//! the second). While waiting, the client skips *stale* datagrams, valid replies to something
//! else on the same socket: a `GetHostResponse` whose `seq` is not one of this call's (a reply to an
//! earlier call that timed out, which the original also skips), or a route reply while waiting for
//! a host, or a route reply for another module of the same port. `seq` wraps at `u32::MAX`; the
//! window is compared with wrapping arithmetic, where the original's `rsp.seq() < seq` breaks.
//!
//! A datagram that is no valid reply at all (not a frame, an unknown or unexpected msgid, a body
//! that is not protobuf, a reply for our `seq` but another module, a port outside `u16`) is a
//! [`BadReply`]. The client skips it too, as a reply it cannot use, and keeps waiting; if no
//! usable reply arrives in any try, the call fails with the last `BadReply` seen (rather than
//! [`Error::Timeout`], which means the agent sent nothing). The original returns `SYSTEM_ERROR` at
//! the first such datagram; skipping it costs nothing when a good reply follows. No reply bytes can
//! make the client panic.
//!
//! # Return codes
//!
//! `RET_SUCC` is the answer; `RET_OVERLOAD` (every node of the module is overloaded),
//! `RET_NOEXIST` (the agent has no route for the module yet; the request makes it fetch one) and
//! `RET_SYSTEM_ERROR` are [`Error::Overload`], [`Error::NoExist`] and [`Error::SystemError`]. An
//! agent answers NOEXIST to the first request about a module it does not know; call
//! [`Client::reg_init`] once per module at start-up, as the original's API asks.
//!
//! A `Client` is for one thread (every call takes `&mut self`); give each thread its own, as the
//! original's examples do.

use crate::proto::{
    ip_from_wire, Body, GetHostRequest, GetRouteRequest, HostInfo, MsgId, ReportRequest, RetCode,
};
use crate::{decode_frame, encode_frame, WireError};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// A node of a module: its IPv4 address and port.
pub type Node = (Ipv4Addr, u16);

/// How the client reaches the agent and how long it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The agent's address: 127.0.0.1, where the original's API always sends.
    pub agent: Ipv4Addr,
    /// The agent's first UDP port (8888); it also listens on the next two.
    pub base_port: u16,
    /// How long to wait for a reply after each send (200 ms).
    pub timeout: Duration,
    /// How many times `get_host` and `get_route` send before they give up (3).
    pub tries: u32,
    /// How many times `reg_init` asks for the route (3, the original's).
    pub reg_init_tries: u32,
    /// How long `reg_init` waits between two asks (50 ms, the original's).
    pub reg_init_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent: Ipv4Addr::LOCALHOST,
            base_port: 8888,
            timeout: Duration::from_millis(200),
            tries: 3,
            reg_init_tries: 3,
            reg_init_interval: Duration::from_millis(50),
        }
    }
}

/// The port of the agent that owns the module: `base_port + (modid + cmdid) mod 3`.
///
/// The sum is taken without overflow and its remainder made non-negative, so every module has a
/// port (the original indexes an array with a negative remainder when `modid + cmdid < 0`).
/// `None` when `base_port + 2` is not a port.
pub fn agent_port(base_port: u16, modid: i32, cmdid: i32) -> Option<u16> {
    // The whole range is checked, so no module passes by luck where another would not.
    base_port.checked_add(2)?;
    Some(base_port + port_index(modid, cmdid) as u16)
}

/// `(modid + cmdid) mod 3`, in `0..3`: which of the agent's ports owns the module.
fn port_index(modid: i32, cmdid: i32) -> usize {
    // Summed in `i64`, so no overflow; `rem_euclid` is never negative.
    (i64::from(modid) + i64::from(cmdid)).rem_euclid(3) as usize
}

/// Why a datagram from the agent is no valid reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadReply {
    /// Not a frame, an unknown msgid, or a body that is not protobuf.
    Wire(WireError),
    /// A message that is never a reply to the request.
    UnexpectedMsgId(MsgId),
    /// A reply to this call's request (its `seq`) about another module.
    WrongModule {
        /// The reply's modid.
        modid: i32,
        /// The reply's cmdid.
        cmdid: i32,
    },
    /// A return code that is none of the four.
    UnknownRetCode(i32),
    /// A `RET_SUCC` reply without a host.
    MissingHost,
    /// A host whose port is outside `0..=65535`.
    BadPort(i32),
}

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReply::Wire(error) => write!(f, "{error}"),
            BadReply::UnexpectedMsgId(msgid) => write!(f, "unexpected {msgid}"),
            BadReply::WrongModule { modid, cmdid } => {
                write!(f, "a reply about another module ({modid}, {cmdid})")
            }
            BadReply::UnknownRetCode(code) => write!(f, "unknown retcode {code}"),
            BadReply::MissingHost => f.write_str("RET_SUCC without a host"),
            BadReply::BadPort(port) => write!(f, "port {port} out of range"),
        }
    }
}

/// Why a call to the agent failed.
#[derive(Debug)]
pub enum Error {
    /// `RET_NOEXIST`: the agent has no route for the module (it fetches one now), or `reg_init`
    /// found the route still empty after every try.
    NoExist,
    /// `RET_OVERLOAD`: every node of the module is overloaded.
    Overload,
    /// `RET_SYSTEM_ERROR`: the agent failed.
    SystemError,
    /// No reply in any of the tries.
    Timeout {
        /// How many requests were sent.
        tries: u32,
    },
    /// Nothing listens on the agent's port (the kernel reported ICMP port unreachable).
    AgentUnreachable {
        /// The port tried.
        port: u16,
    },
    /// Datagrams came, but none was a valid reply; this is the last one's fault.
    BadReply(BadReply),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoExist => f.write_str("the agent has no route for the module (RET_NOEXIST)"),
            Error::Overload => f.write_str("every node of the module is overloaded (RET_OVERLOAD)"),
            Error::SystemError => f.write_str("the agent failed (RET_SYSTEM_ERROR)"),
            Error::Timeout { tries } => write!(f, "no reply from the agent after {tries} tries"),
            Error::AgentUnreachable { port } => write!(f, "no agent listens on UDP port {port}"),
            Error::BadReply(bad) => write!(f, "bad reply from the agent: {bad}"),
            Error::Io(error) => write!(f, "socket error: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(error) => Some(error),
            Error::BadReply(BadReply::Wire(error)) => Some(error),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Io(error)
    }
}

impl From<BadReply> for Error {
    fn from(bad: BadReply) -> Self {
        Error::BadReply(bad)
    }
}

/// What a call makes of one datagram.
enum Verdict<T> {
    /// The call's answer (a node, a route, or an error code).
    Answer(Result<T, Error>),
    /// A valid reply to something else: skip it silently.
    Stale,
    /// No valid reply: skip it, remember why.
    Bad(BadReply),
}

/// The largest datagram UDP carries; a frame is at most 65,535 bytes, so none is cut.
const RECV_BUFFER: usize = 65_536;

/// A blocking client of one Lars agent. See the [module docs](self).
pub struct Client {
    config: Config,
    /// One socket per agent port, connected to it: `sockets[i]` talks to `base_port + i`.
    sockets: [UdpSocket; 3],
    /// The next `GetHostRequest.seq`.
    seq: u32,
    /// The read timeout each socket has now (see `recv_within`).
    read_timeouts: [Duration; 3],
    buffer: Box<[u8]>,
}

impl Client {
    /// A client of the agent at 127.0.0.1:8888-8890, with the default [`Config`].
    pub fn new() -> io::Result<Client> {
        Client::with_config(Config::default())
    }

    /// A client with `config`. Fails when `base_port + 2` is not a port, `tries` or
    /// `reg_init_tries` is 0, or `timeout` is zero (`InvalidInput`), or a socket cannot be opened.
    pub fn with_config(config: Config) -> io::Result<Client> {
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("lars client: {what}"));
        if config.base_port.checked_add(2).is_none() {
            return Err(invalid("base_port + 2 is over 65535"));
        }
        if config.tries == 0 || config.reg_init_tries == 0 {
            return Err(invalid("tries and reg_init_tries must be at least 1"));
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout must be above zero"));
        }
        let open = |index: u16| -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(SocketAddrV4::new(config.agent, config.base_port + index))?;
            socket.set_read_timeout(Some(config.timeout))?;
            Ok(socket)
        };
        let sockets = [open(0)?, open(1)?, open(2)?];
        let read_timeouts = [config.timeout; 3];
        Ok(Client { config, sockets, seq: 0, read_timeouts, buffer: vec![0; RECV_BUFFER].into_boxed_slice() })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One node of the module, chosen by the agent.
    pub fn get_host(&mut self, modid: i32, cmdid: i32) -> Result<Node, Error> {
        let first_seq = self.seq;
        let tries = self.config.tries;
        let request = |attempt: u32| {
            let seq = first_seq.wrapping_add(attempt);
            encode_frame(MsgId::GetHostRequest, &GetHostRequest { seq, modid, cmdid })
        };
        let accept = |body: Body| match body {
            Body::GetHostResponse(reply) if reply.seq.wrapping_sub(first_seq) < tries => {
                if (reply.modid, reply.cmdid) != (modid, cmdid) {
                    return Verdict::Bad(BadReply::WrongModule { modid: reply.modid, cmdid: reply.cmdid });
                }
                match RetCode::try_from(reply.retcode) {
                    Ok(RetCode::Succ) => match reply.host {
                        Some(host) => node(&host).map_or_else(Verdict::Bad, |n| Verdict::Answer(Ok(n))),
                        None => Verdict::Bad(BadReply::MissingHost),
                    },
                    Ok(RetCode::Overload) => Verdict::Answer(Err(Error::Overload)),
                    Ok(RetCode::NoExist) => Verdict::Answer(Err(Error::NoExist)),
                    Ok(RetCode::SystemError) => Verdict::Answer(Err(Error::SystemError)),
                    Err(unknown) => Verdict::Bad(BadReply::UnknownRetCode(unknown.value)),
                }
            }
            Body::GetHostResponse(_) | Body::ApiGetRouteResponse(_) => Verdict::Stale,
            other => Verdict::Bad(BadReply::UnexpectedMsgId(other.msgid())),
        };
        let (result, sent) = self.call(modid, cmdid, request, accept);
        self.seq = first_seq.wrapping_add(sent);
        result
    }

    /// Tells the agent how a call to `host` went: `RetCode::Succ` for a success, anything else is
    /// counted as a failure. Fire-and-forget: nothing comes back.
    pub fn report(&mut self, modid: i32, cmdid: i32, host: Node, retcode: RetCode) -> Result<(), Error> {
        let host = HostInfo::from_addr(SocketAddrV4::new(host.0, host.1));
        let report =
            ReportRequest { modid, cmdid, host: Some(host), retcode: retcode.into(), latency_us: None };
        let frame = encode_frame(MsgId::ReportRequest, &report).map_err(request_error)?;
        let index = port_index(modid, cmdid);
        self.send(index, &frame)
    }

    /// Every node of the module, as the agent holds them. Empty when the module has no nodes, or
    /// when the agent does not know it yet (it fetches the route now; see [`Client::reg_init`]).
    pub fn get_route(&mut self, modid: i32, cmdid: i32) -> Result<Vec<Node>, Error> {
        let request = |_| encode_frame(MsgId::ApiGetRouteRequest, &GetRouteRequest { modid, cmdid });
        let accept = |body: Body| match body {
            Body::ApiGetRouteResponse(reply) if (reply.modid, reply.cmdid) == (modid, cmdid) => {
                match reply.host.iter().map(node).collect() {
                    Ok(route) => Verdict::Answer(Ok(route)),
                    Err(bad) => Verdict::Bad(bad),
                }
            }
            Body::ApiGetRouteResponse(_) | Body::GetHostResponse(_) => Verdict::Stale,
            other => Verdict::Bad(BadReply::UnexpectedMsgId(other.msgid())),
        };
        self.call(modid, cmdid, request, accept).0
    }

    /// Registers the module with the agent at start-up: asks for its route until it is not empty,
    /// at most [`Config::reg_init_tries`] times, [`Config::reg_init_interval`] apart, and returns
    /// it. As in the original, the first ask makes an agent that does not know the module fetch
    /// its route from `lars-dns`, and the later ones find it. [`Error::NoExist`] when the route is
    /// still empty after the last ask; other errors are returned as they happen.
    pub fn reg_init(&mut self, modid: i32, cmdid: i32) -> Result<Vec<Node>, Error> {
        for attempt in 1..=self.config.reg_init_tries {
            let route = self.get_route(modid, cmdid)?;
            if !route.is_empty() {
                return Ok(route);
            }
            if attempt < self.config.reg_init_tries {
                thread::sleep(self.config.reg_init_interval);
            }
        }
        Err(Error::NoExist)
    }

    fn port(&self, index: usize) -> u16 {
        // `with_config` checked that `base_port + 2` is a port, and `index < 3`.
        self.config.base_port + index as u16
    }

    /// Sends one datagram. A connected UDP socket reports an earlier datagram's ICMP error on the
    /// next call, and that send is then not made, so a refusal is tried once more before it counts.
    fn send(&self, index: usize, frame: &[u8]) -> Result<(), Error> {
        let socket = &self.sockets[index];
        for _ in 0..2 {
            match socket.send(frame) {
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(error) => return Err(Error::Io(error)),
            }
        }
        Err(Error::AgentUnreachable { port: self.port(index) })
    }

    /// Sends `request(attempt)` up to `tries` times and judges every datagram that comes back with
    /// `accept` until one answers. Returns the result and how many requests were sent.
    fn call<T>(
        &mut self,
        modid: i32,
        cmdid: i32,
        request: impl Fn(u32) -> Result<Vec<u8>, WireError>,
        accept: impl Fn(Body) -> Verdict<T>,
    ) -> (Result<T, Error>, u32) {
        let index = port_index(modid, cmdid);
        // Why the call has no answer yet, if not plain silence.
        let mut failure: Option<Error> = None;
        for attempt in 0..self.config.tries {
            let sent = attempt + 1;
            let frame = match request(attempt) {
                Ok(frame) => frame,
                Err(error) => return (Err(request_error(error)), attempt),
            };
            match self.send(index, &frame) {
                Ok(()) => {}
                Err(error @ Error::AgentUnreachable { .. }) => {
                    failure = Some(error);
                    continue;
                }
                Err(error) => return (Err(error), sent),
            }
            let deadline = Instant::now() + self.config.timeout;
            let mut wait = self.config.timeout;
            loop {
                let datagram = match self.recv_within(index, wait) {
                    Ok(Some(len)) => &self.buffer[..len],
                    Ok(None) => break,
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                        failure = Some(Error::AgentUnreachable { port: self.port(index) });
                        break;
                    }
                    Err(error) => return (Err(Error::Io(error)), sent),
                };
                let body = decode_frame(datagram).and_then(|frame| frame.decode());
                match body.map_or_else(|error| Verdict::Bad(BadReply::Wire(error)), &accept) {
                    Verdict::Answer(result) => return (result, sent),
                    Verdict::Stale => {}
                    Verdict::Bad(bad) => failure = Some(Error::BadReply(bad)),
                }
                wait = deadline.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
            }
        }
        let tries = self.config.tries;
        (Err(failure.unwrap_or(Error::Timeout { tries })), tries)
    }

    /// Receives one datagram on `sockets[index]` into `buffer`, or `None` after waiting `wait`.
    ///
    /// Setting a socket's read timeout is a system call, so each socket keeps the last one set
    /// (`read_timeouts`) and it is set only when `wait` differs: a try's first wait is always
    /// `config.timeout`, and only a wait after a stale or bad datagram is shorter. This keeps a
    /// `get_host` at one `send` and one `recv`, as the original's (which waits forever) is.
    fn recv_within(&mut self, index: usize, wait: Duration) -> io::Result<Option<usize>> {
        let socket = &self.sockets[index];
        if self.read_timeouts[index] != wait {
            socket.set_read_timeout(Some(wait))?;
            self.read_timeouts[index] = wait;
        }
        loop {
            match socket.recv(&mut self.buffer) {
                Ok(len) => return Ok(Some(len)),
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                // A signal: wait again (at most `wait` more; the caller's deadline bounds the try).
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the receive buffer: 64 KiB of bytes say nothing.
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("sockets", &self.sockets)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A host of a reply as a node, or why it is none.
fn node(host: &HostInfo) -> Result<Node, BadReply> {
    let port = u16::try_from(host.port).map_err(|_| BadReply::BadPort(host.port))?;
    Ok((ip_from_wire(host.ip), port))
}

/// A request that cannot be framed. The client's requests are a few dozen bytes, far below the
/// limit, so this does not happen; it is mapped rather than unwrapped to keep the client panic-free.
fn request_error(error: WireError) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_goes_to_base_plus_modid_plus_cmdid_mod_3() {
        assert_eq!(agent_port(8888, 1, 1), Some(8890));
        assert_eq!(agent_port(8888, 1, 2), Some(8888));
        assert_eq!(agent_port(8888, 1, 3), Some(8889));
        assert_eq!(agent_port(8888, i32::MAX, i32::MAX), Some(8888 + ((2 * i64::from(i32::MAX)) % 3) as u16));
        assert_eq!(agent_port(8888, -5, 3), Some(8889), "-2 mod 3 is 1");
        assert_eq!(
            agent_port(8888, i32::MIN, i32::MIN),
            Some(8888 + (2 * i64::from(i32::MIN)).rem_euclid(3) as u16)
        );
        assert_eq!(agent_port(65_533, 1, 1), Some(65_535));
        assert_eq!(agent_port(65_534, 0, 0), None);
    }

    #[test]
    fn a_config_the_client_cannot_use_is_refused() {
        for config in [
            Config { base_port: 65_534, ..Config::default() },
            Config { tries: 0, ..Config::default() },
            Config { reg_init_tries: 0, ..Config::default() },
            Config { timeout: Duration::ZERO, ..Config::default() },
        ] {
            let error = Client::with_config(config).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
