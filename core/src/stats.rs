//! The server counters every home reports, with their STATS names in one place.
//!
//! The STATS reply of `docs/PROTOCOL.md` is "the server's counters as one JSON object"; the Linux
//! server, the embedded server and the conformance suite must agree on the keys. A binding keeps its
//! counters however suits its threads (per-thread cells on Linux, plain fields on a device) and
//! fills a [`Counters`] snapshot when asked; [`Counters::visit`] yields the keys in a fixed
//! order, which [`Context::counters`](crate::dispatch::Context::counters) passes on.

/// A snapshot of a server's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Admitted connections not yet closed.
    pub connections_open: u64,
    /// Connections admitted since start.
    pub connections_accepted: u64,
    /// Connections refused with ERROR 5 since start.
    pub connections_refused: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes of frames received.
    pub bytes_in: u64,
    /// Bytes of frames handed to the socket (written, not merely queued).
    pub bytes_out: u64,
    /// ERROR frames sent, by code (index 0 is code 1).
    pub errors_sent: [u64; 7],
}

/// The STATS names of the ERROR counters, by code (index 0 is code 1).
pub const ERRORS_SENT_NAMES: [&str; 7] = [
    "errors_sent_1",
    "errors_sent_2",
    "errors_sent_3",
    "errors_sent_4",
    "errors_sent_5",
    "errors_sent_6",
    "errors_sent_7",
];

impl Counters {
    /// Visits every counter by its STATS name, in a fixed order.
    pub fn visit(&self, visit: &mut dyn FnMut(&str, u64)) {
        visit("connections_open", self.connections_open);
        visit("connections_accepted", self.connections_accepted);
        visit("connections_refused", self.connections_refused);
        visit("frames_in", self.frames_in);
        visit("frames_out", self.frames_out);
        visit("bytes_in", self.bytes_in);
        visit("bytes_out", self.bytes_out);
        for (name, value) in ERRORS_SENT_NAMES.iter().zip(self.errors_sent) {
            visit(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_order() {
        let mut counters = Counters { frames_in: 5, ..Counters::default() };
        counters.errors_sent[5] = 2;
        let mut seen = Vec::new();
        counters.visit(&mut |k, v| seen.push((k.to_string(), v)));
        assert_eq!(seen.len(), 14);
        assert_eq!(seen[3], ("frames_in".to_string(), 5));
        assert_eq!(seen[12], ("errors_sent_6".to_string(), 2));
    }
}
