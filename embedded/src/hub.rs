//! State the connections share: per-slot output, lifecycle, timers, and the server's counters.
//!
//! Every connection of a [`crate::Server`] runs as one future inside one task, so the hub lives in
//! a `RefCell` and is borrowed only between `.await`s (never across one). A handler sees it through
//! [`Cx`], the embedded [`Context`]: a reply goes to the current slot's [`OutBuf`], `send_to` and
//! `broadcast` write into other slots' buffers and wake their futures.
//!
//! # Slots and ids
//!
//! Slot `i` is socket `i`. Its `generation` is bumped every time a connection leaves it, so a
//! [`ConnId`] kept by a service after its connection closed misses (`Err(Closed)`) instead of
//! reaching the slot's next occupant (the slab's rule, seed 003).
//!
//! # Slow consumers
//!
//! A broadcast that finds a slot's output full does not block the sender: it marks that slot
//! `kill = SlowConsumer` and wakes it; the slot's own future then discards its pending output
//! (completing a partly written frame), sends ERROR 6 best effort and closes.

use core::task::Waker;

use doorway_core::dispatch::{Context, SendError, TimerError};
use doorway_core::frame::{kind, ErrorCode};
use doorway_core::slab::ConnId;
use embassy_sync::waitqueue::WakerRegistration;
use embassy_time::{Duration, Instant};

use crate::out::OutBuf;

/// Timers a connection may hold at once ([`Context::set_timer`]).
pub const TIMERS: usize = 2;

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// No connection.
    Free,
    /// Serving requests.
    Open,
    /// Sending what is owed before closing; takes no broadcasts.
    Closing,
}

/// One connection slot.
pub struct Slot<const OUT: usize> {
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Counted in `connections_open` (admitted and its session not over).
    pub(crate) admitted: bool,
    pub(crate) out: OutBuf<OUT>,
    pub(crate) waker: WakerRegistration,
    pub(crate) kill: Option<ErrorCode>,
    pub(crate) close_requested: bool,
    pub(crate) timers: [Option<(u32, Instant)>; TIMERS],
}

impl<const OUT: usize> Slot<OUT> {
    const NEW: Slot<OUT> = Slot {
        generation: 0,
        phase: Phase::Free,
        admitted: false,
        out: OutBuf::NEW,
        waker: WakerRegistration::new(),
        kill: None,
        close_requested: false,
        timers: [None; TIMERS],
    };

    /// The id of the slot's current connection.
    pub(crate) fn id(&self, index: usize) -> ConnId {
        ConnId::new(index as u32, self.generation)
    }

    /// Queues a frame and counts it.
    fn push(&mut self, counters: &mut Counters, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        self.out.push_frame(kind, seq, body).map_err(|_| SendError::Full)?;
        counters.frames_out += 1;
        counters.bytes_out += (doorway_core::frame::HEADER_LEN + body.len()) as u64;
        if kind == kind::ERROR {
            if let Some(code) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) {
                if let Some(slot) = counters.errors_sent.get_mut(usize::from(code).wrapping_sub(1)) {
                    *slot += 1;
                }
            }
        }
        self.waker.wake();
        Ok(())
    }

    /// The earliest armed timer.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().flatten().map(|t| t.1).min()
    }
}

/// The server's counters, named as in the Linux server's STATS and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Admitted connections not yet closed.
    pub connections_open: u64,
    /// Connections admitted since boot.
    pub connections_accepted: u64,
    /// Connections refused with ERROR 5 since boot.
    pub connections_refused: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes of frames received.
    pub bytes_in: u64,
    /// Bytes of frames queued for sending.
    pub bytes_out: u64,
    /// ERROR frames sent, by code (index 0 is code 1).
    pub errors_sent: [u64; 7],
}

impl Counters {
    /// Visits every counter by its STATS name.
    pub fn visit(&self, visit: &mut dyn FnMut(&str, u64)) {
        visit("connections_open", self.connections_open);
        visit("connections_accepted", self.connections_accepted);
        visit("connections_refused", self.connections_refused);
        visit("frames_in", self.frames_in);
        visit("frames_out", self.frames_out);
        visit("bytes_in", self.bytes_in);
        visit("bytes_out", self.bytes_out);
        const NAMES: [&str; 7] = [
            "errors_sent_1",
            "errors_sent_2",
            "errors_sent_3",
            "errors_sent_4",
            "errors_sent_5",
            "errors_sent_6",
            "errors_sent_7",
        ];
        for (name, value) in NAMES.iter().zip(self.errors_sent) {
            visit(name, value);
        }
    }
}

/// Everything the connections share.
pub struct Hub<const N: usize, const OUT: usize> {
    pub(crate) slots: [Slot<OUT>; N],
    pub(crate) counters: Counters,
}

impl<const N: usize, const OUT: usize> Hub<N, OUT> {
    /// An empty hub (a `const` so storage can live in a `static`).
    pub const NEW: Hub<N, OUT> = Hub {
        slots: [const { Slot::NEW }; N],
        counters: Counters {
            connections_open: 0,
            connections_accepted: 0,
            connections_refused: 0,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            errors_sent: [0; 7],
        },
    };

    /// Admits a connection on slot `index` and returns its id.
    pub(crate) fn open(&mut self, index: usize) -> ConnId {
        let slot = &mut self.slots[index];
        slot.phase = Phase::Open;
        slot.admitted = true;
        slot.out.clear();
        slot.kill = None;
        slot.close_requested = false;
        slot.timers = [None; TIMERS];
        self.counters.connections_accepted += 1;
        self.counters.connections_open += 1;
        slot.id(index)
    }

    /// Ends slot `index`'s session: it no longer counts against `max_connections` (what is left
    /// is shutting the socket down) and takes no more output from other connections.
    pub(crate) fn release(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.admitted {
            slot.admitted = false;
            self.counters.connections_open = self.counters.connections_open.saturating_sub(1);
        }
        if slot.phase == Phase::Open {
            slot.phase = Phase::Closing;
        }
    }

    /// Frees slot `index`; its id goes stale.
    pub(crate) fn close(&mut self, index: usize) {
        self.release(index);
        let slot = &mut self.slots[index];
        slot.phase = Phase::Free;
        slot.generation = slot.generation.wrapping_add(1);
        slot.out.clear();
        slot.kill = None;
        slot.close_requested = false;
        slot.timers = [None; TIMERS];
    }

    /// Registers `waker` to be woken when slot `index` gets output or a kill.
    pub(crate) fn register(&mut self, index: usize, waker: &Waker) {
        self.slots[index].waker.register(waker);
    }

    /// A context for a handler running on slot `index`.
    pub(crate) fn cx(&mut self, index: usize, now: Instant) -> Cx<'_, N, OUT> {
        let id = self.slots[index].id(index);
        Cx { hub: self, index, id, now }
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// The embedded [`Context`]: what a handler on one connection may do.
pub struct Cx<'h, const N: usize, const OUT: usize> {
    pub(crate) hub: &'h mut Hub<N, OUT>,
    pub(crate) index: usize,
    pub(crate) id: ConnId,
    pub(crate) now: Instant,
}

impl<const N: usize, const OUT: usize> Context for Cx<'_, N, OUT> {
    fn conn(&self) -> ConnId {
        self.id
    }

    fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let Hub { slots, counters } = &mut *self.hub;
        slots[self.index].push(counters, kind, seq, body)
    }

    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let Hub { slots, counters } = &mut *self.hub;
        match slots.get_mut(to.index()) {
            Some(slot) if slot.generation == to.generation() && slot.phase == Phase::Open => {
                slot.push(counters, kind, seq, body)
            }
            _ => Err(SendError::Closed),
        }
    }

    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
        let Hub { slots, counters } = &mut *self.hub;
        let mut took = 0;
        for slot in slots.iter_mut().filter(|s| s.phase == Phase::Open) {
            match slot.push(counters, kind, seq, body) {
                Ok(()) => took += 1,
                Err(_) => {
                    net_debug!("broadcast: slow consumer");
                    slot.kill.get_or_insert(ErrorCode::SlowConsumer);
                    slot.waker.wake();
                }
            }
        }
        took
    }

    fn close(&mut self) {
        self.hub.slots[self.index].close_requested = true;
    }

    fn set_timer(&mut self, token: u32, after_ms: u32) -> Result<(), TimerError> {
        let at = self.now + Duration::from_millis(after_ms.into());
        let timers = &mut self.hub.slots[self.index].timers;
        if let Some(t) = timers.iter_mut().flatten().find(|t| t.0 == token) {
            t.1 = at;
            return Ok(());
        }
        let free = timers.iter_mut().find(|t| t.is_none()).ok_or(TimerError::Full)?;
        *free = Some((token, at));
        Ok(())
    }

    fn cancel_timer(&mut self, token: u32) {
        for t in self.hub.slots[self.index].timers.iter_mut() {
            if matches!(t, Some((armed, _)) if *armed == token) {
                *t = None;
            }
        }
    }

    fn counters(&self, visit: &mut dyn FnMut(&str, u64)) {
        self.hub.counters.visit(visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorway_core::frame::Decoder;

    fn first_frame(out: &OutBuf<64>) -> (u16, u32, Vec<u8>) {
        let f = Decoder::default().decode(out.as_slice()).unwrap().unwrap();
        (f.header.kind, f.header.seq, f.body.to_vec())
    }

    #[test]
    fn stale_id_misses_and_broadcast_kills_full_slot() {
        let mut hub = Hub::<3, 64>::NEW;
        let a = hub.open(0);
        let b = hub.open(1);
        hub.close(1);
        let c = hub.open(1);
        assert_ne!(b, c);
        let mut cx = hub.cx(0, Instant::from_ticks(0));
        assert_eq!(cx.send_to(b, 64, 1, b"x"), Err(SendError::Closed), "stale id reached a new occupant");
        assert_eq!(cx.send_to(c, 64, 1, b"x"), Ok(()));
        assert_eq!(cx.conn(), a);
        // Fill slot 1 so the broadcast cannot take it.
        cx.send_to(c, 64, 2, &[0; 30]).unwrap();
        assert_eq!(cx.broadcast(65, 0, b"all"), 1, "only the sender took it; slot 2 is free");
        assert_eq!(hub.slots[1].kill, Some(ErrorCode::SlowConsumer));
        assert_eq!(first_frame(&hub.slots[0].out), (65, 0, b"all".to_vec()));
        assert_eq!(hub.counters.connections_open, 2);
        assert_eq!(hub.counters.connections_accepted, 3);
    }

    #[test]
    fn errors_are_counted_by_code() {
        let mut hub = Hub::<1, 64>::NEW;
        hub.open(0);
        let mut cx = hub.cx(0, Instant::from_ticks(0));
        cx.reply_error(ErrorCode::UnknownKind, 9).unwrap();
        assert_eq!(hub.counters.errors_sent, [0, 1, 0, 0, 0, 0, 0]);
        let mut names = Vec::new();
        hub.counters.visit(&mut |name, _| names.push(name.to_string()));
        assert_eq!(names.len(), 14);
        assert_eq!(names[13], "errors_sent_7");
    }

    #[test]
    fn timers_rearm_cancel_and_run_out() {
        let mut hub = Hub::<1, 64>::NEW;
        hub.open(0);
        let t0 = Instant::from_ticks(0);
        let mut cx = hub.cx(0, t0);
        cx.set_timer(1, 100).unwrap();
        cx.set_timer(2, 50).unwrap();
        assert_eq!(cx.set_timer(3, 10), Err(TimerError::Full));
        cx.set_timer(1, 20).unwrap();
        assert_eq!(hub.slots[0].next_timer(), Some(t0 + Duration::from_millis(20)), "re-arm moved timer 1");
        let mut cx = hub.cx(0, t0);
        cx.cancel_timer(1);
        assert_eq!(hub.slots[0].next_timer(), Some(t0 + Duration::from_millis(50)));
        hub.close(0);
        assert_eq!(hub.slots[0].next_timer(), None, "timers die with their connection");
    }
}
