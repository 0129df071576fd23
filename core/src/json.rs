//! A tiny JSON object writer into a caller's buffer, for the STATS reply.
//!
//! Only what counters need: `{"name":123,...}` with names escaped. Running out of room is an
//! answer ([`Overflow`]), and the buffer then holds no partial object the caller could send.

use core::fmt;

/// The buffer cannot hold the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Overflow;

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON output buffer too small")
    }
}

impl core::error::Error for Overflow {}

/// Writes `{"k":v,...}` into a byte buffer.
pub struct ObjectWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Starts an object in `out`.
    pub fn new(out: &'a mut [u8]) -> Self {
        let mut w = ObjectWriter { out, len: 0, overflow: false };
        w.push(b"{");
        w
    }

    fn push(&mut self, bytes: &[u8]) {
        match self.out.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    /// Adds `"name": value`.
    pub fn field(&mut self, name: &str, value: u64) {
        if self.len > 1 {
            self.push(b",");
        }
        self.push(b"\"");
        for c in name.bytes() {
            match c {
                b'"' | b'\\' => self.push(&[b'\\', c]),
                c if c < 0x20 => self.push(b"_"),
                c => self.push(&[c]),
            }
        }
        self.push(b"\":");
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// Closes the object and returns its length.
    pub fn finish(mut self) -> Result<usize, Overflow> {
        self.push(b"}");
        if self.overflow {
            Err(Overflow)
        } else {
            Ok(self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_object() {
        let mut buf = [0u8; 64];
        let mut w = ObjectWriter::new(&mut buf);
        w.field("a", 0);
        w.field("b\"", u64::MAX);
        let n = w.finish().unwrap();
        assert_eq!(&buf[..n], br#"{"a":0,"b\"":18446744073709551615}"#);
    }

    #[test]
    fn overflow_is_an_answer() {
        let mut buf = [0u8; 8];
        let mut w = ObjectWriter::new(&mut buf);
        w.field("long_name", 1);
        assert_eq!(w.finish(), Err(Overflow));
    }
}
