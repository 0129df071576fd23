//! A strict reader for the one JSON shape the protocol uses: a flat object of integer values.
//!
//! STATS replies (`docs/PROTOCOL.md`, kind 66) are `{"name":123,...}`. The reader accepts exactly that
//! (whitespace allowed, string keys with the common escapes, integer values, possibly negative),
//! and refuses anything else, so a malformed STATS body fails the conformance suite instead of
//! being half-read. Duplicate keys are refused too.

use std::fmt;

/// Why a body is not a flat object of integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset where reading stopped.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: expected {}", self.offset, self.expected)
    }
}

impl std::error::Error for JsonError {}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, expected: &'static str) -> Result<T, JsonError> {
        Err(JsonError { offset: self.pos, expected })
    }

    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8, expected: &'static str) -> Result<(), JsonError> {
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(expected)
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.eat(b'"', "'\"'")?;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else { return self.fail("end of string") };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.bytes.get(self.pos) else { return self.fail("escape") };
                    self.pos += 1;
                    out.push(match e {
                        b'"' | b'\\' | b'/' => e,
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        _ => return self.fail("a simple escape"),
                    });
                }
                0..=0x1f => return self.fail("no control character in a string"),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).or_else(|_| self.fail("UTF-8 string"))
    }

    fn integer(&mut self) -> Result<i128, JsonError> {
        self.skip_ws();
        let start = self.pos;
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        if self.pos == digits {
            return self.fail("an integer");
        }
        if matches!(self.bytes.get(self.pos), Some(b'.' | b'e' | b'E')) {
            return self.fail("an integer, not a fraction");
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).or_else(|_| self.fail("digits"))?;
        text.parse().or_else(|_| self.fail("an integer in range"))
    }
}

/// Parses a flat JSON object whose values are all integers, keeping the order of the keys.
pub fn parse_int_object(bytes: &[u8]) -> Result<Vec<(String, i128)>, JsonError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut out: Vec<(String, i128)> = Vec::new();
    r.eat(b'{', "'{'")?;
    r.skip_ws();
    if r.bytes.get(r.pos) == Some(&b'}') {
        r.pos += 1;
    } else {
        loop {
            let key_at = r.pos;
            let key = r.string()?;
            if out.iter().any(|(k, _)| *k == key) {
                return Err(JsonError { offset: key_at, expected: "no duplicate key" });
            }
            r.eat(b':', "':'")?;
            let value = r.integer()?;
            out.push((key, value));
            r.skip_ws();
            match r.bytes.get(r.pos) {
                Some(b',') => r.pos += 1,
                Some(b'}') => {
                    r.pos += 1;
                    break;
                }
                _ => return r.fail("',' or '}'"),
            }
        }
    }
    r.skip_ws();
    if r.pos != bytes.len() {
        return r.fail("end of input");
    }
    Ok(out)
}

/// Looks a key up in a parsed object.
pub fn get(object: &[(String, i128)], key: &str) -> Option<i128> {
    object.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_objects() {
        let o = parse_int_object(br#" { "a" : 1, "b_2":-3 ,"c\"":0 } "#).unwrap();
        assert_eq!(o, vec![("a".into(), 1), ("b_2".into(), -3), ("c\"".into(), 0)]);
        assert_eq!(get(&o, "b_2"), Some(-3));
        assert_eq!(parse_int_object(b"{}").unwrap(), vec![]);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            &b""[..],
            b"[]",
            b"{\"a\":1.5}",
            b"{\"a\":\"x\"}",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"a\":1,\"a\":2}",
            b"{a:1}",
            b"{\"a\":1",
            b"{\"a\":true}",
        ] {
            assert!(parse_int_object(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
