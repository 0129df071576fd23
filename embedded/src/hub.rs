//! State the connections share: per-slot output, lifecycle, timers, and the server's counters.
//!
//! Every connection of [`crate::serve`] runs as one future inside one task, so the hub lives in
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
//!
//! # Shutdown
//!
//! `Hub::stop` records the drain deadline (from then on the server is stopping), sets every
//! slot's `stop` flag and wakes its future, whether a session or a socket waiting to accept. A
//! session takes `stop` like `kill`, but keeps its pending output: it answers what it already
//! received, then queues ERROR 7 (see [`crate::server`]). A slot opened after the stop starts
//! with `stop` set.

use core::task::Waker;

use doorway_core::dispatch::{Context, SendError, TimerError};
use doorway_core::frame::{kind, ErrorCode};
use doorway_core::slab::ConnId;
use doorway_core::wheel::TimerId;
use embassy_sync::waitqueue::WakerRegistration;
use embassy_time::{Duration, Instant};

use crate::out::OutBuf;
use crate::timers::{deadline, tick, Due, Payload, TimerWheel};

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
    /// The server is stopping and the session has not noticed yet.
    pub(crate) stop: bool,
    pub(crate) close_requested: bool,
    /// The idle timer on the wheel, while the connection is being read.
    pub(crate) idle: Option<TimerId>,
    /// The idle timer fired; the session answers ERROR 4.
    pub(crate) idle_expired: bool,
    /// Armed service timers: token and wheel id.
    pub(crate) timers: [Option<(u32, TimerId)>; TIMERS],
    /// Service timers that fired and wait for [`Service::on_timer`](doorway_core::dispatch::Service).
    pub(crate) fired: [Option<u32>; TIMERS],
}

impl<const OUT: usize> Slot<OUT> {
    const NEW: Slot<OUT> = Slot {
        generation: 0,
        phase: Phase::Free,
        admitted: false,
        out: OutBuf::NEW,
        waker: WakerRegistration::new(),
        kill: None,
        stop: false,
        close_requested: false,
        idle: None,
        idle_expired: false,
        timers: [None; TIMERS],
        fired: [None; TIMERS],
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

    /// Whether the slot's future has something to act on besides socket readiness.
    pub(crate) fn has_event(&self) -> bool {
        self.kill.is_some() || self.stop || self.idle_expired || self.fired.iter().any(Option::is_some)
    }
}

/// The server's counters: core's shared snapshot, whose names STATS uses.
pub use doorway_core::stats::Counters;

/// Everything the connections share.
pub struct Hub<const N: usize, const OUT: usize> {
    pub(crate) slots: [Slot<OUT>; N],
    pub(crate) counters: Counters,
    /// The tick the clock future sleeps until (`None`: no timer).
    pub(crate) clock_at: Option<u64>,
    /// Set when a timer earlier than `clock_at` was armed; the clock re-plans.
    pub(crate) clock_kicked: bool,
    pub(crate) clock_waker: WakerRegistration,
    /// When the server is stopping: the instant past which remaining sockets are reset.
    pub(crate) drain_deadline: Option<Instant>,
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
        clock_at: None,
        clock_kicked: false,
        clock_waker: WakerRegistration::new(),
        drain_deadline: None,
    };

    /// Readies the hub for a new run of the server: not stopping, no connection, no timer (the
    /// previous run's wheel is gone). Slots that a dropped run left occupied are freed and their
    /// generation bumped, so no [`ConnId`] from that run reaches a new connection. Counters are
    /// kept, except `connections_open`.
    pub(crate) fn begin(&mut self) {
        self.drain_deadline = None;
        self.clock_at = None;
        self.clock_kicked = false;
        self.counters.connections_open = 0;
        for slot in self.slots.iter_mut() {
            if slot.phase != Phase::Free || slot.admitted {
                slot.generation = slot.generation.wrapping_add(1);
            }
            slot.phase = Phase::Free;
            slot.admitted = false;
            slot.out.clear();
            slot.kill = None;
            slot.stop = false;
            slot.close_requested = false;
            slot.idle = None;
            slot.idle_expired = false;
            slot.timers = [None; TIMERS];
            slot.fired = [None; TIMERS];
        }
    }

    /// Starts stopping the server: every slot is told (its `stop` flag) and woken; sockets still
    /// open at `drain_deadline` are reset. Only the first call counts.
    pub(crate) fn stop(&mut self, drain_deadline: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(drain_deadline);
        for slot in self.slots.iter_mut() {
            slot.stop = true;
            slot.waker.wake();
        }
    }

    /// Whether the server is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Admits a connection on slot `index` and returns its id.
    pub(crate) fn open(&mut self, index: usize) -> ConnId {
        let slot = &mut self.slots[index];
        slot.phase = Phase::Open;
        slot.admitted = true;
        slot.out.clear();
        slot.kill = None;
        // A connection accepted as the server stops is drained like the others.
        slot.stop = self.drain_deadline.is_some();
        slot.close_requested = false;
        slot.idle_expired = false;
        slot.fired = [None; TIMERS];
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

    /// Frees slot `index`; its id goes stale and its timers are cancelled.
    pub(crate) fn close(&mut self, index: usize, wheel: &mut TimerWheel<N>) {
        self.release(index);
        self.disarm_idle(index, wheel);
        let slot = &mut self.slots[index];
        for (_, id) in slot.timers.iter_mut().filter_map(Option::take) {
            wheel.cancel(id);
        }
        slot.phase = Phase::Free;
        slot.generation = slot.generation.wrapping_add(1);
        slot.out.clear();
        slot.kill = None;
        slot.stop = false;
        slot.close_requested = false;
        slot.idle_expired = false;
        slot.fired = [None; TIMERS];
    }

    /// Arms (or moves) a timer of slot `index` for `at`; `existing` is its current id, if any.
    fn schedule(
        &mut self,
        wheel: &mut TimerWheel<N>,
        index: usize,
        due: Due,
        at: Instant,
        existing: Option<TimerId>,
    ) -> Option<TimerId> {
        let at_tick = tick(at);
        let id = match existing {
            Some(id) if wheel.reset(id, at_tick) => id,
            _ => {
                let payload = Payload { slot: index as u32, generation: self.slots[index].generation, due };
                wheel.insert(at_tick, payload).ok()?
            }
        };
        // The clock sleeps until `clock_at`; only an earlier timer needs it to re-plan.
        if self.clock_at.is_none_or(|c| at_tick.ticks() < c) {
            self.clock_kicked = true;
            self.clock_waker.wake();
        }
        Some(id)
    }

    /// Arms or moves slot `index`'s idle timer to `at`.
    pub(crate) fn arm_idle(&mut self, index: usize, at: Instant, wheel: &mut TimerWheel<N>) {
        let existing = self.slots[index].idle;
        self.slots[index].idle = self.schedule(wheel, index, Due::Idle, at, existing);
    }

    /// Stops slot `index`'s idle clock (reading paused, or closing).
    pub(crate) fn disarm_idle(&mut self, index: usize, wheel: &mut TimerWheel<N>) {
        if let Some(id) = self.slots[index].idle.take() {
            wheel.cancel(id);
        }
    }

    /// Fires every timer due at `now`, marks and wakes the slots they belong to, and returns the
    /// tick to sleep until.
    pub(crate) fn fire_due(&mut self, now: Instant, wheel: &mut TimerWheel<N>) -> Option<u64> {
        let slots = &mut self.slots;
        while let Some((id, payload)) = wheel.next_expired(tick(now)) {
            let Some(slot) = slots.get_mut(payload.slot as usize) else { continue };
            if slot.generation != payload.generation || slot.phase == Phase::Free {
                continue;
            }
            match payload.due {
                Due::Idle => {
                    if slot.idle == Some(id) {
                        slot.idle = None;
                        slot.idle_expired = true;
                    }
                }
                Due::Service(token) => {
                    if let Some(armed) =
                        slot.timers.iter_mut().find(|t| matches!(t, Some((_, i)) if *i == id))
                    {
                        *armed = None;
                        if let Some(free) = slot.fired.iter_mut().find(|f| f.is_none()) {
                            *free = Some(token);
                        }
                    }
                }
            }
            slot.waker.wake();
        }
        let at = wheel.poll_at().map(|t| t.ticks());
        self.clock_at = at;
        at
    }

    /// Registers `waker` to be woken when slot `index` gets output or a kill.
    pub(crate) fn register(&mut self, index: usize, waker: &Waker) {
        self.slots[index].waker.register(waker);
    }

    /// A context for a handler running on slot `index`.
    pub(crate) fn cx<'h>(
        &'h mut self,
        index: usize,
        now: Instant,
        wheel: &'h mut TimerWheel<N>,
    ) -> Cx<'h, N, OUT> {
        let id = self.slots[index].id(index);
        Cx { hub: self, wheel, index, id, now }
    }

    /// The server's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// The embedded [`Context`]: what a handler on one connection may do.
pub struct Cx<'h, const N: usize, const OUT: usize> {
    pub(crate) hub: &'h mut Hub<N, OUT>,
    pub(crate) wheel: &'h mut TimerWheel<N>,
    pub(crate) index: usize,
    pub(crate) id: ConnId,
    pub(crate) now: Instant,
}

impl<const N: usize, const OUT: usize> Context for Cx<'_, N, OUT> {
    fn conn(&self) -> ConnId {
        self.id
    }

    fn reply(&mut self, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let Hub { slots, counters, .. } = &mut *self.hub;
        slots[self.index].push(counters, kind, seq, body)
    }

    fn send_to(&mut self, to: ConnId, kind: u16, seq: u32, body: &[u8]) -> Result<(), SendError> {
        let Hub { slots, counters, .. } = &mut *self.hub;
        match slots.get_mut(to.index()) {
            Some(slot) if slot.generation == to.generation() && slot.phase == Phase::Open => {
                slot.push(counters, kind, seq, body)
            }
            _ => Err(SendError::Closed),
        }
    }

    fn broadcast(&mut self, kind: u16, seq: u32, body: &[u8]) -> usize {
        let Hub { slots, counters, .. } = &mut *self.hub;
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
        let at = deadline(self.now, Duration::from_millis(after_ms.into()));
        let slot = &self.hub.slots[self.index];
        let (position, existing) =
            match slot.timers.iter().position(|t| matches!(t, Some((k, _)) if *k == token)) {
                Some(i) => (i, slot.timers[i].map(|t| t.1)),
                None => (slot.timers.iter().position(Option::is_none).ok_or(TimerError::Full)?, None),
            };
        let id = self
            .hub
            .schedule(self.wheel, self.index, Due::Service(token), at, existing)
            .ok_or(TimerError::Full)?;
        self.hub.slots[self.index].timers[position] = Some((token, id));
        Ok(())
    }

    fn cancel_timer(&mut self, token: u32) {
        let slot = &mut self.hub.slots[self.index];
        for t in slot.timers.iter_mut() {
            if let Some((armed, id)) = *t {
                if armed == token {
                    *t = None;
                    self.wheel.cancel(id);
                }
            }
        }
        for f in slot.fired.iter_mut() {
            if *f == Some(token) {
                *f = None;
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
    use crate::timers::Entries;
    use doorway_core::frame::Decoder;

    fn wheel<const N: usize>() -> TimerWheel<N> {
        TimerWheel::new(Entries::NEW)
    }

    fn first_frame(out: &OutBuf<64>) -> (u16, u32, Vec<u8>) {
        let f = Decoder::default().decode(out.as_slice()).unwrap().unwrap();
        (f.header.kind, f.header.seq, f.body.to_vec())
    }

    #[test]
    fn stale_id_misses_and_broadcast_kills_full_slot() {
        let mut hub = Hub::<3, 64>::NEW;
        let mut wheel = wheel::<3>();
        let a = hub.open(0);
        let b = hub.open(1);
        hub.close(1, &mut wheel);
        let c = hub.open(1);
        assert_ne!(b, c);
        let mut cx = hub.cx(0, Instant::from_ticks(0), &mut wheel);
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
        let mut wheel = wheel::<1>();
        hub.open(0);
        let mut cx = hub.cx(0, Instant::from_ticks(0), &mut wheel);
        cx.reply_error(ErrorCode::UnknownKind, 9).unwrap();
        assert_eq!(hub.counters.errors_sent, [0, 1, 0, 0, 0, 0, 0]);
        let mut names = Vec::new();
        hub.counters.visit(&mut |name, _| names.push(name.to_string()));
        assert_eq!(names.len(), 14);
        assert_eq!(names[13], "errors_sent_7");
    }

    #[test]
    fn stop_flags_every_slot_once_and_a_new_run_starts_clean() {
        let mut hub = Hub::<3, 64>::NEW;
        let mut wheel = wheel::<3>();
        hub.open(0);
        assert!(!hub.slots[0].has_event() && !hub.stopping());
        let deadline = Instant::from_ticks(500);
        hub.stop(deadline);
        hub.stop(Instant::from_ticks(900));
        assert_eq!(hub.drain_deadline, Some(deadline), "only the first stop counts");
        assert!(hub.slots[0].stop && hub.slots[0].has_event(), "an open session is told");
        // A connection accepted while stopping is drained too; closing clears the flag.
        hub.open(1);
        assert!(hub.slots[1].stop);
        hub.close(1, &mut wheel);
        assert!(!hub.slots[1].stop);
        // A run dropped with slot 0 still open: the next run frees it and bumps its generation.
        let before = hub.slots[0].generation;
        hub.begin();
        assert!(!hub.stopping());
        assert_eq!((hub.slots[0].phase, hub.slots[0].stop), (Phase::Free, false));
        assert_eq!(hub.slots[0].generation, before.wrapping_add(1));
        assert_eq!(hub.counters.connections_open, 0);
        assert_eq!(hub.counters.connections_accepted, 2, "counters are kept");
    }

    #[test]
    fn timers_rearm_cancel_fire_and_die_with_the_connection() {
        let mut hub = Hub::<2, 64>::NEW;
        let t0 = Instant::from_ticks(1_000);
        let mut wheel = TimerWheel::<2>::new_at(Entries::NEW, tick(t0));
        hub.open(0);
        hub.open(1);
        hub.arm_idle(1, t0 + Duration::from_millis(30), &mut wheel);
        let mut cx = hub.cx(0, t0, &mut wheel);
        cx.set_timer(1, 100).unwrap();
        cx.set_timer(2, 50).unwrap();
        assert_eq!(cx.set_timer(3, 10), Err(TimerError::Full));
        cx.set_timer(1, 20).unwrap();
        cx.cancel_timer(2);
        assert!(hub.clock_kicked, "an earlier timer wakes the clock");
        // At 25 ms only timer 1 (moved to 20 ms) is due: cancelled 2 and idle at 30 ms are not.
        hub.fire_due(t0 + Duration::from_millis(25), &mut wheel);
        assert_eq!(hub.slots[0].fired, [Some(1), None]);
        assert!(!hub.slots[1].idle_expired);
        hub.fire_due(t0 + Duration::from_millis(31), &mut wheel);
        assert!(hub.slots[1].idle_expired && hub.slots[1].has_event());
        // Timers die with their connection: a new occupant of slot 0 never sees them.
        hub.cx(0, t0, &mut wheel).set_timer(7, 5).unwrap();
        hub.close(0, &mut wheel);
        hub.open(0);
        hub.fire_due(t0 + Duration::from_secs(10), &mut wheel);
        assert_eq!(hub.slots[0].fired, [None, None]);
        assert_eq!(hub.clock_at, None, "nothing left on the wheel");
    }
}
