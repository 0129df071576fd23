//! The monitor role: epoll events (accept, readiness, the tick, signals), admission and refusal,
//! the stop flag, and giving freed heap back after a burst.

use super::*;

impl<W: Wire> Shard<W> {
    /// Handles one epoll event (monitor role).
    pub fn monitor_event(&self, ev: Event, c: &Counters, touched: &mut Sched) {
        match ev.token {
            TOKEN_LISTENER => self.accept_all(c, touched),
            TOKEN_TIMER => {
                // Acquire pairs with the Release in `accept_all`'s out-of-descriptors path.
                if self.accept_retry.swap(false, Ordering::Acquire) {
                    self.accept_all(c, touched);
                }
                if self.timer.expirations() > 0 {
                    self.tick_links(c, touched);
                    self.tick_pending.store(true, Ordering::Release);
                    *touched |= DEAL;
                    self.maybe_trim();
                }
            }
            TOKEN_WAKE => self.monitor_waker.drain(),
            TOKEN_SIGNAL => {
                if let Some(sig) = &self.signal {
                    while let Some(signo) = sig.read() {
                        log::info!("signal {signo} received");
                        self.server.stop();
                    }
                }
            }
            token => {
                if let Some(i) = link::TOKENS.index(token) {
                    return self.link_event(i, c, touched);
                }
                if let Some(i) = udp::TOKENS.index(token) {
                    if let Some(endpoint) = self.udp.get(i) {
                        endpoint.ready.store(true, Ordering::Release);
                        *touched |= DEAL;
                    }
                    return;
                }
                let id = ConnId::from_u64(token);
                let idx = id.index() as u32;
                if self.gens.get(id.index()).map(|g| g.load(Ordering::Acquire)) != Some(id.generation()) {
                    return;
                }
                let mut s = 0;
                if ev.events & (epoll::IN | epoll::RDHUP | epoll::HUP | epoll::ERR) != 0 {
                    if ev.events & (epoll::RDHUP | epoll::HUP | epoll::ERR) != 0 {
                        self.doors.enter(idx, door::RDHUP);
                    }
                    s |= READ;
                }
                if ev.events & epoll::OUT != 0 && self.doors.leave(idx, door::WANT_WRITE) {
                    s |= SEND;
                }
                self.schedule(idx, s, touched);
            }
        }
    }

    /// Once a second at most: if the pools freed blocks since the last look (a burst), hand the
    /// freed heap back to the OS so an idle server's RSS falls back (monitor role).
    pub(super) fn maybe_trim(&self) {
        let now = self.server.now();
        let mut last = self.trim_state.lock();
        if now < last.0 + 1000 {
            return;
        }
        let dropped = self.in_pool.dropped() + self.out_pool.dropped();
        if dropped != last.1 {
            crate::sys::mem::trim();
        }
        *last = (now, dropped);
    }

    /// Polls the stop flag: on the first sight, closes the listener and asks every connection to
    /// be read out, answered and closed with ERROR 7 (monitor role).
    pub fn poll_stop(&self, touched: &mut Sched) {
        if !self.server.stopping.load(Ordering::Acquire) || self.stop_seen.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(l) = self.listener.lock().take() {
            let _ = self.epoll.delete(l.as_raw_fd());
        }
        for idx in 0..self.high_index() {
            self.schedule(idx, READ | DEAL, touched);
        }
        self.tick_pending.store(true, Ordering::Release);
        *touched |= DEAL;
    }

    /// Whether the shard has finished draining.
    pub fn drained(&self) -> bool {
        self.stop_seen.load(Ordering::Acquire)
            && (self.live() == 0 || self.server.now() >= self.server.drain_deadline.load(Ordering::Acquire))
    }

    pub(super) fn accept_all(&self, c: &Counters, touched: &mut Sched) {
        let listener = match self.listener.lock().as_ref() {
            Some(l) => l.as_raw_fd(),
            None => return,
        };
        loop {
            let accepted = {
                let _shared = self.server.spare.read();
                socket::accept(listener)
            };
            match accepted {
                Ok(fd) => self.admit(fd, c, touched),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors (accept4 says so even with nothing queued): free the
                    // spare, accept one connection, refuse it and close it at once, take the spare
                    // back. The gate is held exclusively throughout, so no other shard's accept can
                    // take the freed descriptor in between (it would leave this queue stuck with
                    // the spare lost until some connection closes). An empty queue ends the loop;
                    // the next connection brings a new edge.
                    let mut spare = self.server.spare.write();
                    spare.take();
                    let (refused_one, empty) = match socket::accept(listener) {
                        Ok(fd) => {
                            self.refuse_now(&fd, c);
                            (true, false)
                        }
                        Err(e) => (false, e.kind() == io::ErrorKind::WouldBlock),
                    };
                    *spare = File::open("/dev/null").ok();
                    if empty {
                        break;
                    }
                    if !refused_one || spare.is_none() {
                        // A descriptor went elsewhere (a file outside the gate, or the system
                        // table is full): the monitor's next tick tries again, since an
                        // edge-triggered listener reports no new edge for connections queued now.
                        log::warn!("out of file descriptors; refusing connections until some close");
                        self.accept_retry.store(true, Ordering::Release);
                        break;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }

    pub(super) fn admit(&self, fd: OwnedFd, c: &Counters, touched: &mut Sched) {
        let now = self.server.now();
        let admitted = take_ticket(&self.server.admitted, self.server.max_conns);
        // A refusal lingers only within its descriptor budget; past it, it is closed at once.
        if !admitted && !take_ticket(&self.server.refusing, self.server.max_refusing) {
            self.refuse_now(&fd, c);
            return;
        }
        let local = match self.ids.lock().insert(()) {
            Ok(id) => id,
            Err(_) => {
                // No slot to linger in: refuse on the spot.
                let tickets = if admitted { &self.server.admitted } else { &self.server.refusing };
                tickets.fetch_sub(1, Ordering::AcqRel);
                self.refuse_now(&fd, c);
                return;
            }
        };
        let idx = local.index() as u32;
        let raw = fd.as_raw_fd();
        let mut conn = Conn::new(self.global(local), fd, now);
        if admitted {
            c.add(Counter::Accepted, 1);
        } else {
            c.add(Counter::Refused, 1);
            conn.st.admitted = false;
            let io = self.io(c);
            conn.st.begin_close(&io, Some((ErrorCode::ServerFull, 0)));
        }
        *self.slots[idx as usize].lock() = Some(conn);
        self.gens[idx as usize].store(local.generation(), Ordering::Release);
        self.high.fetch_max(idx + 1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.epoll.add(raw, epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET, local.to_u64())
        {
            log::warn!("epoll add failed: {e}");
        }
        log::trace!("accepted {} (admitted: {admitted})", self.global(local));
        self.schedule(idx, if admitted { DEAL } else { SEND | DEAL }, touched);
    }

    pub(super) fn refuse_now(&self, fd: &OwnedFd, c: &Counters) {
        let mut frame = [0u8; MAX_CLOSE_FRAME];
        let n = self.server.params.wire.close_frame(ErrorCode::ServerFull, 0, &mut frame);
        if n > 0 {
            let _ = crate::sys::write(fd.as_raw_fd(), &frame[..n]);
            c.add(Counter::FramesOut, 1);
            c.error_sent(ErrorCode::ServerFull);
        }
        let _ = socket::shutdown_write(fd.as_raw_fd());
        c.add(Counter::Refused, 1);
    }
}
