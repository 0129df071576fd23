//! Benchmark peer: the tokio + tokio-util server a Rust user would otherwise write.
