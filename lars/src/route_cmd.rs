//! `lars-dns route set` and `lars-dns route list`: the one correct way to edit routes by hand.
//!
//! `route set MODID CMDID [IP:PORT ...]` replaces the module's nodes by those given (none: the
//! module has no route) through [`Store::set_route`], which edits `RouteData`, adds the module's
//! `RouteChange` row and bumps `RouteVersion` in one transaction, so every running `lars-dns`
//! pushes the new route to its subscribers on its next poll. Addresses are checked before the
//! database is opened: a malformed address, a port out of range or a duplicate node is a
//! [`NodeError`] naming the argument, and nothing is written.
//!
//! `route list [MODID CMDID]` prints one line per node, `MODID CMDID IP:PORT`, ordered.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::store::{self, DbUrl, Module, Node, Route, StoreError};

/// Why an `IP:PORT` argument is not a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// No `:` between an address and a port.
    NoPort(String),
    /// The part before the `:` is not a dotted-quad IPv4 address.
    BadAddress(String),
    /// The port is not a number from 1 to 65535.
    BadPort(String),
    /// The same node twice in one route.
    Duplicate(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NoPort(arg) => write!(f, "`{arg}` is not IP:PORT (no port)"),
            NodeError::BadAddress(arg) => {
                write!(f, "`{arg}`: the address is not an IPv4 address such as 10.0.0.1")
            }
            NodeError::BadPort(arg) => write!(f, "`{arg}`: the port is not a number from 1 to 65535"),
            NodeError::Duplicate(arg) => write!(f, "`{arg}` is given twice"),
        }
    }
}

impl std::error::Error for NodeError {}

/// Reads one `IP:PORT` argument.
pub fn parse_node(arg: &str) -> Result<Node, NodeError> {
    let (ip, port) = arg.rsplit_once(':').ok_or_else(|| NodeError::NoPort(arg.to_string()))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| NodeError::BadAddress(arg.to_string()))?;
    // `u16::from_str` takes a leading `+`; a port written so is a typo, not a port.
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let port = match port.parse::<u16>() {
        Ok(port) if digits && port != 0 => port,
        _ => return Err(NodeError::BadPort(arg.to_string())),
    };
    Ok(SocketAddrV4::new(ip, port))
}

/// Reads every `IP:PORT` argument of a route, refusing duplicates.
pub fn parse_nodes<S: AsRef<str>>(args: &[S]) -> Result<Vec<Node>, NodeError> {
    let mut seen = HashSet::new();
    args.iter()
        .map(|arg| {
            let node = parse_node(arg.as_ref())?;
            if !seen.insert(node) {
                return Err(NodeError::Duplicate(arg.as_ref().to_string()));
            }
            Ok(node)
        })
        .collect()
}

/// Why a route command failed.
#[derive(Debug)]
pub enum RouteCmdError {
    /// An argument is not a node.
    Node(NodeError),
    /// The database refused.
    Store(StoreError),
    /// Writing the output failed.
    Output(std::io::Error),
}

impl fmt::Display for RouteCmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteCmdError::Node(e) => e.fmt(f),
            RouteCmdError::Store(e) => e.fmt(f),
            RouteCmdError::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for RouteCmdError {}

impl From<NodeError> for RouteCmdError {
    fn from(e: NodeError) -> Self {
        RouteCmdError::Node(e)
    }
}

impl From<StoreError> for RouteCmdError {
    fn from(e: StoreError) -> Self {
        RouteCmdError::Store(e)
    }
}

impl From<std::io::Error> for RouteCmdError {
    fn from(e: std::io::Error) -> Self {
        RouteCmdError::Output(e)
    }
}

/// `route set`: commits `module`'s new route and writes `module N nodes, version V` to `out`.
pub fn set<S: AsRef<str>>(
    db: &DbUrl,
    module: Module,
    nodes: &[S],
    out: &mut impl Write,
) -> Result<i64, RouteCmdError> {
    let nodes = parse_nodes(nodes)?;
    let mut store = store::open(db)?;
    let version = store.set_route(module, &nodes)?;
    writeln!(out, "{module}: {} node(s), version {version}", nodes.len())?;
    Ok(version)
}

/// `route list`: writes one line per node (`MODID CMDID IP:PORT`) of `module`, or of all.
pub fn list(db: &DbUrl, module: Option<Module>, out: &mut impl Write) -> Result<Vec<Route>, RouteCmdError> {
    let mut store = store::open(db)?;
    let routes = store.routes(module)?;
    for route in &routes {
        writeln!(out, "{} {}", route.module, route.node)?;
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_an_ipv4_address_and_a_port_from_1_to_65535() {
        assert_eq!(parse_node("192.168.1.101:7001"), Ok("192.168.1.101:7001".parse().unwrap()));
        assert_eq!(parse_node("10.0.0.1:65535").map(|n| n.port()), Ok(65_535));
        for (arg, error) in [
            ("10.0.0.1", NodeError::NoPort("10.0.0.1".into())),
            ("10.0.0:80", NodeError::BadAddress("10.0.0:80".into())),
            ("host:80", NodeError::BadAddress("host:80".into())),
            ("[::1]:80", NodeError::BadAddress("[::1]:80".into())),
            ("10.0.0.1:65536", NodeError::BadPort("10.0.0.1:65536".into())),
            ("10.0.0.1:0", NodeError::BadPort("10.0.0.1:0".into())),
            ("10.0.0.1:-1", NodeError::BadPort("10.0.0.1:-1".into())),
            ("10.0.0.1:+80", NodeError::BadPort("10.0.0.1:+80".into())),
            ("10.0.0.1:", NodeError::BadPort("10.0.0.1:".into())),
        ] {
            assert_eq!(parse_node(arg), Err(error.clone()), "{arg}");
        }
        assert_eq!(
            parse_node("10.0.0.1:65536").unwrap_err().to_string(),
            "`10.0.0.1:65536`: the port is not a number from 1 to 65535"
        );
    }

    #[test]
    fn a_node_given_twice_is_refused() {
        assert_eq!(
            parse_nodes(&["10.0.0.1:1", "10.0.0.1:1"]),
            Err(NodeError::Duplicate("10.0.0.1:1".into()))
        );
        assert_eq!(parse_nodes::<&str>(&[]), Ok(vec![]));
    }
}
