//! `lars-bench`: one load generator for the Lars services, doorway's and the original's alike.
//!
//! Every subcommand drives a server over its wire only (the frames of `doorway_lars`), so the
//! same client measures `lars-dns` and the original `lars_dns`, `lars-agent` and `lars_lb_agent`,
//! `lars-reporter` and `lars_reporter`. Plain threads and blocking sockets, one per connection.
//!
//! - `dns`: GetRoute requests/s over C connections with D requests in flight on each.
//! - `dns-push`: C subscribed connections; N route changes committed to the database; the delay
//!   from each commit to each connection's pushed GetRouteResponse.
//! - `reporter`: ReportStatusRequests with distinct keys; the new rows stored per second,
//!   read back from the database.
//! - `agent`: get_host round trips/s through the agent's UDP ports.
//! - `agent-mem`: the agent's RSS before and after it holds N modules.
//!
//! With `--server-pid PID` (repeatable) a run also reads the processes' CPU time (utime + stime of
//! `/proc/PID/stat`, every thread) at the start and the end of the measured window and prints the
//! CPU per operation. Every load loop stops at a count or a time, whichever comes first. Each run
//! ends with one line `RESULT {json}` for scripts (`lars/bench/compare.sh`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use doorway_lars::client::agent_port;
use doorway_lars::{
    decode_frame, encode_frame, GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, Head,
    HostCallResult, MsgId, ReportStatusRequest, HEAD_LEN,
};
use prost::Message;

#[derive(Parser)]
#[command(name = "lars-bench", about = "Load generator for Lars services (doorway's and the original's)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// GetRoute requests/s against a route service.
    Dns(DnsArgs),
    /// Push delay after a route change committed to the route service's MySQL/MariaDB database.
    DnsPush(PushArgs),
    /// New report rows stored per second by a reporter.
    Reporter(ReporterArgs),
    /// get_host round trips/s through an agent.
    Agent(AgentArgs),
    /// An agent's RSS once it holds N modules.
    AgentMem(AgentMemArgs),
    /// Medians of the RESULT lines in files (grouped by kind, label and load shape).
    Summary {
        /// Files holding RESULT lines (other lines are skipped).
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Args)]
struct Window {
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Server processes whose CPU time is read over the window (repeatable).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// A label copied into the RESULT line (e.g. "doorway" or "original").
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
struct DnsArgs {
    /// The route service.
    #[arg(long, default_value = "127.0.0.1:7778")]
    addr: SocketAddr,
    /// TCP connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Modules asked for, MODID:CMDID, given to the connections in turn.
    #[arg(long, value_delimiter = ',', default_value = "1:1,1:2,1:3")]
    mods: Vec<String>,
    /// Nodes every answer must hold (checked on every 1024th answer, and on the first).
    #[arg(long, default_value_t = 3)]
    expect_hosts: usize,
    /// Stop after this many answers in all, whatever the time.
    #[arg(long, default_value_t = 1_000_000_000)]
    max: u64,
    #[command(flatten)]
    window: Window,
}

#[derive(Args)]
struct PushArgs {
    /// The route service.
    #[arg(long, default_value = "127.0.0.1:7778")]
    addr: SocketAddr,
    /// The route database the service polls (mysql://user:pass@host:port/db).
    #[arg(long)]
    db: String,
    /// Subscribed connections.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Route changes.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// The module changed, MODID:CMDID (its rows in RouteData are replaced).
    #[arg(long, default_value = "1:3")]
    module: String,
    /// Longest wait for one change's pushes, seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
struct ReporterArgs {
    /// The reporter.
    #[arg(long, default_value = "127.0.0.1:7779")]
    addr: SocketAddr,
    /// Where the rows land: mysql://... or sqlite://PATH.
    #[arg(long)]
    db: String,
    /// TCP connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Rows in all (every one a new key).
    #[arg(long, default_value_t = 300_000)]
    rows: u64,
    /// Rows per ReportStatusRequest (an agent sends one per module, one row per node).
    #[arg(long, default_value_t = 3)]
    per_msg: u32,
    /// Messages per second offered, all connections together (the original drops a connection
    /// that has more than 8 MB unread).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// The first modid; keys are (base + i % 10000, 1 + i / 10000, 10.0.0.j, 7000 + j).
    #[arg(long, default_value_t = 100_000)]
    base_modid: i32,
    /// Longest wait for the rows to be stored, seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Processes whose CPU time is read from the first send to the last row stored (repeatable).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// The database server's process (its CPU is printed on its own).
    #[arg(long)]
    db_pid: Option<u32>,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
struct AgentArgs {
    /// The agent's first UDP port (modules go to port + (modid + cmdid) % 3).
    #[arg(long, default_value = "127.0.0.1:8888")]
    base: SocketAddrV4,
    /// UDP sockets (one thread each).
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// Requests in flight on each socket.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Modules asked for, MODID:CMDID, in turn.
    #[arg(long, value_delimiter = ',', default_value = "1:1,1:2,1:3")]
    mods: Vec<String>,
    /// Stop after this many answers in all, whatever the time.
    #[arg(long, default_value_t = 1_000_000_000)]
    max: u64,
    #[command(flatten)]
    window: Window,
}

#[derive(Args)]
struct AgentMemArgs {
    /// The agent's first UDP port.
    #[arg(long, default_value = "127.0.0.1:8888")]
    base: SocketAddrV4,
    /// The agent's process.
    #[arg(long)]
    agent_pid: u32,
    /// Modules: (base_modid + i, 1) for i in 0..modules.
    #[arg(long, default_value_t = 10_000)]
    modules: u32,
    #[arg(long, default_value_t = 1000)]
    base_modid: i32,
    /// Longest wait for every module to answer SUCC, seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    #[arg(long, default_value = "")]
    label: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Dns(a) => dns(a),
        Cmd::DnsPush(a) => dns_push(a),
        Cmd::Reporter(a) => reporter(a),
        Cmd::Agent(a) => agent(a),
        Cmd::AgentMem(a) => agent_mem(a),
        Cmd::Summary { files } => summary(&files),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lars-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ: 100 on every Linux architecture's ABI).
const CLK_TCK: f64 = 100.0;

/// utime + stime of a process, all threads, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = read_proc(pid, "stat")?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = stat.rsplit_once(") ").ok_or("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11).ok_or("short stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("short stat")?.parse()?;
    Ok((utime + stime) as f64 / CLK_TCK)
}

/// `/proc/PID/FILE`, with an error that names the process (a server that exited shows as such).
fn read_proc(pid: u32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|e| format!("process {pid}: cannot read /proc/{pid}/{file} ({e}); has it exited?").into())
}

fn cpu_sum(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = read_proc(pid, "status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn parse_module(s: &str) -> Result<(i32, i32)> {
    let (m, c) = s.split_once(':').ok_or_else(|| format!("module {s:?} is not MODID:CMDID"))?;
    Ok((m.trim().parse()?, c.trim().parse()?))
}

fn now_unix() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A `RESULT {...}` line: keys in order, numbers as given, strings quoted.
struct Json(Vec<(String, String)>);

impl Json {
    fn new(kind: &str, label: &str) -> Json {
        let mut j = Json(Vec::new());
        j.s("kind", kind).s("label", label);
        j
    }
    fn s(&mut self, k: &str, v: &str) -> &mut Json {
        self.0.push((k.into(), format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))));
        self
    }
    fn n(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Json {
        let v = v.to_string();
        let v = if v == "NaN" || v == "inf" { "null".to_string() } else { v };
        self.0.push((k.into(), v));
        self
    }
    fn print(&self) {
        let body: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("RESULT {{{}}}", body.join(","));
    }
}

/// The measured window of a closed-loop run: counts and CPU at its start and end.
struct Measured {
    ops: u64,
    secs: f64,
    cpu: f64,
}

fn measure(window: &Window, counter: &AtomicU64, max: u64, stop: &AtomicBool) -> Result<Measured> {
    let warm_end = Instant::now() + Duration::from_secs_f64(window.warmup);
    while Instant::now() < warm_end && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(10));
    }
    let (c0, t0, cpu0) = (counter.load(Ordering::Relaxed), Instant::now(), cpu_sum(&window.server_pids)?);
    let end = t0 + Duration::from_secs_f64(window.duration);
    while Instant::now() < end && counter.load(Ordering::Relaxed) < max && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(5));
    }
    let (c1, t1, cpu1) = (counter.load(Ordering::Relaxed), Instant::now(), cpu_sum(&window.server_pids)?);
    stop.store(true, Ordering::Relaxed);
    Ok(Measured { ops: c1 - c0, secs: (t1 - t0).as_secs_f64(), cpu: cpu1 - cpu0 })
}

fn print_closed_loop(kind: &str, window: &Window, m: &Measured, extra: &[(&str, String)]) {
    let rate = m.ops as f64 / m.secs;
    let us_per_op = if m.ops > 0 { m.cpu * 1e6 / m.ops as f64 } else { f64::NAN };
    let cores = m.cpu / m.secs;
    let extra_text: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "{kind} {} {}: {:.0} ops/s over {:.2} s; server CPU {:.2} s ({:.2} cores) = {:.2} us/op",
        window.label,
        extra_text.join(" "),
        rate,
        m.secs,
        m.cpu,
        cores,
        us_per_op
    );
    let mut j = Json::new(kind, &window.label);
    for (k, v) in extra {
        j.n(k, v);
    }
    j.n("ops", m.ops)
        .n("secs", format!("{:.3}", m.secs))
        .n("rate", format!("{rate:.0}"))
        .n("server_cpu_s", format!("{:.2}", m.cpu))
        .n("server_cores", format!("{cores:.3}"))
        .n("cpu_us_per_op", format!("{us_per_op:.3}"));
    j.print();
}

fn join_all(handles: Vec<thread::JoinHandle<Result<()>>>) -> Result<()> {
    let mut first = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(_) => {
                first.get_or_insert_with(|| "a load thread panicked".into());
            }
        }
    }
    first.map_or(Ok(()), Err)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

// ---------------------------------------------------------------------------------------------
// dns: GetRoute closed loop

fn dns(a: DnsArgs) -> Result<()> {
    let mods: Vec<(i32, i32)> = a.mods.iter().map(|s| parse_module(s)).collect::<Result<_>>()?;
    if mods.is_empty() || a.conns == 0 || a.depth == 0 {
        return Err("need at least one module, connection and request in flight".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..a.conns {
        let module = mods[i % mods.len()];
        let (stop, count, bad) = (stop.clone(), count.clone(), bad.clone());
        let (addr, depth, expect, max) = (a.addr, a.depth, a.expect_hosts, a.max);
        handles.push(thread::spawn(move || {
            let r = dns_conn(addr, module, depth, expect, max, &stop, &count, &bad);
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r
        }));
    }
    let m = measure(&a.window, &count, a.max, &stop)?;
    join_all(handles)?;
    let bad = bad.load(Ordering::Relaxed);
    print_closed_loop(
        "dns",
        &a.window,
        &m,
        &[("conns", a.conns.to_string()), ("depth", a.depth.to_string()), ("bad", bad.to_string())],
    );
    if bad > 0 {
        return Err(format!("{bad} answers were not the expected GetRouteResponse").into());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn dns_conn(
    addr: SocketAddr,
    (modid, cmdid): (i32, i32),
    depth: usize,
    expect_hosts: usize,
    max: u64,
    stop: &AtomicBool,
    count: &AtomicU64,
    bad: &AtomicU64,
) -> Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let request = encode_frame(MsgId::GetRouteRequest, &GetRouteRequest { modid, cmdid })?;
    s.write_all(&request.repeat(depth))?;
    let mut buf = vec![0u8; 2 * (HEAD_LEN + doorway_lars::BODY_LIMIT)];
    let (mut have, mut seen) = (0usize, 0u64);
    let mut out = Vec::with_capacity(request.len() * depth);
    while !stop.load(Ordering::Relaxed) && count.load(Ordering::Relaxed) < max {
        let n = match s.read(&mut buf[have..]) {
            Ok(0) => return Err(format!("{addr} closed the connection").into()),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        have += n;
        let (mut off, mut replies) = (0usize, 0usize);
        while have - off >= HEAD_LEN {
            let head = Head::parse(&buf[off..have])?;
            let end = off + HEAD_LEN + head.msglen;
            if end > have {
                break;
            }
            if head.msgid != i32::from(MsgId::GetRouteResponse) {
                bad.fetch_add(1, Ordering::Relaxed);
            } else if seen % 1024 == 0 {
                let r = GetRouteResponse::decode(&buf[off + HEAD_LEN..end])?;
                if (r.modid, r.cmdid) != (modid, cmdid) || r.host.len() != expect_hosts {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen += 1;
            off = end;
            replies += 1;
        }
        buf.copy_within(off..have, 0);
        have -= off;
        count.fetch_add(replies as u64, Ordering::Relaxed);
        out.clear();
        for _ in 0..replies {
            out.extend_from_slice(&request);
        }
        s.write_all(&out)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// dns-push: delay from a committed route change to the pushed answer

/// Per connection, the pushes of the changed module it received: (when, nodes).
type Arrivals = Vec<Vec<(Instant, usize)>>;

fn dns_push(a: PushArgs) -> Result<()> {
    use mysql::prelude::Queryable;
    let (modid, cmdid) = parse_module(&a.module)?;
    let mut db = mysql::Conn::new(mysql::Opts::from_url(&a.db)?)?;
    // Every connection subscribes by asking for the module once.
    let request = encode_frame(MsgId::GetRouteRequest, &GetRouteRequest { modid, cmdid })?;
    let received: Arc<Mutex<Arrivals>> = Arc::new(Mutex::new(vec![Vec::new(); a.conns]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..a.conns {
        let mut s = TcpStream::connect(a.addr)?;
        s.set_nodelay(true)?;
        s.write_all(&request)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let first = read_frame(&mut s)?;
        if first.0 != i32::from(MsgId::GetRouteResponse) {
            return Err(format!("connection {i}: answer msgid {}", first.0).into());
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let (received, stop) = (received.clone(), stop.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let n = match s.read(&mut buf) {
                    Ok(0) => return Err("route service closed a subscribed connection".into()),
                    Ok(n) => n,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e.into()),
                };
                let at = Instant::now();
                pending.extend_from_slice(&buf[..n]);
                let mut off = 0;
                while pending.len() - off >= HEAD_LEN {
                    let head = Head::parse(&pending[off..])?;
                    let end = off + HEAD_LEN + head.msglen;
                    if end > pending.len() {
                        break;
                    }
                    if head.msgid == i32::from(MsgId::GetRouteResponse) {
                        let r = GetRouteResponse::decode(&pending[off + HEAD_LEN..end])?;
                        if (r.modid, r.cmdid) == (modid, cmdid) {
                            received.lock().unwrap()[i].push((at, r.host.len()));
                        }
                    }
                    off = end;
                }
                pending.drain(..off);
            }
            Ok(())
        }));
    }
    let mut delays_ms: Vec<f64> = Vec::new();
    let mut per_change = Vec::new();
    let mut missing = 0usize;
    for c in 0..a.changes {
        // Land the commits at different points of the pollers' period.
        thread::sleep(Duration::from_millis(1100 + (c as u64 * 373) % 1000));
        let hosts = 3 + c % 2; // alternately 3 and 4 nodes, so each push is told apart
        let mut tx = db.start_transaction(mysql::TxOpts::default())?;
        tx.exec_drop("DELETE FROM RouteData WHERE modid = ? AND cmdid = ?", (modid, cmdid))?;
        for h in 0..hosts {
            tx.exec_drop(
                "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (?, ?, ?, ?)",
                (modid, cmdid, u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1)), 9001 + h as u32),
            )?;
        }
        tx.query_drop("UPDATE RouteVersion SET version = version + 1 WHERE id = 1")?;
        let version: i64 =
            tx.query_first("SELECT version FROM RouteVersion WHERE id = 1")?.ok_or("no version row")?;
        tx.exec_drop(
            "INSERT INTO RouteChange(modid, cmdid, version) VALUES (?, ?, ?)",
            (modid, cmdid, version),
        )?;
        tx.commit()?;
        let committed = Instant::now();
        let deadline = committed + Duration::from_secs_f64(a.timeout);
        let mut got: Vec<f64>;
        loop {
            {
                let r = received.lock().unwrap();
                got = r
                    .iter()
                    .filter_map(|v| {
                        v.get(c).filter(|x| x.1 == hosts).map(|x| (x.0 - committed).as_secs_f64() * 1e3)
                    })
                    .collect();
            }
            if got.len() == a.conns || Instant::now() > deadline || handles.iter().any(|h| h.is_finished()) {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        missing += a.conns - got.len();
        got.sort_by(f64::total_cmp);
        eprintln!(
            "dns-push {} change {c}: {} of {} pushed; delay p50 {:.1} ms, max {:.1} ms",
            a.label,
            got.len(),
            a.conns,
            quantile(&got, 0.5),
            got.last().copied().unwrap_or(f64::NAN)
        );
        per_change.push(quantile(&got, 0.5));
        delays_ms.extend(got);
        if handles.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    join_all(handles)?;
    delays_ms.sort_by(f64::total_cmp);
    let mut j = Json::new("dns-push", &a.label);
    j.n("conns", a.conns)
        .n("changes", a.changes)
        .n("missing", missing)
        .n("p50_ms", format!("{:.1}", quantile(&delays_ms, 0.5)))
        .n("p99_ms", format!("{:.1}", quantile(&delays_ms, 0.99)))
        .n("max_ms", format!("{:.1}", delays_ms.last().copied().unwrap_or(f64::NAN)))
        .n("min_ms", format!("{:.1}", delays_ms.first().copied().unwrap_or(f64::NAN)));
    j.print();
    if missing > 0 {
        return Err(format!("{missing} pushes never arrived").into());
    }
    Ok(())
}

/// One frame read whole from a blocking stream: (msgid, body).
fn read_frame(s: &mut TcpStream) -> Result<(i32, Vec<u8>)> {
    let mut head = [0u8; HEAD_LEN];
    s.read_exact(&mut head)?;
    let head = Head::parse(&head)?;
    let mut body = vec![0u8; head.msglen];
    s.read_exact(&mut body)?;
    Ok((head.msgid, body))
}

// ---------------------------------------------------------------------------------------------
// reporter: new rows stored per second

enum Db {
    Mysql(mysql::Conn),
    Sqlite(rusqlite::Connection),
}

impl Db {
    fn open(url: &str) -> Result<Db> {
        if url.starts_with("mysql://") {
            Ok(Db::Mysql(mysql::Conn::new(mysql::Opts::from_url(url)?)?))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(Db::Sqlite(c))
        } else {
            Err(format!("database {url:?}: neither mysql:// nor sqlite://").into())
        }
    }

    /// Rows of ServerCallStatus with modid >= base.
    fn rows(&mut self, base: i32) -> Result<u64> {
        const SQL: &str = "SELECT COUNT(*) FROM ServerCallStatus WHERE modid >= ?";
        match self {
            Db::Mysql(c) => {
                use mysql::prelude::Queryable;
                Ok(c.exec_first::<u64, _, _>(SQL, (base,))?.unwrap_or(0))
            }
            Db::Sqlite(c) => Ok(c.query_row(SQL, [base], |r| r.get::<_, i64>(0))? as u64),
        }
    }

    /// A cheap counter that moves with every new row and never runs behind the table: the
    /// server's `Handler_write` on MySQL/MariaDB (row writes of any table, so it may run ahead),
    /// the count itself on SQLite.
    fn progress(&mut self, base: i32) -> Result<u64> {
        match self {
            Db::Mysql(c) => {
                use mysql::prelude::Queryable;
                let row: Option<(String, u64)> = c.query_first("SHOW GLOBAL STATUS LIKE 'Handler_write'")?;
                Ok(row.ok_or("no Handler_write status")?.1)
            }
            Db::Sqlite(_) => self.rows(base),
        }
    }
}

fn reporter(a: ReporterArgs) -> Result<()> {
    if a.conns == 0 || a.per_msg == 0 {
        return Err("need a connection and a row per message".into());
    }
    let mut db = Db::open(&a.db)?;
    let before = db.rows(a.base_modid)?;
    let progress0 = db.progress(a.base_modid)?;
    let msgs = a.rows.div_ceil(u64::from(a.per_msg));
    let rows = msgs * u64::from(a.per_msg);
    let mut pids = a.server_pids.clone();
    pids.extend(a.db_pid);
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect::<Result<_>>()?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.timeout);
    let sent_at = Arc::new(Mutex::new(None::<Instant>));
    let mut handles = Vec::new();
    for t in 0..a.conns {
        let (addr, conns, per_msg, base, sent_at) =
            (a.addr, a.conns as u64, a.per_msg, a.base_modid, sent_at.clone());
        let rate = (a.rate as f64 / conns as f64).max(1.0);
        handles.push(thread::spawn(move || -> Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            let mine: Vec<u64> = (t as u64..msgs).step_by(conns as usize).collect();
            let start = Instant::now();
            let mut out = Vec::new();
            let mut done = 0usize;
            while done < mine.len() {
                if Instant::now() > deadline {
                    return Err("sending did not finish before the timeout".into());
                }
                let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(mine.len());
                if due <= done {
                    thread::sleep(Duration::from_micros(200));
                    continue;
                }
                out.clear();
                for &g in &mine[done..due.min(done + 2048)] {
                    let req = ReportStatusRequest {
                        modid: base + (g % 10_000) as i32,
                        cmdid: 1 + (g / 10_000) as i32,
                        caller: u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1)) as i32,
                        results: (0..per_msg)
                            .map(|j| HostCallResult {
                                ip: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)) as i32 + j as i32,
                                port: 7000 + j as i32,
                                succ: 1,
                                err: 0,
                                overload: false,
                            })
                            .collect(),
                        ts: now_unix(),
                    };
                    out.extend_from_slice(&encode_frame(MsgId::ReportStatusRequest, &req)?);
                    done += 1;
                }
                s.write_all(&out).map_err(|e| format!("send: {e} (after {done} messages)"))?;
            }
            let now = Instant::now();
            let mut last = sent_at.lock().unwrap();
            if last.is_none_or(|l| l < now) {
                *last = Some(now);
            }
            // Hold the connection open until the rows are counted, as an agent would.
            while Instant::now() < deadline && !SENDERS_DONE.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }));
    }
    // Poll until every row is there, or nothing moved for 15 s, or the timeout.
    let (mut last_progress, mut last_change) = (progress0, t0);
    let mut stored_at = None;
    let mut failed = None;
    let mut last_count = t0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        if let Some(h) = handles.iter().position(|h| h.is_finished()) {
            // A sender ended early: only an error ends one before SENDERS_DONE.
            let h = handles.swap_remove(h);
            if let Err(e) = h.join().map_err(|_| Error::from("sender panicked")).and_then(|r| r) {
                failed = Some(e);
                break;
            }
        }
        let p = db.progress(a.base_modid)?;
        if p != last_progress {
            (last_progress, last_change) = (p, Instant::now());
        }
        if p - progress0 >= rows && last_count.elapsed() >= Duration::from_millis(250) {
            // The counter may count other writes too; confirm with the table itself.
            last_count = Instant::now();
            if db.rows(a.base_modid)? - before >= rows {
                stored_at = Some(Instant::now());
                break;
            }
        }
        if last_change.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let t_end = stored_at.unwrap_or_else(Instant::now);
    let cpu1: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect::<Result<_>>()?;
    SENDERS_DONE.store(true, Ordering::Relaxed);
    let join = join_all(handles);
    let stored = db.rows(a.base_modid)? - before;
    let secs = (t_end - t0).as_secs_f64();
    let send_secs = sent_at.lock().unwrap().map_or(f64::NAN, |s| (s - t0).as_secs_f64());
    let n_servers = a.server_pids.len();
    let server_cpu: f64 = (0..n_servers).map(|i| cpu1[i] - cpu0[i]).sum();
    let db_cpu = if a.db_pid.is_some() { cpu1[n_servers] - cpu0[n_servers] } else { f64::NAN };
    let rate = stored as f64 / secs;
    eprintln!(
        "reporter {}: {stored} of {rows} rows stored in {secs:.2} s = {rate:.0} rows/s (sent in {send_secs:.2} s); \
         server CPU {server_cpu:.2} s = {:.2} us/row; database CPU {db_cpu:.2} s = {:.2} us/row",
        a.label,
        server_cpu * 1e6 / stored.max(1) as f64,
        db_cpu * 1e6 / stored.max(1) as f64,
    );
    let mut j = Json::new("reporter", &a.label);
    j.n("conns", a.conns)
        .n("rows", rows)
        .n("stored", stored)
        .n("complete", stored_at.is_some())
        .n("secs", format!("{secs:.3}"))
        .n("send_secs", format!("{send_secs:.3}"))
        .n("rate", format!("{rate:.0}"))
        .n("server_cpu_s", format!("{server_cpu:.2}"))
        .n("db_cpu_s", format!("{db_cpu:.2}"))
        .n("server_cpu_us_per_row", format!("{:.3}", server_cpu * 1e6 / stored.max(1) as f64))
        .n("db_cpu_us_per_row", format!("{:.3}", db_cpu * 1e6 / stored.max(1) as f64));
    j.print();
    if let Some(e) = failed {
        return Err(e);
    }
    join?;
    if stored_at.is_none() {
        return Err(format!("only {stored} of {rows} rows were stored").into());
    }
    Ok(())
}

static SENDERS_DONE: AtomicBool = AtomicBool::new(false);

// ---------------------------------------------------------------------------------------------
// agent: get_host closed loop over UDP

fn get_host_frame(seq: u32, (modid, cmdid): (i32, i32)) -> Result<Vec<u8>> {
    Ok(encode_frame(MsgId::GetHostRequest, &GetHostRequest { seq, modid, cmdid })?)
}

fn module_addr(base: SocketAddrV4, (modid, cmdid): (i32, i32)) -> Result<SocketAddrV4> {
    let port = agent_port(base.port(), modid, cmdid).ok_or("agent base port too high")?;
    Ok(SocketAddrV4::new(*base.ip(), port))
}

/// Asks for `module` until the agent answers SUCC (it fetches an unknown module's route first).
fn warm_module(sock: &UdpSocket, base: SocketAddrV4, module: (i32, i32), timeout: Duration) -> Result<()> {
    let to = module_addr(base, module)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    let mut seq = 1u32 << 31;
    while Instant::now() < deadline {
        seq += 1;
        sock.send_to(&get_host_frame(seq, module)?, to)?;
        let mut answered = false;
        while let Ok(n) = sock.recv(&mut buf) {
            let frame = decode_frame(&buf[..n])?;
            if frame.msgid == i32::from(MsgId::GetHostResponse) {
                let r = GetHostResponse::decode(frame.body)?;
                if r.seq == seq {
                    if r.retcode == 0 {
                        return Ok(());
                    }
                    answered = true;
                    break;
                }
            }
        }
        if answered {
            thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!("module {module:?}: no SUCC from the agent at {base} within {timeout:?}").into())
}

fn agent(a: AgentArgs) -> Result<()> {
    let mods: Vec<(i32, i32)> = a.mods.iter().map(|s| parse_module(s)).collect::<Result<_>>()?;
    if mods.is_empty() || a.sockets == 0 || a.depth == 0 {
        return Err("need at least one module, socket and request in flight".into());
    }
    {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        for &m in &mods {
            warm_module(&sock, a.base, m, Duration::from_secs(10))?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..a.sockets {
        let (stop, ok, other, lost, mods) =
            (stop.clone(), ok.clone(), other.clone(), lost.clone(), mods.clone());
        let (base, depth, max) = (a.base, a.depth, a.max);
        handles.push(thread::spawn(move || -> Result<()> {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let targets: Vec<SocketAddrV4> =
                mods.iter().map(|&m| module_addr(base, m)).collect::<Result<_>>()?;
            let mut seq = 0u32;
            let mut next = t; // module index, so sockets start on different modules
            let mut send = |seq: &mut u32| -> Result<()> {
                let i = next % mods.len();
                next += 1;
                *seq += 1;
                sock.send_to(&get_host_frame(*seq, mods[i])?, targets[i])?;
                Ok(())
            };
            let mut floor = 1u32; // answers to seqs below it were given up as lost
            for _ in 0..depth {
                send(&mut seq)?;
            }
            let mut inflight = depth;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && ok.load(Ordering::Relaxed) < max {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let frame = decode_frame(&buf[..n])?;
                        if frame.msgid != i32::from(MsgId::GetHostResponse) {
                            return Err(format!("agent answered msgid {}", frame.msgid).into());
                        }
                        let r = GetHostResponse::decode(frame.body)?;
                        if r.seq < floor || r.seq > seq {
                            continue; // late answer to a request already given up
                        }
                        if r.retcode == 0 && r.host.is_some() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                        inflight -= 1;
                    }
                    Err(e) if is_timeout(&e) => {
                        lost.fetch_add(inflight as u64, Ordering::Relaxed);
                        floor = seq + 1;
                        inflight = 0;
                    }
                    Err(e) => return Err(e.into()),
                }
                while inflight < depth {
                    send(&mut seq)?;
                    inflight += 1;
                }
            }
            Ok(())
        }));
    }
    let m = measure(&a.window, &ok, a.max, &stop)?;
    join_all(handles)?;
    let (other, lost) = (other.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    print_closed_loop(
        "agent",
        &a.window,
        &m,
        &[
            ("sockets", a.sockets.to_string()),
            ("depth", a.depth.to_string()),
            ("not_succ", other.to_string()),
            ("lost", lost.to_string()),
        ],
    );
    Ok(())
}

fn agent_mem(a: AgentMemArgs) -> Result<()> {
    let rss0 = rss_kib(a.agent_pid)?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let modules: Vec<(i32, i32)> = (0..a.modules).map(|i| (a.base_modid + i as i32, 1)).collect();
    let mut succ = vec![false; modules.len()];
    let mut left = modules.len();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.timeout);
    let mut retcodes: BTreeMap<i32, u64> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    let mut round = 0;
    while left > 0 && Instant::now() < deadline {
        round += 1;
        // A window of 64 requests in flight over the modules still not SUCC.
        let todo: Vec<usize> = (0..modules.len()).filter(|&i| !succ[i]).collect();
        let mut sent = 0;
        let mut inflight = 0;
        loop {
            while inflight < 64 && sent < todo.len() {
                let i = todo[sent];
                sock.send_to(&get_host_frame(i as u32, modules[i])?, module_addr(a.base, modules[i])?)?;
                sent += 1;
                inflight += 1;
            }
            if inflight == 0 {
                break;
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let frame = decode_frame(&buf[..n])?;
                    let r = GetHostResponse::decode(frame.body)?;
                    *retcodes.entry(r.retcode).or_default() += 1;
                    let i = r.seq as usize;
                    if r.retcode == 0 && i < succ.len() && !succ[i] {
                        succ[i] = true;
                        left -= 1;
                    }
                    inflight -= 1;
                }
                Err(e) if is_timeout(&e) => inflight = 0, // lost: asked again next round
                Err(e) => return Err(e.into()),
            }
        }
        if left > 0 {
            thread::sleep(Duration::from_millis(500));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    let rss1 = rss_kib(a.agent_pid)?;
    let held = modules.len() - left;
    eprintln!(
        "agent-mem {}: {held} of {} modules SUCC after {round} rounds, {secs:.1} s; RSS {rss0} KiB -> {rss1} KiB \
         ({:.0} bytes/module); answers by retcode {retcodes:?}",
        a.label,
        modules.len(),
        (rss1 as f64 - rss0 as f64) * 1024.0 / held.max(1) as f64
    );
    let mut j = Json::new("agent-mem", &a.label);
    j.n("modules", modules.len())
        .n("held", held)
        .n("secs", format!("{secs:.2}"))
        .n("rss_before_kib", rss0)
        .n("rss_after_kib", rss1)
        .n("bytes_per_module", format!("{:.0}", (rss1 as f64 - rss0 as f64) * 1024.0 / held.max(1) as f64));
    j.print();
    if left > 0 {
        return Err(format!("{left} modules never answered SUCC").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// summary: medians of RESULT lines

/// The flat `RESULT {...}` object this program prints: keys and raw values in order.
fn parse_result(line: &str) -> Option<Vec<(String, String)>> {
    let body = line.strip_prefix("RESULT {")?.strip_suffix('}')?;
    body.split(',')
        .map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.trim_matches('"').to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// Fields that name the load shape rather than measure it.
const SHAPE: [&str; 6] = ["kind", "label", "conns", "depth", "sockets", "modules"];

/// A summary group: its key, each measured field's values, its run count.
type Group = (String, Vec<(String, Vec<f64>)>, usize);

fn summary(files: &[std::path::PathBuf]) -> Result<()> {
    // (kind, label, shape) -> field -> values, in first-seen order.
    let mut groups: Vec<Group> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f)?.lines() {
            let Some(fields) = parse_result(line.trim()) else { continue };
            let key: Vec<String> = fields
                .iter()
                .filter(|(k, _)| SHAPE.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let key = key.join(" ");
            let at = match groups.iter().position(|g| g.0 == key) {
                Some(i) => i,
                None => {
                    groups.push((key, Vec::new(), 0));
                    groups.len() - 1
                }
            };
            let group = &mut groups[at];
            group.2 += 1;
            for (k, v) in fields.iter().filter(|(k, _)| !SHAPE.contains(&k.as_str())) {
                let Ok(x) = v.parse::<f64>() else { continue };
                match group.1.iter_mut().find(|(name, _)| name == k) {
                    Some((_, xs)) => xs.push(x),
                    None => group.1.push((k.clone(), vec![x])),
                }
            }
        }
    }
    for (key, fields, runs) in &mut groups {
        let medians: Vec<String> = fields.iter_mut().map(|(k, xs)| format!("{k}={}", median(xs))).collect();
        println!("{key} runs={runs} | median {}", medians.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 1.0), 3.0);
    }

    #[test]
    fn result_lines_read_back() {
        let mut j = Json::new("dns", "doorway");
        j.n("conns", 8).n("rate", "123");
        let line = format!(
            "RESULT {{{}}}",
            j.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
        );
        let fields = parse_result(&line).unwrap();
        assert_eq!(fields[1], ("label".to_string(), "doorway".to_string()));
        assert_eq!(fields[3], ("rate".to_string(), "123".to_string()));
    }

    #[test]
    fn own_cpu_time_reads() {
        let cpu = cpu_seconds(std::process::id()).unwrap();
        assert!(cpu >= 0.0);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn a_gone_process_is_named_in_the_error() {
        // A pid above the kernel's maximum (4,194,304) never names a process.
        let gone = 4_194_305;
        let msg = rss_kib(gone).unwrap_err().to_string();
        assert!(msg.contains("process 4194305") && msg.contains("exited"), "{msg}");
        let msg = cpu_seconds(gone).unwrap_err().to_string();
        assert!(msg.contains("/proc/4194305/stat"), "{msg}");
    }
}
