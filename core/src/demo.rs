//! The demo service both servers run by default (`docs/PROTOCOL.md`, Kinds): ECHO, BROADCAST, STATS.
//!
//! It is also the smallest complete example of a service: three handlers and one table.

/// The demo service's kinds (`docs/PROTOCOL.md`, Demo service): application kinds like any other
/// service's, not part of the protocol.
pub mod kind {
    /// Echo the frame back.
    pub const ECHO: u16 = 64;
    /// Send the body to every open connection.
    pub const BROADCAST: u16 = 65;
    /// The server's counters as JSON.
    pub const STATS: u16 = 66;
}

use crate::dispatch::{Context, Request, SendError, Service};
use crate::json::ObjectWriter;
use kind::{BROADCAST, ECHO, STATS};

/// The largest STATS body the demo writes.
pub const STATS_BUF: usize = 1024;

/// ECHO, BROADCAST and STATS.
#[derive(Debug, Default, Clone, Copy)]
pub struct Demo;

impl Demo {
    fn echo(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.reply(req.kind, req.seq, req.body)
    }

    fn broadcast(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        cx.broadcast(BROADCAST, 0, req.body);
        Ok(())
    }

    fn stats(&mut self, cx: &mut impl Context, req: &Request<'_>) -> Result<(), SendError> {
        let mut buf = [0u8; STATS_BUF];
        let mut json = ObjectWriter::new(&mut buf);
        cx.counters(&mut |name, value| json.field(name, value));
        let n = json.finish().map_err(|_| SendError::TooLarge)?;
        cx.reply(STATS, req.seq, &buf[..n])
    }
}

crate::message_map! {
    Demo {
        ECHO => echo,
        BROADCAST => broadcast,
        STATS => stats,
    }
}

impl Service for Demo {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::handle_frame;
    use crate::dispatch::tests::{frame, Recorder};
    use crate::frame::Decoder;

    #[test]
    fn demo_kinds() {
        let mut cx = Recorder::default();
        for (kind, body) in [(ECHO, &b"hi"[..]), (BROADCAST, b"all"), (STATS, b"")] {
            let bytes = frame(kind, 9, body);
            handle_frame(&mut Demo, &mut cx, &Decoder::default().decode(&bytes).unwrap().unwrap());
        }
        assert_eq!((cx.sent[0].1, cx.sent[0].2), (ECHO, 9));
        assert_eq!(cx.sent[0].3, b"hi");
        assert_eq!((cx.sent[1].1, cx.sent[1].2, &cx.sent[1].3[..]), (BROADCAST, 0, &b"all"[..]));
        assert_eq!((cx.sent[2].1, cx.sent[2].2), (STATS, 9));
        assert_eq!(cx.sent[2].3, br#"{"connections_open":3,"frames_in":10}"#);
    }
}
