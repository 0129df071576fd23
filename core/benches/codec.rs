//! Codec benchmarks: nanoseconds to decode (and encode) one 64-byte frame.
//!
//! `decode_one` decodes a single 64-byte frame (12-byte header + 52-byte body) from a buffer;
//! `decode_stream` cuts 64 back-to-back frames out of one buffer, as a server does after a large
//! read, and reports the time per frame. The goal is well under 20 ns per frame
//! (docs/ARCHITECTURE.md#codec-target).
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use doorway_core::frame::{encode, Decoder, HEADER_LEN};

const FRAME_LEN: usize = 64;
const BODY_LEN: usize = FRAME_LEN - HEADER_LEN;

fn frame() -> Vec<u8> {
    let mut out = vec![0u8; FRAME_LEN];
    let body = [0x5au8; BODY_LEN];
    assert_eq!(encode(&mut out, doorway_core::demo::kind::ECHO, 7, &body), Ok(FRAME_LEN));
    out
}

fn codec(c: &mut Criterion) {
    let decoder = Decoder::default();
    let one = frame();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_one_64B", |b| {
        b.iter(|| {
            let frame = decoder.decode(black_box(&one)).unwrap().unwrap();
            black_box(frame.body.len() + frame.header.seq as usize)
        })
    });
    let stream: Vec<u8> = (0..64).flat_map(|_| frame()).collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("decode_stream_64x64B", |b| {
        b.iter(|| {
            let mut buf = black_box(&stream[..]);
            let mut n = 0usize;
            while let Ok(Some(frame)) = decoder.decode(buf) {
                n += frame.body.len();
                buf = &buf[frame.wire_len()..];
            }
            black_box(n)
        })
    });
    group.throughput(Throughput::Elements(1));
    let body = [0x5au8; BODY_LEN];
    let mut out = [0u8; FRAME_LEN];
    group.bench_function("encode_one_64B", |b| {
        b.iter(|| {
            black_box(
                encode(black_box(&mut out), doorway_core::demo::kind::ECHO, 7, black_box(&body)).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
