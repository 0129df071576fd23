//! The peer's UDP endpoint: a tokio [`UdpSocket`] and one task, the way a Rust user writes a
//! datagram service.
//!
//! [`serve`] loops `recv_from` → [`answer`] → `send_to`, one datagram at a time, each reply built in
//! place in the receive buffer (an echo is the request's own bytes) and sent to the datagram's
//! source. Semantics match doorway's UDP endpoints (`linux/src/shard/udp.rs`): a datagram is
//! exactly one `docs/PROTOCOL.md` frame; one that is not (shorter than its head says, longer,
//! a refused head) is dropped unanswered. ECHO answers the same frame, PING answers PONG, PONG and
//! BYE get nothing, any other kind gets ERROR 2.
//!
//! The socket asks for the same receive buffer as doorway's endpoints ([`RCVBUF`]), so an
//! open-loop loss figure compares the two servers, not their buffer sizes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use doorway_core::frame::{self, kind, ErrorCode, Header, HEADER_LEN};
use tokio::net::UdpSocket;

/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`), as doorway asks.
pub const RCVBUF: usize = 4 << 20;

/// The largest datagram UDP over IPv4 carries.
const MAX_DATAGRAM: usize = 65_507;

/// Binds `addr` with std, non-blocking, with a receive buffer of [`RCVBUF`] (so the caller learns
/// the real port before the runtime starts serving).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let size = libc::c_int::try_from(RCVBUF).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the open socket just bound; `size` outlives the call and its
    // length is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// The reply to the datagram in `buf[..len]`, built in place: `Some(reply_len)` when
/// `buf[..reply_len]` is to be sent back, `None` when nothing is. `buf` must hold at least
/// [`HEADER_LEN`] + [`frame::MAX_ERROR_BODY`] bytes.
pub fn answer(decoder: &frame::Decoder, buf: &mut [u8], len: usize) -> Option<usize> {
    let frame = match decoder.decode(buf.get(..len)?) {
        Ok(Some(frame)) if frame.wire_len() == len => frame,
        // Short, longer than its head says, or a refused head: not one frame, dropped.
        _ => return None,
    };
    let header = frame.header;
    match header.kind {
        doorway_core::demo::kind::ECHO => Some(len),
        kind::PING => {
            let pong = Header::new(kind::PONG, header.seq, header.length);
            pong.emit(buf).ok()?;
            Some(len)
        }
        kind::PONG | kind::BYE => None,
        _ => frame::encode_error(buf, ErrorCode::UnknownKind, header.seq).ok(),
    }
}

/// Answers datagrams on `socket` forever (until the task is dropped).
pub async fn serve(socket: UdpSocket, max_body: u32) -> io::Result<()> {
    let decoder = frame::Decoder::new(max_body);
    // One byte more than the largest frame, so a longer datagram is seen as such.
    let size = (max_body as usize).saturating_add(HEADER_LEN + 1).min(MAX_DATAGRAM);
    let mut buf = vec![0u8; size.max(HEADER_LEN + frame::MAX_ERROR_BODY)];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // A transient error (an ICMP error reported on the socket): go on serving.
            Err(_) => continue,
        };
        if let Some(reply) = answer(&decoder, &mut buf, len) {
            // A refused send (the client's port is gone) loses that reply only.
            let _ = socket.send_to(&buf[..reply], from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN + body.len() + 32];
        let n = frame::encode(&mut out, kind, seq, body).unwrap();
        out.truncate(n);
        out
    }

    fn reply_to(d: &[u8]) -> Option<Vec<u8>> {
        let mut buf = d.to_vec();
        buf.resize(d.len().max(64), 0);
        answer(&frame::Decoder::new(16), &mut buf, d.len()).map(|n| buf[..n].to_vec())
    }

    #[test]
    fn answers_like_doorway_endpoints() {
        let echo = datagram(doorway_core::demo::kind::ECHO, 7, b"abc");
        assert_eq!(reply_to(&echo), Some(echo.clone()));
        assert_eq!(reply_to(&datagram(kind::PING, 8, b"hb")), Some(datagram(kind::PONG, 8, b"hb")));
        assert_eq!(reply_to(&datagram(kind::PONG, 9, b"")), None);
        let error = reply_to(&datagram(9, 10, b"")).unwrap();
        let header = Header::parse(&error).unwrap();
        assert_eq!((header.kind, header.seq), (kind::ERROR, 10));
        assert_eq!(frame::parse_error_body(&error[HEADER_LEN..]).map(|(c, _)| c), Some(2));
    }

    #[test]
    fn drops_what_is_not_exactly_one_frame() {
        let echo = datagram(doorway_core::demo::kind::ECHO, 1, b"abcd");
        let mut long = echo.clone();
        long.push(0);
        for bad in [&echo[..echo.len() - 1], &long[..], &echo[..5], &[][..]] {
            assert_eq!(reply_to(bad), None, "{bad:?}");
        }
        // Over max_body (16): a refused head.
        assert_eq!(reply_to(&datagram(doorway_core::demo::kind::ECHO, 2, &[0; 17])), None);
    }
}
