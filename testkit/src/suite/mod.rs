//! THE conformance suite: `docs/PROTOCOL.md` as executable checks, run against any server target.
//!
//! # Design
//!
//! One suite holds both servers (Linux `doorway` and the embedded firmware in QEMU) to one
//! definition of the protocol. A [`Target`] says where the server is and what profile it declares
//! (its `max_body`, whether its idle timeout is short enough to test, its connection limit, how
//! many connections the suite may hold at once); every case stays inside that profile, so the same
//! cases run against a server with 10,000 sockets and one with four.
//!
//! The cases are plain named functions in [`CASES`] (see `cases.rs`), each checking one rule of
//! `docs/PROTOCOL.md` black-box, through real TCP connections. They run one after another (a broadcast
//! reaches every open connection, so cases must not overlap), each with its own connections, and
//! every wait is bounded by the target's timeout. A case either passes or returns a [`Failure`]
//! that says what was expected and what arrived; [`run_suite`] collects them into a [`Report`].
//! Cases whose profile requirement is not met (no testable idle timeout, no known connection
//! limit) are reported as skipped, never as passed.

mod cases;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use doorway_core::frame::{kind, ErrorCode, Header};

use crate::client::{Client, CloseKind, ExpectCloseError, Frame, RecvError};

pub use cases::CASES;

/// A server under test and the profile it declares.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its `max_body`.
    pub max_body: u32,
    /// Its idle timeout, when short enough to test (the idle cases are skipped otherwise).
    pub idle_timeout: Option<Duration>,
    /// Its `max_connections`, when the SERVER_FULL cases should run (they hold this many).
    pub max_connections: Option<usize>,
    /// Whether a refused connection may be closed without ERROR 5 (an embedded server with no
    /// spare socket may only be able to close it). The Linux server must send ERROR 5.
    pub full_may_close_silently: bool,
    /// How many connections the suite may hold open at once (besides the SERVER_FULL case).
    pub max_concurrent: usize,
    /// The longest wait for an expected reply or close.
    pub timeout: Duration,
    /// A pause between cases, for servers that need a moment to recycle closed sockets.
    pub settle: Duration,
    /// Run only these cases (all when empty).
    pub only: Vec<String>,
    /// Skip these cases.
    pub skip: Vec<String>,
}

impl Target {
    /// A target with the Linux defaults: max_body 65,536, no idle or full cases, 16 connections.
    pub fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            max_body: doorway_core::frame::DEFAULT_MAX_BODY,
            idle_timeout: None,
            max_connections: None,
            full_may_close_silently: false,
            max_concurrent: 16,
            timeout: Duration::from_secs(5),
            settle: Duration::ZERO,
            only: Vec::new(),
            skip: Vec::new(),
        }
    }
}

/// What a case needs from the target's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Runs everywhere.
    Nothing,
    /// Needs `Target::idle_timeout`.
    IdleTimeout,
    /// Needs `Target::max_connections`.
    MaxConnections,
}

/// One named check of one rule.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its name (used by `--only`/`--skip` and in reports).
    pub name: &'static str,
    /// The rule of `docs/PROTOCOL.md` it checks, in a sentence.
    pub rule: &'static str,
    /// What the target must declare for it to run.
    pub needs: Needs,
    /// The check.
    pub run: fn(&Cx<'_>) -> Result<(), Failure>,
}

/// Why a case failed.
#[derive(Debug)]
pub enum Failure {
    /// Could not connect.
    Connect(io::Error),
    /// A write failed.
    Send {
        /// What was being sent.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// No frame (or not the expected frame) arrived.
    Recv {
        /// What was awaited.
        waiting_for: String,
        /// What happened instead.
        error: RecvError,
    },
    /// A different frame arrived.
    Unexpected {
        /// What was awaited.
        expected: String,
        /// What arrived.
        got: Frame,
    },
    /// The connection was expected to close and did not (or not cleanly).
    NotClosed {
        /// After what.
        after: String,
        /// What happened instead.
        error: ExpectCloseError,
    },
    /// Any other violated expectation.
    Check(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect failed: {e}"),
            Failure::Send { what, error } => write!(f, "sending {what} failed: {error}"),
            Failure::Recv { waiting_for, error } => write!(f, "waiting for {waiting_for}: {error}"),
            Failure::Unexpected { expected, got } => write!(f, "expected {expected}, got {got:?}"),
            Failure::NotClosed { after, error } => write!(f, "after {after}: {error}"),
            Failure::Check(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Failure {}

/// Returns `Err(Failure::Check(..))` from the enclosing case when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::suite::Failure::Check(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;

/// What a case sees: the target, and helpers that turn client results into [`Failure`]s.
#[derive(Debug)]
pub struct Cx<'a> {
    /// The target under test.
    pub target: &'a Target,
}

/// An expected frame: kind, seq and (optionally) body.
#[derive(Debug, Clone)]
pub struct Expect<'b> {
    /// Kind.
    pub kind: u16,
    /// Seq.
    pub seq: u32,
    /// Body, when it is known.
    pub body: Option<&'b [u8]>,
}

impl fmt::Display for Expect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kind {} seq {}", self.kind, self.seq)?;
        if let Some(body) = self.body {
            write!(f, " with a {}-byte body", body.len())?;
        }
        Ok(())
    }
}

impl Expect<'_> {
    fn matches(&self, frame: &Frame) -> bool {
        frame.header.kind == self.kind
            && frame.header.seq == self.seq
            && frame.header.flags == 0
            && self.body.is_none_or(|b| frame.body == b)
    }
}

/// Shorthand for an [`Expect`] with a body.
pub fn exp(kind: u16, seq: u32, body: &[u8]) -> Expect<'_> {
    Expect { kind, seq, body: Some(body) }
}

/// Shorthand for an [`Expect`] of any body.
pub fn exp_any(kind: u16, seq: u32) -> Expect<'static> {
    Expect { kind, seq, body: None }
}

impl Cx<'_> {
    /// The reply timeout.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// Opens a connection.
    pub fn connect(&self) -> Result<Client, Failure> {
        Client::connect(self.target.addr, self.target.timeout).map_err(Failure::Connect)
    }

    /// Opens a connection and proves it is served (one ECHO round trip), retrying for a while if
    /// the server refuses it with SERVER_FULL or closes it while earlier connections wind down.
    pub fn connect_served(&self, tag: u32) -> Result<Client, Failure> {
        let deadline = Instant::now() + self.target.timeout;
        loop {
            let mut client = self.connect()?;
            let body = tag.to_be_bytes();
            let reply = client.request(doorway_core::demo::kind::ECHO, tag, &body, self.target.timeout);
            match reply {
                Ok(frame) if exp(doorway_core::demo::kind::ECHO, tag, &body).matches(&frame) => {
                    return Ok(client)
                }
                Ok(frame) if frame.error().is_some_and(|(c, _)| c == ErrorCode::ServerFull.code()) => {}
                Err(RecvError::Closed { .. }) => {}
                Ok(frame) => return Err(Failure::Unexpected { expected: format!("ECHO {tag}"), got: frame }),
                Err(error) => return Err(Failure::Recv { waiting_for: format!("ECHO {tag}"), error }),
            }
            if Instant::now() >= deadline {
                return Err(Failure::Check(format!(
                    "connection {tag} refused or closed for {:?}",
                    self.target.timeout
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one frame.
    pub fn send(&self, c: &mut Client, kind: u16, seq: u32, body: &[u8]) -> Result<(), Failure> {
        c.send(kind, seq, body)
            .map_err(|error| Failure::Send { what: format!("kind {kind} seq {seq}"), error })
    }

    /// Sends raw bytes.
    pub fn send_raw(&self, c: &mut Client, bytes: &[u8], what: &str) -> Result<(), Failure> {
        c.send_raw(bytes).map_err(|error| Failure::Send { what: what.to_string(), error })
    }

    /// Receives the next frame.
    pub fn recv(&self, c: &mut Client, waiting_for: &dyn fmt::Display) -> Result<Frame, Failure> {
        self.recv_within(c, waiting_for, self.target.timeout)
    }

    /// Receives the next frame within `timeout`.
    pub fn recv_within(
        &self,
        c: &mut Client,
        waiting_for: &dyn fmt::Display,
        timeout: Duration,
    ) -> Result<Frame, Failure> {
        c.recv(timeout).map_err(|error| Failure::Recv { waiting_for: waiting_for.to_string(), error })
    }

    /// Receives the next frame and checks it.
    pub fn expect(&self, c: &mut Client, want: Expect<'_>) -> Result<Frame, Failure> {
        let frame = self.recv(c, &want)?;
        if want.matches(&frame) {
            Ok(frame)
        } else {
            Err(Failure::Unexpected { expected: want.to_string(), got: frame })
        }
    }

    /// Receives the next frame and checks it is ERROR `code` with `seq`, with a well-formed body.
    pub fn expect_error(&self, c: &mut Client, code: ErrorCode, seq: u32) -> Result<Frame, Failure> {
        let timeout = self.target.timeout;
        self.expect_error_within(c, code, seq, timeout)
    }

    /// [`Cx::expect_error`] with its own timeout.
    pub fn expect_error_within(
        &self,
        c: &mut Client,
        code: ErrorCode,
        seq: u32,
        timeout: Duration,
    ) -> Result<Frame, Failure> {
        let what = format!("ERROR {} ({}) seq {seq}", code.code(), code.name());
        let frame = self.recv_within(c, &what, timeout)?;
        check_error_frame(&frame, code, seq)
            .map_err(|_| Failure::Unexpected { expected: what, got: frame.clone() })?;
        Ok(frame)
    }

    /// Waits until the server closes the connection (EOF or reset), with no frame in between.
    pub fn expect_close(&self, c: &mut Client, after: &str) -> Result<CloseKind, Failure> {
        c.expect_close(self.target.timeout)
            .map_err(|error| Failure::NotClosed { after: after.to_string(), error })
    }

    /// Checks that no frame arrives for `quiet` (the connection may stay open).
    pub fn expect_silence(&self, c: &mut Client, quiet: Duration, after: &str) -> Result<(), Failure> {
        match c.recv(quiet) {
            Err(RecvError::Timeout { .. }) => Ok(()),
            Ok(got) => Err(Failure::Unexpected { expected: format!("nothing after {after}"), got }),
            Err(error) => Err(Failure::Recv { waiting_for: format!("silence after {after}"), error }),
        }
    }
}

/// Checks an ERROR frame: kind 3, flags 0, the code, the seq rule, and a UTF-8 reason.
pub fn check_error_frame(frame: &Frame, code: ErrorCode, seq: u32) -> Result<(), Failure> {
    let want_seq = if code.echoes_seq() { seq } else { 0 };
    ensure!(frame.header.kind == kind::ERROR, "not an ERROR: {frame:?}");
    ensure!(frame.header.flags == 0, "ERROR with flags {:#x}", frame.header.flags);
    let Some((got_code, _reason)) = frame.error() else {
        return Err(Failure::Check(format!("ERROR body is not code + UTF-8 reason: {:?}", frame.body)));
    };
    ensure!(got_code == code.code(), "ERROR code {got_code}, expected {}", code.code());
    ensure!(frame.header.seq == want_seq, "ERROR {got_code} seq {}, expected {want_seq}", frame.header.seq);
    Ok(())
}

/// A header with arbitrary fields (flags included), as bytes.
pub fn raw_header(length: u32, kind: u16, flags: u16, seq: u32) -> [u8; 12] {
    Header { length, kind, flags, seq }.to_bytes()
}

/// How one case ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// A check failed.
    Failed(Failure),
    /// Not run, and why.
    Skipped(&'static str),
}

/// One case's result.
#[derive(Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: &'static str,
    /// The rule it checks.
    pub rule: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// The results of a suite run.
#[derive(Debug)]
pub struct Report {
    /// The target's address.
    pub addr: SocketAddr,
    /// One entry per case, in run order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Whether no case failed (and at least one ran).
    pub fn passed(&self) -> bool {
        self.count_passed() > 0 && self.failures().next().is_none()
    }

    /// The failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseReport> {
        self.cases.iter().filter(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// How many cases passed.
    pub fn count_passed(&self) -> usize {
        self.cases.iter().filter(|c| matches!(c.outcome, Outcome::Passed)).count()
    }

    /// How many cases were skipped.
    pub fn count_skipped(&self) -> usize {
        self.cases.iter().filter(|c| matches!(c.outcome, Outcome::Skipped(_))).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance suite against {}", self.addr)?;
        for case in &self.cases {
            let ms = case.elapsed.as_millis();
            match &case.outcome {
                Outcome::Passed => writeln!(f, "  ok      {:<28} {ms:>6} ms", case.name)?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {:<28} ({why})", case.name)?,
                Outcome::Failed(failure) => {
                    writeln!(f, "  FAILED  {:<28} {ms:>6} ms", case.name)?;
                    writeln!(f, "          rule: {}", case.rule)?;
                    writeln!(f, "          {failure}")?;
                }
            }
        }
        let failed = self.failures().count();
        write!(
            f,
            "conformance: {} passed, {failed} failed, {} skipped",
            self.count_passed(),
            self.count_skipped()
        )
    }
}

/// Runs every case of [`CASES`] allowed by the target (one after another) and reports.
pub fn run_suite(target: &Target) -> Report {
    let cx = Cx { target };
    let mut cases = Vec::new();
    for case in CASES {
        let skip = if !target.only.is_empty() && !target.only.iter().any(|n| n == case.name) {
            Some("not selected")
        } else if target.skip.iter().any(|n| n == case.name) {
            Some("skipped by the target")
        } else {
            match case.needs {
                Needs::IdleTimeout if target.idle_timeout.is_none() => {
                    Some("target declares no testable idle timeout")
                }
                Needs::MaxConnections if target.max_connections.is_none() => {
                    Some("target declares no max_connections")
                }
                _ => None,
            }
        };
        if let Some(why) = skip {
            if why != "not selected" {
                cases.push(CaseReport {
                    name: case.name,
                    rule: case.rule,
                    outcome: Outcome::Skipped(why),
                    elapsed: Duration::ZERO,
                });
            }
            continue;
        }
        if !target.settle.is_zero() {
            thread::sleep(target.settle);
        }
        let start = Instant::now();
        let outcome = match (case.run)(&cx) {
            Ok(()) => Outcome::Passed,
            Err(failure) => Outcome::Failed(failure),
        };
        cases.push(CaseReport { name: case.name, rule: case.rule, outcome, elapsed: start.elapsed() });
    }
    Report { addr: target.addr, cases }
}
