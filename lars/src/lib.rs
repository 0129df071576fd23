//! Lars on doorway: the wire of the Lars load-balancing system and a client for its agent.
//!
//! Lars names every remote service a *module*, the pair `(modid, cmdid)`; the `ip:port` nodes that
//! serve a module are its *route*. An application asks its machine's load-balance agent (UDP) for
//! one node of a module, calls it, and reports how the call went; the agent fetches routes from
//! `lars-dns` and sends call statistics to `lars-reporter` (both TCP). This crate is wire-compatible
//! with the original C++ Lars (aceld/Lars): its client talks to the original agent unchanged, and
//! the test vectors in `tests/data/lars-wire-vectors.txt` are frames the original's code wrote.
//!
//! Layers, bottom up:
//!
//! - [`proto`]: the six protobuf bodies, the eight message ids ([`MsgId`]), the return codes
//!   ([`RetCode`]) and [`Body`], a decoded message of any id.
//! - The frame (this module): an 8-byte head, then the body. [`encode_frame`] writes one,
//!   [`decode_frame`] reads one whole frame from a byte slice (a UDP datagram is exactly one frame),
//!   and [`Frame::decode`] decodes its body by message id. A server reads frames through doorway-core's
//!   codec instead; this helper serves the client and tests, and stays small.
//! - [`client`]: [`Client`], what an application uses (`get_host`, `report`, `get_route`,
//!   `reg_init`), over blocking UDP sockets.
//!
//! An application touches only [`Client`] (and [`client::Error`]); the rest is for servers, tools
//! and tests.
//!
//! # The head
//!
//! | offset | size | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 4 | `msgid` | `i32`, little-endian |
//! | 4 | 4 | `msglen` | `i32`, little-endian: the body's length, head not included |
//!
//! A `msglen` below 0 or above [`BODY_LIMIT`] (65,527 = 65,535 − 8, the original's) is an error,
//! whatever follows. An unknown `msgid` is not an error at this layer ([`Frame::msgid`] is a raw
//! `i32`), so a reader can skip what a newer peer sends; [`Frame::decode`] reports it.
//!
//! ```
//! use doorway_lars::{decode_frame, encode_frame, Body, GetRouteRequest, MsgId};
//!
//! let request = GetRouteRequest { modid: 1, cmdid: 1 };
//! let frame = encode_frame(MsgId::ApiGetRouteRequest, &request)?;
//! assert_eq!(frame, [7, 0, 0, 0, 4, 0, 0, 0, 0x08, 1, 0x10, 1]);
//! let back = decode_frame(&frame)?.decode()?;
//! assert_eq!(back, Body::ApiGetRouteRequest(request));
//! # Ok::<(), doorway_lars::WireError>(())
//! ```

#![deny(missing_docs)]

pub mod agent;
pub mod balance;
pub mod client;
pub mod dns;
pub mod proto;
pub mod reporter;
pub mod route_cmd;
pub mod service;
pub mod store;

use std::fmt;

pub use client::Client;
pub use proto::{
    Body, GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, HostCallResult, HostInfo,
    MsgId, ReportRequest, ReportStatusRequest, RetCode,
};

/// The length of a frame's head.
pub const HEAD_LEN: usize = 8;

/// The longest body a frame may carry: 65,535 − [`HEAD_LEN`], the original's limit.
pub const BODY_LIMIT: usize = 65_535 - HEAD_LEN;

/// Why bytes are not a Lars frame, or a body cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than [`HEAD_LEN`] bytes.
    ShortHead {
        /// The bytes there were.
        len: usize,
    },
    /// The head's `msglen` is negative.
    NegativeLength(i32),
    /// The body (announced in a head, or given to encode) is longer than [`BODY_LIMIT`].
    TooLong(usize),
    /// The bytes after the head are not `msglen` long (a short or an over-long datagram).
    LengthMismatch {
        /// The head's `msglen`.
        msglen: usize,
        /// The bytes after the head.
        actual: usize,
    },
    /// The head's `msgid` is none of the eight.
    UnknownMsgId(i32),
    /// The body is not valid protobuf for its message id.
    Body {
        /// The frame's message id.
        msgid: MsgId,
        /// What `prost` found.
        error: prost::DecodeError,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::ShortHead { len } => write!(f, "{len} bytes, shorter than the {HEAD_LEN}-byte head"),
            WireError::NegativeLength(msglen) => write!(f, "negative msglen {msglen}"),
            WireError::TooLong(len) => write!(f, "body of {len} bytes, over the limit of {BODY_LIMIT}"),
            WireError::LengthMismatch { msglen, actual } => {
                write!(f, "msglen {msglen} but {actual} bytes follow the head")
            }
            WireError::UnknownMsgId(msgid) => write!(f, "unknown msgid {msgid}"),
            WireError::Body { msgid, error } => write!(f, "bad {msgid} body: {error}"),
        }
    }
}

impl std::error::Error for WireError {}

/// The codec's result.
pub type Result<T> = core::result::Result<T, WireError>;

/// A frame's head, checked: `msglen` is within `0..=BODY_LIMIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    /// The message id, raw (see [`MsgId`]).
    pub msgid: i32,
    /// The body's length.
    pub msglen: usize,
}

impl Head {
    /// Reads the head at the start of `bytes` (anything after it is ignored).
    pub fn parse(bytes: &[u8]) -> Result<Head> {
        let Some((head, _)) = bytes.split_first_chunk::<HEAD_LEN>() else {
            return Err(WireError::ShortHead { len: bytes.len() });
        };
        let (msgid, msglen) = head.split_at(4);
        let msgid = i32::from_le_bytes([msgid[0], msgid[1], msgid[2], msgid[3]]);
        let msglen = i32::from_le_bytes([msglen[0], msglen[1], msglen[2], msglen[3]]);
        let msglen = usize::try_from(msglen).map_err(|_| WireError::NegativeLength(msglen))?;
        if msglen > BODY_LIMIT {
            return Err(WireError::TooLong(msglen));
        }
        Ok(Head { msgid, msglen })
    }

    /// The head's eight bytes.
    pub fn emit(&self) -> [u8; HEAD_LEN] {
        let mut out = [0; HEAD_LEN];
        out[..4].copy_from_slice(&self.msgid.to_le_bytes());
        // `msglen <= BODY_LIMIT` by construction (`parse`, `encode_frame`), so it fits an `i32`.
        out[4..].copy_from_slice(&(self.msglen as u32).to_le_bytes());
        out
    }
}

/// One whole frame, borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame<'a> {
    /// The message id, raw: an unknown id is still a frame.
    pub msgid: i32,
    /// The body, exactly `msglen` bytes.
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// Decodes the body as the type of its message id.
    pub fn decode(&self) -> Result<Body> {
        let msgid = MsgId::try_from(self.msgid).map_err(|unknown| WireError::UnknownMsgId(unknown.value))?;
        Body::decode(msgid, self.body).map_err(|error| WireError::Body { msgid, error })
    }
}

/// Reads `bytes` as exactly one frame: a valid head and then `msglen` bytes, nothing more.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>> {
    let head = Head::parse(bytes)?;
    let body = &bytes[HEAD_LEN..];
    if body.len() != head.msglen {
        return Err(WireError::LengthMismatch { msglen: head.msglen, actual: body.len() });
    }
    Ok(Frame { msgid: head.msgid, body })
}

/// Writes `body` under `msgid`: the head, then the protobuf encoding.
pub fn encode_frame(msgid: MsgId, body: &impl prost::Message) -> Result<Vec<u8>> {
    frame_with(msgid, body.encoded_len(), |out| body.encode_raw(out))
}

/// A frame of `msglen` body bytes, which `write_body` appends after the head.
fn frame_with(msgid: MsgId, msglen: usize, write_body: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>> {
    if msglen > BODY_LIMIT {
        return Err(WireError::TooLong(msglen));
    }
    let mut out = Vec::with_capacity(HEAD_LEN + msglen);
    out.extend_from_slice(&Head { msgid: msgid.into(), msglen }.emit());
    write_body(&mut out);
    debug_assert_eq!(out.len(), HEAD_LEN + msglen);
    Ok(out)
}

impl Body {
    /// The whole frame of this message: head and body.
    pub fn encode_frame(&self) -> Result<Vec<u8>> {
        let body = self.encode_to_vec();
        frame_with(self.msgid(), body.len(), |out| out.extend_from_slice(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(msgid: i32, msglen: i32) -> Vec<u8> {
        let mut out = msgid.to_le_bytes().to_vec();
        out.extend_from_slice(&msglen.to_le_bytes());
        out
    }

    #[test]
    fn a_negative_or_over_limit_msglen_is_an_error_whatever_follows() {
        let mut bytes = head(1, -1);
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(decode_frame(&bytes), Err(WireError::NegativeLength(-1)));
        assert_eq!(decode_frame(&head(1, i32::MIN)), Err(WireError::NegativeLength(i32::MIN)));
        assert_eq!(decode_frame(&head(1, 65_528)), Err(WireError::TooLong(65_528)));
        assert_eq!(decode_frame(&head(1, i32::MAX)), Err(WireError::TooLong(i32::MAX as usize)));
    }

    #[test]
    fn the_largest_body_the_original_accepts_is_a_frame() {
        let mut bytes = head(42, BODY_LIMIT as i32);
        bytes.resize(HEAD_LEN + BODY_LIMIT, 0);
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!((frame.msgid, frame.body.len()), (42, BODY_LIMIT));
        assert_eq!(Head::parse(&bytes).unwrap().emit()[..], bytes[..HEAD_LEN]);
    }

    #[test]
    fn a_short_or_long_datagram_is_not_a_frame() {
        assert_eq!(decode_frame(&[1, 0, 0]), Err(WireError::ShortHead { len: 3 }));
        assert_eq!(decode_frame(&[]), Err(WireError::ShortHead { len: 0 }));
        let mut bytes = head(1, 4);
        bytes.extend_from_slice(&[8, 1, 16]);
        assert_eq!(decode_frame(&bytes), Err(WireError::LengthMismatch { msglen: 4, actual: 3 }));
        bytes.extend_from_slice(&[1, 0]);
        assert_eq!(decode_frame(&bytes), Err(WireError::LengthMismatch { msglen: 4, actual: 5 }));
    }

    #[test]
    fn an_unknown_msgid_is_a_frame_but_not_a_body() {
        let bytes = head(99, 0);
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!(frame.msgid, 99);
        assert_eq!(frame.decode(), Err(WireError::UnknownMsgId(99)));
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_an_error_naming_its_msgid() {
        let mut bytes = head(5, 2);
        bytes.extend_from_slice(&[0x0a, 0x05]); // field 1 as a length-delimited field, truncated
        let error = decode_frame(&bytes).unwrap().decode().unwrap_err();
        assert!(matches!(error, WireError::Body { msgid: MsgId::GetHostResponse, .. }), "{error:?}");
        assert!(error.to_string().starts_with("bad GetHostResponse body"), "{error}");
    }

    #[test]
    fn a_body_over_the_limit_is_not_encoded() {
        let route =
            GetRouteResponse { modid: 1, cmdid: 1, host: vec![HostInfo { ip: -1, port: 65_535 }; 4_000] };
        let error = encode_frame(MsgId::GetRouteResponse, &route).unwrap_err();
        assert!(matches!(error, WireError::TooLong(n) if n > BODY_LIMIT), "{error:?}");
        assert_eq!(Body::GetRouteResponse(route).encode_frame(), Err(error));
    }
}
