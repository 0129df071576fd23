//! UDP sockets: bound non-blocking sockets and batched I/O, `recvmmsg` in and `sendmmsg` out.
//!
//! A batch is at most [`MAX_BATCH`] datagrams, so the `mmsghdr` and `iovec` arrays the kernel
//! reads live on the stack of the call and point into buffers the batch owns for exactly that call.
//! Datagrams are never truncated silently: a receive slot is as large as the largest frame the wire
//! accepts plus one byte, so a longer datagram shows up as longer than its head says and is
//! dropped by the caller; `MSG_TRUNC` is checked too.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::socket::{from_sockaddr, to_sockaddr};

/// Most datagrams one `recvmmsg` or `sendmmsg` moves.
pub const MAX_BATCH: usize = 32;

/// A non-blocking, close-on-exec UDP socket bound to `addr`, with a receive buffer of about
/// `rcvbuf` bytes (the kernel may cap it at `net.core.rmem_max`).
pub fn bind(addr: &SocketAddr, rcvbuf: usize) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // `socket` takes only integers.
    let fd = super::owned(syscall!(socket(
        family,
        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?);
    let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    // `size` outlives the call and its length is passed.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        (&size as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))?;
    let (storage, len) = to_sockaddr(addr);
    // `storage` holds a valid address of `len` bytes.
    syscall!(bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len))?;
    Ok(fd)
}

fn zeroed<T>() -> T {
    // SAFETY: only used for libc's plain-data structs (mmsghdr, iovec, sockaddr_storage), for which
    // all-zero bytes are a valid value.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// Buffers for receiving one batch of datagrams.
pub struct RecvBatch {
    buf: Box<[u8]>,
    slot: usize,
    addrs: [libc::sockaddr_storage; MAX_BATCH],
    lens: [usize; MAX_BATCH],
    truncated: [bool; MAX_BATCH],
}

impl RecvBatch {
    /// Room for [`MAX_BATCH`] datagrams of up to `slot` bytes each.
    pub fn new(slot: usize) -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; slot * MAX_BATCH].into_boxed_slice(),
            slot,
            addrs: [zeroed(); MAX_BATCH],
            lens: [0; MAX_BATCH],
            truncated: [false; MAX_BATCH],
        }
    }

    /// Receives up to [`MAX_BATCH`] datagrams without waiting; `Ok(0)` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iov: [libc::iovec; MAX_BATCH] = [zeroed(); MAX_BATCH];
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = [zeroed(); MAX_BATCH];
        for (i, chunk) in self.buf.chunks_mut(self.slot).enumerate().take(MAX_BATCH) {
            iov[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // Every iovec points into `self.buf` and every name into `self.addrs`, both exclusively
        // borrowed for the call and as large as the lengths given; `msgs` holds MAX_BATCH entries.
        match syscall!(recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            MAX_BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut()
        )) {
            Ok(n) => {
                let n = n as usize;
                for (i, msg) in msgs.iter().enumerate().take(n) {
                    self.lens[i] = msg.msg_len as usize;
                    self.truncated[i] = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagram `i` of the last batch: its source and bytes (`None` if it was truncated or its
    /// source is not an IP address).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if self.truncated[i] {
            return None;
        }
        let from = from_sockaddr(&self.addrs[i]).ok()?;
        let start = i * self.slot;
        Some((from, &self.buf[start..start + self.lens[i]]))
    }
}

/// Datagrams waiting to be sent in one batch.
#[derive(Default)]
pub struct SendBatch {
    bytes: Vec<u8>,
    msgs: Vec<(SocketAddr, Range<usize>)>,
}

impl SendBatch {
    /// Queues one datagram of `head` then `body` for `to`.
    pub fn push(&mut self, to: SocketAddr, head: &[u8], body: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(body);
        self.msgs.push((to, start..self.bytes.len()));
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Sends everything queued, [`MAX_BATCH`] per `sendmmsg`; returns (sent, dropped). A full
    /// socket buffer drops the rest (UDP promises no delivery; the caller counts them), and so does
    /// an error for one destination (that datagram alone).
    pub fn flush(&mut self, fd: RawFd) -> (usize, usize) {
        let (mut sent, mut dropped) = (0, 0);
        let mut at = 0;
        while at < self.msgs.len() {
            let chunk = &self.msgs[at..(at + MAX_BATCH).min(self.msgs.len())];
            let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = [zeroed(); MAX_BATCH];
            let mut iov: [libc::iovec; MAX_BATCH] = [zeroed(); MAX_BATCH];
            let mut msgs: [libc::mmsghdr; MAX_BATCH] = [zeroed(); MAX_BATCH];
            for (i, (to, range)) in chunk.iter().enumerate() {
                let (storage, len) = to_sockaddr(to);
                addrs[i] = storage;
                let data = &self.bytes[range.clone()];
                // The kernel only reads through this pointer (sendmmsg).
                iov[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                msgs[i].msg_hdr.msg_namelen = len;
            }
            // Every iovec points into `self.bytes` and every name into `addrs`, alive for the call;
            // `chunk.len()` entries of `msgs` are filled.
            match syscall!(sendmmsg(fd, msgs.as_mut_ptr(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT)) {
                Ok(n) if n > 0 => {
                    sent += n as usize;
                    at += n as usize;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dropped += self.msgs.len() - at;
                    break;
                }
                // An error for the first datagram of the chunk (say, no route): skip that one.
                _ => {
                    dropped += 1;
                    at += 1;
                }
            }
        }
        self.bytes.clear();
        self.msgs.clear();
        (sent, dropped)
    }
}

/// The address a socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    super::socket::local_addr(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_datagrams_goes_out_and_comes_back_with_its_sources() {
        let a = bind(&"127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = bind(&"127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b_addr = local_addr(b.as_raw_fd()).unwrap();
        let mut out = SendBatch::default();
        for i in 0..40u8 {
            out.push(b_addr, &[i], &[i; 3]);
        }
        assert_eq!(out.flush(a.as_raw_fd()), (40, 0));
        let mut batch = RecvBatch::new(64);
        let mut got = Vec::new();
        while got.len() < 40 {
            let n = batch.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let (from, bytes) = batch.get(i).unwrap();
                assert_eq!(from, local_addr(a.as_raw_fd()).unwrap());
                got.push(bytes.to_vec());
            }
        }
        assert_eq!(got[39], vec![39; 4]);
        assert_eq!(batch.recv(b.as_raw_fd()).unwrap(), 0, "an empty socket answers 0, not an error");
    }

    #[test]
    fn a_datagram_longer_than_its_slot_is_reported_truncated() {
        let a = bind(&"127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = bind(&"127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let mut out = SendBatch::default();
        out.push(local_addr(b.as_raw_fd()).unwrap(), &[1; 100], &[]);
        out.flush(a.as_raw_fd());
        let mut batch = RecvBatch::new(50);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            if batch.recv(b.as_raw_fd()).unwrap() == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline);
        }
        assert!(batch.get(0).is_none());
    }
}
