//! Property tests: every message type survives encode → frame → decode, and no bytes panic the
//! decoder.
//!
//! Strategies cover the whole range of every field (negative addresses, `u32::MAX` counters,
//! absent and present `host`), not just the values the original happens to send.

use doorway_lars::proto::{Body, MsgId};
use doorway_lars::{decode_frame, encode_frame, GetHostRequest, GetHostResponse, GetRouteRequest};
use doorway_lars::{GetRouteResponse, HostCallResult, HostInfo, ReportRequest, ReportStatusRequest};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn host_info() -> impl Strategy<Value = HostInfo> {
    (any::<i32>(), any::<i32>()).prop_map(|(ip, port)| HostInfo { ip, port })
}

fn host_call_result() -> impl Strategy<Value = HostCallResult> {
    (any::<i32>(), any::<i32>(), any::<u32>(), any::<u32>(), any::<bool>())
        .prop_map(|(ip, port, succ, err, overload)| HostCallResult { ip, port, succ, err, overload })
}

fn get_route_request() -> impl Strategy<Value = GetRouteRequest> {
    (any::<i32>(), any::<i32>()).prop_map(|(modid, cmdid)| GetRouteRequest { modid, cmdid })
}

fn get_route_response() -> impl Strategy<Value = GetRouteResponse> {
    (any::<i32>(), any::<i32>(), vec(host_info(), 0..20)).prop_map(|(modid, cmdid, host)| GetRouteResponse {
        modid,
        cmdid,
        host,
    })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        get_route_request().prop_map(Body::GetRouteRequest),
        get_route_response().prop_map(Body::GetRouteResponse),
        (any::<i32>(), any::<i32>(), any::<i32>(), vec(host_call_result(), 0..20), any::<u32>()).prop_map(
            |(modid, cmdid, caller, results, ts)| Body::ReportStatusRequest(ReportStatusRequest {
                modid,
                cmdid,
                caller,
                results,
                ts
            })
        ),
        (any::<u32>(), any::<i32>(), any::<i32>())
            .prop_map(|(seq, modid, cmdid)| Body::GetHostRequest(GetHostRequest { seq, modid, cmdid })),
        (any::<u32>(), any::<i32>(), any::<i32>(), any::<i32>(), option::of(host_info())).prop_map(
            |(seq, modid, cmdid, retcode, host)| Body::GetHostResponse(GetHostResponse {
                seq,
                modid,
                cmdid,
                retcode,
                host
            })
        ),
        (any::<i32>(), any::<i32>(), option::of(host_info()), any::<i32>()).prop_map(
            |(modid, cmdid, host, retcode)| Body::ReportRequest(ReportRequest {
                modid,
                cmdid,
                host,
                retcode,
                latency_us: None,
            })
        ),
        get_route_request().prop_map(Body::ApiGetRouteRequest),
        get_route_response().prop_map(Body::ApiGetRouteResponse),
    ]
}

proptest! {
    #[test]
    fn every_message_comes_back_as_it_was_sent(body in body()) {
        let frame = body.encode_frame().unwrap();
        let decoded = decode_frame(&frame).unwrap();
        prop_assert_eq!(decoded.msgid, i32::from(body.msgid()));
        prop_assert_eq!(decoded.body.len(), frame.len() - 8);
        prop_assert_eq!(decoded.decode().unwrap(), body);
    }

    #[test]
    fn a_host_keeps_its_presence(host in option::of(host_info()), seq in any::<u32>()) {
        let reply = GetHostResponse { seq, host, ..Default::default() };
        let frame = encode_frame(MsgId::GetHostResponse, &reply).unwrap();
        prop_assert_eq!(decode_frame(&frame).unwrap().decode().unwrap(), Body::GetHostResponse(reply));
    }

    #[test]
    fn no_bytes_panic_the_decoder(bytes in vec(any::<u8>(), 0..64), msgid in 0..10i32) {
        // Raw bytes, and the same bytes behind a valid head of every id, so the body decoders run.
        let _ = decode_frame(&bytes).and_then(|frame| frame.decode());
        let mut framed = msgid.to_le_bytes().to_vec();
        framed.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
        framed.extend_from_slice(&bytes);
        let frame = decode_frame(&framed).unwrap();
        let _ = frame.decode();
    }
}
