//! Per-connection pending output: whole frames queued by handlers, drained into the socket.
//!
//! [`OutBuf`] is a linear byte buffer of `OUT` bytes holding encoded frames back to back, in
//! reply order. Handlers append whole frames ([`OutBuf::push_frame`]); the connection task hands
//! the front bytes to the TCP socket and [`consume`](OutBuf::consume)s what the socket took. A push
//! that does not fit is refused whole (`Err(Full)`), so the buffer never holds a torn frame of its
//! own making.
//!
//! # Invariant: frame boundaries are known
//!
//! `head_left` counts the bytes of the front frame still in the buffer once part of it went to the
//! socket (0 when the front is at a frame boundary). [`discard_unsent`](OutBuf::discard_unsent)
//! uses it to drop every queued frame but complete a partly written one, as the protocol asks of a
//! slow consumer. Appending never moves bytes past `start`; when the tail has no room the live
//! bytes are moved to the front (at most `OUT` bytes, rare: only when the buffer is nearly full).

use doorway_core::frame::{Header, HEADER_LEN};

/// The output buffer cannot take the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full;

/// Pending output of one connection.
pub struct OutBuf<const OUT: usize> {
    buf: [u8; OUT],
    start: usize,
    end: usize,
    head_left: usize,
}

impl<const OUT: usize> OutBuf<OUT> {
    /// An empty buffer (a `const` so storage can live in a `static`).
    pub const NEW: OutBuf<OUT> = OutBuf { buf: [0; OUT], start: 0, end: 0, head_left: 0 };

    /// Bytes queued and not yet handed to the socket.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes that can still be queued.
    pub fn free(&self) -> usize {
        OUT - self.len()
    }

    /// Appends one frame (`flags` 0), or refuses it whole.
    pub fn push_frame(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), Full> {
        let length = u32::try_from(body.len()).map_err(|_| Full)?;
        let need = HEADER_LEN + body.len();
        if need > self.free() {
            return Err(Full);
        }
        if self.end + need > OUT {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let at = self.end;
        Header::new(kind, seq, length).emit(&mut self.buf[at..at + HEADER_LEN]).map_err(|_| Full)?;
        self.buf[at + HEADER_LEN..at + need].copy_from_slice(body);
        self.end += need;
        Ok(())
    }

    /// The queued bytes, front first.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` queued bytes (the socket took them).
    pub fn consume(&mut self, mut n: usize) {
        n = n.min(self.len());
        while n > 0 {
            if self.head_left == 0 {
                // At a frame boundary: the whole header is here because frames are pushed whole.
                self.head_left = match Header::parse(&self.buf[self.start..self.end]) {
                    Ok(header) => header.wire_len(),
                    Err(_) => self.len(),
                };
            }
            let take = n.min(self.head_left);
            self.head_left -= take;
            self.start += take;
            n -= take;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.head_left = 0;
        }
    }

    /// Drops every queued frame except the rest of one the socket already took part of.
    pub fn discard_unsent(&mut self) {
        self.end = self.start + self.head_left;
        if self.start == self.end {
            self.clear();
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.head_left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorway_core::frame::Decoder;

    fn frames(bytes: &[u8]) -> Vec<(u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(f) = Decoder::default().decode(&bytes[at..]).unwrap() {
            out.push((f.header.kind, f.header.seq, f.body.to_vec()));
            at += f.wire_len();
        }
        assert_eq!(at, bytes.len(), "torn frame in output");
        out
    }

    #[test]
    fn push_consume_and_refuse_whole() {
        let mut out = OutBuf::<40>::NEW;
        out.push_frame(64, 1, b"abcd").unwrap();
        out.push_frame(64, 2, b"efgh").unwrap();
        assert_eq!(out.len(), 32);
        assert_eq!(out.push_frame(64, 3, b"x"), Err(Full));
        assert_eq!(out.len(), 32, "a refused frame leaves nothing behind");
        out.consume(16);
        // Room at the front only: the push compacts.
        out.push_frame(64, 3, b"ijkl").unwrap();
        assert_eq!(frames(out.as_slice()), vec![(64, 2, b"efgh".to_vec()), (64, 3, b"ijkl".to_vec())]);
    }

    #[test]
    fn discard_completes_a_partly_sent_frame() {
        let mut out = OutBuf::<64>::NEW;
        out.push_frame(64, 1, b"abcd").unwrap();
        out.push_frame(64, 2, b"efgh").unwrap();
        out.consume(5);
        out.discard_unsent();
        assert_eq!(out.len(), 11, "the rest of frame 1 stays, frame 2 goes");
        out.consume(11);
        assert!(out.is_empty());
        out.push_frame(64, 3, b"").unwrap();
        out.discard_unsent();
        assert!(out.is_empty(), "nothing sent yet: everything is dropped");
    }
}
