//! A harness for the Linux `doorway` server as a real child process.
//!
//! # Design
//!
//! [`ServerProcess::spawn`] starts the binary the caller names (from a Linux integration test,
//! `env!("CARGO_BIN_EXE_doorway")`) with piped stdout and stderr, and waits (with a deadline) for
//! the startup line of the operator contract (docs/ARCHITECTURE.md#operator-contract),
//! `doorway listening on <ip:port> (model=.. shards=..)`, plus the
//! `doorway metrics on http://<ip:port>/metrics` line when `--metrics-addr` was given.
//! Two reader threads keep draining both pipes for the life of the child, so a chatty server can
//! never block on a full pipe; the last [`LOG_TAIL`] bytes of stderr are kept for failure reports.
//!
//! The harness only ever signals its own child, by PID: [`ServerProcess::sigterm`] for the
//! graceful drain, and `SIGKILL` on drop if the child is still running. It also reads the child's
//! `/proc/PID/status` (VmRSS) and counts `/proc/PID/fd`, for leak checks.
//!
//! [`raise_nofile_limit`] lifts the test process's own soft `RLIMIT_NOFILE` to its hard limit, for
//! tests that hold thousands of sockets.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How much of the child's stderr is kept.
pub const LOG_TAIL: usize = 64 * 1024;

/// Why a server could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The process could not be started.
    Io(io::Error),
    /// The process exited before printing its listening line.
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// No listening line within the deadline.
    Timeout {
        /// What it wrote on stderr so far.
        stderr: String,
    },
    /// A line that should have been the listening line was not.
    BadLine {
        /// The line.
        line: String,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Io(e) => write!(f, "cannot start server: {e}"),
            SpawnError::Exited { status, stderr } => {
                write!(f, "server exited early ({status}); stderr:\n{stderr}")
            }
            SpawnError::Timeout { stderr } => write!(f, "no listening line in time; stderr:\n{stderr}"),
            SpawnError::BadLine { line } => write!(f, "unexpected startup line {line:?}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<io::Error> for SpawnError {
    fn from(e: io::Error) -> Self {
        SpawnError::Io(e)
    }
}

/// Parses `doorway listening on <ip:port> (model=<m> shards=<n>)`.
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String, usize)> {
    let rest = line.trim_end().strip_prefix("doorway listening on ")?;
    let (addr, rest) = rest.split_once(" (model=")?;
    let (model, rest) = rest.split_once(" shards=")?;
    let shards = rest.strip_suffix(')')?.parse().ok()?;
    Some((addr.parse().ok()?, model.to_string(), shards))
}

/// Parses `doorway metrics on http://<ip:port>/metrics`.
pub fn parse_metrics_line(line: &str) -> Option<SocketAddr> {
    line.trim_end().strip_prefix("doorway metrics on http://")?.strip_suffix("/metrics")?.parse().ok()
}

/// A running `doorway` child.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    model: String,
    shards: usize,
    metrics_addr: Option<SocketAddr>,
    stdout_lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .field("model", &self.model)
            .field("shards", &self.shards)
            .finish()
    }
}

fn spawn_stdout_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the child never blocks on stdout.
            }
        }
    });
    rx
}

fn spawn_stderr_reader(mut stderr: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&tail);
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut tail = sink.lock().unwrap_or_else(|p| p.into_inner());
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > LOG_TAIL {
                        let excess = tail.len() - LOG_TAIL;
                        tail.drain(..excess);
                    }
                }
            }
        }
    });
    tail
}

impl ServerProcess {
    /// Starts `bin args...` and waits up to `timeout` for its listening line (and metrics line if
    /// `--metrics-addr` is among the args).
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        bin: impl AsRef<Path>,
        args: &[S],
        timeout: Duration,
    ) -> Result<ServerProcess, SpawnError> {
        ServerProcess::spawn_with_nofile(bin, args, timeout, None)
    }

    /// [`ServerProcess::spawn`], with the child's `RLIMIT_NOFILE` (soft and hard) set to `nofile`
    /// before it starts, when given.
    pub fn spawn_with_nofile<S: AsRef<std::ffi::OsStr>>(
        bin: impl AsRef<Path>,
        args: &[S],
        timeout: Duration,
        nofile: Option<u64>,
    ) -> Result<ServerProcess, SpawnError> {
        use std::os::unix::process::CommandExt;
        let wants_metrics = args.iter().any(|a| a.as_ref() == "--metrics-addr");
        let mut command = Command::new(bin.as_ref());
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(limit) = nofile {
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
            // which is async-signal-safe, on a `rlimit` copied into the closure.
            unsafe {
                command.pre_exec(move || {
                    // SAFETY: setrlimit reads one valid `rlimit`; lowering a limit needs no privilege.
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let stderr = child.stderr.take().ok_or_else(|| io::Error::other("no stderr pipe"))?;
        let stdout_lines = spawn_stdout_reader(stdout);
        let stderr = spawn_stderr_reader(stderr);
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            model: String::new(),
            shards: 0,
            metrics_addr: None,
            stdout_lines,
            stderr,
            status: None,
        };
        let deadline = Instant::now() + timeout;
        let line = server.next_line(deadline)?;
        let (addr, model, shards) =
            parse_listening_line(&line).ok_or_else(|| SpawnError::BadLine { line: line.clone() })?;
        server.addr = addr;
        server.model = model;
        server.shards = shards;
        if wants_metrics {
            let line = server.next_line(deadline)?;
            server.metrics_addr = Some(parse_metrics_line(&line).ok_or(SpawnError::BadLine { line })?);
        }
        Ok(server)
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String, SpawnError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(line) => return Ok(line),
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    return Err(SpawnError::Timeout { stderr: self.stderr_text() });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_timeout(Duration::from_secs(5))?;
                    thread::sleep(Duration::from_millis(50));
                    let stderr = self.stderr_text();
                    return Err(match status {
                        Some(status) => SpawnError::Exited { status, stderr },
                        None => SpawnError::Timeout { stderr },
                    });
                }
            }
        }
    }

    /// Lines the server printed on stdout after the startup lines, so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.try_iter().collect()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The model named in its listening line.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The shard count named in its listening line.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The metrics endpoint, when `--metrics-addr` was given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last [`LOG_TAIL`] bytes the server wrote to stderr.
    pub fn stderr_text(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// Sends SIGTERM to the child (only if it has not been reaped yet).
    pub fn sigterm(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends `signal` to the child by PID, unless it was already reaped.
    pub fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        if self.status.is_some() || self.child.try_wait()?.is_some() {
            return Err(io::Error::other("server already exited"));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) with the PID of our own child, which has not been reaped (checked just
        // above), so the PID cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits for the child to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Ok(Some(status));
            }
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.wait_timeout(Duration::ZERO), Ok(None))
    }

    /// Resident memory of the child in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> io::Result<u64> {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident memory of the child in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> io::Result<u64> {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    /// Open file descriptors of the child (entries of `/proc/PID/fd`).
    pub fn fd_count(&self) -> io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))?.count())
    }

    /// Threads of the child (`Threads:` of `/proc/PID/status`).
    pub fn threads(&self) -> io::Result<u64> {
        proc_status_kib(self.child.id(), "Threads:")
    }

    /// CPU time (user + system) the child has used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
        let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
            return Err(io::Error::other("malformed /proc/PID/stat"));
        };
        // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is a valid name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_millis((utime + stime) * 1000 / hz))
    }

    /// Sets the child's `RLIMIT_NOFILE` (soft and hard) with prlimit(2), e.g. to drive it into
    /// EMFILE. Lowering a limit needs no privilege.
    pub fn set_nofile_limit(&mut self, limit: u64) -> io::Result<()> {
        if !self.is_running() {
            return Err(io::Error::other("server already exited"));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        let new = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: prlimit reads one valid `rlimit` and writes nothing (old limit pointer is null);
        // the PID is our own unreaped child (checked above), so it names no other process.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Kills the child with SIGKILL (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                // Child::kill sends SIGKILL to our own child's PID.
                let _ = self.child.kill();
            }
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the numeric field `key` (e.g. `VmRSS:`) of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one valid `rlimit`; raising soft to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_startup_lines() {
        let (addr, model, shards) =
            parse_listening_line("doorway listening on 127.0.0.1:4567 (model=fused shards=2)\n").unwrap();
        assert_eq!(addr, "127.0.0.1:4567".parse().unwrap());
        assert_eq!((model.as_str(), shards), ("fused", 2));
        assert!(parse_listening_line("doorway listening on 127.0.0.1:4567").is_none());
        assert_eq!(
            parse_metrics_line("doorway metrics on http://127.0.0.1:99/metrics"),
            Some("127.0.0.1:99".parse().unwrap())
        );
    }

    #[test]
    fn rlimit_and_proc() {
        let soft = raise_nofile_limit().unwrap();
        assert!(soft >= 1024);
        assert!(proc_status_kib(std::process::id(), "VmRSS:").unwrap() > 0);
    }

    #[test]
    fn spawn_reports_early_exit() {
        let err = ServerProcess::spawn("/bin/sh", &["-c", "echo oops >&2; exit 2"], Duration::from_secs(5))
            .unwrap_err();
        match err {
            SpawnError::Exited { status, stderr } => {
                assert_eq!(status.code(), Some(2));
                assert!(stderr.contains("oops"), "{stderr}");
            }
            other => panic!("{other}"),
        }
        let mut fake = ServerProcess::spawn(
            "/bin/sh",
            &["-c", "echo 'doorway listening on 127.0.0.1:1 (model=pipeline shards=1)'; exec sleep 30"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(fake.addr().port(), 1);
        assert!(fake.is_running());
        assert!(fake.fd_count().unwrap() >= 3);
        assert!(fake.cpu_time().unwrap() < Duration::from_secs(5));
        fake.set_nofile_limit(64).unwrap();
        fake.sigterm().unwrap();
        let status = fake.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(status.code(), None);
    }
}
