//! Fuzz target `decode`: arbitrary bytes, cut into arbitrary chunks, through `frame::Decoder`.
//!
//! Input layout: two bytes of `max_body` (little-endian), one byte seeding the chunk sizes, then
//! the stream. The stream is decoded twice, the way a server would (keep unconsumed bytes, call
//! `decode` after every read): once as one read, once in chunks. Checked on every step:
//!
//! - no panic, whatever the bytes;
//! - a frame never claims more bytes than were given, its body is exactly `length` bytes, its
//!   header passes the decoder's own `check`, and re-encoding it gives back the consumed bytes;
//! - `Ok(None)` means `needed()` asks for more than is buffered;
//! - an error is decided from the header alone (the 12 bytes at the front), and is one a server
//!   answers with an ERROR frame;
//! - both ways of feeding produce the same frames and the same final error or leftover.
#![no_main]

use doorway_core::frame::{encode, Decoder, Error, Header, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<(Header, Vec<u8>)>,
    error: Option<Error>,
    leftover: usize,
}

/// Decodes `stream` fed in chunks of the given sizes (cycled), as a server's read loop would.
fn feed(decoder: &Decoder, stream: &[u8], chunk_sizes: &[usize]) -> Outcome {
    let mut pending: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut chunk = 0;
    loop {
        // Take everything we can from `pending`.
        loop {
            match decoder.decode(&pending) {
                Ok(Some(frame)) => {
                    let n = frame.wire_len();
                    assert!(n <= pending.len(), "frame claims {n} of {} bytes", pending.len());
                    assert_eq!(frame.body.len(), frame.header.length as usize);
                    assert!(decoder.check(&frame.header).is_ok());
                    let mut again = vec![0u8; n];
                    assert_eq!(encode(&mut again, frame.header.kind, frame.header.seq, frame.body), Ok(n));
                    assert_eq!(&again[..], &pending[..n], "re-encoding differs");
                    frames.push((frame.header, frame.body.to_vec()));
                    pending.drain(..n);
                }
                Ok(None) => {
                    assert!(decoder.needed(&pending) > pending.len());
                    break;
                }
                Err(error) => {
                    // Decided from the header alone: the same answer for just the 12 bytes.
                    assert!(pending.len() >= HEADER_LEN);
                    assert_eq!(decoder.decode(&pending[..HEADER_LEN]).err(), Some(error));
                    assert!(error.to_wire().is_some(), "{error:?} has no wire answer");
                    return Outcome { frames, error: Some(error), leftover: pending.len() };
                }
            }
        }
        if offset == stream.len() {
            return Outcome { frames, error: None, leftover: pending.len() };
        }
        let size = chunk_sizes[chunk % chunk_sizes.len()].max(1);
        chunk += 1;
        let end = (offset + size).min(stream.len());
        pending.extend_from_slice(&stream[offset..end]);
        offset = end;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max_body = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let seed = data[2] as usize;
    let stream = &data[3..];
    let decoder = Decoder::new(max_body);

    let whole = feed(&decoder, stream, &[stream.len()]);
    let sizes: Vec<usize> = (1..=7).map(|i| 1 + (seed * i * 31 + i) % 23).collect();
    let chunked = feed(&decoder, stream, &sizes);
    let bytewise = feed(&decoder, stream, &[1]);

    // Errors cut the stream: compare what was decided before the cut.
    if whole.error.is_none() {
        assert_eq!(whole, chunked);
        assert_eq!(whole, bytewise);
    } else {
        assert_eq!(whole.frames, chunked.frames);
        assert_eq!(whole.error, chunked.error);
        assert_eq!(whole.frames, bytewise.frames);
        assert_eq!(whole.error, bytewise.error);
    }
});
