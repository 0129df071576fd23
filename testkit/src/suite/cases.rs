//! The cases of the conformance suite, one function per rule of `docs/PROTOCOL.md`, listed in [`CASES`].
//!
//! Every case opens its own connections, stays inside the target's profile (`max_body`,
//! `max_concurrent`), bounds every wait by the target's timeout, and checks what the protocol
//! says a client must observe: which frames arrive, in which order, with which `seq` and body, and
//! whether the connection then closes. Expected replies are computed from the requests; nothing
//! is hard-coded from a server's output.

use std::thread;
use std::time::{Duration, Instant};

use doorway_core::demo::kind::{BROADCAST, ECHO, STATS};
use doorway_core::frame::kind::{BYE, ERROR, PING, PONG};
use doorway_core::frame::{Decoder, Error as FrameError, ErrorCode, HEADER_LEN};

use super::{check_error_frame, ensure, exp, exp_any, raw_header, Case, Cx, Failure, Needs};
use crate::client::{frame_bytes, Client, Frame, RecvError};
use crate::json;
use crate::rng::Rng;

/// Every case, in run order. The idle and SERVER_FULL cases come last: they take longest.
pub const CASES: &[Case] = &[
    Case {
        name: "ping_pong",
        rule: "PING is answered by PONG with the same seq and body",
        needs: Needs::Nothing,
        run: ping_pong,
    },
    Case {
        name: "pong_consumed",
        rule: "a PONG received by the server is consumed with no reply",
        needs: Needs::Nothing,
        run: pong_consumed,
    },
    Case { name: "echo", rule: "ECHO (64) replies with the same kind, seq and body", needs: Needs::Nothing, run: echo },
    Case {
        name: "echo_max_body",
        rule: "a body of exactly max_body bytes is accepted",
        needs: Needs::Nothing,
        run: echo_max_body,
    },
    Case {
        name: "split_every_byte",
        rule: "a frame split at any byte boundary gives the same result as one frame per read",
        needs: Needs::Nothing,
        run: split_every_byte,
    },
    Case {
        name: "many_frames_one_write",
        rule: "many frames in one read are all answered, in order",
        needs: Needs::Nothing,
        run: many_frames_one_write,
    },
    Case {
        name: "pipelined_1000",
        rule: "replies on one connection leave in the order their requests arrived",
        needs: Needs::Nothing,
        run: pipelined_1000,
    },
    Case {
        name: "unknown_kinds",
        rule: "kind 0, ERROR from a client, reserved 5-63 and unhandled kinds get ERROR 2 with the seq; the connection stays open",
        needs: Needs::Nothing,
        run: unknown_kinds,
    },
    Case {
        name: "bad_flags",
        rule: "flags != 0: ERROR 3 with the seq from the header alone, the frame is not answered, then close",
        needs: Needs::Nothing,
        run: bad_flags,
    },
    Case {
        name: "frame_too_large",
        rule: "length > max_body: ERROR 1 with the seq from the header alone (no body sent), then close",
        needs: Needs::Nothing,
        run: frame_too_large,
    },
    Case {
        name: "bye",
        rule: "BYE: replies already due are sent, nothing after BYE is answered, then close",
        needs: Needs::Nothing,
        run: bye,
    },
    Case {
        name: "half_close",
        rule: "after the client shuts down its sending side every complete request is answered, a trailing partial frame is discarded, then close",
        needs: Needs::Nothing,
        run: half_close,
    },
    Case {
        name: "owed_replies_survive_close",
        rule: "closing after an ERROR, a BYE or a half-close first sends every reply owed, even a backlog the client has not read yet",
        needs: Needs::Nothing,
        run: owed_replies_survive_close,
    },
    Case {
        name: "broadcast",
        rule: "BROADCAST reaches every open connection, sender included, as kind 65 seq 0, in the sender's reply order",
        needs: Needs::Nothing,
        run: broadcast,
    },
    Case {
        name: "stats",
        rule: "STATS replies kind 66 with the seq and a JSON object of the counters",
        needs: Needs::Nothing,
        run: stats,
    },
    Case {
        name: "isolation",
        rule: "one connection's misbehaviour never harms another; concurrent connections get only their own replies",
        needs: Needs::Nothing,
        run: isolation,
    },
    Case {
        name: "garbage",
        rule: "random and half-valid input is answered exactly as the codec decides, and never crashes the server",
        needs: Needs::Nothing,
        run: garbage,
    },
    Case {
        name: "idle_timeout",
        rule: "no complete frame for idle_timeout: ERROR 4 seq 0, then close; frames keep a connection alive",
        needs: Needs::IdleTimeout,
        run: idle_timeout,
    },
    Case {
        name: "server_full",
        rule: "with max_connections admitted, a new connection gets ERROR 5 seq 0 then close; refused ones do not count",
        needs: Needs::MaxConnections,
        run: server_full,
    },
];

/// `n` bytes of a recognisable pattern.
fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

fn max_body(cx: &Cx<'_>) -> usize {
    cx.target.max_body as usize
}

fn ping_pong(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let big = pattern(max_body(cx).min(1000), 7);
    for (seq, body) in [(1, &b"hello"[..]), (0, b""), (u32::MAX, &big)] {
        cx.send(&mut c, PING, seq, body)?;
        cx.expect(&mut c, exp(PONG, seq, body))?;
    }
    Ok(())
}

fn pong_consumed(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    cx.send(&mut c, PONG, 5, b"unsolicited")?;
    cx.send(&mut c, PONG, 6, b"")?;
    cx.send(&mut c, PING, 7, b"after")?;
    cx.expect(&mut c, exp(PONG, 7, b"after"))?;
    cx.expect_silence(&mut c, Duration::from_millis(100), "the PONG reply")?;
    Ok(())
}

fn echo(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let every_byte: Vec<u8> = (0..=255u8).take(max_body(cx)).collect();
    for (seq, body) in [(0, &b""[..]), (1, b"x"), (2, &every_byte), (u32::MAX, b"last seq")] {
        cx.send(&mut c, ECHO, seq, body)?;
        cx.expect(&mut c, exp(ECHO, seq, body))?;
    }
    Ok(())
}

fn echo_max_body(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let body = pattern(max_body(cx), 3);
    let writer = c.spawn_writer(frame_bytes(ECHO, 42, &body)).map_err(Failure::Connect)?;
    cx.expect(&mut c, exp(ECHO, 42, &body))?;
    join_writer(writer, "the max_body ECHO")?;
    cx.send(&mut c, PING, 43, b"")?;
    cx.expect(&mut c, exp(PONG, 43, b""))?;
    Ok(())
}

fn join_writer(writer: thread::JoinHandle<std::io::Result<()>>, what: &str) -> Result<(), Failure> {
    match writer.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Failure::Send { what: what.to_string(), error }),
        Err(_) => Err(Failure::Check(format!("writer thread for {what} panicked"))),
    }
}

fn split_every_byte(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let echo_body = b"split at every byte";
    let mut both = frame_bytes(ECHO, 10, echo_body);
    let first_len = both.len();
    both.extend(frame_bytes(PING, 11, b"p"));
    let gap = Duration::from_millis(2);
    for cut in 1..both.len() {
        c.send_split(&both, &[cut], gap)
            .map_err(|error| Failure::Send { what: format!("two frames cut at byte {cut}"), error })?;
        cx.expect(&mut c, exp(ECHO, 10, echo_body))?;
        cx.expect(&mut c, exp(PONG, 11, b"p"))?;
    }
    // Every byte on its own, with a pause before the next.
    let cuts: Vec<usize> = (1..first_len).collect();
    c.send_split(&both[..first_len], &cuts, Duration::from_millis(1))
        .map_err(|error| Failure::Send { what: "a frame one byte at a time".into(), error })?;
    cx.expect(&mut c, exp(ECHO, 10, echo_body))?;
    Ok(())
}

fn many_frames_one_write(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    for i in 0..60u32 {
        let body = pattern((i % 7) as usize, i as u8);
        match i % 3 {
            0 => {
                frames.push(Frame::new(ECHO, i, &body));
                expected.push(Frame::new(ECHO, i, &body));
            }
            1 => {
                frames.push(Frame::new(PING, i, &body));
                expected.push(Frame::new(PONG, i, &body));
            }
            _ => frames.push(Frame::new(PONG, i, &body)),
        }
    }
    frames.push(Frame::new(STATS, 1000, b""));
    c.send_batch(&frames).map_err(|error| Failure::Send { what: "60 frames in one write".into(), error })?;
    for want in &expected {
        cx.expect(&mut c, exp(want.kind(), want.seq(), &want.body))?;
    }
    cx.expect(&mut c, exp_any(STATS, 1000))?;
    Ok(())
}

fn pipelined_1000(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let n = 1000u32;
    let body_of = |i: u32| -> Vec<u8> { i.to_be_bytes().repeat((i % 16) as usize + 1) };
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(frame_bytes(ECHO, 5000 + i, &body_of(i)));
    }
    let writer = c.spawn_writer(bytes).map_err(Failure::Connect)?;
    for i in 0..n {
        cx.expect(&mut c, exp(ECHO, 5000 + i, &body_of(i)))?;
    }
    join_writer(writer, "1000 pipelined ECHOs")?;
    Ok(())
}

/// Kinds the demo service does not handle and the control range refuses.
fn unhandled_kinds() -> Vec<u16> {
    let mut kinds = vec![0, ERROR];
    kinds.extend(5..64);
    kinds.extend([67, 68, 100, 255, 256, 1000, 4096, 32768, 65535]);
    kinds
}

fn unknown_kinds(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let kinds = unhandled_kinds();
    let frames: Vec<Frame> = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let body = if k == ERROR { vec![0, 2, b'x'] } else { pattern(i % 3, 1) };
            Frame::new(k, 100 + i as u32, &body)
        })
        .collect();
    c.send_batch(&frames).map_err(|error| Failure::Send { what: "unhandled kinds".into(), error })?;
    for (i, &k) in kinds.iter().enumerate() {
        cx.expect_error(&mut c, ErrorCode::UnknownKind, 100 + i as u32).map_err(|f| match f {
            Failure::Unexpected { expected, got } => {
                Failure::Unexpected { expected: format!("{expected} (for kind {k})"), got }
            }
            other => other,
        })?;
    }
    cx.send(&mut c, ECHO, 9999, b"still open")?;
    cx.expect(&mut c, exp(ECHO, 9999, b"still open"))?;
    Ok(())
}

/// Sends `bytes` without caring whether the server has already closed (its writes may fail).
fn send_ignoring_close(c: &mut Client, bytes: &[u8]) {
    let _ = c.send_raw(bytes);
}

fn bad_flags(cx: &Cx<'_>) -> Result<(), Failure> {
    // A valid request, then a bad header with a body, then a request that must not be answered.
    let mut c = cx.connect()?;
    let mut bytes = frame_bytes(ECHO, 76, b"ok");
    bytes.extend(raw_header(4, ECHO, 0x0001, 77));
    bytes.extend(b"abcd");
    bytes.extend(frame_bytes(ECHO, 78, b"after"));
    cx.send_raw(&mut c, &bytes, "ECHO, bad flags, ECHO")?;
    cx.expect(&mut c, exp(ECHO, 76, b"ok"))?;
    cx.expect_error(&mut c, ErrorCode::BadFlags, 77)?;
    cx.expect_close(&mut c, "ERROR 3")?;

    // The header alone decides: no body is needed for the refusal.
    let mut c = cx.connect()?;
    cx.send_raw(&mut c, &raw_header(0, PING, 0x8000, 0xDEAD_BEEF), "a flagged PING header")?;
    cx.expect_error(&mut c, ErrorCode::BadFlags, 0xDEAD_BEEF)?;
    cx.expect_close(&mut c, "ERROR 3")?;

    let mut c = cx.connect()?;
    cx.send_raw(&mut c, &raw_header(8, ECHO, 0x0100, 5), "a flagged ECHO header without its body")?;
    cx.expect_error(&mut c, ErrorCode::BadFlags, 5)?;
    cx.expect_close(&mut c, "ERROR 3")?;
    Ok(())
}

fn frame_too_large(cx: &Cx<'_>) -> Result<(), Failure> {
    let over = cx.target.max_body.saturating_add(1);
    // A valid request first: it is answered before the refusal.
    let mut c = cx.connect()?;
    let mut bytes = frame_bytes(ECHO, 86, b"ok");
    bytes.extend(raw_header(over, ECHO, 0, 88));
    cx.send_raw(&mut c, &bytes, "ECHO then an oversized header")?;
    cx.expect(&mut c, exp(ECHO, 86, b"ok"))?;
    cx.expect_error(&mut c, ErrorCode::FrameTooLarge, 88)?;
    cx.expect_close(&mut c, "ERROR 1")?;

    let mut c = cx.connect()?;
    cx.send_raw(&mut c, &raw_header(u32::MAX, PING, 0, 89), "a 4 GiB header")?;
    cx.expect_error(&mut c, ErrorCode::FrameTooLarge, 89)?;
    cx.expect_close(&mut c, "ERROR 1")?;

    // The body that follows the refused header is discarded, even if it looks like frames.
    let mut c = cx.connect()?;
    let mut bytes = raw_header(over, ECHO, 0, 90).to_vec();
    for i in 0..(over as usize / 16 + 1) {
        bytes.extend(frame_bytes(PING, 1000 + i as u32, b""));
        bytes.extend([0u8; 4]);
    }
    let writer = c.spawn_writer(bytes).map_err(Failure::Connect)?;
    cx.expect_error(&mut c, ErrorCode::FrameTooLarge, 90)?;
    cx.expect_close(&mut c, "ERROR 1 and a discarded body")?;
    // The server may close before taking every byte: the write's result does not matter.
    let _ = writer.join();
    Ok(())
}

fn bye(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let frames = [
        Frame::new(ECHO, 1, b"a"),
        Frame::new(PING, 2, b"b"),
        Frame::new(BYE, 3, b""),
        Frame::new(ECHO, 4, b"never"),
        Frame::new(PING, 5, b"never"),
    ];
    c.send_batch(&frames).map_err(|error| Failure::Send { what: "ECHO PING BYE ECHO PING".into(), error })?;
    cx.expect(&mut c, exp(ECHO, 1, b"a"))?;
    cx.expect(&mut c, exp(PONG, 2, b"b"))?;
    cx.expect_close(&mut c, "BYE")?;

    // Requests sent later are ignored too.
    let mut c = cx.connect()?;
    cx.send(&mut c, BYE, 6, b"")?;
    thread::sleep(Duration::from_millis(30));
    send_ignoring_close(&mut c, &frame_bytes(ECHO, 7, b"late"));
    cx.expect_close(&mut c, "BYE then a late ECHO")?;
    Ok(())
}

fn half_close(cx: &Cx<'_>) -> Result<(), Failure> {
    // Ten requests and a partial header.
    let mut c = cx.connect()?;
    let mut bytes = Vec::new();
    for i in 0..10u32 {
        bytes.extend(frame_bytes(ECHO, i, &pattern(i as usize, 9)));
    }
    bytes.extend(&frame_bytes(ECHO, 99, b"partial")[..7]);
    cx.send_raw(&mut c, &bytes, "ten ECHOs and a partial header")?;
    c.shutdown_write().map_err(|error| Failure::Send { what: "shutdown(SHUT_WR)".into(), error })?;
    for i in 0..10u32 {
        cx.expect(&mut c, exp(ECHO, i, &pattern(i as usize, 9)))?;
    }
    cx.expect_close(&mut c, "half-close")?;

    // A whole header and half a body.
    let mut c = cx.connect()?;
    let mut bytes = frame_bytes(PING, 20, b"ping");
    let partial = frame_bytes(ECHO, 21, &pattern(max_body(cx).min(100), 2));
    bytes.extend(&partial[..HEADER_LEN + partial.len().saturating_sub(HEADER_LEN) / 2]);
    cx.send_raw(&mut c, &bytes, "PING and a partial ECHO")?;
    c.shutdown_write().map_err(|error| Failure::Send { what: "shutdown(SHUT_WR)".into(), error })?;
    cx.expect(&mut c, exp(PONG, 20, b"ping"))?;
    cx.expect_close(&mut c, "half-close with a partial body")?;

    // Nothing at all.
    let mut c = cx.connect()?;
    c.shutdown_write().map_err(|error| Failure::Send { what: "shutdown(SHUT_WR)".into(), error })?;
    cx.expect_close(&mut c, "an immediate half-close")?;
    Ok(())
}

/// How a connection ends in [`owed_replies_survive_close`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    BadFlags,
    Bye,
    HalfClose,
}

fn owed_replies_survive_close(cx: &Cx<'_>) -> Result<(), Failure> {
    // Up to 1 MiB of replies owed to a client with a small receive buffer that reads nothing for a
    // while: most of it is still in the server when it decides to close.
    let body = pattern(max_body(cx).min(16 * 1024), 5);
    // A server with a small max_body (embedded) gets a smaller backlog: 256 bodies' worth.
    let total = (1usize << 20).min(body.len().max(1) * 256);
    let n = (total / (body.len() + HEADER_LEN) + 1) as u32;
    for ending in [Ending::BadFlags, Ending::Bye, Ending::HalfClose] {
        let what = format!("{n} owed ECHOs then {ending:?}");
        let mut c = cx.connect()?;
        c.set_recv_buffer(64 * 1024).map_err(Failure::Connect)?;
        let mut bytes: Vec<u8> = (0..n).flat_map(|seq| frame_bytes(ECHO, seq, &body)).collect();
        match ending {
            Ending::BadFlags => {
                bytes.extend(raw_header(0, ECHO, 2, n));
                bytes.extend(pattern(4096, 1));
            }
            Ending::Bye => {
                bytes.extend(frame_bytes(BYE, n, b""));
                bytes.extend(frame_bytes(ECHO, n + 1, &pattern(4096, 1)));
            }
            Ending::HalfClose => bytes.extend(&frame_bytes(ECHO, n, b"partial")[..15]),
        }
        let half_close = matches!(ending, Ending::HalfClose);
        let mut stream = c.stream().try_clone().map_err(Failure::Connect)?;
        let writer = thread::spawn(move || -> std::io::Result<()> {
            std::io::Write::write_all(&mut stream, &bytes)?;
            if half_close {
                return stream.shutdown(std::net::Shutdown::Write);
            }
            // Keep sending after the end, as a pipelining client does: a server that closes
            // without draining its input would answer this with a reset that destroys the
            // replies still queued on its side.
            for _ in 0..10 {
                thread::sleep(Duration::from_millis(30));
                let _ = std::io::Write::write_all(&mut stream, &[0u8; 1024]);
            }
            Ok(())
        });
        thread::sleep(Duration::from_millis(300));
        for seq in 0..n {
            let got = cx.recv(&mut c, &format!("ECHO {seq} of {what}"))?;
            if got.kind() != ECHO || got.seq() != seq || got.body != body {
                return Err(Failure::Unexpected { expected: format!("ECHO {seq} of {what}"), got });
            }
        }
        if let Ending::BadFlags = ending {
            cx.expect_error(&mut c, ErrorCode::BadFlags, n)?;
        }
        cx.expect_close(&mut c, &what)?;
        // Only the half-close must have been written whole; the others may meet a closed socket.
        match (writer.join(), half_close) {
            (Ok(Err(error)), true) => return Err(Failure::Send { what, error }),
            (Err(_), _) => return Err(Failure::Check("writer thread panicked".into())),
            _ => {}
        }
    }
    Ok(())
}

fn broadcast(cx: &Cx<'_>) -> Result<(), Failure> {
    let n = cx.target.max_concurrent.clamp(1, 8);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(cx.connect_served(i as u32)?);
    }
    // The sender's copy takes the place of its reply: between the two ECHOs.
    let body = b"to everyone";
    let frames =
        [Frame::new(ECHO, 1, b"before"), Frame::new(BROADCAST, 2, body), Frame::new(ECHO, 3, b"after")];
    conns[0]
        .send_batch(&frames)
        .map_err(|error| Failure::Send { what: "ECHO BROADCAST ECHO".into(), error })?;
    cx.expect(&mut conns[0], exp(ECHO, 1, b"before"))?;
    cx.expect(&mut conns[0], exp(BROADCAST, 0, body))?;
    cx.expect(&mut conns[0], exp(ECHO, 3, b"after"))?;
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        cx.expect(c, exp(BROADCAST, 0, body))?;
        // Exactly one copy: the next frame is the answer to this PING.
        cx.send(c, PING, 100 + i as u32, b"")?;
        cx.expect(c, exp(PONG, 100 + i as u32, b""))?;
    }
    // An empty broadcast from the last connection.
    let last = n - 1;
    cx.send(&mut conns[last], BROADCAST, 7, b"")?;
    for c in conns.iter_mut() {
        cx.expect(c, exp(BROADCAST, 0, b""))?;
        cx.send(c, PING, 200, b"")?;
        cx.expect(c, exp(PONG, 200, b""))?;
    }
    Ok(())
}

/// The STATS keys of the operator contract (docs/ARCHITECTURE.md#operator-contract).
pub const STATS_KEYS: &[&str] = &[
    "connections_open",
    "connections_accepted",
    "connections_refused",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "errors_sent_1",
    "errors_sent_2",
    "errors_sent_3",
    "errors_sent_4",
    "errors_sent_5",
    "errors_sent_6",
    "errors_sent_7",
];

/// Sends STATS and reads the reply into its key/value pairs, checking every contract key is there.
pub fn fetch_stats(cx: &Cx<'_>, c: &mut Client, seq: u32) -> Result<Vec<(String, i128)>, Failure> {
    cx.send(c, STATS, seq, b"")?;
    let frame = cx.expect(c, exp_any(STATS, seq))?;
    let object = json::parse_int_object(&frame.body).map_err(|e| {
        Failure::Check(format!(
            "STATS body {:?} is not a flat JSON object of integers: {e}",
            String::from_utf8_lossy(&frame.body)
        ))
    })?;
    for key in STATS_KEYS {
        let value = json::get(&object, key);
        ensure!(value.is_some(), "STATS lacks {key:?}: {}", String::from_utf8_lossy(&frame.body));
        ensure!(value.unwrap_or(0) >= 0, "STATS {key} is negative");
    }
    Ok(object)
}

fn stats(cx: &Cx<'_>) -> Result<(), Failure> {
    let mut c = cx.connect()?;
    let s1 = fetch_stats(cx, &mut c, 10)?;
    let v = |o: &[(String, i128)], k: &str| json::get(o, k).unwrap_or(0);
    ensure!(
        v(&s1, "connections_open") >= 1,
        "connections_open is {} with this one open",
        v(&s1, "connections_open")
    );
    ensure!(
        v(&s1, "connections_accepted") >= v(&s1, "connections_open"),
        "connections_accepted {} < connections_open {}",
        v(&s1, "connections_accepted"),
        v(&s1, "connections_open")
    );
    cx.send(&mut c, 5, 11, b"")?;
    cx.expect_error(&mut c, ErrorCode::UnknownKind, 11)?;
    cx.send(&mut c, ECHO, 12, b"counted")?;
    cx.expect(&mut c, exp(ECHO, 12, b"counted"))?;
    let s2 = fetch_stats(cx, &mut c, 13)?;
    let grew = |k: &str, by: i128| v(&s2, k) - v(&s1, k) >= by;
    // Between the two STATS the server received three frames (kind 5, ECHO, STATS) of 12, 19 and
    // 12 bytes, and sent at least the ERROR and the ECHO reply.
    ensure!(grew("frames_in", 3), "frames_in went from {} to {}", v(&s1, "frames_in"), v(&s2, "frames_in"));
    ensure!(
        grew("frames_out", 2),
        "frames_out went from {} to {}",
        v(&s1, "frames_out"),
        v(&s2, "frames_out")
    );
    ensure!(grew("bytes_in", 43), "bytes_in went from {} to {}", v(&s1, "bytes_in"), v(&s2, "bytes_in"));
    ensure!(grew("bytes_out", 31), "bytes_out went from {} to {}", v(&s1, "bytes_out"), v(&s2, "bytes_out"));
    ensure!(
        grew("errors_sent_2", 1),
        "errors_sent_2 went from {} to {} after an ERROR 2",
        v(&s1, "errors_sent_2"),
        v(&s2, "errors_sent_2")
    );
    if cx.target.max_concurrent >= 2 {
        let _other = cx.connect_served(77)?;
        let s3 = fetch_stats(cx, &mut c, 14)?;
        ensure!(
            v(&s3, "connections_accepted") > v(&s2, "connections_accepted"),
            "connections_accepted did not grow after a new connection ({} then {})",
            v(&s2, "connections_accepted"),
            v(&s3, "connections_accepted")
        );
        ensure!(
            v(&s3, "connections_open") >= 2,
            "connections_open {} with two open",
            v(&s3, "connections_open")
        );
    }
    Ok(())
}

fn isolation(cx: &Cx<'_>) -> Result<(), Failure> {
    let good = cx.target.max_concurrent.saturating_sub(2).clamp(1, 6);
    let rounds = 200u32;
    thread::scope(|s| {
        let workers: Vec<_> = (0..good)
            .map(|w| {
                s.spawn(move || -> Result<(), Failure> {
                    let mut c = cx.connect_served(w as u32)?;
                    let body_of = |i: u32| format!("conn {w} frame {i}").into_bytes();
                    let mut bytes = Vec::new();
                    for i in 0..rounds {
                        bytes.extend(frame_bytes(ECHO, i, &body_of(i)));
                    }
                    let writer = c.spawn_writer(bytes).map_err(Failure::Connect)?;
                    for i in 0..rounds {
                        cx.expect(&mut c, exp(ECHO, i, &body_of(i)))?;
                    }
                    join_writer(writer, "an isolated worker's ECHOs")?;
                    Ok(())
                })
            })
            .collect();
        // Meanwhile two misbehaving connections, one after the other.
        let misbehave = || -> Result<(), Failure> {
            for round in 0..5u32 {
                let mut bad = cx.connect()?;
                cx.send_raw(&mut bad, &raw_header(u32::MAX, ECHO, 0, round), "an oversized header")?;
                cx.expect_error(&mut bad, ErrorCode::FrameTooLarge, round)?;
                let mut bad = cx.connect()?;
                cx.send_raw(&mut bad, &raw_header(3, ECHO, 0xFFFF, round), "a flagged header")?;
                cx.expect_error(&mut bad, ErrorCode::BadFlags, round)?;
            }
            Ok(())
        };
        let bad_result = misbehave();
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => return Err(Failure::Check("a worker thread panicked".into())),
            }
        }
        bad_result
    })
}

/// What the demo server does with one frame of the `garbage` case: `Some((kind, seq, body))`
/// of the reply (an ERROR 2 is checked by code and seq, not by its reason text).
fn expected_reply(frame: &Frame) -> Option<Frame> {
    match frame.kind() {
        PING => Some(Frame::new(PONG, frame.seq(), &frame.body)),
        PONG => None,
        ECHO => Some(frame.clone()),
        _ => Some(Frame::new(ERROR, frame.seq(), &ErrorCode::UnknownKind.code().to_be_bytes())),
    }
}

/// A random kind the demo answers deterministically (no BYE, BROADCAST or STATS).
fn random_kind(rng: &mut Rng) -> u16 {
    match rng.below(6) {
        0 => PING,
        1 => PONG,
        2 => ECHO,
        3 => 5 + rng.below(59) as u16,
        4 => 67 + rng.below(1000) as u16,
        _ => [0, ERROR, 5, 63][rng.below(4) as usize],
    }
}

/// How the codec (the protocol's definition of the byte layout) cuts a `garbage` stream.
struct Model {
    /// The replies due, in order.
    replies: Vec<Frame>,
    /// How many bytes to send: the whole stream, or up to a frame the model cannot predict.
    send_len: usize,
    /// The refused header, if the stream reaches one: its error and its bytes.
    refusal: Option<(FrameError, [u8; HEADER_LEN])>,
}

fn model(decoder: &Decoder, stream: &[u8]) -> Model {
    let mut replies = Vec::new();
    let mut at = 0;
    loop {
        match decoder.decode(&stream[at..]) {
            Ok(Some(f)) => {
                let frame = Frame { header: f.header, body: f.body.to_vec() };
                if [BYE, BROADCAST, STATS].contains(&frame.kind()) {
                    // Noise that happens to be a stateful request: send only what comes before.
                    return Model { replies, send_len: at, refusal: None };
                }
                replies.extend(expected_reply(&frame));
                at += f.wire_len();
            }
            Ok(None) => return Model { replies, send_len: stream.len(), refusal: None },
            Err(e) => {
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&stream[at..at + HEADER_LEN]);
                return Model { replies, send_len: stream.len(), refusal: Some((e, header)) };
            }
        }
    }
}

fn garbage(cx: &Cx<'_>) -> Result<(), Failure> {
    let seed = 0x00D0_0A3A_u64;
    let mut rng = Rng::new(seed);
    let decoder = Decoder::new(cx.target.max_body);
    for round in 0..24u32 {
        // Some valid frames, then (in most rounds) random bytes.
        let mut stream = Vec::new();
        for _ in 0..rng.below(6) {
            let len = rng.range(0..24.min(max_body(cx) + 1));
            let body = rng.bytes(len);
            stream.extend(Frame::new(random_kind(&mut rng), rng.next_u64() as u32, &body).to_bytes());
        }
        if round % 4 != 2 {
            let len = rng.range(12..80);
            stream.extend(rng.bytes(len));
        }
        let model = model(&decoder, &stream);
        let what = |detail: &str| format!("garbage round {round} (seed {seed:#x}): {detail}");
        let mut c = cx.connect()?;
        let send = &stream[..model.send_len];
        let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.range(0..send.len() + 1)).collect();
        cuts.sort_unstable();
        let sent = c.send_split(send, &cuts, Duration::from_millis(1));
        // After a refused header the server may close while noise is still being written.
        if let (Err(error), None) = (sent, &model.refusal) {
            return Err(Failure::Send { what: what("the stream"), error });
        }
        for want in &model.replies {
            let got = cx.recv(&mut c, &what(&format!("{want:?}")))?;
            if want.kind() == ERROR {
                check_error_frame(&got, ErrorCode::UnknownKind, want.seq()).map_err(|_| {
                    Failure::Unexpected { expected: what(&format!("ERROR 2 seq {}", want.seq())), got }
                })?;
            } else if got != *want {
                return Err(Failure::Unexpected { expected: what(&format!("{want:?}")), got });
            }
        }
        match model.refusal {
            Some((error, header)) => {
                let Some((code, seq)) = error.to_wire() else {
                    return Err(Failure::Check(what(&format!("the codec answered {error}"))));
                };
                let got = cx.recv(&mut c, &what(&format!("ERROR {} seq {seq}", code.code())))?;
                // A header with bad flags and an oversized length may be refused for either reason.
                let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                let both = matches!(error, FrameError::BadFlags { .. }) && length > cx.target.max_body;
                let ok = check_error_frame(&got, code, seq).is_ok()
                    || (both && check_error_frame(&got, ErrorCode::FrameTooLarge, seq).is_ok());
                if !ok {
                    return Err(Failure::Unexpected {
                        expected: what(&format!("ERROR {} seq {seq}", code.code())),
                        got,
                    });
                }
                cx.expect_close(&mut c, &what("the refusal"))?;
            }
            // A valid prefix and perhaps a partial frame: nothing more is due.
            None => cx.expect_silence(&mut c, Duration::from_millis(30), &what("the replies"))?,
        }
    }
    // The server still serves a new connection.
    let mut c = cx.connect()?;
    cx.send(&mut c, ECHO, 1, b"alive")?;
    cx.expect(&mut c, exp(ECHO, 1, b"alive"))?;
    Ok(())
}

fn idle_timeout(cx: &Cx<'_>) -> Result<(), Failure> {
    let Some(idle) = cx.target.idle_timeout else { return Ok(()) };
    let lower = idle.mul_f64(0.9);
    let upper = idle * 2 + cx.timeout();
    // A silent connection and one that sent only part of a header.
    let start = Instant::now();
    let mut silent = cx.connect()?;
    let mut partial = cx.connect()?;
    cx.send_raw(&mut partial, &frame_bytes(ECHO, 1, b"x")[..5], "5 bytes of a header")?;
    cx.expect_error_within(&mut silent, ErrorCode::IdleTimeout, 0, upper)?;
    let waited = start.elapsed();
    ensure!(waited >= lower, "ERROR 4 after {waited:?}, idle timeout is {idle:?}");
    cx.expect_close(&mut silent, "ERROR 4")?;
    cx.expect_error_within(&mut partial, ErrorCode::IdleTimeout, 0, upper)?;
    cx.expect_close(&mut partial, "ERROR 4 after a partial header")?;

    // Complete frames keep a connection alive for twice the idle timeout.
    let mut alive = cx.connect()?;
    let until = Instant::now() + idle * 2;
    let mut seq = 0;
    let mut last = Instant::now();
    while Instant::now() < until {
        // Measured from the send: the server receives the PING later, so the idle interval it
        // sees is never longer than the one measured here.
        last = Instant::now();
        cx.send(&mut alive, PING, seq, b"")?;
        cx.expect(&mut alive, exp(PONG, seq, b""))?;
        seq += 1;
        thread::sleep(idle / 4);
    }
    cx.expect_error_within(&mut alive, ErrorCode::IdleTimeout, 0, upper)?;
    let waited = last.elapsed();
    ensure!(waited >= lower, "ERROR 4 {waited:?} after the last frame, idle timeout is {idle:?}");
    cx.expect_close(&mut alive, "ERROR 4")?;
    Ok(())
}

fn server_full(cx: &Cx<'_>) -> Result<(), Failure> {
    let Some(max) = cx.target.max_connections else { return Ok(()) };
    let mut admitted = Vec::with_capacity(max);
    for i in 0..max {
        admitted.push(cx.connect_served(i as u32)?);
    }
    let refuse = |what: &str| -> Result<Client, Failure> {
        let mut c = cx.connect()?;
        match c.recv(cx.timeout()) {
            Ok(frame) => {
                check_error_frame(&frame, ErrorCode::ServerFull, 0)?;
                cx.expect_close(&mut c, what)?;
            }
            Err(RecvError::Closed { .. }) if cx.target.full_may_close_silently => {}
            Err(error) => return Err(Failure::Recv { waiting_for: format!("ERROR 5 for {what}"), error }),
        }
        Ok(c)
    };
    // Two refused connections are kept open on our side meanwhile: they must not count. (Two, not
    // more: a small embedded server may have only a couple of spare sockets to refuse with.)
    let mut refused = Vec::new();
    for i in 0..2 {
        refused.push(refuse(&format!("connection {} of {max}", max + 1 + i))?);
    }
    for (i, c) in admitted.iter_mut().enumerate() {
        cx.send(c, ECHO, 500 + i as u32, b"still served")?;
        cx.expect(c, exp(ECHO, 500 + i as u32, b"still served"))?;
    }
    // Freeing one slot admits exactly one more.
    drop(admitted.pop());
    admitted.push(cx.connect_served(999)?);
    drop(refused);
    let _full_again = refuse("the connection after the freed slot was reused")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_unique() {
        for (i, a) in CASES.iter().enumerate() {
            assert!(CASES[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        }
    }

    #[test]
    fn random_kinds_are_answered_deterministically() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let k = random_kind(&mut rng);
            assert!(![BYE, BROADCAST, STATS].contains(&k), "{k}");
        }
    }
}
