//! The deal role: the wire's rules and the message map for each whole frame, under the connection's
//! lock; the service hooks (guarded against panics), freeing connections, and sending to another
//! connection of the same shard.

use super::*;

/// A service hook, named in the log when it panics.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hook {
    Open(ConnId),
    Frame(ConnId, Option<u16>),
    Timer(ConnId, u32),
    Close(ConnId),
    Start(usize),
    ShardTimer(usize, u32),
    Datagram(u32, Option<u16>),
    LinkUp(ConnId, doorway_core::dispatch::LinkId),
    LinkDown(ConnId, doorway_core::dispatch::LinkId),
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Open(id) => write!(f, "{id}: on_open"),
            Hook::Frame(id, Some(kind)) => write!(f, "{id}: the handler of kind {kind}"),
            Hook::Frame(id, None) => write!(f, "{id}: a frame's handling"),
            Hook::Timer(id, token) => write!(f, "{id}: on_timer (token {token})"),
            Hook::Close(id) => write!(f, "{id}: on_close"),
            Hook::Start(shard) => write!(f, "shard {shard}: on_start"),
            Hook::ShardTimer(shard, token) => write!(f, "shard {shard}: on_shard_timer (token {token})"),
            Hook::Datagram(endpoint, Some(kind)) => {
                write!(f, "udp endpoint {endpoint}: the handler of kind {kind}")
            }
            Hook::Datagram(endpoint, None) => write!(f, "udp endpoint {endpoint}: a datagram's handling"),
            Hook::LinkUp(id, link) => write!(f, "{id}: on_link_up ({link})"),
            Hook::LinkDown(id, link) => write!(f, "{id}: on_link_down ({link})"),
        }
    }
}

/// The deal role's private state besides the service: the wheel and this thread's counters.
pub struct DealEnv {
    /// Every timer of this shard's connections: one check timer per slot at most, plus service
    /// timers up to `service_budget`.
    pub wheel: TimerWheel,
    /// Service timers armed.
    pub service_timers: usize,
    /// Most service timers at once (the wheel's capacity beyond one check timer per slot).
    pub service_budget: usize,
    /// Armed timers owned by the shard rather than a connection (shard timers, endpoint timers):
    /// (owner, timer), at most [`crate::cx::MAX_SHARD_TIMERS`].
    pub shard_timers: Vec<(TimerKind, doorway_core::wheel::TimerId)>,
    /// Datagram buffers, for a shard that owns UDP endpoints (taken while in use).
    pub udp: Option<Box<super::udp::Buffers>>,
    /// Queues pushed to in this batch (wake once at the end).
    pub touched: Sched,
    /// This thread's counters.
    pub counters: Arc<Counters>,
    pub(super) remote: Vec<Remote>,
}

impl DealEnv {
    /// A deal environment for `slots` connections, counting into `counters`.
    pub fn new(counters: Arc<Counters>, slots: usize) -> DealEnv {
        let service_budget = slots + 1024;
        DealEnv {
            wheel: Wheel::with_capacity(slots + service_budget + crate::cx::MAX_SHARD_TIMERS),
            service_timers: 0,
            service_budget,
            shard_timers: Vec::new(),
            udp: None,
            touched: 0,
            counters,
            remote: Vec::new(),
        }
    }
}

impl<W: Wire> Shard<W> {
    /// The deal role over a batch of slots.
    pub fn deal_batch<S: Service>(&self, batch: &[u32], service: &mut S, env: &mut DealEnv) {
        let counters = env.counters.clone();
        let io = self.io(&counters);
        for &idx in batch {
            self.deal_one(idx, service, env, &io, false);
        }
    }

    pub(super) fn deal_one<S: Service>(
        &self,
        idx: u32,
        service: &mut S,
        env: &mut DealEnv,
        io: &Io<'_, W>,
        inline_send: bool,
    ) {
        let mut slot = self.slots[idx as usize].lock();
        let Some(conn) = slot.as_mut() else { return };
        if conn.st.phase == Phase::Dead {
            let conn = slot.take();
            drop(slot);
            if let Some(conn) = conn {
                self.free(idx, conn, service, env);
            }
            return;
        }
        let Conn { inb, st } = &mut *conn;
        let id = st.id;
        let mut sched = 0;
        if !st.opened && st.admitted && st.phase == Phase::Open {
            st.opened = true;
            let link = st.link;
            if link.is_some() {
                // Frames queued while the link was down go first, then the service's.
                self.link_opened(st, io);
            }
            let mut cx = Cx { shard: self, idx, st: &mut *st, env: &mut *env, io, sched: 0 };
            let ran = match link {
                Some(link) => self.guarded(io, Hook::LinkUp(id, link), || service.on_link_up(&mut cx, link)),
                None => self.guarded(io, Hook::Open(id), || service.on_open(&mut cx)),
            };
            sched |= cx.sched;
            if link.is_some() {
                sched |= SEND;
            }
            if ran.is_none() {
                sched |= st.begin_close(io, None);
            }
        }
        if st.phase == Phase::Open {
            let wire = &io.p.wire;
            while inb.has_frames() && st.phase == Phase::Open && st.out.len() <= io.p.high && !st.held {
                let bytes = inb.frames();
                // The receive role cut these bytes already: a whole, valid frame is at their head,
                // so its head alone gives its length (cutting it again cost a second parse).
                let head = wire.head(bytes);
                let len = W::HEAD_LEN + head.body_len;
                let Some(body) = bytes.get(W::HEAD_LEN..len) else { break };
                let mut cx = Cx { shard: self, idx, st: &mut *st, env: &mut *env, io, sched: 0 };
                let ctl = self
                    .guarded(io, Hook::Frame(id, head.kind), || wire.handle(service, &mut cx, head, body));
                sched |= cx.sched;
                if st.held && ctl.is_some() {
                    // Declined for now (`Context::pause`): the frame stays for the resume.
                    break;
                }
                inb.consume(len);
                match ctl {
                    None => sched |= st.begin_close(io, None),
                    Some(Control::Continue) => {}
                    Some(Control::Skipped) => io.c.add(Counter::UnknownSkipped, 1),
                    Some(Control::Bye) => sched |= st.begin_close(io, None),
                    Some(Control::SendFailed(SendError::Full)) => sched |= st.slow_consumer(io),
                    Some(Control::SendFailed(e)) => {
                        log::debug!("{}: reply not queued ({e}), closing", st.id);
                        sched |= st.begin_close(io, None);
                    }
                }
            }
            if st.phase == Phase::Open && !inb.has_frames() && !st.held {
                if let Some(r) = st.refusal.take() {
                    log::debug!("{}: refusing header ({:?})", st.id, r.code);
                    sched |= st.begin_close(io, Some((r.code, r.seq)));
                } else if st.peer_eof {
                    let error = io.stopping.then_some((ErrorCode::ShuttingDown, 0));
                    sched |= st.begin_close(io, error);
                } else if io.stopping && st.stop_read_done {
                    sched |= st.begin_close(io, Some((ErrorCode::ShuttingDown, 0)));
                }
            }
        }
        if st.phase != Phase::Open {
            inb.clear();
        } else if st.more_input && !st.paused && !st.held && !inb.has_frames() {
            st.more_input = false;
            sched |= READ;
        }
        inb.release_if_empty(io.in_pool);
        st.after_output(io);
        if !st.out.is_empty() {
            sched |= SEND;
        }
        self.arm_check(st, env);
        if inline_send && sched & SEND != 0 {
            // Fused: write this connection's replies now, with its lock still held, so its output
            // block returns to the pool before the next connection is served.
            sched = (sched & !SEND) | conn.send(io, &self.doors, idx);
        }
        drop(slot);
        self.schedule(idx, sched, &mut env.touched);
    }

    /// Runs a service hook, catching a panic: `None` when it panicked (logged with the connection
    /// and the hook, counted as `handler_panics`; the caller closes the connection). With
    /// `--on-panic abort` the process aborts instead.
    pub(super) fn guarded<R>(&self, io: &Io<'_, W>, hook: Hook, f: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(a non-text panic payload)");
                io.c.add(Counter::HandlerPanics, 1);
                if self.server.cfg.on_panic == OnPanic::Abort {
                    log::error!("{hook} panicked: {msg}; aborting (--on-panic abort)");
                    std::process::abort();
                }
                log::error!("{hook} panicked: {msg}; closing the connection it ran for, if any");
                None
            }
        }
    }

    pub(super) fn arm_check(&self, st: &mut ConnState, env: &mut DealEnv) {
        let Some(at) = st.next_check(&self.server.params) else { return };
        if let Some((timer, armed)) = st.check {
            if at >= armed {
                // Lazy: the earlier timer fires, finds nothing due and re-arms for `at`.
                return;
            }
            if env.wheel.reset(timer, Tick::from_ticks(at)) {
                st.check = Some((timer, at));
                return;
            }
        }
        match env.wheel.insert(Tick::from_ticks(at), TimerEntry { id: st.id, kind: TimerKind::Check }) {
            Ok(timer) => st.check = Some((timer, at)),
            Err(_) => log::error!("{}: timer wheel full (sizing bug)", st.id),
        }
    }

    pub(super) fn free<S: Service>(&self, idx: u32, conn: Conn, service: &mut S, env: &mut DealEnv) {
        let id = conn.st.id;
        if let Some((timer, _)) = conn.st.check {
            env.wheel.cancel(timer);
        }
        for &(_, timer) in &conn.st.timers {
            if env.wheel.cancel(timer).is_some() {
                env.service_timers -= 1;
            }
        }
        let local = ConnId::new(idx, id.generation());
        self.ids.lock().remove(local);
        // The slab bumped the slot's generation: publish it, so stale ids stop matching here and
        // in other shards' `send_remote`.
        self.gens[idx as usize].store(id.generation().wrapping_add(1), Ordering::Release);
        self.live.fetch_sub(1, Ordering::AcqRel);
        let link = conn.st.link;
        if link.is_some() {
            // A link's connection took no admission ticket.
        } else if conn.st.admitted {
            self.server.admitted.fetch_sub(1, Ordering::AcqRel);
            env.counters.add(Counter::Closed, 1);
        } else {
            self.server.refusing.fetch_sub(1, Ordering::AcqRel);
        }
        let opened = conn.st.opened;
        drop(conn);
        log::trace!("closed {id}");
        let counters = env.counters.clone();
        let io = self.io(&counters);
        match link {
            Some(link) => {
                self.link_closed(link);
                if opened {
                    let mut out = ShardCx { shard: self, env: &mut *env, io: &io };
                    let _ =
                        self.guarded(&io, Hook::LinkDown(id, link), || service.on_link_down(&mut out, link));
                }
            }
            None if opened => {
                let _ = self.guarded(&io, Hook::Close(id), || service.on_close(id));
            }
            None => {}
        }
    }

    /// Queues a frame on slot `local` of this shard (for `send_to`/`broadcast` from a handler of
    /// another connection). `to` checks the generation; `None` means "whoever is open there".
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_local(
        &self,
        local: u32,
        to: Option<ConnId>,
        kind: u16,
        seq: u32,
        body: &[u8],
        io: &Io<'_, W>,
        env: &mut DealEnv,
    ) -> Result<(), SendError> {
        let Some(slot) = self.slots.get(local as usize) else { return Err(SendError::Closed) };
        let mut slot = slot.lock();
        let Some(conn) = slot.as_mut() else { return Err(SendError::Closed) };
        let st = &mut conn.st;
        // A broadcast (`to` None) reaches clients only, never an upstream link.
        let excluded = to.is_none() && st.link.is_some();
        if to.is_some_and(|to| to != st.id) || st.phase != Phase::Open || !st.admitted || excluded {
            return Err(SendError::Closed);
        }
        let mut sched = 0;
        let result = match st.push_frame(io, kind, seq, body) {
            Ok(()) => {
                st.after_output(io);
                sched |= SEND;
                Ok(())
            }
            Err(e) => {
                sched |= st.slow_consumer(io);
                Err(e)
            }
        };
        self.arm_check(st, env);
        drop(slot);
        self.schedule(local, sched, &mut env.touched);
        result
    }
}
