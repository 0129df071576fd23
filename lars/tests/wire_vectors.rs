//! The test vectors of the original Lars, both ways, every message.
//!
//! `tests/data/lars-wire-vectors.txt` holds one frame per line as the original writes it (protobuf
//! C++ 3.21 `SerializeToString` of each body behind the 8-byte head): msgid, message name, fields
//! as JSON, frame as hex. For every line this test decodes the hex and compares the message with
//! the JSON, field by field, and encodes the message built from the JSON and compares the bytes.
//! Every JSON key must be consumed, so a field the test forgot to look at fails it; the `ip_str`,
//! `caller_str` and `retcode_name` columns are checked against the integers they describe.

use doorway_lars::proto::{ip_from_wire, Body, MsgId, RetCode};
use doorway_lars::{decode_frame, encode_frame, GetHostRequest, GetHostResponse, GetRouteRequest};
use doorway_lars::{GetRouteResponse, HostCallResult, HostInfo, ReportRequest, ReportStatusRequest};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

const VECTORS: &str = include_str!("data/lars-wire-vectors.txt");

/// One line of the vectors file.
struct Vector {
    line: usize,
    msgid: i32,
    name: String,
    fields: Map<String, Value>,
    frame: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    for (n, line) in VECTORS.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let columns: Vec<&str> = line.split('\t').collect();
        let [msgid, name, json, hex] = columns[..] else {
            panic!("line {}: expected 4 tab-separated columns, got {}", n + 1, columns.len());
        };
        let Value::Object(fields) = serde_json::from_str(json).expect("fields column is JSON") else {
            panic!("line {}: fields column is not a JSON object", n + 1);
        };
        out.push(Vector {
            line: n + 1,
            msgid: msgid.parse().expect("msgid column is an integer"),
            name: name.to_string(),
            fields,
            frame: from_hex(hex),
        });
    }
    out
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// The JSON fields of one message, taken one by one; `finish` checks none is left over.
struct Fields {
    what: String,
    map: Map<String, Value>,
}

impl Fields {
    fn new(what: impl Into<String>, map: Map<String, Value>) -> Self {
        Self { what: what.into(), map }
    }

    fn take(&mut self, key: &str) -> Value {
        self.map.remove(key).unwrap_or_else(|| panic!("{}: no field {key:?}", self.what))
    }

    fn int(&mut self, key: &str) -> i64 {
        let value = self.take(key);
        value.as_i64().unwrap_or_else(|| panic!("{}: {key} = {value} is not an integer", self.what))
    }

    fn i32(&mut self, key: &str) -> i32 {
        let value = self.int(key);
        i32::try_from(value).unwrap_or_else(|_| panic!("{}: {key} = {value} is not an i32", self.what))
    }

    fn u32(&mut self, key: &str) -> u32 {
        let value = self.int(key);
        u32::try_from(value).unwrap_or_else(|_| panic!("{}: {key} = {value} is not a u32", self.what))
    }

    fn bool(&mut self, key: &str) -> bool {
        let value = self.take(key);
        value.as_bool().unwrap_or_else(|| panic!("{}: {key} = {value} is not a bool", self.what))
    }

    /// An address field and its dotted-quad column (`<key>_str`), which must agree.
    fn ip(&mut self, key: &str) -> i32 {
        let ip = self.i32(key);
        let dotted = self.take(&format!("{key}_str"));
        assert_eq!(dotted.as_str(), Some(ip_from_wire(ip).to_string().as_str()), "{}: {key}_str", self.what);
        ip
    }

    fn objects(&mut self, key: &str) -> Vec<Fields> {
        let Value::Array(items) = self.take(key) else { panic!("{}: {key} is not an array", self.what) };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Fields::new(format!("{}.{key}[{i}]", self.what), map),
                other => panic!("{}: {key}[{i}] = {other} is not an object", self.what),
            })
            .collect()
    }

    /// An optional `HostInfo`: JSON `null` is absent, an object (even `{"ip":0,"port":0}`) present.
    fn host(&mut self, key: &str) -> Option<HostInfo> {
        match self.take(key) {
            Value::Null => None,
            Value::Object(map) => Some(host_info(Fields::new(format!("{}.{key}", self.what), map))),
            other => panic!("{}: {key} = {other} is neither null nor an object", self.what),
        }
    }

    fn retcode(&mut self) -> i32 {
        let retcode = self.i32("retcode");
        if self.map.contains_key("retcode_name") {
            let name = self.take("retcode_name");
            let code = RetCode::try_from(retcode).expect("the vectors use known return codes");
            assert_eq!(name.as_str(), Some(code.name()), "{}: retcode_name", self.what);
        }
        retcode
    }

    fn finish(self) {
        assert!(self.map.is_empty(), "{}: fields the test did not check: {:?}", self.what, self.map);
    }
}

fn host_info(mut f: Fields) -> HostInfo {
    let host = HostInfo { ip: f.ip("ip"), port: f.i32("port") };
    f.finish();
    host
}

fn host_call_result(mut f: Fields) -> HostCallResult {
    let result = HostCallResult {
        ip: f.ip("ip"),
        port: f.i32("port"),
        succ: f.u32("succ"),
        err: f.u32("err"),
        overload: f.bool("overload"),
    };
    f.finish();
    result
}

fn get_route_request(f: &mut Fields) -> GetRouteRequest {
    GetRouteRequest { modid: f.i32("modid"), cmdid: f.i32("cmdid") }
}

fn get_route_response(f: &mut Fields) -> GetRouteResponse {
    GetRouteResponse {
        modid: f.i32("modid"),
        cmdid: f.i32("cmdid"),
        host: f.objects("host").into_iter().map(host_info).collect(),
    }
}

/// The message a line's JSON describes, built with no help from the decoder.
fn expected_body(msgid: MsgId, mut f: Fields) -> Body {
    let body = match msgid {
        MsgId::GetRouteRequest => Body::GetRouteRequest(get_route_request(&mut f)),
        MsgId::ApiGetRouteRequest => Body::ApiGetRouteRequest(get_route_request(&mut f)),
        MsgId::GetRouteResponse => Body::GetRouteResponse(get_route_response(&mut f)),
        MsgId::ApiGetRouteResponse => Body::ApiGetRouteResponse(get_route_response(&mut f)),
        MsgId::ReportStatusRequest => Body::ReportStatusRequest(ReportStatusRequest {
            modid: f.i32("modid"),
            cmdid: f.i32("cmdid"),
            caller: f.ip("caller"),
            results: f.objects("results").into_iter().map(host_call_result).collect(),
            ts: f.u32("ts"),
        }),
        MsgId::GetHostRequest => Body::GetHostRequest(GetHostRequest {
            seq: f.u32("seq"),
            modid: f.i32("modid"),
            cmdid: f.i32("cmdid"),
        }),
        MsgId::GetHostResponse => Body::GetHostResponse(GetHostResponse {
            seq: f.u32("seq"),
            modid: f.i32("modid"),
            cmdid: f.i32("cmdid"),
            retcode: f.retcode(),
            host: f.host("host"),
        }),
        MsgId::ReportRequest => Body::ReportRequest(ReportRequest {
            modid: f.i32("modid"),
            cmdid: f.i32("cmdid"),
            host: f.host("host"),
            retcode: f.retcode(),
            latency_us: None,
        }),
    };
    f.finish();
    body
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_vector_decodes_to_the_fields_of_its_line() {
    for v in vectors() {
        let what = format!("line {} ({})", v.line, v.name);
        let msgid = MsgId::try_from(v.msgid).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(msgid.name(), v.name, "{what}: name column");
        let expected = expected_body(msgid, Fields::new(what.clone(), v.fields));
        let frame = decode_frame(&v.frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(frame.msgid, v.msgid, "{what}: msgid");
        assert_eq!(frame.decode(), Ok(expected), "{what}");
    }
}

#[test]
fn every_message_built_from_its_line_encodes_to_the_originals_bytes() {
    for v in vectors() {
        let what = format!("line {} ({})", v.line, v.name);
        let msgid = MsgId::try_from(v.msgid).unwrap_or_else(|e| panic!("{what}: {e}"));
        let body = expected_body(msgid, Fields::new(what.clone(), v.fields));
        let frame = body.encode_frame().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(hex(&frame), hex(&v.frame), "{what}: Body::encode_frame");
        // The typed encoder writes the same bytes as the one behind `Body`.
        let typed = match &body {
            Body::GetRouteRequest(m) | Body::ApiGetRouteRequest(m) => encode_frame(msgid, m),
            Body::GetRouteResponse(m) | Body::ApiGetRouteResponse(m) => encode_frame(msgid, m),
            Body::ReportStatusRequest(m) => encode_frame(msgid, m),
            Body::GetHostRequest(m) => encode_frame(msgid, m),
            Body::GetHostResponse(m) => encode_frame(msgid, m),
            Body::ReportRequest(m) => encode_frame(msgid, m),
        };
        assert_eq!(hex(&typed.unwrap()), hex(&v.frame), "{what}: encode_frame");
    }
}

#[test]
fn the_vectors_cover_every_message_id_and_both_kinds_of_empty_host() {
    let vectors = vectors();
    let ids: BTreeSet<i32> = vectors.iter().map(|v| v.msgid).collect();
    let all: BTreeSet<i32> = MsgId::ALL.iter().map(|id| i32::from(*id)).collect();
    assert_eq!(ids, all);
    let hosts: Vec<Option<HostInfo>> = vectors
        .iter()
        .filter_map(|v| match decode_frame(&v.frame).ok()?.decode().ok()? {
            Body::GetHostResponse(m) => Some(m.host),
            Body::ReportRequest(m) => Some(m.host),
            _ => None,
        })
        .collect();
    assert!(hosts.contains(&None), "no vector with an absent host");
    assert!(hosts.contains(&Some(HostInfo::default())), "no vector with a present but empty host");
    // Present-but-empty is two bytes on the wire (tag 0x2a, length 0); absent is nothing.
    let empty = GetHostResponse { seq: 1, host: Some(HostInfo::default()), ..Default::default() };
    let absent = GetHostResponse { seq: 1, host: None, ..Default::default() };
    assert_eq!(hex(&encode_frame(MsgId::GetHostResponse, &empty).unwrap()[8..]), "08012a00");
    assert_eq!(hex(&encode_frame(MsgId::GetHostResponse, &absent).unwrap()[8..]), "0801");
}
