//! `cargo xtask bench [--quick] [-- OPTIONS]`: doorway against the tokio peer, side by side.
//!
//! Method (docs/ARCHITECTURE.md#benchmark-method): this 2-core box is noisy, so a comparison is
//! decided only by alternating rounds (A B A B ...), medians, and the spread of each side printed
//! beside the ratio. Every measurement starts a fresh server pinned to cpu0 and runs `doorway-bench` pinned
//! to cpu1 (`taskset`), with `--server-pid` so the bench samples the server's CPU time
//! (utime + stime, `/proc/PID/stat`) and RSS (`/proc/PID/status`) at the edges of its measured
//! window: server CPU per message is the client-independent figure.
//!
//! The workloads are data ([`scenarios`]); bytes per idle connection is scenario 5's RSS minus
//! scenario 2's (the same 100 active connections, no idle ones), divided by the idle count, per
//! round, then the median. doorway's own models (pipeline/fused, 1/2 shards) are compared the
//! same way on the 100-connection workloads.
//!
//! Timings on a shared 2-core VM are noisy, so every run also reports how much CPU other processes
//! took on the two pinned cores during its window (`/proc/stat` busy time minus the pinned
//! process's own), runs above 10% are flagged, and a full run adds user-space instructions per message counted by callgrind (when
//! valgrind is installed): a deterministic figure no neighbour can disturb.
//!
//! Scenario 7 is UDP: both servers get a `--udp 127.0.0.1:0` endpoint (only for that row, so the
//! TCP rows run exactly as before) and the bench drives it closed loop, a fixed number of request
//! datagrams with at most W outstanding per socket, where a lost one is an error; CPU per datagram
//! is over the whole run. Then 7o drives both servers open loop at twice the median rate the first
//! server reached in 7 (one offered rate for all, so their loss rates compare), and reports the
//! loss rate over the datagrams sent inside the window, split by where the kernel dropped them (the
//! server's socket, or the client's: the latter is the client falling behind, not the server).
//! Each share is over the span its counter covers: the server socket's drops are read at the
//! window's ends (a share of the window's requests), the client sockets' over the whole run (a
//! share of every request the run sent, warm-up included).
//!
//! A full run writes `bench/RESULTS.md`; `--quick` (1 round, short windows, 1,000 idle
//! connections, for CI: no thresholds) writes `target/bench/quick-results.md` instead.
//!
//! Options after `--`: `--rounds N`, `--seconds S` (window per run), `--warmup S`, `--idle N`,
//! `--model pipeline|fused` and `--shards N` (doorway's settings in the main comparison; default
//! the server's defaults; the other model runs beside it unless `--no-models`), `--no-callgrind`,
//! `--self-check` (the peer against itself: shows the noise floor, and works before doorway is
//! built).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{cargo, project_root, run as run_cmd, Result};

/// Workloads measured under callgrind, with the two message counts whose difference cancels
/// start-up and shutdown: (scenario id, fewer, more).
const CALLGRIND: &[(&str, u64, u64)] = &[("2", 10_000, 30_000), ("3", 50_000, 150_000), ("6b", 2_000, 6_000)];

/// The heading of RESULTS.md's hand-written section, kept when the bench rewrites the file.
const READING_HEADING: &str = "## Reading these figures";

/// Bound in seconds on one message-count run (scenario 7).
const UDP_TIMEOUT_S: f64 = 60.0;

/// Share of the window other processes may take on the server's or the client's core before the
/// run is flagged as disturbed.
const CONTENDED: f64 = 0.10;

/// Knobs of one bench invocation.
#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    rounds: usize,
    seconds: f64,
    warmup: f64,
    idle: usize,
    models: bool,
    self_check: bool,
    /// Count user-space instructions per message under callgrind too.
    callgrind: bool,
    /// doorway's model and shard count in the main comparison.
    model: String,
    shards: u32,
}

impl Options {
    fn parse(quick: bool, args: &[String]) -> Result<Options> {
        let mut o = if quick {
            Options {
                quick,
                rounds: 1,
                seconds: 0.5,
                warmup: 0.1,
                idle: 1_000,
                models: true,
                self_check: false,
                callgrind: false,
                model: "fused".into(),
                shards: 1,
            }
        } else {
            Options {
                quick,
                rounds: 5,
                seconds: 2.0,
                warmup: 0.3,
                idle: 10_000,
                models: true,
                self_check: false,
                callgrind: true,
                model: "fused".into(),
                shards: 1,
            }
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("bench: {flag} needs a value"));
            match flag.as_str() {
                "--rounds" => o.rounds = value()?.parse()?,
                "--seconds" => o.seconds = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--idle" => o.idle = value()?.parse()?,
                "--no-models" => o.models = false,
                "--self-check" => o.self_check = true,
                "--no-callgrind" => o.callgrind = false,
                "--model" => o.model = value()?.clone(),
                "--shards" => o.shards = value()?.parse()?,
                other => return Err(format!("bench: unknown option `{other}`").into()),
            }
        }
        if o.rounds == 0 || !(o.seconds > 0.0 && o.seconds <= 600.0) || !(0.0..=60.0).contains(&o.warmup) {
            return Err("bench: --rounds >= 1, 0 < --seconds <= 600, 0 <= --warmup <= 60".into());
        }
        // Deterministic instruction counts complement the noisy timings, where valgrind exists.
        o.callgrind = o.callgrind && crate::util::have("valgrind");
        if !matches!(o.model.as_str(), "pipeline" | "fused") || o.shards == 0 {
            return Err("bench: --model pipeline|fused, --shards >= 1".into());
        }
        Ok(o)
    }
}

/// A server under test: how to start it and how it announces its address.
#[derive(Debug, Clone)]
struct ServerSpec {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    banner: &'static str,
    /// The line that announces a UDP endpoint; with `udp`, the bench targets that endpoint.
    udp_banner: &'static str,
    udp: bool,
}

impl ServerSpec {
    fn doorway(bin: &Path, model: &str, shards: u32) -> ServerSpec {
        let label = format!("doorway {model}/{shards}");
        ServerSpec {
            label,
            program: bin.join("doorway"),
            args: ["--listen", "127.0.0.1:0", "--model", model, "--shards", &shards.to_string()]
                .into_iter()
                .chain(["--max-connections", "19000", "--log-level", "warn"])
                .map(String::from)
                .collect(),
            banner: "doorway listening on ",
            udp_banner: "doorway udp on ",
            udp: false,
        }
    }

    fn peer(bin: &Path, label: &str) -> ServerSpec {
        ServerSpec {
            label: label.to_string(),
            program: bin.join("doorway-peer"),
            args: vec!["--listen".into(), "127.0.0.1:0".into()],
            banner: "doorway-peer listening on ",
            udp_banner: "doorway-peer udp on ",
            udp: false,
        }
    }

    /// The same server with a UDP endpoint on a port of the OS's choosing, as the bench's target.
    fn with_udp(&self) -> ServerSpec {
        let mut spec = self.clone();
        spec.args.extend(["--udp".to_string(), "127.0.0.1:0".to_string()]);
        spec.udp = true;
        spec
    }
}

/// A running server, ended by its PID on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(spec: &ServerSpec, pin: Option<&str>, log_dir: &Path) -> Result<Server> {
        Server::start_wrapped(spec, pin, log_dir, &[])
    }

    /// Starts the server under `wrapper` (e.g. valgrind and its flags) if it is not empty.
    fn start_wrapped(
        spec: &ServerSpec,
        pin: Option<&str>,
        log_dir: &Path,
        wrapper: &[String],
    ) -> Result<Server> {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(cpu) = pin {
            argv.extend(["taskset".into(), "-c".into(), cpu.into()]);
        }
        argv.extend(wrapper.iter().map(Into::into));
        argv.push(spec.program.clone().into_os_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let log =
            std::fs::File::create(log_dir.join(format!("{}.stderr", spec.label.replace(['/', ' '], "-"))))?;
        cmd.args(&spec.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Every line goes to the channel (nobody listening is fine): the server never blocks
            // on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child, addr: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let next_line = || {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| format!("{} printed no startup line within 30 s", spec.label))
        };
        let line = next_line()?;
        let rest = line
            .strip_prefix(spec.banner)
            .ok_or_else(|| format!("{}: unexpected startup line {line:?}", spec.label))?;
        server.addr = rest.split_whitespace().next().unwrap_or_default().to_string();
        if spec.udp {
            // The endpoint's line follows the listening line (and the metrics line, if any).
            server.addr = loop {
                if let Some(addr) = next_line()?.strip_prefix(spec.udp_banner) {
                    break addr.trim().to_string();
                }
            };
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    fn stop(self) {
        self.stop_within(Duration::from_secs(5));
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; whether it exited by itself.
    fn stop_within(mut self, grace: Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: server {} ignored SIGTERM for {grace:?}; killing it", self.pid());
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One workload: the bench arguments (beyond address, window and server PID).
#[derive(Debug, Clone)]
struct Scenario {
    id: &'static str,
    title: String,
    args: Vec<String>,
    metrics: &'static [Metric],
    /// Against the servers' UDP endpoint (see [`ServerSpec::with_udp`]).
    udp: bool,
    /// A fixed number of requests instead of a timed window.
    messages: Option<u64>,
}

/// A figure read from (or derived from) the bench's JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Rate,
    ConnRate,
    P50,
    P99,
    CpuPerMsg,
    MbPerS,
    RssKib,
    BytesPerIdle,
    Datagrams,
    CpuPerDatagram,
    Lost,
    Offered,
    LossRate,
    ServerDropRate,
    ClientDropRate,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Rate => "msgs/s",
            Metric::ConnRate => "conns/s",
            Metric::P50 => "p50 latency",
            Metric::P99 => "p99 latency",
            Metric::CpuPerMsg => "server CPU/msg",
            Metric::MbPerS => "MB/s (each way)",
            Metric::RssKib => "server RSS",
            Metric::BytesPerIdle => "bytes/idle conn",
            Metric::Datagrams => "datagrams/s answered",
            Metric::CpuPerDatagram => "server CPU/datagram",
            Metric::Lost => "lost",
            Metric::Offered => "offered datagrams/s",
            Metric::LossRate => "loss rate",
            Metric::ServerDropRate => "of which dropped at the server's socket",
            Metric::ClientDropRate => "of which dropped at the client's sockets",
        }
    }

    fn json_key(self) -> &'static str {
        match self {
            Metric::Rate | Metric::ConnRate | Metric::Datagrams => "msgs_per_s",
            Metric::P50 => "p50_ns",
            Metric::P99 => "p99_ns",
            Metric::CpuPerMsg | Metric::CpuPerDatagram => "server_cpu_ns_per_msg",
            Metric::Lost => "lost",
            Metric::Offered => "offered_per_s",
            Metric::LossRate => "loss_rate",
            Metric::ServerDropRate => "server_drop_rate",
            Metric::ClientDropRate => "client_drop_rate",
            Metric::MbPerS => "mb_per_s",
            Metric::RssKib => "server_rss_kib",
            Metric::BytesPerIdle => "",
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Metric::Rate | Metric::ConnRate | Metric::Datagrams | Metric::Offered => si(v),
            Metric::P50 | Metric::P99 => {
                if v < 10_000.0 {
                    format!("{v:.0} ns")
                } else if v < 10_000_000.0 {
                    format!("{:.1} us", v / 1e3)
                } else {
                    format!("{:.1} ms", v / 1e6)
                }
            }
            Metric::CpuPerMsg | Metric::CpuPerDatagram => {
                if v < 10_000.0 {
                    format!("{v:.0} ns")
                } else {
                    format!("{:.1} us", v / 1e3)
                }
            }
            Metric::MbPerS => format!("{v:.0}"),
            Metric::RssKib => format!("{:.1} MiB", v / 1024.0),
            Metric::BytesPerIdle => format!("{v:.0} B"),
            Metric::Lost => format!("{v:.0}"),
            Metric::LossRate | Metric::ServerDropRate | Metric::ClientDropRate => {
                format!("{:.2}%", v * 100.0)
            }
        }
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// UDP client sockets and requests outstanding per socket (scenarios 7 and 7o).
const UDP_SOCKETS: usize = 4;
const UDP_IN_FLIGHT: usize = 16;

/// The six workloads of docs/ARCHITECTURE.md#benchmark-targets (5 and 6 in two runs each), then
/// UDP closed loop, `udp_messages` request datagrams (7).
fn scenarios(idle: usize, udp_messages: u64) -> Vec<Scenario> {
    use Metric::*;
    vec![
        Scenario {
            id: "1",
            title: "1 conn ping-pong, 64 B".into(),
            args: strings(&["--connections", "1", "--in-flight", "1"]),
            metrics: &[Rate, P50, P99, CpuPerMsg],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "2",
            title: "100 conns ping-pong, 64 B".into(),
            args: strings(&["--connections", "100", "--in-flight", "1"]),
            metrics: &[Rate, P99, CpuPerMsg, RssKib],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "3",
            title: "100 conns x 16 in flight, 64 B".into(),
            args: strings(&["--connections", "100", "--in-flight", "16"]),
            metrics: &[Rate, P99, CpuPerMsg],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "4",
            title: "new connections (connect, echo, close)".into(),
            args: strings(&["--connect-rate", "--connections", "4"]),
            metrics: &[ConnRate, P99, CpuPerMsg],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "5",
            title: format!("{idle} idle + 100 active ping-pong"),
            args: strings(&["--connections", "100", "--in-flight", "1", "--idle", &idle.to_string()]),
            metrics: &[Rate, RssKib, BytesPerIdle],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "6a",
            title: "1 KiB bodies, 100 conns x 4".into(),
            args: strings(&["--connections", "100", "--in-flight", "4", "--body-size", "1024"]),
            metrics: &[MbPerS, CpuPerMsg],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "6b",
            title: "16 KiB bodies, 100 conns x 4".into(),
            args: strings(&["--connections", "100", "--in-flight", "4", "--body-size", "16384"]),
            metrics: &[MbPerS, CpuPerMsg],
            udp: false,
            messages: None,
        },
        Scenario {
            id: "7",
            title: format!(
                "UDP request/reply, {UDP_SOCKETS} sockets x {UDP_IN_FLIGHT} in flight, 64 B, {} datagrams",
                si(udp_messages as f64)
            ),
            args: strings(&[
                "--udp",
                "--connections",
                &UDP_SOCKETS.to_string(),
                "--in-flight",
                &UDP_IN_FLIGHT.to_string(),
            ]),
            metrics: &[Datagrams, P99, CpuPerDatagram, Lost],
            udp: true,
            messages: Some(udp_messages),
        },
    ]
}

/// UDP open loop at `rate` datagrams/s (7o): twice the rate `of` reached closed loop in 7.
fn open_loop(rate: f64, of: &str) -> Scenario {
    let rate = rate.round();
    Scenario {
        id: "7o",
        title: format!("UDP open loop at 2x {of}'s rate in 7 ({}/s), {UDP_SOCKETS} sockets, 64 B", si(rate)),
        args: strings(&["--udp", "--connections", &UDP_SOCKETS.to_string(), "--rate", &rate.to_string()]),
        metrics: &[
            Metric::Offered,
            Metric::Datagrams,
            Metric::LossRate,
            Metric::ServerDropRate,
            Metric::ClientDropRate,
        ],
        udp: true,
        messages: None,
    }
}

/// One run's JSON line, or why it has none.
#[derive(Debug, Clone)]
struct Sample {
    json: String,
}

impl Sample {
    /// A numeric field of the flat JSON object.
    fn get(&self, key: &str) -> Option<f64> {
        let pat = format!("\"{key}\":");
        let start = self.json.find(&pat)? + pat.len();
        let rest = &self.json[start..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok()
    }
}

/// Measurements per (scenario id, server label): one sample per round.
#[derive(Default)]
struct Results {
    samples: Vec<(String, String, Sample)>,
    problems: Vec<String>,
}

impl Results {
    fn values(&self, scenario: &str, server: &str, metric: Metric) -> Vec<f64> {
        if metric == Metric::BytesPerIdle {
            return self.bytes_per_idle(server);
        }
        self.of(scenario, server).filter_map(|s| s.get(metric.json_key())).collect()
    }

    fn of<'a>(&'a self, scenario: &'a str, server: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |(sc, sv, _)| sc == scenario && sv == server).map(|(_, _, s)| s)
    }

    /// Per round: (RSS with idle connections - RSS without) / idle connections, in bytes.
    fn bytes_per_idle(&self, server: &str) -> Vec<f64> {
        let with: Vec<&Sample> = self.of("5", server).collect();
        let without: Vec<&Sample> = self.of("2", server).collect();
        with.iter()
            .zip(without)
            .filter_map(|(w, wo)| {
                let idle = w.get("idle_open")?;
                (idle > 0.0).then_some((w.get("server_rss_kib")? - wo.get("server_rss_kib")?) * 1024.0 / idle)
            })
            .collect()
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

fn spread(metric: Metric, values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() < 2 {
        String::new()
    } else {
        format!("{}..{}", metric.show(min), metric.show(max))
    }
}

/// The harness: binaries, pinning, log directory, and the collected results.
struct Bench {
    opts: Options,
    bench_bin: PathBuf,
    server_cpu: Option<&'static str>,
    client_cpu: Option<&'static str>,
    log_dir: PathBuf,
    results: Results,
}

impl Bench {
    /// One measurement: a fresh server, one bench run against it, the server stopped.
    fn measure(&mut self, scenario: &Scenario, spec: &ServerSpec) -> Result {
        let server = if scenario.udp {
            Server::start(&spec.with_udp(), self.server_cpu, &self.log_dir)?
        } else {
            Server::start(spec, self.server_cpu, &self.log_dir)?
        };
        let mut cmd = match self.client_cpu {
            Some(cpu) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpu]).arg(&self.bench_bin);
                cmd
            }
            None => Command::new(&self.bench_bin),
        };
        cmd.args(["--addr", &server.addr, "--json", "--progress", "0"])
            .args(["--server-pid", &server.pid().to_string()]);
        match scenario.messages {
            Some(n) => cmd.args(["--messages", &n.to_string(), "--timeout", &UDP_TIMEOUT_S.to_string()]),
            None => cmd.args([
                "--duration",
                &self.opts.seconds.to_string(),
                "--warmup",
                &self.opts.warmup.to_string(),
            ]),
        };
        cmd.args(&scenario.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let run_s =
            if scenario.messages.is_some() { UDP_TIMEOUT_S } else { self.opts.seconds + self.opts.warmup };
        let budget = Duration::from_secs_f64(run_s + 90.0);
        let out = wait_bounded(cmd.spawn()?, budget)?;
        server.stop();
        let json = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let sample = Sample { json };
        let errors = sample.get("errors");
        if errors != Some(0.0) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail = stderr.lines().find(|l| l.trim_start().starts_with("errors")).unwrap_or("no report");
            self.results.problems.push(format!(
                "scenario {} on {}: {}",
                scenario.id,
                spec.label,
                detail.trim()
            ));
        }
        if sample.get("messages") == Some(0.0) && errors == Some(0.0) {
            // Nothing failed, yet nothing came back inside the window: a stall (often another
            // process hogging the pinned core). The run still counts; say so beside the table.
            let total = sample.get("total").unwrap_or(0.0);
            self.results.problems.push(format!(
                "scenario {} on {}: no reply inside the window ({total} in all): a stall",
                scenario.id, spec.label
            ));
        }
        if let Some(share) = foreign_share(&sample) {
            if share > CONTENDED {
                self.results.problems.push(format!(
                    "scenario {} on {}: other processes took {:.0}% of a pinned core in the window (disturbed)",
                    scenario.id,
                    spec.label,
                    share * 100.0
                ));
            }
        }
        if sample.get("messages").is_some() {
            self.results.samples.push((scenario.id.to_string(), spec.label.clone(), sample));
        }
        Ok(())
    }

    /// Rounds of A B A B ... for each scenario.
    fn compare(&mut self, scenarios: &[Scenario], specs: &[ServerSpec]) -> Result {
        for scenario in scenarios {
            let started = Instant::now();
            for _ in 0..self.opts.rounds {
                for spec in specs {
                    self.measure(scenario, spec)?;
                }
            }
            eprintln!(
                "bench: scenario {} ({}) done in {:.1} s",
                scenario.id,
                scenario.title,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// A markdown table of every scenario's metrics for `labels` (median and spread each), then
    /// the ratio of each label's median to `base`'s (the last column set is the base itself).
    fn table(&self, scenarios: &[Scenario], labels: &[&str], base: &str) -> String {
        let mut s = String::new();
        let others: Vec<&str> = labels.iter().copied().filter(|l| *l != base).collect();
        let _ = write!(s, "| # | workload | metric |");
        for l in labels {
            let _ = write!(s, " {l} | spread |");
        }
        for l in &others {
            let _ = write!(s, " {l} ÷ {base} |");
        }
        let _ = write!(
            s,
            "\n|---|---|---|{}{}\n",
            "---:|---|".repeat(labels.len()),
            "---:|".repeat(others.len())
        );
        for scenario in scenarios {
            for &metric in scenario.metrics {
                let show = |m: Option<f64>| m.map_or("n/a".to_string(), |v| metric.show(v));
                let _ = write!(s, "| {} | {} | {} |", scenario.id, scenario.title, metric.name());
                for l in labels {
                    let v = self.results.values(scenario.id, l, metric);
                    let _ = write!(s, " {} | {} |", show(median(&v)), spread(metric, &v));
                }
                for l in &others {
                    let r = self.ratio(scenario.id, metric, l, base);
                    let _ = write!(s, " {} |", r.map_or("n/a".to_string(), |r| format!("{r:.2}")));
                }
                s.push('\n');
            }
        }
        s
    }

    /// User-space instructions per message of `spec` on `scenario`: callgrind's total for `more`
    /// messages minus its total for `fewer`, divided by the difference. Deterministic, so it holds
    /// on a noisy machine where timings do not.
    fn instructions_per_message(
        &mut self,
        scenario: &Scenario,
        spec: &ServerSpec,
        fewer: u64,
        more: u64,
    ) -> Option<f64> {
        let a = self.callgrind_total(scenario, spec, fewer)?;
        let b = self.callgrind_total(scenario, spec, more)?;
        (b > a).then(|| (b - a) as f64 / (more - fewer) as f64)
    }

    /// Total instructions callgrind counted in `spec` serving `messages` requests of `scenario`.
    fn callgrind_total(&mut self, scenario: &Scenario, spec: &ServerSpec, messages: u64) -> Option<u64> {
        let name =
            format!("callgrind-{}-{}-{messages}.out", scenario.id, spec.label.replace(['/', ' '], "-"));
        let out_file = self.log_dir.join(name);
        let _ = std::fs::remove_file(&out_file);
        let wrapper = vec![
            "valgrind".to_string(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out_file.display()),
        ];
        let problem = |what: String| format!("callgrind, scenario {} on {}: {what}", scenario.id, spec.label);
        let server = match Server::start_wrapped(spec, self.server_cpu, &self.log_dir, &wrapper) {
            Ok(server) => server,
            Err(e) => {
                self.results.problems.push(problem(e.to_string()));
                return None;
            }
        };
        let mut cmd = Command::new(&self.bench_bin);
        cmd.args(["--addr", &server.addr, "--progress", "0", "--timeout", "120"])
            .args(["--messages", &messages.to_string()])
            .args(&scenario.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd
            .spawn()
            .map_err(|e| e.to_string())
            .and_then(|child| wait_bounded(child, Duration::from_secs(150)).map_err(|e| e.to_string()));
        let exited = server.stop_within(Duration::from_secs(60));
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let errors =
                    stdout.lines().find(|l| l.trim_start().starts_with("errors")).unwrap_or("failed");
                self.results.problems.push(problem(errors.trim().to_string()));
                return None;
            }
            Err(e) => {
                self.results.problems.push(problem(e));
                return None;
            }
        }
        if !exited {
            self.results.problems.push(problem("the server did not exit on SIGTERM; no profile".into()));
            return None;
        }
        let text = std::fs::read_to_string(&out_file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// How much other processes ran on the pinned cores during the windows: the noise gauge.
    fn contention(&self) -> String {
        let shares: Vec<f64> =
            self.results.samples.iter().filter_map(|(_, _, s)| Some(foreign_share(s)? * 100.0)).collect();
        match median(&shares) {
            Some(m) => format!(
                "noise: other processes took {m:.1}% of the busier pinned core during the windows (median over {} \
                 runs, max {:.1}%); runs above {:.0}% are listed at the end",
                shares.len(),
                shares.iter().copied().fold(0.0, f64::max),
                CONTENDED * 100.0
            ),
            None => "noise: not measured (cores not pinned)".into(),
        }
    }

    fn ratio(&self, scenario: &str, metric: Metric, a: &str, b: &str) -> Option<f64> {
        let x = median(&self.results.values(scenario, a, metric))?;
        let y = median(&self.results.values(scenario, b, metric))?;
        (y != 0.0).then_some(x / y)
    }

    /// The benchmark targets (docs/ARCHITECTURE.md#benchmark-targets), each met or missed, as markdown
    /// lines.
    fn targets(&self, a: &str, b: &str) -> String {
        let mut s = String::new();
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut line = |what: &str, value: Option<f64>, shown: String, ok: fn(f64) -> bool| {
            let v = match value {
                Some(v) => format!("{shown} -> {}", verdict(ok(v))),
                None => "not measured".to_string(),
            };
            let _ = writeln!(s, "- {what}: {v}");
        };
        let r = self.ratio("3", Metric::CpuPerMsg, a, b);
        line("server CPU/msg pipelined <= 0.8x peer (scenario 3)", r, fmt_ratio(r), |v| v <= 0.8);
        let r = self.ratio("2", Metric::CpuPerMsg, a, b);
        line("server CPU/msg ping-pong <= 1.0x peer (scenario 2)", r, fmt_ratio(r), |v| v <= 1.0);
        let r = self.ratio("1", Metric::P50, a, b);
        line("1-connection p50 <= 1.1x peer (scenario 1)", r, fmt_ratio(r), |v| v <= 1.1);
        let m = median(&self.results.values("3", a, Metric::Rate));
        line("> 1,000,000 msgs/s pipelined (scenario 3)", m, m.map(si).unwrap_or_default(), |v| v > 1e6);
        let r = self.ratio("5", Metric::BytesPerIdle, a, b);
        line("bytes per idle connection <= 0.25x peer (scenario 5)", r, fmt_ratio(r), |v| v <= 0.25);
        s
    }
}

/// The larger share of the window other processes took on the server's or the client's core.
fn foreign_share(sample: &Sample) -> Option<f64> {
    let window = sample.get("window_s")? * 1e9;
    let server = sample.get("server_core_foreign_ns");
    let client = sample.get("client_core_foreign_ns");
    let worst =
        server.into_iter().chain(client).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?;
    (window > 0.0).then(|| worst / window)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|v| format!("{v:.2}x")).unwrap_or_default()
}

/// Waits for `child` at most `budget`, then kills it; returns its output.
fn wait_bounded(mut child: Child, budget: Duration) -> Result<std::process::Output> {
    let deadline = Instant::now() + budget;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("doorway-bench ran past its {budget:?} budget and was killed").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout, stderr })
}

/// Cores, kernel and CPU model, for the results file.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, {cpu}, Linux {}; load average at the end {}", kernel.trim(), load.join(" "))
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

/// `cargo xtask bench --quick`, the CI job.
pub fn quick() -> Result {
    run(true, &[])
}

pub fn run(quick: bool, args: &[String]) -> Result {
    let opts = Options::parse(quick, args)?;
    let wall = Instant::now();
    let mut build = cargo();
    build.args(["build", "--release", "-p", "doorway-peer", "-p", "doorway-linux", "--bin", "doorway-peer"]);
    build.args(["--bin", "doorway-bench"]);
    if !opts.self_check {
        build.args(["--bin", "doorway"]);
    }
    run_cmd(&mut build)?;
    let bin = target_dir().join("release");
    let log_dir = target_dir().join("bench");
    std::fs::create_dir_all(&log_dir)?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores >= 2 && crate::util::have("taskset");
    if !pin {
        eprintln!(
            "bench: WARNING: not pinning (cores: {cores}, taskset found: {})",
            crate::util::have("taskset")
        );
    }
    let mut bench = Bench {
        opts: opts.clone(),
        bench_bin: bin.join("doorway-bench"),
        server_cpu: pin.then_some("0"),
        client_cpu: pin.then_some("1"),
        log_dir,
        results: Results::default(),
    };
    let peer = if opts.self_check { "peer B" } else { "peer" };
    let mut main_specs = Vec::new();
    if opts.self_check {
        main_specs.push(ServerSpec::peer(&bin, "peer A"));
    } else {
        main_specs.push(ServerSpec::doorway(&bin, &opts.model, opts.shards));
        if opts.models && !opts.quick {
            // The other model too, so the default can be chosen from the same rounds.
            let other = if opts.model == "fused" { "pipeline" } else { "fused" };
            main_specs.push(ServerSpec::doorway(&bin, other, opts.shards));
        }
    }
    main_specs.push(ServerSpec::peer(&bin, peer));
    let labels: Vec<&str> = main_specs.iter().map(|s| s.label.as_str()).collect();
    // CI's quick run keeps the UDP row short too.
    let udp_messages = if opts.quick { 50_000 } else { 1_000_000 };
    let mut all = scenarios(opts.idle, udp_messages);
    bench.compare(&all, &main_specs)?;
    // 7o: every server at one offered rate, twice what the first one answered closed loop.
    match median(&bench.results.values("7", labels[0], Metric::Datagrams)) {
        Some(rate) if rate > 0.0 => {
            let open = open_loop(2.0 * rate, labels[0]);
            bench.compare(std::slice::from_ref(&open), &main_specs)?;
            all.push(open);
        }
        _ => bench.results.problems.push(format!("scenario 7o: no rate from {} in 7 to double", labels[0])),
    }

    let mut out = String::new();
    let _ = writeln!(out, "# doorway benchmark results\n");
    let _ = writeln!(out, "- date: {}", now_utc());
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- method: `cargo xtask bench{}`: {} round(s) of {} s (+{} s warm-up) per server, alternating; \
         server on cpu0, doorway-bench on cpu1; medians, spread = min..max over rounds; CPU/msg from \
         /proc utime+stime over the window; UDP rows count request datagrams answered (one in, one \
         out each), 7 over its whole run, 7o over the requests sent inside the window (its client-drop \
         share over every request of the run, the span of that counter)",
        if opts.quick { " --quick" } else { "" },
        opts.rounds,
        opts.seconds,
        opts.warmup
    );
    let _ = writeln!(out, "- {}", bench.contention());
    let _ = writeln!(out, "\n## {} vs {peer}\n", labels[..labels.len() - 1].join(", "));
    out.push_str(&bench.table(&all, &labels, peer));
    for label in &labels[..labels.len() - 1] {
        let _ = writeln!(out, "\nTargets (docs/ARCHITECTURE.md#benchmark-targets) for {label}:\n");
        out.push_str(&bench.targets(label, peer));
    }

    if opts.callgrind {
        let _ = writeln!(out, "\n## User-space instructions per message (callgrind: deterministic)\n");
        let _ = writeln!(
            out,
            "Counted by `valgrind --tool=callgrind` over the whole server process; (total for N2 messages \
             - total for N1) / (N2 - N1), so start-up cancels. Kernel work (most of the CPU) is not counted.\n"
        );
        let others: Vec<&str> = labels.iter().copied().filter(|l| *l != peer).collect();
        let _ = write!(out, "| # | workload | N1..N2 |");
        for l in &labels {
            let _ = write!(out, " {l} |");
        }
        for l in &others {
            let _ = write!(out, " {l} ÷ {peer} |");
        }
        let _ = write!(out, "\n|---|---|---|{}\n", "---:|".repeat(labels.len() + others.len()));
        for &(id, fewer, more) in CALLGRIND {
            let Some(scenario) = all.iter().find(|s| s.id == id) else { continue };
            let counts: Vec<Option<f64>> = main_specs
                .iter()
                .map(|spec| bench.instructions_per_message(scenario, spec, fewer, more))
                .collect();
            let base = counts.last().copied().flatten();
            let _ = write!(out, "| {id} | {} | {fewer}..{more} |", scenario.title);
            for c in &counts {
                let _ = write!(out, " {} |", c.map_or("n/a".into(), |v| format!("{v:.0}")));
            }
            for c in &counts[..others.len()] {
                let ratio = match (c, base) {
                    (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                    _ => "n/a".into(),
                };
                let _ = write!(out, " {ratio} |");
            }
            out.push('\n');
            eprintln!("bench: callgrind scenario {id} done");
        }
    }

    if opts.models && !opts.self_check {
        let models: Vec<ServerSpec> = [("pipeline", 1), ("fused", 1), ("pipeline", 2), ("fused", 2)]
            .into_iter()
            .map(|(m, s)| ServerSpec::doorway(&bin, m, s))
            .collect();
        let model_scenarios: Vec<Scenario> = all
            .iter()
            .filter(|s| if opts.quick { s.id == "3" } else { s.id == "2" || s.id == "3" })
            .cloned()
            .collect();
        // Fresh results so the main table's doorway samples do not mix in.
        let saved = std::mem::take(&mut bench.results);
        bench.compare(&model_scenarios, &models)?;
        let _ = writeln!(out, "\n## doorway's models (pipeline/fused x 1/2 shards, all on cpu0)\n");
        let labels: Vec<String> = models.iter().map(|m| m.label.clone()).collect();
        let _ = writeln!(out, "| # | workload | metric | {} |", labels.join(" | "));
        let _ = writeln!(out, "|---|---|---|{}", "---:|".repeat(labels.len()));
        for scenario in &model_scenarios {
            for metric in [Metric::Rate, Metric::CpuPerMsg, Metric::P99] {
                let cells: Vec<String> = labels
                    .iter()
                    .map(|l| {
                        median(&bench.results.values(scenario.id, l, metric))
                            .map_or("n/a".into(), |v| metric.show(v))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    scenario.id,
                    scenario.title,
                    metric.name(),
                    cells.join(" | ")
                );
            }
        }
        let mut model_results = std::mem::replace(&mut bench.results, saved);
        bench.results.problems.append(&mut model_results.problems);
    }
    if !bench.results.problems.is_empty() {
        let _ =
            writeln!(out, "\nRuns with errors, stalls or a disturbed core (their figures are suspect):\n");
        for p in &bench.results.problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    let _ = writeln!(out, "\nWall time: {:.0} s.", wall.elapsed().as_secs_f64());
    println!("{out}");
    let path = if opts.quick {
        target_dir().join("bench/quick-results.md")
    } else {
        project_root().join("bench/RESULTS.md")
    };
    // The hand-written reading of the figures (from its heading to the end) survives a rerun.
    if let Ok(old) = std::fs::read_to_string(&path) {
        if let Some(at) = old.find(READING_HEADING) {
            out.push('\n');
            out.push_str(&old[at..]);
        }
    }
    std::fs::write(&path, &out)?;
    eprintln!("bench: results written to {}", path.display());
    // Every workload must have produced a figure on both sides: that is what proves the harness.
    let missing: Vec<String> = all
        .iter()
        .flat_map(|sc| main_specs.iter().map(move |sp| (sc, sp)))
        .filter(|(sc, sp)| bench.results.of(sc.id, &sp.label).next().is_none())
        .map(|(sc, sp)| format!("{} on {}", sc.id, sp.label))
        .collect();
    if !missing.is_empty() {
        return Err(format!("bench: no result for {}", missing.join(", ")).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: &str) -> Sample {
        Sample { json: json.to_string() }
    }

    #[test]
    fn json_fields_are_read_by_key() {
        let s = sample(
            "{\"mode\":\"load\",\"messages\":12,\"msgs_per_s\":6.5,\"err_frame_1\":0,\"server_rss_kib\":900}",
        );
        assert_eq!(s.get("messages"), Some(12.0));
        assert_eq!(s.get("msgs_per_s"), Some(6.5));
        assert_eq!(s.get("server_rss_kib"), Some(900.0));
        assert_eq!(s.get("mode"), None);
        assert_eq!(s.get("missing"), None);
    }

    #[test]
    fn medians_and_spread() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(spread(Metric::Rate, &[1500.0, 2500.0]), "1.5k..2.5k");
        assert_eq!(spread(Metric::Rate, &[1500.0]), "");
    }

    #[test]
    fn bytes_per_idle_pairs_rounds() {
        let mut r = Results::default();
        for (rss2, rss5) in [(1000.0, 11000.0), (1100.0, 11300.0)] {
            r.samples.push((
                "2".into(),
                "x".into(),
                sample(&format!("{{\"messages\":1,\"server_rss_kib\":{rss2}}}")),
            ));
            r.samples.push((
                "5".into(),
                "x".into(),
                sample(&format!("{{\"messages\":1,\"idle_open\":1024,\"server_rss_kib\":{rss5}}}")),
            ));
        }
        assert_eq!(r.values("5", "x", Metric::BytesPerIdle), vec![10000.0, 10200.0]);
    }

    #[test]
    fn foreign_share_takes_the_busier_core() {
        let s = sample(
            "{\"window_s\":2.0,\"server_core_foreign_ns\":100000000,\"client_core_foreign_ns\":400000000}",
        );
        assert_eq!(foreign_share(&s), Some(0.2));
        assert_eq!(foreign_share(&sample("{\"window_s\":2.0}")), None);
    }

    #[test]
    fn udp_rows() {
        let all = scenarios(10, 50_000);
        let seven = all.iter().find(|s| s.id == "7").unwrap();
        assert_eq!((seven.udp, seven.messages), (true, Some(50_000)));
        assert!(all.iter().filter(|s| s.id != "7").all(|s| !s.udp && s.messages.is_none()));
        let open = open_loop(401_234.4, "doorway fused/1");
        assert_eq!(open.args[open.args.len() - 2..], ["--rate".to_string(), "401234".to_string()]);
        assert!(open.title.contains("401.2k/s"), "{}", open.title);
        assert_eq!(Metric::LossRate.show(0.01234), "1.23%");
        let s = sample("{\"mode\":\"udp-open\",\"loss_rate\":0.25,\"offered_per_s\":1000.0}");
        assert_eq!(
            (s.get(Metric::LossRate.json_key()), s.get(Metric::Offered.json_key())),
            (Some(0.25), Some(1000.0))
        );
        let spec = ServerSpec::peer(Path::new("/bin"), "peer").with_udp();
        assert!(spec.udp && spec.args.ends_with(&["--udp".to_string(), "127.0.0.1:0".to_string()]));
    }

    #[test]
    fn options() {
        let o = Options::parse(true, &[]).unwrap();
        assert_eq!((o.rounds, o.idle), (1, 1000));
        let o = Options::parse(false, &["--rounds".into(), "7".into(), "--no-models".into()]).unwrap();
        assert_eq!((o.rounds, o.seconds, o.models), (7, 2.0, false));
        assert!(Options::parse(false, &["--rounds".into(), "0".into()]).is_err());
        assert!(Options::parse(false, &["--bogus".into()]).is_err());
    }
}
