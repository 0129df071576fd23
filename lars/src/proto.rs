//! The Lars messages: protobuf bodies, their message ids and the return codes.
//!
//! Lars (package `lars`, proto3) has six protobuf messages and eight message ids: msgid 7
//! (`API_GetRouteRequest`) carries a [`GetRouteRequest`] body and msgid 8 (`API_GetRouteResponse`) a
//! [`GetRouteResponse`] body, exactly as in the original, which has no separate types for them.
//! The structs are written out here with `prost`'s derive (no build script, no `protoc`); field
//! numbers and types are the original's `lars.proto`:
//!
//! | msgid | message | fields |
//! |---:|---|---|
//! | 1 | `GetRouteRequest` | 1 modid i32, 2 cmdid i32 |
//! | 2 | `GetRouteResponse` | 1 modid, 2 cmdid, 3 repeated `HostInfo` host |
//! | 3 | `ReportStatusRequest` | 1 modid, 2 cmdid, 3 caller i32, 4 repeated `HostCallResult` results, 5 ts u32 |
//! | 4 | `GetHostRequest` | 1 seq u32, 2 modid, 3 cmdid |
//! | 5 | `GetHostResponse` | 1 seq, 2 modid, 3 cmdid, 4 retcode i32, 5 `HostInfo` host |
//! | 6 | `ReportRequest` | 1 modid, 2 cmdid, 3 `HostInfo` host, 4 retcode i32 |
//! | 7 | `API_GetRouteRequest` | as `GetRouteRequest` |
//! | 8 | `API_GetRouteResponse` | as `GetRouteResponse` |
//!
//! The proto3 package name (`lars`) does not reach the wire; it would matter only to reflection or
//! `Any`, which Lars does not use, so the derive needs no trace of it.
//!
//! `prost` writes what protobuf C++ writes for these types (checked byte for byte against the
//! original's output in `tests/wire_vectors.rs`): fields in number order, proto3 defaults left out,
//! a negative `int32` as a ten-byte varint, and a singular message field (`host` of msgids 5 and 6)
//! with presence: `None` is absent, `Some(HostInfo::default())` is present and empty (two bytes).
//!
//! Addresses: `HostInfo.ip`, `HostCallResult.ip` and `ReportStatusRequest.caller` hold the
//! host-order 32-bit integer of the dotted quad (192.168.1.101 is `0xC0A8_0165`) in an `int32`, so
//! every address from 128.0.0.0 up is negative on the wire. [`ip_to_wire`] and [`ip_from_wire`]
//! convert; nothing else in this crate reinterprets the bits.
//!
//! The return code stays an `i32` in the messages (an agent may answer a code this crate does not
//! know); [`RetCode`] is the typed view, reached with `RetCode::try_from(reply.retcode)`.
//!
//! [`MsgId`] and [`Body`] are generated from one table (the `messages!` invocation below), so a
//! message id, its name, its body type and its decoder are declared once.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The IPv4 address as Lars carries it: the host-order integer of the dotted quad, in an `int32`.
pub fn ip_to_wire(ip: Ipv4Addr) -> i32 {
    i32::from_be_bytes(ip.octets())
}

/// The IPv4 address of a Lars `int32` address field (any value is a valid address).
pub fn ip_from_wire(ip: i32) -> Ipv4Addr {
    Ipv4Addr::from(ip.to_be_bytes())
}

/// One node of a route: an IPv4 address (see [`ip_to_wire`]) and a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct HostInfo {
    /// The host-order integer of the IPv4 address.
    #[prost(int32, tag = "1")]
    pub ip: i32,
    /// The port; an `int32` on the wire, so a reply may carry a value no port can have.
    #[prost(int32, tag = "2")]
    pub port: i32,
}

impl HostInfo {
    /// The wire form of `addr`.
    pub fn from_addr(addr: SocketAddrV4) -> Self {
        Self { ip: ip_to_wire(*addr.ip()), port: i32::from(addr.port()) }
    }

    /// The address and port, or `None` when `port` is outside `0..=65535`.
    pub fn to_addr(&self) -> Option<SocketAddrV4> {
        let port = u16::try_from(self.port).ok()?;
        Some(SocketAddrV4::new(ip_from_wire(self.ip), port))
    }
}

/// The calls to one node in the agent's current window, sent upstream to `lars-reporter`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct HostCallResult {
    /// The node's address (see [`ip_to_wire`]).
    #[prost(int32, tag = "1")]
    pub ip: i32,
    /// The node's port.
    #[prost(int32, tag = "2")]
    pub port: i32,
    /// Successful calls.
    #[prost(uint32, tag = "3")]
    pub succ: u32,
    /// Failed calls.
    #[prost(uint32, tag = "4")]
    pub err: u32,
    /// Whether the agent holds the node overloaded.
    #[prost(bool, tag = "5")]
    pub overload: bool,
}

/// msgid 1 (agent → `lars-dns`) and msgid 7 (application → agent): which nodes serve a module?
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct GetRouteRequest {
    /// The module's first half.
    #[prost(int32, tag = "1")]
    pub modid: i32,
    /// The module's second half.
    #[prost(int32, tag = "2")]
    pub cmdid: i32,
}

/// msgid 2 (`lars-dns` → agent: a reply, and later pushes) and msgid 8 (agent → application).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct GetRouteResponse {
    /// The module's first half, as asked.
    #[prost(int32, tag = "1")]
    pub modid: i32,
    /// The module's second half, as asked.
    #[prost(int32, tag = "2")]
    pub cmdid: i32,
    /// The module's route; empty for a module with no nodes (or one the agent does not know yet).
    #[prost(message, repeated, tag = "3")]
    pub host: Vec<HostInfo>,
}

/// msgid 3 (agent → `lars-reporter`, no reply): the calls to a module's nodes.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ReportStatusRequest {
    /// The module's first half.
    #[prost(int32, tag = "1")]
    pub modid: i32,
    /// The module's second half.
    #[prost(int32, tag = "2")]
    pub cmdid: i32,
    /// The reporting agent's IPv4 address (see [`ip_to_wire`]).
    #[prost(int32, tag = "3")]
    pub caller: i32,
    /// One entry per node.
    #[prost(message, repeated, tag = "4")]
    pub results: Vec<HostCallResult>,
    /// Unix seconds.
    #[prost(uint32, tag = "5")]
    pub ts: u32,
}

/// msgid 4 (application → agent, UDP): give me one node of a module.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct GetHostRequest {
    /// Chosen by the client; the reply carries it back.
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    /// The module's first half.
    #[prost(int32, tag = "2")]
    pub modid: i32,
    /// The module's second half.
    #[prost(int32, tag = "3")]
    pub cmdid: i32,
}

/// msgid 5 (agent → application, UDP): the node chosen, or why there is none.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct GetHostResponse {
    /// The request's `seq`.
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    /// The module's first half, as asked.
    #[prost(int32, tag = "2")]
    pub modid: i32,
    /// The module's second half, as asked.
    #[prost(int32, tag = "3")]
    pub cmdid: i32,
    /// A [`RetCode`]; kept raw because the agent may send any `int32`.
    #[prost(int32, tag = "4")]
    pub retcode: i32,
    /// The node, present when `retcode` is `SUCC` (the original leaves it out otherwise).
    #[prost(message, optional, tag = "5")]
    pub host: Option<HostInfo>,
}

/// msgid 6 (application → agent, UDP, no reply): how a call to a node went.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ReportRequest {
    /// The module's first half.
    #[prost(int32, tag = "1")]
    pub modid: i32,
    /// The module's second half.
    #[prost(int32, tag = "2")]
    pub cmdid: i32,
    /// The node called.
    #[prost(message, optional, tag = "3")]
    pub host: Option<HostInfo>,
    /// 0 (`SUCC`) for a successful call; the agent counts every other value as a failure.
    #[prost(int32, tag = "4")]
    pub retcode: i32,
    /// The call's latency in microseconds, if the API measured it (a field the original does not
    /// have and ignores; doorway's agent uses it for the optional latency-aware choice).
    #[prost(uint32, optional, tag = "5")]
    pub latency_us: Option<u32>,
}

/// An integer the wire carries that names no known value, kept for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Unknown<T> {
    /// The value received.
    pub value: i32,
    what: core::marker::PhantomData<T>,
}

impl<T> Unknown<T> {
    fn new(value: i32) -> Self {
        Self { value, what: core::marker::PhantomData }
    }
}

/// The name of what an [`Unknown`] failed to be, for its `Display`.
pub trait Named {
    /// For example "msgid".
    const WHAT: &'static str;
}

impl<T: Named> fmt::Display for Unknown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {}", T::WHAT, self.value)
    }
}

impl<T: Named + fmt::Debug> std::error::Error for Unknown<T> {}

/// A fieldless `#[repr(i32)]` enum with its original names and both conversions to and from `i32`.
macro_rules! int_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, $original:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name the original gives this value.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $original, )*
                }
            }
        }

        impl Named for $name {
            const WHAT: &'static str = $what;
        }

        impl From<$name> for i32 {
            fn from(value: $name) -> i32 {
                value as i32
            }
        }

        impl TryFrom<i32> for $name {
            type Error = Unknown<$name>;

            fn try_from(value: i32) -> Result<Self, Self::Error> {
                match value {
                    $( $value => Ok($name::$variant), )*
                    _ => Err(Unknown::new(value)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

int_enum! {
    /// The return codes of `GetHostResponse.retcode` and `ReportRequest.retcode`.
    pub enum RetCode: "retcode" {
        /// The call succeeded / a node was chosen.
        Succ = 0, "RET_SUCC";
        /// Every node of the module is overloaded.
        Overload = 1, "RET_OVERLOAD";
        /// The agent failed.
        SystemError = 2, "RET_SYSTEM_ERROR";
        /// The agent has no route for the module (yet: it fetches one on this request).
        NoExist = 3, "RET_NOEXIST";
    }
}

/// Declares the message table once: [`MsgId`] and [`Body`] come from it.
macro_rules! messages {
    ($( $(#[$meta:meta])* $variant:ident = $id:literal, $original:literal, $body:ty; )*) => {
        int_enum! {
            /// The message id in a frame's head.
            pub enum MsgId: "msgid" {
                $( $(#[$meta])* $variant = $id, $original; )*
            }
        }

        /// A decoded message: its id (the variant) and its body.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Body {
            $( $(#[$meta])* $variant($body), )*
        }

        impl Body {
            /// The message id this body is sent under.
            pub fn msgid(&self) -> MsgId {
                match self {
                    $( Body::$variant(_) => MsgId::$variant, )*
                }
            }

            /// Decodes `bytes` as the body type of `msgid`.
            pub fn decode(msgid: MsgId, bytes: &[u8]) -> Result<Body, prost::DecodeError> {
                use prost::Message as _;
                Ok(match msgid {
                    $( MsgId::$variant => Body::$variant(<$body>::decode(bytes)?), )*
                })
            }

            /// The protobuf encoding of the body (no head).
            pub fn encode_to_vec(&self) -> Vec<u8> {
                use prost::Message as _;
                match self {
                    $( Body::$variant(body) => body.encode_to_vec(), )*
                }
            }
        }
    };
}

messages! {
    /// Agent → `lars-dns` (TCP).
    GetRouteRequest = 1, "GetRouteRequest", GetRouteRequest;
    /// `lars-dns` → agent (TCP): a reply, and later pushes.
    GetRouteResponse = 2, "GetRouteResponse", GetRouteResponse;
    /// Agent → `lars-reporter` (TCP), no reply.
    ReportStatusRequest = 3, "ReportStatusRequest", ReportStatusRequest;
    /// Application → agent (UDP).
    GetHostRequest = 4, "GetHostRequest", GetHostRequest;
    /// Agent → application (UDP).
    GetHostResponse = 5, "GetHostResponse", GetHostResponse;
    /// Application → agent (UDP), no reply.
    ReportRequest = 6, "ReportRequest", ReportRequest;
    /// Application → agent (UDP); the body is a `GetRouteRequest`.
    ApiGetRouteRequest = 7, "API_GetRouteRequest", GetRouteRequest;
    /// Agent → application (UDP); the body is a `GetRouteResponse`.
    ApiGetRouteResponse = 8, "API_GetRouteResponse", GetRouteResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_128_up_are_negative_on_the_wire() {
        assert_eq!(ip_to_wire(Ipv4Addr::new(192, 168, 1, 101)), -1_062_731_419);
        assert_eq!(ip_to_wire(Ipv4Addr::new(127, 0, 0, 1)), 2_130_706_433);
        assert_eq!(ip_to_wire(Ipv4Addr::new(128, 0, 0, 0)), i32::MIN);
        for ip in [0, 1, -1, i32::MIN, i32::MAX, -1_062_731_419] {
            assert_eq!(ip_to_wire(ip_from_wire(ip)), ip);
        }
    }

    #[test]
    fn a_host_with_an_impossible_port_has_no_address() {
        assert_eq!(HostInfo { ip: 0, port: -1 }.to_addr(), None);
        assert_eq!(HostInfo { ip: 0, port: 65_536 }.to_addr(), None);
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 65_535);
        assert_eq!(HostInfo::from_addr(addr).to_addr(), Some(addr));
    }

    #[test]
    fn every_known_integer_converts_both_ways_and_others_are_errors() {
        for (n, id) in MsgId::ALL.iter().enumerate() {
            assert_eq!(i32::from(*id), n as i32 + 1);
            assert_eq!(MsgId::try_from(i32::from(*id)), Ok(*id));
        }
        for (n, code) in RetCode::ALL.iter().enumerate() {
            assert_eq!(RetCode::try_from(n as i32), Ok(*code));
        }
        assert_eq!(MsgId::try_from(9).unwrap_err().to_string(), "unknown msgid 9");
        assert_eq!(RetCode::try_from(-1).unwrap_err().to_string(), "unknown retcode -1");
        assert_eq!(MsgId::ApiGetRouteResponse.to_string(), "API_GetRouteResponse");
        assert_eq!(RetCode::NoExist.to_string(), "RET_NOEXIST");
    }
}
