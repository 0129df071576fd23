//! Wire formats: everything a byte protocol decides, behind one statically dispatched trait.
//!
//! A wire is more than a byte layout. Besides cutting a stream into frames and writing heads, it
//! decides which kinds the server answers itself before the message map (v1's PING and BYE), what
//! an unknown kind gets (v1: ERROR 2; Lars: counted and skipped), and how the server announces a
//! close (v1: an ERROR frame; Lars: it just closes). A binding (the Linux server, the embedded
//! server) holds one [`Wire`] value and never looks at head bytes itself, so a second protocol is
//! a second implementation here, not a fork of the server.
//!
//! Two implementations:
//!
//! - [`V1`]: `docs/PROTOCOL.md`, a 12-byte big-endian header (`length`, `kind`, `flags`, `seq`);
//!   the byte layout lives in [`crate::frame`].
//! - [`Lars`]: the original Lars's 8-byte little-endian head (`msgid: i32`, `msglen: i32`), no
//!   `seq`, protobuf bodies of at most 65,527 bytes, no control kinds; a `msgid` outside the message
//!   map's range (`0..=u16::MAX`) or without a handler is unknown, counted and skipped.
//!
//! Every method works in place on the caller's bytes and allocates nothing. A head is judged from
//! its own bytes: an oversized length is refused before any of the body is buffered.

use crate::dispatch::{Context, Control, Dispatched, Request, Service};
use crate::frame::{self, kind, ErrorCode, Header};

/// The longest head any wire here writes (room for [`Wire::encode_head`]).
pub const MAX_HEAD_LEN: usize = 16;

/// The longest frame [`Wire::close_frame`] writes.
pub const MAX_CLOSE_FRAME: usize = frame::HEADER_LEN + frame::MAX_ERROR_BODY;

/// What a frame's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Head {
    /// The kind, if it is in the message map's range (`None`: unknown by construction).
    pub kind: Option<u16>,
    /// The sequence number (0 where the wire has none).
    pub seq: u32,
    /// Bytes of body after the head.
    pub body_len: usize,
}

/// A head refused from its bytes alone: why (as the v1 error it maps to) and the refused `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refusal {
    /// Why: `FrameTooLarge` (a length out of range) or `BadFlags`.
    pub code: ErrorCode,
    /// The refused head's `seq` (0 where the wire has none).
    pub seq: u32,
}

/// What [`Wire::cut`] found at the start of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Cut {
    /// A whole, valid frame of this many bytes.
    Frame(usize),
    /// Not yet: the frame needs this many bytes in total.
    Need(usize),
    /// The head is refused; the connection is closed (announced as the wire says).
    Refused(Refusal),
}

/// A wire format and its protocol rules. Implementations are small `Copy` values (their limits),
/// so a binding keeps one by value and every call is statically dispatched.
pub trait Wire: Copy + Send + Sync + 'static {
    /// Bytes of a head.
    const HEAD_LEN: usize;

    /// The largest body this value accepts.
    fn max_body(&self) -> u32;

    /// The same wire with its body limit set to `max_body` (capped at the format's own limit).
    fn with_max_body(&self, max_body: u32) -> Self;

    /// Cuts the frame at the start of `bytes`.
    fn cut(&self, bytes: &[u8]) -> Cut;

    /// The head of the frame at the start of `bytes`, which [`Wire::cut`] accepted.
    fn head(&self, bytes: &[u8]) -> Head;

    /// The head of the frame that is exactly `bytes` (a datagram: one whole valid frame, nothing
    /// after it), or `None`. The same answer as [`Wire::cut`] then [`Wire::head`]; the wires here
    /// give it from one read of the head.
    fn whole_frame(&self, bytes: &[u8]) -> Option<Head> {
        match self.cut(bytes) {
            Cut::Frame(len) if len == bytes.len() => Some(self.head(bytes)),
            _ => None,
        }
    }

    /// Writes the head of a frame of `kind`, `seq` and `body_len` bytes into `out`; returns its
    /// length ([`Wire::HEAD_LEN`]).
    fn encode_head(&self, out: &mut [u8; MAX_HEAD_LEN], kind: u16, seq: u32, body_len: usize) -> usize;

    /// The wire length of the encoded frame at the start of `bytes` (output bookkeeping).
    fn frame_len(&self, bytes: &[u8]) -> Option<usize>;

    /// Applies the wire's control rules to one frame, handing the rest to the service's map.
    fn handle<S: Service, C: Context>(&self, service: &mut S, cx: &mut C, head: Head, body: &[u8])
        -> Control;

    /// How the server announces closing a connection for `code` (`seq`: the refused request's):
    /// writes the frame into `out` and returns its length, or 0 to close silently.
    fn close_frame(&self, code: ErrorCode, seq: u32, out: &mut [u8; MAX_CLOSE_FRAME]) -> usize;

    /// A keepalive frame for a silent upstream link (v1: PING), written into `out`; 0 where the wire
    /// has none (Lars links send nothing and are never closed for silence).
    fn keepalive(&self, out: &mut [u8; MAX_CLOSE_FRAME]) -> usize {
        let _ = out;
        0
    }

    /// The error code a frame of `kind` with `body` announces, if this wire has error frames and
    /// it is one (for counting the errors a server sends).
    fn error_code(&self, kind: u16, body: &[u8]) -> Option<ErrorCode> {
        let _ = (kind, body);
        None
    }
}

/// `docs/PROTOCOL.md` version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct V1 {
    decoder: frame::Decoder,
}

impl V1 {
    /// V1 refusing bodies over `max_body` bytes.
    pub const fn new(max_body: u32) -> V1 {
        V1 { decoder: frame::Decoder::new(max_body) }
    }
}

impl Default for V1 {
    fn default() -> Self {
        V1::new(frame::DEFAULT_MAX_BODY)
    }
}

impl Wire for V1 {
    const HEAD_LEN: usize = frame::HEADER_LEN;

    fn max_body(&self) -> u32 {
        self.decoder.max_body()
    }

    fn with_max_body(&self, max_body: u32) -> Self {
        V1::new(max_body)
    }

    #[inline]
    fn cut(&self, bytes: &[u8]) -> Cut {
        match self.decoder.decode(bytes) {
            Ok(Some(f)) => Cut::Frame(f.wire_len()),
            Ok(None) => Cut::Need(self.decoder.needed(bytes)),
            Err(e) => match e.to_wire() {
                Some((code, seq)) => Cut::Refused(Refusal { code, seq }),
                // Decode never answers Truncated/BufferTooSmall; treat it as "need a header".
                None => Cut::Need(frame::HEADER_LEN),
            },
        }
    }

    #[inline]
    fn head(&self, bytes: &[u8]) -> Head {
        match Header::parse(bytes) {
            Ok(h) => Head { kind: Some(h.kind), seq: h.seq, body_len: h.length as usize },
            Err(_) => Head { kind: None, seq: 0, body_len: 0 },
        }
    }

    #[inline]
    fn whole_frame(&self, bytes: &[u8]) -> Option<Head> {
        match self.decoder.decode(bytes) {
            Ok(Some(f)) if f.wire_len() == bytes.len() => {
                Some(Head { kind: Some(f.header.kind), seq: f.header.seq, body_len: f.body.len() })
            }
            _ => None,
        }
    }

    #[inline]
    fn encode_head(&self, out: &mut [u8; MAX_HEAD_LEN], kind: u16, seq: u32, body_len: usize) -> usize {
        out[..frame::HEADER_LEN].copy_from_slice(&Header::new(kind, seq, body_len as u32).to_bytes());
        frame::HEADER_LEN
    }

    #[inline]
    fn frame_len(&self, bytes: &[u8]) -> Option<usize> {
        Header::parse(bytes).ok().map(|h| h.wire_len())
    }

    /// PING → PONG; PONG consumed; BYE → [`Control::Bye`]; kind 0, reserved kinds (5..64), a
    /// client's ERROR, and application kinds without a handler → ERROR 2 (the connection stays
    /// open); the rest go to the service's message map.
    #[inline]
    fn handle<S: Service, C: Context>(
        &self,
        service: &mut S,
        cx: &mut C,
        head: Head,
        body: &[u8],
    ) -> Control {
        let Some(k) = head.kind else { return sent(cx.reply_error(ErrorCode::UnknownKind, head.seq)) };
        let result = match k {
            kind::PING => cx.reply(kind::PONG, head.seq, body),
            kind::PONG => Ok(()),
            kind::BYE => return Control::Bye,
            // An upstream peer's ERROR is news for the service, not a client's mistake.
            kind::ERROR if cx.link().is_some() => {
                let req = Request { conn: cx.conn(), kind: k, seq: head.seq, body };
                match service.dispatch(cx, &req) {
                    Dispatched::Handled(result) => result,
                    Dispatched::Unknown => Ok(()),
                }
            }
            k if k < kind::FIRST_APPLICATION => {
                net_debug!("refusing control kind {}", k);
                cx.reply_error(ErrorCode::UnknownKind, head.seq)
            }
            _ => {
                let req = Request { conn: cx.conn(), kind: k, seq: head.seq, body };
                match service.dispatch(cx, &req) {
                    Dispatched::Handled(result) => result,
                    Dispatched::Unknown => {
                        net_debug!("no handler for kind {}", k);
                        cx.reply_error(ErrorCode::UnknownKind, head.seq)
                    }
                }
            }
        };
        sent(result)
    }

    fn close_frame(&self, code: ErrorCode, seq: u32, out: &mut [u8; MAX_CLOSE_FRAME]) -> usize {
        // Cannot fail: `out` holds the longest ERROR frame.
        frame::encode_error(out, code, seq).unwrap_or(0)
    }

    fn keepalive(&self, out: &mut [u8; MAX_CLOSE_FRAME]) -> usize {
        frame::encode(out, kind::PING, 0, b"").unwrap_or(0)
    }

    #[inline]
    fn error_code(&self, kind: u16, body: &[u8]) -> Option<ErrorCode> {
        if kind != kind::ERROR {
            return None;
        }
        body.get(..2).and_then(|c| ErrorCode::from_code(u16::from_be_bytes([c[0], c[1]])))
    }
}

/// The original Lars's wire: `msgid: i32` and `msglen: i32`, little-endian, then a protobuf body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Lars {
    max_body: u32,
}

impl Lars {
    /// The original's body limit: its 64 KiB message buffer less the head and a margin.
    pub const MAX_BODY: u32 = 65_527;
    /// Bytes of a Lars head.
    pub const HEAD_LEN: usize = 8;

    /// Lars refusing bodies over `max_body` bytes (at most [`Lars::MAX_BODY`]).
    pub const fn new(max_body: u32) -> Lars {
        Lars { max_body: if max_body < Lars::MAX_BODY { max_body } else { Lars::MAX_BODY } }
    }

    fn fields(bytes: &[u8]) -> Option<(i32, i32)> {
        let id = bytes.get(0..4)?;
        let len = bytes.get(4..8)?;
        Some((
            i32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            i32::from_le_bytes([len[0], len[1], len[2], len[3]]),
        ))
    }
}

impl Default for Lars {
    fn default() -> Self {
        Lars::new(Lars::MAX_BODY)
    }
}

impl Wire for Lars {
    const HEAD_LEN: usize = Lars::HEAD_LEN;

    fn max_body(&self) -> u32 {
        self.max_body
    }

    fn with_max_body(&self, max_body: u32) -> Self {
        Lars::new(max_body)
    }

    #[inline]
    fn cut(&self, bytes: &[u8]) -> Cut {
        let Some((_, len)) = Lars::fields(bytes) else { return Cut::Need(Lars::HEAD_LEN) };
        match u32::try_from(len) {
            Ok(len) if len <= self.max_body => {
                let total = Lars::HEAD_LEN + len as usize;
                if bytes.len() >= total {
                    Cut::Frame(total)
                } else {
                    Cut::Need(total)
                }
            }
            // Below 0 or over the limit: refused from the head alone.
            _ => Cut::Refused(Refusal { code: ErrorCode::FrameTooLarge, seq: 0 }),
        }
    }

    #[inline]
    fn head(&self, bytes: &[u8]) -> Head {
        match Lars::fields(bytes) {
            Some((id, len)) => {
                Head { kind: u16::try_from(id).ok(), seq: 0, body_len: usize::try_from(len).unwrap_or(0) }
            }
            None => Head { kind: None, seq: 0, body_len: 0 },
        }
    }

    #[inline]
    fn whole_frame(&self, bytes: &[u8]) -> Option<Head> {
        let (id, len) = Lars::fields(bytes)?;
        let len = u32::try_from(len).ok().filter(|&len| len <= self.max_body)? as usize;
        (Lars::HEAD_LEN + len == bytes.len()).then(|| Head {
            kind: u16::try_from(id).ok(),
            seq: 0,
            body_len: len,
        })
    }

    #[inline]
    fn encode_head(&self, out: &mut [u8; MAX_HEAD_LEN], kind: u16, _seq: u32, body_len: usize) -> usize {
        out[..4].copy_from_slice(&i32::from(kind).to_le_bytes());
        out[4..8].copy_from_slice(&(body_len as i32).to_le_bytes());
        Lars::HEAD_LEN
    }

    #[inline]
    fn frame_len(&self, bytes: &[u8]) -> Option<usize> {
        let (_, len) = Lars::fields(bytes)?;
        Some(Lars::HEAD_LEN + usize::try_from(len).ok()?)
    }

    /// No control kinds: every known msgid goes to the map; an unknown one is skipped.
    #[inline]
    fn handle<S: Service, C: Context>(
        &self,
        service: &mut S,
        cx: &mut C,
        head: Head,
        body: &[u8],
    ) -> Control {
        let Some(k) = head.kind else { return Control::Skipped };
        let req = Request { conn: cx.conn(), kind: k, seq: 0, body };
        match service.dispatch(cx, &req) {
            Dispatched::Handled(result) => sent(result),
            Dispatched::Unknown => {
                net_debug!("skipping unknown msgid {}", k);
                Control::Skipped
            }
        }
    }

    /// Lars announces nothing: the connection just closes.
    fn close_frame(&self, _code: ErrorCode, _seq: u32, _out: &mut [u8; MAX_CLOSE_FRAME]) -> usize {
        0
    }
}

fn sent(result: Result<(), crate::dispatch::SendError>) -> Control {
    match result {
        Ok(()) => Control::Continue,
        Err(e) => Control::SendFailed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::Recorder;
    use crate::dispatch::{MessageMap, SendError};
    use proptest::prelude::*;

    fn lars_frame(msgid: i32, body: &[u8]) -> Vec<u8> {
        let mut out = msgid.to_le_bytes().to_vec();
        out.extend_from_slice(&(body.len() as i32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Frames as (msgid, body).
    type Frames = Vec<(Option<u16>, Vec<u8>)>;

    /// Cuts a stream fed in `chunks`, returning the frames in order and whether a head was refused.
    fn cut_stream(wire: Lars, chunks: &[&[u8]]) -> (Frames, bool) {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match wire.cut(&buf) {
                    Cut::Frame(len) => {
                        let head = wire.head(&buf);
                        frames.push((head.kind, buf[Lars::HEAD_LEN..len].to_vec()));
                        buf.drain(..len);
                    }
                    Cut::Need(_) => break,
                    Cut::Refused(_) => return (frames, true),
                }
            }
        }
        (frames, false)
    }

    #[test]
    fn lars_heads_are_little_endian_and_have_no_seq() {
        let w = Lars::default();
        let mut head = [0u8; MAX_HEAD_LEN];
        assert_eq!(w.encode_head(&mut head, 1, 77, 4), 8);
        assert_eq!(&head[..8], &[1, 0, 0, 0, 4, 0, 0, 0]);
        // The first frame of the original's vectors: GetRouteRequest{modid 1, cmdid 1}.
        let frame = [1, 0, 0, 0, 4, 0, 0, 0, 8, 1, 16, 1];
        assert_eq!(w.cut(&frame), Cut::Frame(12));
        assert_eq!(w.head(&frame), Head { kind: Some(1), seq: 0, body_len: 4 });
        assert_eq!(w.frame_len(&frame), Some(12));
        assert_eq!(w.cut(&frame[..5]), Cut::Need(8));
        assert_eq!(w.cut(&frame[..9]), Cut::Need(12));
    }

    #[test]
    fn lars_refuses_a_negative_or_oversized_msglen_from_the_head_alone() {
        let w = Lars::default();
        for len in [-1i32, i32::MIN, 65_528, i32::MAX] {
            let mut head = 5i32.to_le_bytes().to_vec();
            head.extend_from_slice(&len.to_le_bytes());
            assert!(matches!(w.cut(&head), Cut::Refused(_)), "msglen {len}");
        }
        let mut ok = 5i32.to_le_bytes().to_vec();
        ok.extend_from_slice(&65_527i32.to_le_bytes());
        assert_eq!(w.cut(&ok), Cut::Need(8 + 65_527));
        assert_eq!(
            w.close_frame(ErrorCode::FrameTooLarge, 0, &mut [0; MAX_CLOSE_FRAME]),
            0,
            "Lars closes silently"
        );
    }

    #[test]
    fn lars_msgids_outside_the_map_range_are_unknown() {
        let w = Lars::default();
        for id in [-1i32, 65_536, i32::MAX] {
            assert_eq!(w.head(&lars_frame(id, b"")).kind, None, "msgid {id}");
        }
        assert_eq!(w.head(&lars_frame(65_535, b"")).kind, Some(65_535));
    }

    struct Map;
    impl MessageMap for Map {
        fn dispatch<C: Context>(&mut self, cx: &mut C, req: &Request<'_>) -> Dispatched {
            match req.kind {
                1..=8 => Dispatched::Handled(cx.reply(req.kind + 100, req.seq, req.body)),
                _ => Dispatched::Unknown,
            }
        }
    }
    impl Service for Map {}

    #[test]
    fn lars_sends_every_msgid_to_the_map_and_skips_unknown_ones() {
        let w = Lars::default();
        let mut cx = Recorder::default();
        for id in 1..=8u16 {
            let head = Head { kind: Some(id), seq: 0, body_len: 1 };
            assert_eq!(w.handle(&mut Map, &mut cx, head, b"x"), Control::Continue);
        }
        assert_eq!(cx.sent.len(), 8, "msgids 1-8 are application kinds on this wire (PING and BYE on v1)");
        for kind in [Some(9), None] {
            let head = Head { kind, seq: 0, body_len: 0 };
            assert_eq!(w.handle(&mut Map, &mut cx, head, b""), Control::Skipped);
        }
        assert_eq!(cx.sent.len(), 8, "nothing answers an unknown msgid");
    }

    /// `whole_frame` answers what `cut` then `head` answer, on both wires: exact frames, a byte
    /// short, a byte over, a refused length, an empty datagram.
    #[test]
    fn whole_frame_agrees_with_cut_then_head() {
        fn by_cut<W: Wire>(w: &W, bytes: &[u8]) -> Option<Head> {
            match w.cut(bytes) {
                Cut::Frame(len) if len == bytes.len() => Some(w.head(bytes)),
                _ => None,
            }
        }
        fn check<W: Wire>(w: W, frame: &[u8], accepted: Option<Option<u16>>) {
            let mut longer = frame.to_vec();
            longer.push(0);
            for bytes in [frame, &frame[..frame.len() - 1], &longer[..], &[][..]] {
                assert_eq!(w.whole_frame(bytes), by_cut(&w, bytes), "{bytes:?}");
            }
            let expect = accepted.map(|kind| (kind, frame.len() - W::HEAD_LEN));
            assert_eq!(w.whole_frame(frame).map(|h| (h.kind, h.body_len)), expect);
        }
        let mut v1 = [0u8; 64];
        let n = frame::encode(&mut v1, 100, 7, b"hello").unwrap();
        check(V1::default(), &v1[..n], Some(Some(100)));
        check(V1::new(4), &v1[..n], None); // body over the limit: refused
        check(Lars::default(), &lars_frame(4, b"abc"), Some(Some(4)));
        check(Lars::default(), &lars_frame(70_000, b"abc"), Some(None)); // msgid outside the map's range
        let mut refused = lars_frame(4, b"");
        refused[4..8].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(Lars::default().whole_frame(&refused), None);
    }

    #[test]
    fn v1_keeps_its_control_rules() {
        let w = V1::default();
        let mut cx = Recorder::default();
        let ping = Head { kind: Some(kind::PING), seq: 4, body_len: 2 };
        assert_eq!(w.handle(&mut Map, &mut cx, ping, b"hi"), Control::Continue);
        assert_eq!(cx.sent[0].1, kind::PONG);
        let bye = Head { kind: Some(kind::BYE), seq: 5, body_len: 0 };
        assert_eq!(w.handle(&mut Map, &mut cx, bye, b""), Control::Bye);
        let unknown = Head { kind: Some(200), seq: 6, body_len: 0 };
        assert_eq!(w.handle(&mut Map, &mut cx, unknown, b""), Control::Continue);
        assert_eq!((cx.sent[1].1, cx.sent[1].2), (kind::ERROR, 6), "ERROR 2 with the request's seq");
        let mut out = [0u8; MAX_CLOSE_FRAME];
        assert!(w.close_frame(ErrorCode::IdleTimeout, 0, &mut out) > frame::HEADER_LEN);
        let _ = SendError::Full;
    }

    proptest! {
        /// Any split of a Lars byte stream gives the same frames as the whole stream.
        #[test]
        fn any_split_of_a_lars_stream_gives_the_same_frames(
            frames in proptest::collection::vec((0i32..20, proptest::collection::vec(any::<u8>(), 0..40)), 1..12),
            cuts in proptest::collection::vec(0usize..600, 0..10),
        ) {
            let w = Lars::default();
            let stream: Vec<u8> = frames.iter().flat_map(|(id, body)| lars_frame(*id, body)).collect();
            let (whole, refused) = cut_stream(w, &[&stream]);
            prop_assert!(!refused);
            let expected: Vec<_> = frames.iter().map(|(id, b)| (u16::try_from(*id).ok(), b.clone())).collect();
            prop_assert_eq!(&whole, &expected);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for p in points {
                chunks.push(&stream[at..p]);
                at = p;
            }
            chunks.push(&stream[at..]);
            let (split, refused) = cut_stream(w, &chunks);
            prop_assert!(!refused);
            prop_assert_eq!(split, expected);
        }
    }
}
