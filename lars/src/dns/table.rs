//! The route table: every module's answer, encoded once per load.
//!
//! A table is built aside from a [`Snapshot`] (on the poller's thread) and never changed after:
//! each module maps to the body of its `GetRouteResponse` (modid, cmdid, every node), ready to be
//! written as it is, whether as a reply or as a push. A module with no row answers an empty host
//! list, encoded on the spot (three varints at most). A module whose answer would exceed the
//! wire's body limit (about 5,000 nodes) cannot be sent at all; it is left out, counted in
//! [`RouteTable::oversized`] and logged by the poller.

use std::collections::HashMap;
use std::sync::Arc;

use doorway_linux::Pace;
use prost::Message as _;

use crate::store::{Module, Snapshot};
use crate::{GetRouteResponse, HostInfo, BODY_LIMIT};

/// Every module's encoded `GetRouteResponse` at one version.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: i64,
    bodies: HashMap<Module, Arc<[u8]>>,
    routes: usize,
    oversized: Vec<Module>,
}

impl RouteTable {
    /// Builds the table of `snapshot`.
    pub fn build(snapshot: &Snapshot) -> RouteTable {
        let mut pace = Pace::new();
        let mut nodes: HashMap<Module, Vec<HostInfo>> = HashMap::new();
        for route in &snapshot.routes {
            pace.step();
            nodes.entry(route.module).or_default().push(HostInfo::from_addr(route.node));
        }
        let mut oversized = Vec::new();
        let mut bodies = HashMap::with_capacity(nodes.len());
        for (module, host) in nodes {
            // Encoding a module costs in proportion to its nodes.
            pace.steps(u32::try_from(host.len()).unwrap_or(u32::MAX));
            let response = GetRouteResponse { modid: module.modid, cmdid: module.cmdid, host };
            if response.encoded_len() > BODY_LIMIT {
                oversized.push(module);
                continue;
            }
            bodies.insert(module, Arc::from(response.encode_to_vec()));
        }
        oversized.sort_unstable();
        RouteTable { version: snapshot.version, bodies, routes: snapshot.routes.len(), oversized }
    }

    /// The `RouteVersion` it was loaded at.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The nodes it holds (all modules).
    pub fn routes(&self) -> usize {
        self.routes
    }

    /// Modules with at least one node.
    pub fn modules(&self) -> usize {
        self.bodies.len()
    }

    /// Modules left out because their answer is over the wire's limit.
    pub fn oversized(&self) -> &[Module] {
        &self.oversized
    }

    /// The body of `module`'s `GetRouteResponse`, passed to `f` (an empty host list when the
    /// module has no node).
    pub fn with_body<R>(&self, module: Module, f: impl FnOnce(&[u8]) -> R) -> R {
        match self.bodies.get(&module) {
            Some(body) => f(body),
            None => {
                let empty = GetRouteResponse { modid: module.modid, cmdid: module.cmdid, host: Vec::new() };
                let mut buf = [0u8; 22];
                let mut out = &mut buf[..];
                // Two int32 varints are at most 2 × 11 bytes: the buffer always fits.
                let written = empty.encode(&mut out).map(|()| 22 - out.len()).unwrap_or(0);
                f(&buf[..written])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Route;

    fn decode(table: &RouteTable, modid: i32, cmdid: i32) -> GetRouteResponse {
        table.with_body(Module { modid, cmdid }, |b| GetRouteResponse::decode(b).unwrap())
    }

    #[test]
    fn a_module_answers_its_nodes_and_an_unknown_one_an_empty_list() {
        let node = |s: &str| s.parse().unwrap();
        let m = Module { modid: 1, cmdid: 2 };
        let snapshot = Snapshot {
            version: 7,
            routes: vec![
                Route { module: m, node: node("10.0.0.1:1") },
                Route { module: m, node: node("192.168.1.101:7001") },
            ],
            skipped: 0,
        };
        let table = RouteTable::build(&snapshot);
        assert_eq!((table.version(), table.routes(), table.modules()), (7, 2, 1));
        let answer = decode(&table, 1, 2);
        assert_eq!((answer.modid, answer.cmdid), (1, 2));
        let nodes: Vec<_> = answer.host.iter().map(|h| h.to_addr().unwrap().to_string()).collect();
        assert_eq!(nodes, ["10.0.0.1:1", "192.168.1.101:7001"]);
        assert_eq!(decode(&table, 2, 1), GetRouteResponse { modid: 2, cmdid: 1, host: vec![] });
        assert_eq!(
            decode(&table, i32::MIN, -1),
            GetRouteResponse { modid: i32::MIN, cmdid: -1, host: vec![] }
        );
    }

    #[test]
    fn a_module_too_large_for_one_frame_is_left_out_and_named() {
        let m = Module { modid: 5, cmdid: 5 };
        let routes = (0..6000u32)
            .map(|n| Route { module: m, node: std::net::SocketAddrV4::new((0xC000_0000 + n).into(), 60_000) })
            .collect();
        let table = RouteTable::build(&Snapshot { version: 1, routes, skipped: 0 });
        assert_eq!(table.oversized(), [m]);
        assert!(decode(&table, 5, 5).host.is_empty());
    }
}
