//! The wire format of `docs/PROTOCOL.md` version 1: a 12-byte big-endian header, then the body.
//!
//! ```text
//! offset 0   4        6       8      12
//!        | length | kind | flags | seq | body (length bytes) ...
//! ```
//!
//! This module is the one seam where the byte layout lives. Bindings never index into a header
//! themselves: they hand the bytes they hold to [`Decoder::decode`] and get back either a whole
//! [`FrameRef`] borrowing the caller's buffer (no copy: the header is read in place, see
//! docs/ARCHITECTURE.md#frame-codec), a request for more bytes, or an [`Error`] decided from the
//! header alone. A future wire format (Lars's 8-byte head) is another decoder with the same three
//! answers.
//!
//! # Incremental decoding
//!
//! The decoder keeps no state: the caller keeps the unconsumed bytes of a stream in its buffer and
//! calls `decode` again after every read. Because a header is validated as soon as its 12 bytes
//! are present, an oversized `length` or non-zero `flags` is refused before any of the body is
//! buffered, and a stream split at any byte decodes to the same frames as one frame per read
//! (checked by a property test below).
//!
//! # Encoding
//!
//! [`encode`] writes a frame into a caller's buffer and returns its length; [`Header::emit`]
//! writes only the header, for gathered writes (`writev`) that keep the body where it is.

use core::fmt;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The largest body the Linux server accepts by default.
pub const DEFAULT_MAX_BODY: u32 = 65_536;

mod field {
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 0..4;
    pub const KIND: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SEQ: Range<usize> = 8..12;
}

/// Message kinds with a meaning in the protocol itself.
pub mod kind {
    /// Invalid.
    pub const INVALID: u16 = 0;
    /// The receiver answers PONG with the same `seq` and body.
    pub const PING: u16 = 1;
    /// The answer to PING.
    pub const PONG: u16 = 2;
    /// Server to client: `code: u16` then a UTF-8 reason.
    pub const ERROR: u16 = 3;
    /// Client to server: close after the replies already due.
    pub const BYE: u16 = 4;
    /// The first kind dispatched through the message map; 5..64 are reserved.
    pub const FIRST_APPLICATION: u16 = 64;
}

/// The codes an ERROR frame carries (`docs/PROTOCOL.md`, Errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u16)]
pub enum ErrorCode {
    /// `length` > `max_body`. The connection closes.
    FrameTooLarge = 1,
    /// No handler for the kind. The connection stays open.
    UnknownKind = 2,
    /// `flags` != 0. The connection closes.
    BadFlags = 3,
    /// No complete frame for `idle_timeout`. The connection closes.
    IdleTimeout = 4,
    /// `max_connections` reached. The connection closes.
    ServerFull = 5,
    /// Output above the high watermark for longer than `write_timeout`. The connection closes.
    SlowConsumer = 6,
    /// The server is stopping. The connection closes.
    ShuttingDown = 7,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownKind,
        ErrorCode::BadFlags,
        ErrorCode::IdleTimeout,
        ErrorCode::ServerFull,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, if it is one.
    pub const fn from_code(code: u16) -> Option<ErrorCode> {
        match code {
            1 => Some(ErrorCode::FrameTooLarge),
            2 => Some(ErrorCode::UnknownKind),
            3 => Some(ErrorCode::BadFlags),
            4 => Some(ErrorCode::IdleTimeout),
            5 => Some(ErrorCode::ServerFull),
            6 => Some(ErrorCode::SlowConsumer),
            7 => Some(ErrorCode::ShuttingDown),
            _ => None,
        }
    }

    /// A short reason, sent as the ERROR body's text.
    pub const fn reason(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::UnknownKind => "unknown kind",
            ErrorCode::BadFlags => "bad flags",
            ErrorCode::IdleTimeout => "idle timeout",
            ErrorCode::ServerFull => "server full",
            ErrorCode::SlowConsumer => "slow consumer",
            ErrorCode::ShuttingDown => "shutting down",
        }
    }

    /// Whether the connection is closed after this error is sent.
    pub const fn closes(self) -> bool {
        !matches!(self, ErrorCode::UnknownKind)
    }

    /// Whether the ERROR carries the refused request's `seq` (codes 1-3) or 0 (codes 4-7).
    pub const fn echoes_seq(self) -> bool {
        (self as u16) <= 3
    }

    /// The code's name as `docs/PROTOCOL.md` spells it, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownKind => "UNKNOWN_KIND",
            ErrorCode::BadFlags => "BAD_FLAGS",
            ErrorCode::IdleTimeout => "IDLE_TIMEOUT",
            ErrorCode::ServerFull => "SERVER_FULL",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
        }
    }
}

/// Why bytes could not be decoded or a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The header's `length` exceeds `max_body` (ERROR 1).
    TooLarge {
        /// The `length` field as received.
        length: u32,
        /// The refused header's `seq`.
        seq: u32,
    },
    /// The header's `flags` are not 0 (ERROR 3).
    BadFlags {
        /// The `flags` field as received.
        flags: u16,
        /// The refused header's `seq`.
        seq: u32,
    },
    /// Fewer bytes than a header (or than the header says) were given.
    Truncated,
    /// The output buffer cannot hold the frame.
    BufferTooSmall,
}

impl Error {
    /// The ERROR code and `seq` a server answers this decode error with, if any.
    pub const fn to_wire(self) -> Option<(ErrorCode, u32)> {
        match self {
            Error::TooLarge { seq, .. } => Some((ErrorCode::FrameTooLarge, seq)),
            Error::BadFlags { seq, .. } => Some((ErrorCode::BadFlags, seq)),
            Error::Truncated | Error::BufferTooSmall => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { length, seq } => {
                write!(f, "frame body of {length} bytes exceeds max_body (seq {seq})")
            }
            Error::BadFlags { flags, seq } => write!(f, "flags {flags:#06x} are not 0 (seq {seq})"),
            Error::Truncated => f.write_str("truncated frame"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for Error {}

/// The codec's result type.
pub type Result<T> = core::result::Result<T, Error>;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Body length in bytes.
    pub length: u32,
    /// Message kind.
    pub kind: u16,
    /// Flags; 0 in version 1.
    pub flags: u16,
    /// Sequence number chosen by the requester and echoed by the reply.
    pub seq: u32,
}

impl Header {
    /// A version-1 header (flags 0) for a body of `length` bytes.
    pub const fn new(kind: u16, seq: u32, length: u32) -> Header {
        Header { length, kind, flags: 0, seq }
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes, with no validation of its fields.
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let be32 = |r: core::ops::Range<usize>| {
            u32::from_be_bytes([bytes[r.start], bytes[r.start + 1], bytes[r.start + 2], bytes[r.start + 3]])
        };
        let be16 = |r: core::ops::Range<usize>| u16::from_be_bytes([bytes[r.start], bytes[r.start + 1]]);
        Ok(Header {
            length: be32(field::LENGTH),
            kind: be16(field::KIND),
            flags: be16(field::FLAGS),
            seq: be32(field::SEQ),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        let out = out.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        out[field::LENGTH].copy_from_slice(&self.length.to_be_bytes());
        out[field::KIND].copy_from_slice(&self.kind.to_be_bytes());
        out[field::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        out[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        Ok(())
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        // Cannot fail: `out` is exactly one header long.
        let _ = self.emit(&mut out);
        out
    }

    /// Header plus body length on the wire. Saturates instead of overflowing where `usize` is 32
    /// bits and an unchecked header claims nearly 4 GiB.
    pub const fn wire_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.length as usize)
    }
}

/// A whole frame borrowed from the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameRef<'a> {
    /// The validated header.
    pub header: Header,
    /// The body, `header.length` bytes.
    pub body: &'a [u8],
}

impl FrameRef<'_> {
    /// Bytes this frame occupies on the wire; consume this many after handling it.
    pub const fn wire_len(&self) -> usize {
        self.header.wire_len()
    }
}

/// Stateless, in-place frame decoder with a body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Decoder {
    max_body: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}

impl Decoder {
    /// A decoder refusing bodies longer than `max_body` bytes.
    pub const fn new(max_body: u32) -> Decoder {
        Decoder { max_body }
    }

    /// The body limit.
    pub const fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Checks a header against the protocol's header-only rules: `flags` first, then `length`.
    pub const fn check(&self, header: &Header) -> Result<()> {
        if header.flags != 0 {
            return Err(Error::BadFlags { flags: header.flags, seq: header.seq });
        }
        if header.length > self.max_body {
            return Err(Error::TooLarge { length: header.length, seq: header.seq });
        }
        Ok(())
    }

    /// Decodes the first frame of `buf`.
    ///
    /// Returns `Ok(Some(frame))` when a whole frame is present (consume `frame.wire_len()` bytes),
    /// `Ok(None)` when more bytes are needed, and `Err` as soon as a header is refused, whether or
    /// not its body has arrived.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<FrameRef<'a>>> {
        let header = match Header::parse(buf) {
            Ok(header) => header,
            Err(_) => return Ok(None),
        };
        self.check(&header)?;
        match buf.get(HEADER_LEN..header.wire_len()) {
            Some(body) => Ok(Some(FrameRef { header, body })),
            None => Ok(None),
        }
    }

    /// How many bytes of `buf` are needed before [`decode`](Self::decode) can answer: a header, or
    /// the whole frame once the header is valid. Useful to size a read.
    pub fn needed(&self, buf: &[u8]) -> usize {
        match Header::parse(buf) {
            Ok(header) if self.check(&header).is_ok() => header.wire_len(),
            _ => HEADER_LEN,
        }
    }
}

/// Encodes a frame (`flags` 0) into `out` and returns its length on the wire.
pub fn encode(out: &mut [u8], kind: u16, seq: u32, body: &[u8]) -> Result<usize> {
    let length = u32::try_from(body.len()).map_err(|_| Error::BufferTooSmall)?;
    let header = Header::new(kind, seq, length);
    let total = header.wire_len();
    if out.len() < total {
        return Err(Error::BufferTooSmall);
    }
    header.emit(out)?;
    out[HEADER_LEN..total].copy_from_slice(body);
    Ok(total)
}

/// The largest ERROR body [`encode_error`] writes: the code and the longest reason.
pub const MAX_ERROR_BODY: usize = 2 + 16;

/// Encodes an ERROR frame with the protocol's `seq` rule (the refused `seq` for codes 1-3, else 0).
pub fn encode_error(out: &mut [u8], code: ErrorCode, refused_seq: u32) -> Result<usize> {
    let mut body = [0u8; MAX_ERROR_BODY];
    let n = error_body(&mut body, code);
    let seq = if code.echoes_seq() { refused_seq } else { 0 };
    encode(out, kind::ERROR, seq, &body[..n])
}

/// Writes an ERROR body (`code` big-endian, then the reason) and returns its length.
pub fn error_body(out: &mut [u8; MAX_ERROR_BODY], code: ErrorCode) -> usize {
    let reason = code.reason().as_bytes();
    out[..2].copy_from_slice(&code.code().to_be_bytes());
    out[2..2 + reason.len()].copy_from_slice(reason);
    2 + reason.len()
}

/// Reads an ERROR body: the code (if known) and the reason (if valid UTF-8).
pub fn parse_error_body(body: &[u8]) -> Option<(u16, &str)> {
    let code = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let reason = core::str::from_utf8(&body[2..]).ok()?;
    Some((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_bytes(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN + body.len()];
        assert_eq!(encode(&mut out, kind, seq, body), Ok(out.len()));
        out
    }

    #[test]
    fn header_round_trip() {
        let header = Header { length: 0x0102_0304, kind: 0x0506, flags: 0x0708, seq: 0x090a_0b0c };
        let bytes = header.to_bytes();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(Header::parse(&bytes), Ok(header));
    }

    #[test]
    fn oversized_refused_from_header_alone() {
        let decoder = Decoder::new(16);
        let header = Header::new(crate::demo::kind::ECHO, 9, 17).to_bytes();
        assert_eq!(decoder.decode(&header), Err(Error::TooLarge { length: 17, seq: 9 }));
        assert_eq!(decoder.decode(&header[..11]), Ok(None));
    }

    #[test]
    fn bad_flags_refused() {
        let mut header = Header::new(crate::demo::kind::ECHO, 3, 0);
        header.flags = 1;
        assert_eq!(Decoder::default().decode(&header.to_bytes()), Err(Error::BadFlags { flags: 1, seq: 3 }));
    }

    #[test]
    fn error_frame_seq_rule() {
        let mut out = [0u8; 64];
        let n = encode_error(&mut out, ErrorCode::UnknownKind, 42).unwrap();
        let frame = Decoder::default().decode(&out[..n]).unwrap().unwrap();
        assert_eq!(frame.header.seq, 42);
        assert_eq!(parse_error_body(frame.body), Some((2, "unknown kind")));
        let n = encode_error(&mut out, ErrorCode::ShuttingDown, 42).unwrap();
        assert_eq!(Header::parse(&out[..n]).unwrap().seq, 0);
        for code in ErrorCode::ALL {
            assert!(code.reason().len() + 2 <= MAX_ERROR_BODY);
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
    }

    #[test]
    fn encode_refuses_small_buffer() {
        let mut out = [0u8; 13];
        assert_eq!(encode(&mut out, 64, 1, b"ab"), Err(Error::BufferTooSmall));
    }

    proptest! {
        /// Any split of any sequence of frames decodes to the same frames.
        #[test]
        fn any_split_same_frames(
            frames in proptest::collection::vec((64u16..80, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|(k, s, b)| frame_bytes(*k, *s, b)).collect();
            let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cut_points.push(stream.len());
            cut_points.sort_unstable();
            let decoder = Decoder::new(64);
            let mut pending = Vec::new();
            let mut decoded = Vec::new();
            let mut start = 0;
            for cut in cut_points {
                pending.extend_from_slice(&stream[start..cut]);
                start = cut;
                while let Some(frame) = decoder.decode(&pending).unwrap() {
                    decoded.push((frame.header.kind, frame.header.seq, frame.body.to_vec()));
                    let n = frame.wire_len();
                    pending.drain(..n);
                }
            }
            prop_assert!(pending.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        /// Arbitrary bytes never panic the decoder, and whatever it returns is consistent.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let decoder = Decoder::new(32);
            match decoder.decode(&bytes) {
                Ok(Some(frame)) => prop_assert!(frame.wire_len() <= bytes.len()),
                Ok(None) => prop_assert!(decoder.needed(&bytes) > bytes.len()),
                Err(e) => prop_assert!(e.to_wire().is_some()),
            }
        }
    }
}
