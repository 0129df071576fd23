//! One node of a module: its counters, its state, and the transitions a report or the clock makes.
//!
//! A node is *idle* or *overloaded* ([`NodeState`]); `since` is when its idle window started or
//! when it became overloaded. Entering either state resets every counter (`docs/LARS.md`):
//!
//! ```text
//!                 failure: verr/(vsucc+verr) > err_rate         (ErrRate)
//!                 failure: contin_err >= contin_err_limit       (ContinErr)
//!                 window ended, rerr/(rsucc+rerr) >= window_err_rate (WindowErrRate)
//!        ┌──────┐ ─────────────────────────────────────────────▶ ┌────────────┐
//!  new ─▶│ idle │                                                │ overloaded │
//!        └──────┘ ◀───────────────────────────────────────────── └────────────┘
//!         │   ▲   success: vsucc/(vsucc+verr) > succ_rate       (SuccRate)
//!         └───┘   success: contin_succ >= contin_succ_limit     (ContinSucc)
//!  window ended,  overloaded for overload_timeout               (OverloadTimeout)
//!  error rate low
//!  (NewWindow)
//! ```
//!
//! Idle: `vsucc = init_succ_cnt`, the rest 0. Overloaded: `verr = init_err_cnt`, the rest 0.
//!
//! A report first applies what the clock decided (a window that ended, an overload that timed
//! out), then counts the call in the node's state *now*, then checks the thresholds. So a call
//! reported after a window ended counts in the next window, not the ended one, and a failure
//! reported after an overload timed out counts against a fresh idle node (the original counts it
//! first and then throws it away by resetting). A new node's window starts when the node is
//! created: the original leaves `idle_ts` at 0, so a new node's first report finds its "window"
//! long over and a first failure (error rate 100 %) overloads it.
//!
//! Counters saturate instead of overflowing, and every rate has a non-zero denominator where it
//! is computed (or is not computed), so no input panics.

use std::time::Duration;

use super::clock::Instant;
use super::config::Config;
use crate::proto::HostInfo;

/// Which queue a node is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Chosen in turn.
    Idle,
    /// Chosen only as a probe (or in panic mode).
    Overloaded,
}

/// A change of a node's state (or the restart of its idle window), and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Idle → overloaded: on a failure, the virtual error rate exceeded `err_rate`.
    ErrRate,
    /// Idle → overloaded: the consecutive failures reached `contin_err_limit`.
    ContinErr,
    /// Idle → overloaded: the window ended with a real error rate of at least `window_err_rate`.
    WindowErrRate,
    /// Idle → idle: the window ended with a lower error rate; a new window starts.
    NewWindow,
    /// Overloaded → idle: on a success, the virtual success rate exceeded `succ_rate`.
    SuccRate,
    /// Overloaded → idle: the consecutive successes reached `contin_succ_limit`.
    ContinSucc,
    /// Overloaded → idle: the node had been overloaded for `overload_timeout`.
    OverloadTimeout,
}

impl Transition {
    /// The state the node is in after the transition.
    pub fn to(self) -> NodeState {
        match self {
            Transition::ErrRate | Transition::ContinErr | Transition::WindowErrRate => NodeState::Overloaded,
            Transition::NewWindow
            | Transition::SuccRate
            | Transition::ContinSucc
            | Transition::OverloadTimeout => NodeState::Idle,
        }
    }
}

/// What the balancer knows of one node, as [`ModuleView::nodes`](super::ModuleView::nodes) shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeStatus {
    /// The node's address.
    pub host: HostInfo,
    /// Its queue.
    pub state: NodeState,
    /// When its idle window started, or when it became overloaded.
    pub since: Instant,
    /// Virtual successes (start at `init_succ_cnt` when idle).
    pub vsucc: u32,
    /// Virtual errors (start at `init_err_cnt` when overloaded).
    pub verr: u32,
    /// Real successes in the current window (what the reporter gets).
    pub rsucc: u32,
    /// Real errors in the current window.
    pub rerr: u32,
    /// Consecutive successes.
    pub contin_succ: u32,
    /// Consecutive errors.
    pub contin_err: u32,
    /// Choices of this node not reported yet in the current window.
    pub outstanding: u32,
}

/// One node's state; its module keeps it in exactly one queue, the one `state` names.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) status: NodeStatus,
    /// Calls counted since the node's last report upstream (successes, failures), whatever
    /// windows and transitions came between: the next report carries them.
    pub(super) pending: (u32, u32),
    /// The Peak-EWMA latency estimate in microseconds, as of `latency_at`.
    latency_us: f64,
    latency_at: Instant,
}

impl Node {
    /// A new idle node whose window starts `now`.
    pub(super) fn new(host: HostInfo, now: Instant, config: &Config) -> Node {
        let status = NodeStatus {
            host,
            state: NodeState::Idle,
            since: now,
            vsucc: config.init_succ_cnt,
            verr: 0,
            rsucc: 0,
            rerr: 0,
            contin_succ: 0,
            contin_err: 0,
            outstanding: 0,
        };
        let latency_us = config.latency_initial.as_secs_f64() * 1e6;
        Node { status, pending: (0, 0), latency_us, latency_at: now }
    }

    pub(super) fn host(&self) -> HostInfo {
        self.status.host
    }

    pub(super) fn state(&self) -> NodeState {
        self.status.state
    }

    /// When this node, if overloaded, turns idle by the clock.
    pub(super) fn overload_expiry(&self, config: &Config) -> Option<Instant> {
        (self.state() == NodeState::Overloaded).then(|| self.status.since + config.overload_timeout)
    }

    /// Enters `state` at `now` with fresh counters (the calls not reported yet stay pending).
    fn enter(&mut self, state: NodeState, now: Instant, config: &Config) {
        let (vsucc, verr) = match state {
            NodeState::Idle => (config.init_succ_cnt, 0),
            NodeState::Overloaded => (0, config.init_err_cnt),
        };
        let host = self.status.host;
        self.status = NodeStatus {
            host,
            state,
            since: now,
            vsucc,
            verr,
            rsucc: 0,
            rerr: 0,
            contin_succ: 0,
            contin_err: 0,
            outstanding: 0,
        };
    }

    /// Applies `transition` at `now`.
    pub(super) fn apply(&mut self, transition: Transition, now: Instant, config: &Config) {
        self.enter(transition.to(), now, config)
    }

    /// Calls counted and not reported yet.
    pub(super) fn unreported(&self) -> u32 {
        self.pending.0.saturating_add(self.pending.1)
    }

    /// What the clock decides at `now`: an idle window that ended, an overload that timed out.
    pub(super) fn by_clock(&self, now: Instant, config: &Config) -> Option<Transition> {
        let s = &self.status;
        match s.state {
            NodeState::Idle if now.has_elapsed(s.since, config.idle_timeout) => {
                let calls = u64::from(s.rsucc) + u64::from(s.rerr);
                let bad = calls > 0 && s.rerr as f64 >= config.window_err_rate * calls as f64;
                Some(if bad { Transition::WindowErrRate } else { Transition::NewWindow })
            }
            NodeState::Overloaded if now.has_elapsed(s.since, config.overload_timeout) => {
                Some(Transition::OverloadTimeout)
            }
            _ => None,
        }
    }

    /// Counts one reported call (`success` or not) and returns the threshold it crossed, if any.
    pub(super) fn count(&mut self, success: bool, config: &Config) -> Option<Transition> {
        if success {
            self.pending.0 = self.pending.0.saturating_add(1);
        } else {
            self.pending.1 = self.pending.1.saturating_add(1);
        }
        self.status.outstanding = self.status.outstanding.saturating_sub(1);
        let s = &mut self.status;
        if success {
            s.vsucc = s.vsucc.saturating_add(1);
            s.rsucc = s.rsucc.saturating_add(1);
            s.contin_succ = s.contin_succ.saturating_add(1);
            s.contin_err = 0;
        } else {
            s.verr = s.verr.saturating_add(1);
            s.rerr = s.rerr.saturating_add(1);
            s.contin_err = s.contin_err.saturating_add(1);
            s.contin_succ = 0;
        }
        // Both denominators include the count just added, so they are at least 1.
        let virtual_calls = f64::from(s.vsucc) + f64::from(s.verr);
        match (s.state, success) {
            (NodeState::Idle, false) if f64::from(s.verr) > config.err_rate * virtual_calls => {
                Some(Transition::ErrRate)
            }
            (NodeState::Idle, false) if s.contin_err >= config.contin_err_limit => {
                Some(Transition::ContinErr)
            }
            (NodeState::Overloaded, true) if f64::from(s.vsucc) > config.succ_rate * virtual_calls => {
                Some(Transition::SuccRate)
            }
            (NodeState::Overloaded, true) if s.contin_succ >= config.contin_succ_limit => {
                Some(Transition::ContinSucc)
            }
            _ => None,
        }
    }

    /// Counts a choice of this node (reports count it back down).
    pub(super) fn chosen(&mut self) {
        self.status.outstanding = self.status.outstanding.saturating_add(1);
    }

    /// Takes this node's report upstream: the calls counted since its last report (so
    /// `lars-reporter`, which adds what it receives, stores the total number of calls) and its
    /// state now.
    pub(super) fn take_report(&mut self) -> crate::proto::HostCallResult {
        let s = &self.status;
        let (succ, err) = std::mem::take(&mut self.pending);
        crate::proto::HostCallResult {
            ip: s.host.ip,
            port: s.host.port,
            succ,
            err,
            overload: s.state == NodeState::Overloaded,
        }
    }

    /// The Peak-EWMA latency estimate at `now`, in microseconds: the last estimate decayed
    /// towards zero with the time since, so a node not heard from for a while is tried again.
    pub(super) fn latency_us(&self, now: Instant, config: &Config) -> f64 {
        self.latency_us * decay_weight(now.saturating_since(self.latency_at), config.latency_decay)
    }

    /// The Peak-EWMA cost of choosing this node at `now`: latency × (outstanding + 1).
    pub(super) fn cost(&self, now: Instant, config: &Config) -> f64 {
        self.latency_us(now, config) * (f64::from(self.status.outstanding) + 1.0)
    }

    /// Folds a latency sample into the estimate. A sample above the estimate replaces it (the
    /// peak); a lower one moves it by the weight of the time since the last sample. A failure's
    /// latency only ever raises the estimate: a node that fails fast must not look fast.
    pub(super) fn observe_latency(
        &mut self,
        latency: Duration,
        success: bool,
        now: Instant,
        config: &Config,
    ) {
        let sample = latency.as_secs_f64() * 1e6;
        let weight = decay_weight(now.saturating_since(self.latency_at), config.latency_decay);
        let decayed = self.latency_us * weight;
        self.latency_us = if sample > decayed {
            sample
        } else if success {
            decayed + sample * (1.0 - weight)
        } else {
            decayed
        };
        self.latency_at = now;
    }
}

/// `e^(-elapsed/decay)`: how much an estimate `elapsed` old still weighs (1 when `decay` is zero
/// and no time passed, 0 when `decay` is zero and some did).
fn decay_weight(elapsed: Duration, decay: Duration) -> f64 {
    if decay.is_zero() {
        return if elapsed.is_zero() { 1.0 } else { 0.0 };
    }
    (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
}
