//! Benchmark peer: the tokio + tokio-util server a Rust user would otherwise write.
//!
//! It exists only so `cargo xtask bench` can measure doorway against a fair baseline, in the same
//! run, on the same workload. It is written the way a competent Rust user writes a framed TCP
//! service, with nothing held back:
//!
//! - a tokio multi-thread runtime, one task per connection ([`serve`]);
//! - a [`tokio_util::codec::Framed`] transport with our [`FrameCodec`] (a `Decoder`/`Encoder`
//!   pair over `docs/PROTOCOL.md` that reuses `doorway_core::frame` for the byte layout);
//! - replies are `feed`-ed while decoded requests are already at hand and flushed once per
//!   batch, so pipelined requests cost one `write` per batch, not one per reply (the idiom the
//!   tokio-util docs recommend over `send` per item).
//!
//! Semantics (the subset of `docs/PROTOCOL.md` the bench exercises): ECHO (64) answers the same frame,
//! PING answers PONG, a PONG is consumed, BYE closes after the replies due, any other kind gets
//! ERROR 2 and the connection stays open; a header with `length > max_body` gets ERROR 1 and
//! non-zero `flags` ERROR 3, decided from the header alone, then the connection closes.
//!
//! With `--udp ADDR` it also serves datagrams on a tokio `UdpSocket` ([`udp`]), one frame per
//! datagram, the same subset of kinds.
//!
//! Invariant: the decoder never buffers a refused body. It answers the refusal as an item
//! ([`Inbound::Refused`]) rather than an `Err`, so the connection task can still send the ERROR
//! frame before it closes (a codec error would end the `Framed` stream with nothing sent).
#![deny(missing_docs)]

pub mod udp;

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use doorway_core::frame::{self, kind, ErrorCode, Header, HEADER_LEN};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// One decoded inbound item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A whole frame: its header and body.
    Frame(Header, Bytes),
    /// A header refused from the header alone (ERROR 1 or 3); the connection must close.
    Refused(ErrorCode, u32),
}

/// One outbound frame: a header (its `length` is the body's) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Frame kind.
    pub kind: u16,
    /// Sequence number (the request's, for a reply).
    pub seq: u32,
    /// Body bytes; for an echo this is the request's body, shared, not copied.
    pub body: Bytes,
}

/// The `docs/PROTOCOL.md` codec for `Framed`.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    decoder: frame::Decoder,
    refused: bool,
}

impl FrameCodec {
    /// A codec refusing bodies longer than `max_body`.
    pub fn new(max_body: u32) -> FrameCodec {
        FrameCodec { decoder: frame::Decoder::new(max_body), refused: false }
    }
}

impl Decoder for FrameCodec {
    type Item = Inbound;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Inbound>> {
        if self.refused {
            // After a refusal nothing more is decoded; the input is discarded.
            src.clear();
            return Ok(None);
        }
        match self.decoder.decode(src) {
            Ok(Some(frame)) => {
                let header = frame.header;
                src.advance(HEADER_LEN);
                let body = src.split_to(header.length as usize).freeze();
                Ok(Some(Inbound::Frame(header, body)))
            }
            Ok(None) => {
                // Reserve room for the rest of the frame so the next read can complete it.
                let needed = self.decoder.needed(src);
                src.reserve(needed.saturating_sub(src.len()));
                Ok(None)
            }
            Err(e) => match e.to_wire() {
                Some((code, seq)) => {
                    self.refused = true;
                    src.clear();
                    Ok(Some(Inbound::Refused(code, seq)))
                }
                None => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
        }
    }
}

impl Encoder<Outbound> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> io::Result<()> {
        let length = u32::try_from(item.body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "body too long"))?;
        dst.reserve(HEADER_LEN + item.body.len());
        dst.put_slice(&Header::new(item.kind, item.seq, length).to_bytes());
        dst.put_slice(&item.body);
        Ok(())
    }
}

/// An ERROR frame for `code`, following the protocol's `seq` rule.
pub fn error_frame(code: ErrorCode, refused_seq: u32) -> Outbound {
    let mut body = [0u8; frame::MAX_ERROR_BODY];
    let n = frame::error_body(&mut body, code);
    let seq = if code.echoes_seq() { refused_seq } else { 0 };
    Outbound { kind: kind::ERROR, seq, body: Bytes::copy_from_slice(&body[..n]) }
}

/// What the connection does after answering one item.
enum Next {
    Continue,
    Close,
}

/// Answers one inbound item, feeding the reply (if any) into the sink without flushing.
async fn answer(framed: &mut Framed<TcpStream, FrameCodec>, item: Inbound) -> io::Result<Next> {
    match item {
        Inbound::Refused(code, seq) => {
            framed.feed(error_frame(code, seq)).await?;
            Ok(Next::Close)
        }
        Inbound::Frame(header, body) => match header.kind {
            doorway_core::demo::kind::ECHO => {
                framed.feed(Outbound { kind: doorway_core::demo::kind::ECHO, seq: header.seq, body }).await?;
                Ok(Next::Continue)
            }
            kind::PING => {
                framed.feed(Outbound { kind: kind::PONG, seq: header.seq, body }).await?;
                Ok(Next::Continue)
            }
            kind::PONG => Ok(Next::Continue),
            kind::BYE => Ok(Next::Close),
            _ => {
                framed.feed(error_frame(ErrorCode::UnknownKind, header.seq)).await?;
                Ok(Next::Continue)
            }
        },
    }
}

/// Serves one connection until the client closes it, a refusal or BYE closes it, or I/O fails.
pub async fn connection(stream: TcpStream, max_body: u32) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, FrameCodec::new(max_body));
    'conn: while let Some(item) = framed.next().await {
        if let Next::Close = answer(&mut framed, item?).await? {
            break 'conn;
        }
        // Answer every request already received before flushing: one write per batch.
        while let Some(Some(item)) = framed.next().now_or_never() {
            if let Next::Close = answer(&mut framed, item?).await? {
                break 'conn;
            }
        }
        framed.flush().await?;
    }
    framed.flush().await?;
    // Close politely: FIN after the replies, so the client reads everything it was owed.
    let mut stream = framed.into_inner();
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    Ok(())
}

/// Accepts connections forever, one task each.
pub async fn serve(listener: TcpListener, max_body: u32) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and friends: back off briefly rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = connection(stream, max_body).await;
        });
    }
}

/// Binds `addr` with std (so the caller learns the real port before the runtime starts serving).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(kind: u16, seq: u32, body: &[u8]) -> BytesMut {
        let mut out = vec![0u8; HEADER_LEN + body.len()];
        frame::encode(&mut out, kind, seq, body).unwrap();
        BytesMut::from(&out[..])
    }

    #[test]
    fn decodes_split_frames() {
        let mut codec = FrameCodec::new(64);
        let whole = bytes_of(doorway_core::demo::kind::ECHO, 7, b"hello");
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let item = codec.decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert_eq!(item, None);
            } else {
                let expected = Header::new(doorway_core::demo::kind::ECHO, 7, 5);
                assert_eq!(item, Some(Inbound::Frame(expected, Bytes::from_static(b"hello"))));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_from_header() {
        let mut codec = FrameCodec::new(4);
        let mut buf = BytesMut::from(&Header::new(doorway_core::demo::kind::ECHO, 9, 5).to_bytes()[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Inbound::Refused(ErrorCode::FrameTooLarge, 9)));
        buf.put_slice(b"more");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn encodes_header_and_body() {
        let mut codec = FrameCodec::new(64);
        let mut dst = BytesMut::new();
        codec
            .encode(Outbound { kind: kind::PONG, seq: 3, body: Bytes::from_static(b"ab") }, &mut dst)
            .unwrap();
        assert_eq!(dst, bytes_of(kind::PONG, 3, b"ab"));
    }
}
