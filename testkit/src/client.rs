//! A blocking docs/PROTOCOL.md client for tests: frames out, frames in, and how the server closed.
//!
//! # Design
//!
//! [`Client`] wraps one `TcpStream` (with `TCP_NODELAY`, so a split write really leaves as two
//! segments) and a receive buffer. Every read has a deadline: [`Client::recv`] returns a frame,
//! or says why there is none ([`RecvError::Timeout`], [`RecvError::Closed`] with EOF or reset,
//! [`RecvError::Protocol`] when the server sent bytes that do not decode). Decoding goes through
//! `doorway_core::frame::Decoder` (the one codec of the project) with an unlimited body size, so
//! any reply the server can legally send is accepted; a non-zero `flags` from the server is a
//! protocol violation and is reported as such.
//!
//! Sending has four shapes, matching the rules a server must honour: a whole frame
//! ([`Client::send`]), raw bytes ([`Client::send_raw`], for garbage and hand-made headers), the
//! same bytes cut at chosen offsets with a pause between pieces ([`Client::send_split`]), and a
//! batch of frames in one write ([`Client::send_batch`]). [`Client::spawn_writer`] writes from
//! another thread, so a test can pipeline more bytes than the socket buffers hold while it reads.
//!
//! # Close detection
//!
//! After the server closes, a read returns EOF (the server shut down its sending side, the polite
//! close of docs/PROTOCOL.md "Closing") or fails with `ECONNRESET` (an abortive close). [`CloseKind`]
//! keeps the difference; a test that must see every reply first checks the replies, then the close.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use doorway_core::frame::{self, Decoder, Header, HEADER_LEN};

/// A frame the client received (or built), owning its body.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header as received.
    pub header: Header,
    /// The body, `header.length` bytes.
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame with flags 0.
    pub fn new(kind: u16, seq: u32, body: &[u8]) -> Frame {
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        Frame { header: Header::new(kind, seq, length), body: body.to_vec() }
    }

    /// The message kind.
    pub fn kind(&self) -> u16 {
        self.header.kind
    }

    /// The sequence number.
    pub fn seq(&self) -> u32 {
        self.header.seq
    }

    /// The frame's bytes on the wire (header as given, even with non-zero flags, then the body).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// For an ERROR frame whose body is well formed (code, then valid UTF-8), the code and reason.
    pub fn error(&self) -> Option<(u16, &str)> {
        if self.header.kind != frame::kind::ERROR {
            return None;
        }
        frame::parse_error_body(&self.body)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame{{kind {} seq {} len {}", self.header.kind, self.header.seq, self.header.length)?;
        if self.header.flags != 0 {
            write!(f, " flags {:#x}", self.header.flags)?;
        }
        if let Some((code, reason)) = self.error() {
            write!(f, " ERROR {code} {reason:?}")?;
        } else if self.body.len() <= 32 {
            write!(f, " body {:?}", String::from_utf8_lossy(&self.body))?;
        }
        f.write_str("}")
    }
}

/// Encodes one frame (flags 0) to bytes.
pub fn frame_bytes(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    Frame::new(kind, seq, body).to_bytes()
}

/// How the server ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// A read returned 0: the server shut down its sending side (FIN).
    Eof,
    /// A read or write failed with `ECONNRESET`, `ECONNABORTED` or `EPIPE`.
    Reset,
}

/// Why [`Client::recv`] returned no frame.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing complete arrived before the deadline.
    Timeout {
        /// Bytes of an incomplete frame already buffered.
        buffered: usize,
    },
    /// The server closed the connection; `buffered` bytes of an incomplete frame were left over.
    Closed {
        /// EOF or reset.
        kind: CloseKind,
        /// Bytes of an incomplete frame left in the buffer.
        buffered: usize,
    },
    /// The server sent a header the codec refuses (non-zero flags).
    Protocol(frame::Error),
    /// Any other socket error.
    Io(io::Error),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Timeout { buffered } => write!(f, "timed out ({buffered} bytes of a partial frame)"),
            RecvError::Closed { kind, buffered } => {
                write!(f, "connection closed ({kind:?}, {buffered} bytes of a partial frame left)")
            }
            RecvError::Protocol(e) => write!(f, "server sent an invalid frame: {e}"),
            RecvError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Classifies an I/O error as a reset close, if it is one.
pub fn reset_kind(err: &io::Error) -> Option<CloseKind> {
    match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            Some(CloseKind::Reset)
        }
        _ => None,
    }
}

/// A blocking protocol client over one TCP connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
    closed: Option<CloseKind>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.stream.local_addr().ok())
            .field("buffered", &self.buf.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Client {
    /// Connects with a deadline and sets `TCP_NODELAY`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        Client::from_stream(stream)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        Ok(Client { stream, buf: Vec::with_capacity(4096), decoder: Decoder::new(u32::MAX), closed: None })
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one frame (flags 0).
    pub fn send(&mut self, kind: u16, seq: u32, body: &[u8]) -> io::Result<()> {
        self.send_raw(&frame_bytes(kind, seq, body))
    }

    /// Sends many frames in one write.
    pub fn send_batch(&mut self, frames: &[Frame]) -> io::Result<()> {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::to_bytes).collect();
        self.send_raw(&bytes)
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `bytes` in pieces cut at the (sorted, in-range) offsets `cuts`, pausing `gap` between
    /// pieces so that each piece is likely to reach the server's read on its own.
    pub fn send_split(&mut self, bytes: &[u8], cuts: &[usize], gap: Duration) -> io::Result<()> {
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            if cut > start {
                self.stream.write_all(&bytes[start..cut])?;
                thread::sleep(gap);
            }
            start = cut;
        }
        self.stream.write_all(&bytes[start..])
    }

    /// Sets `SO_RCVBUF` (the kernel doubles it), e.g. to make a non-reading client fill up fast.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(bytes).map_err(io::Error::other)?;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid `c_int` on our own open
        // socket; the fd stays open for the call because `self.stream` is borrowed.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Shuts down the sending side (half-close).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Starts a thread writing `bytes` on a clone of the stream; join it for the write's result.
    pub fn spawn_writer(&self, bytes: Vec<u8>) -> io::Result<JoinHandle<io::Result<()>>> {
        let mut stream = self.stream.try_clone()?;
        Ok(thread::spawn(move || stream.write_all(&bytes)))
    }

    /// Takes a whole frame out of the buffer, if one is there.
    fn take_buffered(&mut self) -> Result<Option<Frame>, RecvError> {
        match self.decoder.decode(&self.buf) {
            Ok(Some(f)) => {
                let frame = Frame { header: f.header, body: f.body.to_vec() };
                let n = f.wire_len();
                self.buf.drain(..n);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(RecvError::Protocol(e)),
        }
    }

    /// Receives the next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Frame, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_buffered()? {
                return Ok(frame);
            }
            if let Some(kind) = self.closed {
                return Err(RecvError::Closed { kind, buffered: self.buf.len() });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout { buffered: self.buf.len() });
            }
            self.stream.set_read_timeout(Some(deadline - now)).map_err(RecvError::Io)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = Some(CloseKind::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => match reset_kind(&e) {
                    Some(kind) => self.closed = Some(kind),
                    None => return Err(RecvError::Io(e)),
                },
            }
        }
    }

    /// Receives `n` frames, each within `timeout` of the previous one.
    pub fn recv_n(&mut self, n: usize, timeout: Duration) -> Result<Vec<Frame>, RecvError> {
        (0..n).map(|_| self.recv(timeout)).collect()
    }

    /// Waits for the server to close; `Ok` with how, or the frame that arrived instead.
    pub fn expect_close(&mut self, timeout: Duration) -> Result<CloseKind, ExpectCloseError> {
        match self.recv(timeout) {
            Ok(frame) => Err(ExpectCloseError::Frame(frame)),
            Err(RecvError::Closed { kind, buffered: 0 }) => Ok(kind),
            Err(e) => Err(ExpectCloseError::Recv(e)),
        }
    }

    /// Whether the server has been seen closing the connection.
    pub fn closed(&self) -> Option<CloseKind> {
        self.closed
    }

    /// Sends a request and waits for the next frame.
    pub fn request(
        &mut self,
        kind: u16,
        seq: u32,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Frame, RecvError> {
        self.send(kind, seq, body).map_err(|e| match reset_kind(&e) {
            Some(kind) => RecvError::Closed { kind, buffered: 0 },
            None => RecvError::Io(e),
        })?;
        self.recv(timeout)
    }
}

/// What arrived when a close was expected.
#[derive(Debug)]
pub enum ExpectCloseError {
    /// A frame arrived instead.
    Frame(Frame),
    /// Nothing (timeout), a protocol error, an I/O error, or a close with a partial frame pending.
    Recv(RecvError),
}

impl fmt::Display for ExpectCloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectCloseError::Frame(frame) => write!(f, "expected close, got {frame:?}"),
            ExpectCloseError::Recv(e) => write!(f, "expected close: {e}"),
        }
    }
}

impl std::error::Error for ExpectCloseError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn recv_cuts_frames_and_sees_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut bytes = frame_bytes(64, 1, b"ab");
            bytes.extend(frame_bytes(65, 2, b""));
            s.write_all(&bytes[..5]).unwrap();
            thread::sleep(Duration::from_millis(20));
            s.write_all(&bytes[5..]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            thread::sleep(Duration::from_millis(50));
        });
        let mut c = Client::connect(addr, Duration::from_secs(2)).unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(c.recv(t).unwrap(), Frame::new(64, 1, b"ab"));
        assert_eq!(c.recv(t).unwrap(), Frame::new(65, 2, b""));
        assert_eq!(c.expect_close(t).unwrap(), CloseKind::Eof);
        server.join().unwrap();
    }

    #[test]
    fn recv_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Client::connect(listener.local_addr().unwrap(), Duration::from_secs(2)).unwrap();
        let (_s, _) = listener.accept().unwrap();
        let start = Instant::now();
        assert!(matches!(c.recv(Duration::from_millis(50)), Err(RecvError::Timeout { buffered: 0 })));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
