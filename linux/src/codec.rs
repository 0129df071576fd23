//! The framing seam: the only module of doorway-linux that calls `doorway_core::frame`.
//!
//! The roles see three operations: [`cut`] (receive: is there a whole, valid frame at the head of
//! these bytes?), [`decode`] (deal: the frame at the head of bytes already cut) and [`emit`] /
//! [`error_frame`] (encode replies). A future wire format (Lars's 8-byte head) replaces this module
//! and nothing else: connection state only stores byte offsets.

use doorway_core::frame::{self, Decoder, ErrorCode, FrameRef, Header};

pub use doorway_core::frame::HEADER_LEN;

/// The largest encoded ERROR frame.
pub const MAX_ERROR_FRAME: usize = HEADER_LEN + frame::MAX_ERROR_BODY;

/// A header refused from its bytes alone: the ERROR to answer with and the refused `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// ERROR 1 or 3.
    pub code: ErrorCode,
    /// The refused header's `seq`.
    pub seq: u32,
}

/// What [`cut`] found at the head of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A whole valid frame of this many bytes.
    Frame(usize),
    /// Not yet: the frame at the head needs this many bytes in total.
    Need(usize),
    /// The header at the head is refused.
    Refused(Refusal),
}

/// Cuts the frame at the head of `bytes` with the protocol's header-only checks.
#[inline]
pub fn cut(decoder: &Decoder, bytes: &[u8]) -> Cut {
    match decoder.decode(bytes) {
        Ok(Some(f)) => Cut::Frame(f.wire_len()),
        Ok(None) => Cut::Need(decoder.needed(bytes)),
        Err(e) => match e.to_wire() {
            Some((code, seq)) => Cut::Refused(Refusal { code, seq }),
            // Decode never answers Truncated/BufferTooSmall; treat it as "need a header".
            None => Cut::Need(HEADER_LEN),
        },
    }
}

/// The frame at the head of `bytes`, which [`cut`] already accepted.
#[inline]
pub fn decode<'a>(decoder: &Decoder, bytes: &'a [u8]) -> Option<FrameRef<'a>> {
    decoder.decode(bytes).ok().flatten()
}

/// The wire length of the encoded frame at the head of `bytes` (output bookkeeping).
#[inline]
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    Header::parse(bytes).ok().map(|h| h.wire_len())
}

/// The header bytes of a frame with this kind, seq and body length.
#[inline]
pub fn header(kind: u16, seq: u32, body_len: u32) -> [u8; HEADER_LEN] {
    Header::new(kind, seq, body_len).to_bytes()
}

/// An ERROR frame with the protocol's `seq` rule; returns the buffer and its length.
pub fn error_frame(code: ErrorCode, refused_seq: u32) -> ([u8; MAX_ERROR_FRAME], usize) {
    let mut out = [0u8; MAX_ERROR_FRAME];
    // Cannot fail: `out` holds the longest ERROR frame.
    let n = frame::encode_error(&mut out, code, refused_seq).unwrap_or(0);
    (out, n)
}

/// Writes a frame into `out` (which must hold `HEADER_LEN + body.len()` bytes).
pub fn emit(out: &mut [u8], kind: u16, seq: u32, body: &[u8]) -> Option<usize> {
    frame::encode(out, kind, seq, body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_answers() {
        let d = Decoder::new(8);
        let mut buf = [0u8; 32];
        let n = emit(&mut buf, 64, 1, b"abc").unwrap();
        assert_eq!(cut(&d, &buf[..n]), Cut::Frame(15));
        assert_eq!(cut(&d, &buf[..5]), Cut::Need(12));
        assert_eq!(cut(&d, &buf[..13]), Cut::Need(15));
        let big = header(64, 9, 9);
        assert_eq!(cut(&d, &big), Cut::Refused(Refusal { code: ErrorCode::FrameTooLarge, seq: 9 }));
        assert_eq!(frame_len(&buf), Some(15));
        let (e, n) = error_frame(ErrorCode::ShuttingDown, 5);
        assert_eq!(&e[8..12], &[0, 0, 0, 0]);
        assert_eq!(frame_len(&e[..n]), Some(n));
    }
}
