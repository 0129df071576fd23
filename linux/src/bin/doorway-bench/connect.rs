//! The connect-rate worker: connect, one ECHO, read and verify the reply, close; repeat.
//!
//! Blocking sockets are the right tool here: each loop has exactly one thing to wait for at a
//! time, and `--connections` loops run side by side to keep the server busy. Every step is bounded
//! (connect timeout, read timeout), and the loop stops sending at the plan's `stop_sending`.
//! Latency is the whole cycle, connect to reply.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use doorway_core::frame::{kind, Header, HEADER_LEN};

use crate::report::Stats;
use crate::{Plan, Request, CONNECT_TIMEOUT};

/// Runs connect cycles until the plan stops sending or the loop's quota is spent.
pub fn run(
    addr: SocketAddr,
    request: &Request,
    mut quota: u64,
    plan: &Plan,
    progress: &Arc<AtomicU64>,
) -> Stats {
    let mut stats = Stats::new();
    let mut reply = vec![0u8; request.frame.len()].into_boxed_slice();
    let mut seq: u32 = 1;
    while quota > 0 {
        let start = plan.now();
        if start >= plan.stop_sending || start >= plan.hard_deadline {
            break;
        }
        quota -= 1;
        match cycle(addr, request, seq, &mut reply, plan) {
            Ok(()) => {}
            Err(Failure::Connect) => {
                stats.errors.connect += 1;
                // Do not spin on a refusing server.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            Err(Failure::Io) => {
                stats.errors.io += 1;
                continue;
            }
            Err(Failure::Timeout) => {
                stats.errors.timeout += 1;
                continue;
            }
            Err(Failure::Closed) => {
                stats.errors.closed += 1;
                continue;
            }
            Err(Failure::Mismatch) => {
                stats.errors.mismatch += 1;
                continue;
            }
            Err(Failure::ErrorFrame(code)) => {
                stats.errors.error_frame(code);
                continue;
            }
        }
        seq = seq.wrapping_add(1);
        let now = plan.now();
        stats.total += 1;
        if now >= plan.measure_from && now < plan.measure_until {
            stats.messages += 1;
            stats.latency.saturating_record(now.saturating_sub(start).max(1));
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

enum Failure {
    Connect,
    Io,
    Timeout,
    Closed,
    Mismatch,
    ErrorFrame(u16),
}

fn classify(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::UnexpectedEof => Failure::Closed,
        _ => Failure::Io,
    }
}

fn cycle(
    addr: SocketAddr,
    request: &Request,
    seq: u32,
    reply: &mut [u8],
    plan: &Plan,
) -> Result<(), Failure> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|_| Failure::Connect)?;
    // Never wait past the run's hard deadline, and at most the connect timeout per read.
    let left = plan.hard_deadline.saturating_sub(plan.now()).max(1_000_000);
    let read_timeout = CONNECT_TIMEOUT.min(std::time::Duration::from_nanos(left));
    stream.set_read_timeout(Some(read_timeout)).map_err(|_| Failure::Io)?;
    stream.set_nodelay(true).map_err(|_| Failure::Io)?;
    let frame = &mut reply[..request.frame.len()];
    request.write(frame, seq);
    stream.write_all(frame).map_err(classify)?;
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).map_err(classify)?;
    let header = Header::parse(&head).map_err(|_| Failure::Mismatch)?;
    if header.kind == kind::ERROR {
        let mut code = [0u8; 2];
        return Err(match stream.read_exact(&mut code) {
            Ok(()) => Failure::ErrorFrame(u16::from_be_bytes(code)),
            Err(_) => Failure::ErrorFrame(0),
        });
    }
    if header.kind != doorway_core::demo::kind::ECHO
        || header.seq != seq
        || header.length as usize != request.body.len()
    {
        return Err(Failure::Mismatch);
    }
    let body = &mut reply[..request.body.len()];
    stream.read_exact(body).map_err(classify)?;
    if !request.matches(body, seq) {
        return Err(Failure::Mismatch);
    }
    Ok(())
}
