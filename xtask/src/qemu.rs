//! `cargo xtask qemu` and `cargo xtask flash`: build board firmware, boot it in QEMU or flash it,
//! and the QEMU conformance test that `cargo xtask test` runs.
//!
//! Boards are data ([`BOARDS`]): where the crate is, its target and binary, and how it runs
//! (QEMU machine and guest port, or the probe-rs chip). Each board is its own cargo workspace;
//! it is built from its own directory so its `.cargo/config.toml` (target, runner, build-std)
//! applies, with the cargo that [`setup::cross_cargo`] picks (rustup target or Debian
//! toolchain with `-Zbuild-std=core`).
//!
//! # The QEMU test (`cargo xtask qemu --test`, ci job `qemu`)
//!
//! 1. Build the firmware with a short idle timeout ([`TEST_IDLE_TIMEOUT_MS`]) and
//!    [`TEST_CONNECTIONS`] connections, and the conformance binary of `doorway-testkit`.
//! 2. Boot QEMU with user networking and `hostfwd` from a free 127.0.0.1 port to the firmware's
//!    port, and UART0 on a TCP control socket (QEMU listens on another free port; a byte sent
//!    there stops the firmware); its semihosting output (defmt) is decoded by `defmt-print` into
//!    our log.
//! 3. Wait until the firmware answers PING, then run `doorway-conformance`, the same suite the
//!    Linux server's tests run, with the firmware's profile (max body, idle timeout, connections).
//! 4. Measure echoes per second and p99 round trip with 1 and 4 connections, and the CPU an idle
//!    QEMU burns (from `/proc`, must stay under [`IDLE_CPU_LIMIT`]); then STATS must show no
//!    session left open but the one asking.
//! 5. Stop the firmware gracefully (`docs/PROTOCOL.md` "Shutdown"): a client sends ECHO and reads its
//!    reply, then one byte goes to the control socket. That client must receive ERROR 7
//!    (`seq` 0) and then EOF, QEMU must exit by itself with status 0 within the drain timeout
//!    ([`TEST_DRAIN_TIMEOUT_MS`]) + [`STOP_MARGIN`], and the firmware must log its final
//!    counters with no connection open and that ERROR 7 counted.
//! 6. The test fails on any suite failure, on a firmware that exited early (a panic or a hard
//!    fault exits through semihosting with a failing status), on a `panic` or `ERROR` line in the
//!    firmware's log, or when the whole run exceeds [`TEST_BUDGET`]. On any failure QEMU is killed
//!    (its own PID only), so nothing is left running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::setup;
use crate::util::{cargo, project_root, run as run_cmd, Result};

/// How a board runs.
#[derive(Debug, Clone, Copy)]
pub enum Runs {
    /// In QEMU: the machine and the TCP port the firmware listens on.
    Qemu { machine: &'static str, guest_port: u16 },
    /// On hardware, flashed and run by probe-rs.
    Probe { chip: &'static str },
}

/// One board crate under `boards/`.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    pub name: &'static str,
    pub target: &'static str,
    pub bin: &'static str,
    pub runs: Runs,
}

/// Every board, QEMU first.
pub const BOARDS: &[Board] = &[
    Board {
        name: "mps2-an386",
        target: "thumbv7em-none-eabihf",
        bin: "doorway-board-mps2-an386",
        runs: Runs::Qemu { machine: "mps2-an386", guest_port: 7200 },
    },
    Board {
        name: "nucleo-h743zi",
        target: "thumbv7em-none-eabihf",
        bin: "doorway-board-nucleo-h743zi",
        runs: Runs::Probe { chip: "STM32H743ZITx" },
    },
];

/// The firmware's address inside QEMU's user network.
const GUEST_IP: &str = "10.0.2.15";
/// Idle timeout of the test firmware, short so the suite's idle case is quick.
pub const TEST_IDLE_TIMEOUT_MS: u64 = 1500;
/// Connections of the test firmware (`max_connections`).
pub const TEST_CONNECTIONS: usize = 4;
/// Drain timeout of the test firmware (`Config::drain_timeout`), bounding the graceful stop.
pub const TEST_DRAIN_TIMEOUT_MS: u64 = 2000;
/// How much longer than the drain timeout QEMU may take to exit after the stop byte.
const STOP_MARGIN: Duration = Duration::from_secs(3);
/// The embedded `max_body`.
const MAX_BODY: u32 = 1024;
/// The QEMU run of the test (boot, suite, measurements, stop; builds not included) must finish
/// within this.
const TEST_BUDGET: Duration = Duration::from_secs(180);
/// How long the firmware may take to answer its first PING.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle QEMU must use less than this share of one host core.
const IDLE_CPU_LIMIT: f64 = 0.05;

pub fn board(name: &str) -> Result<&'static Board> {
    BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!("no board named `{name}` (boards: {})", names.join(", ")).into()
    })
}

/// The board crate's directory.
fn board_dir(board: &Board) -> PathBuf {
    project_root().join("boards").join(board.name)
}

/// Builds a board's firmware in release mode with extra environment (compile-time knobs) and
/// returns the ELF's path.
pub fn build(board: &Board, env: &[(&str, String)]) -> Result<PathBuf> {
    let dir = board_dir(board);
    let target_dir = dir.join("target");
    // A board crate's package and binary share a name.
    let mut cmd = setup::cross_cargo("build", board.target, &dir, board.bin)?;
    cmd.arg("--release").arg("--target-dir").arg(&target_dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_cmd(&mut cmd)?;
    let elf = target_dir.join(board.target).join("release").join(board.bin);
    if !elf.is_file() {
        return Err(format!("build finished but {} is missing", elf.display()).into());
    }
    Ok(elf)
}

/// `cargo xtask ci boards`: every board builds (real boards compile only).
pub fn build_all() -> Result {
    for board in BOARDS {
        let elf = build(board, &[])?;
        print_size(&elf);
    }
    Ok(())
}

/// Prints `size` of an ELF (text = flash, data + bss = RAM), if a size tool exists.
fn print_size(elf: &Path) {
    for tool in ["llvm-size", "llvm-size-22", "arm-none-eabi-size", "size"] {
        if crate::util::have(tool) {
            let _ = run_cmd(Command::new(tool).arg(elf));
            return;
        }
    }
    eprintln!("(no size tool found; install llvm to see flash and RAM use)");
}

/// `cargo xtask qemu [--board B] [--port P] [--test]`.
pub fn run(board_name: &str, port: u16, test: bool) -> Result {
    setup::ensure(setup::QEMU_RUN)?;
    let board = board(board_name)?;
    let Runs::Qemu { .. } = board.runs else {
        return Err(format!("{} is a real board: use `cargo xtask flash {}`", board.name, board.name).into());
    };
    if test {
        return qemu_test(board);
    }
    let elf = build(board, &[])?;
    print_size(&elf);
    let control_port = free_port()?;
    let mut vm = Vm::boot(board, &elf, port, control_port)?;
    eprintln!(
        "firmware booting in QEMU; reach it at 127.0.0.1:{port}. To stop it gracefully send one byte \
         to its UART0 at 127.0.0.1:{control_port} (in bash: `printf q > /dev/tcp/127.0.0.1/{control_port}`); \
         Ctrl-C kills it"
    );
    let status = vm.child.wait()?;
    vm.join_log();
    if status.success() {
        Ok(())
    } else {
        Err(format!("QEMU ended with {status} (a firmware panic exits through semihosting)").into())
    }
}

/// `cargo xtask flash <board>`: probe-rs for real boards, QEMU for QEMU boards. A real board
/// provisions only [`setup::FLASH`] (the cross target and probe-rs), never QEMU or the fuzzing
/// and log tools.
pub fn flash(board_name: &str) -> Result {
    let board = board(board_name)?;
    match board.runs {
        Runs::Qemu { .. } => run(board_name, crate::flags::DEFAULT_QEMU_PORT, false),
        Runs::Probe { chip } => {
            setup::ensure(setup::FLASH)?;
            let elf = build(board, &[])?;
            print_size(&elf);
            eprintln!("connect the board over USB; probe-rs flashes and runs {}", elf.display());
            run_cmd(Command::new(probe_rs()).args(["run", "--chip", chip]).arg(&elf))
        }
    }
}

/// probe-rs from PATH, else from cargo's bin directory (where `cargo install` put it).
fn probe_rs() -> PathBuf {
    if crate::util::have(setup::PROBE_RS.program) {
        return PathBuf::from(setup::PROBE_RS.program);
    }
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin").join(setup::PROBE_RS.program))
        .unwrap_or_else(|| PathBuf::from(setup::PROBE_RS.program))
}

/// A running QEMU with its log pipeline.
struct Vm {
    child: Child,
    decoder: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    log_thread: Option<thread::JoinHandle<()>>,
}

impl Vm {
    /// Boots `elf` with hostfwd 127.0.0.1:`port` → the firmware's port, and UART0 on a TCP
    /// server socket at 127.0.0.1:`control_port` (`wait=off`: QEMU does not wait for a client).
    /// Its semihosting output goes through `defmt-print` (when installed) into our stderr and
    /// `log`.
    fn boot(board: &Board, elf: &Path, port: u16, control_port: u16) -> Result<Vm> {
        let Runs::Qemu { machine, guest_port } = board.runs else {
            return Err("not a QEMU board".into());
        };
        let mut qemu = Command::new("qemu-system-arm");
        qemu.args(["-M", machine, "-display", "none", "-monitor", "none"])
            .arg("-chardev")
            .arg(format!("socket,id=ctl,host=127.0.0.1,port={control_port},server=on,wait=off"))
            .args(["-serial", "chardev:ctl"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-nic")
            .arg(format!("user,model=lan9118,hostfwd=tcp:127.0.0.1:{port}-{GUEST_IP}:{guest_port}"))
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        eprintln!("$ {qemu:?}");
        let mut child = qemu.spawn().map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
        let raw = child.stdout.take().ok_or("qemu stdout not captured")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (decoder, log_thread) = if have_defmt_print() {
            let mut decoder = Command::new(defmt_print())
                .arg("-e")
                .arg(elf)
                .stdin(Stdio::from(raw))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start defmt-print: {e}"))?;
            let out = decoder.stdout.take().ok_or("defmt-print stdout not captured")?;
            let sink = Arc::clone(&log);
            let thread = thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    eprintln!("[fw] {line}");
                    if let Ok(mut log) = sink.lock() {
                        log.push(line);
                    }
                }
            });
            (Some(decoder), Some(thread))
        } else {
            eprintln!("defmt-print not found: firmware logs are discarded (`cargo xtask setup` installs it)");
            let thread = thread::spawn(move || {
                let mut raw = raw;
                let mut sink = [0u8; 4096];
                while matches!(raw.read(&mut sink), Ok(n) if n > 0) {}
            });
            (None, Some(thread))
        };
        Ok(Vm { child, decoder, log, log_thread })
    }

    /// Whether QEMU is still running; its exit status if not.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.join_log();
    }

    /// Waits for the log pipeline to drain (QEMU has exited).
    fn join_log(&mut self) {
        if let Some(mut decoder) = self.decoder.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while decoder.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = decoder.kill();
            let _ = decoder.wait();
        }
        if let Some(thread) = self.log_thread.take() {
            let _ = thread.join();
        }
    }

    /// The firmware's log so far.
    fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Firmware log lines that signal a failure.
    fn failures(&self) -> Vec<String> {
        self.log_lines().into_iter().filter(|l| l.contains("panic") || l.starts_with("ERROR")).collect()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn defmt_print() -> PathBuf {
    if crate::util::have("defmt-print") {
        return PathBuf::from("defmt-print");
    }
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin").join("defmt-print"))
        .unwrap_or_else(|| PathBuf::from("defmt-print"))
}

fn have_defmt_print() -> bool {
    crate::util::have("defmt-print") || defmt_print().is_file()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `cargo xtask ci qemu`: the QEMU conformance test on the default board.
pub fn ci_test() -> Result {
    qemu_test(board(crate::flags::DEFAULT_BOARD)?)
}

fn qemu_test(board: &Board) -> Result {
    let elf = build(
        board,
        &[
            ("DOORWAY_IDLE_TIMEOUT_MS", TEST_IDLE_TIMEOUT_MS.to_string()),
            ("DOORWAY_CONNECTIONS", TEST_CONNECTIONS.to_string()),
            ("DOORWAY_DRAIN_TIMEOUT_MS", TEST_DRAIN_TIMEOUT_MS.to_string()),
        ],
    )?;
    print_size(&elf);
    run_cmd(cargo().args(["build", "--release", "-p", "doorway-testkit", "--bin", "doorway-conformance"]))?;
    let start = Instant::now();
    let port = free_port()?;
    let control_port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let control: SocketAddr = ([127, 0, 0, 1], control_port).into();
    let mut vm = Vm::boot(board, &elf, port, control_port)?;
    let result = (|| -> Result {
        wait_until_serving(&mut vm, addr)?;
        eprintln!("firmware answers on {addr} after {:.1} s", start.elapsed().as_secs_f64());
        let remaining = TEST_BUDGET.saturating_sub(start.elapsed());
        let mut suite = cargo();
        suite
            .args(["run", "--release", "-q", "-p", "doorway-testkit", "--bin", "doorway-conformance", "--"])
            .args(["--addr", &addr.to_string()])
            .args(["--max-body", &MAX_BODY.to_string()])
            .args(["--idle-timeout-ms", &TEST_IDLE_TIMEOUT_MS.to_string()])
            .args(["--max-connections", &TEST_CONNECTIONS.to_string()])
            .args(["--concurrent", &TEST_CONNECTIONS.to_string()]);
        run_bounded(&mut suite, remaining)?;
        if let Some(status) = vm.exited() {
            return Err(format!("QEMU exited during the suite: {status}").into());
        }
        for connections in [1, TEST_CONNECTIONS] {
            let m = measure_echo(addr, connections, Duration::from_secs(2))?;
            println!(
                "qemu echo, {connections} connection(s): {:.0} echoes/s, p50 {} us, p99 {} us ({} echoes)",
                m.per_second, m.p50_us, m.p99_us, m.count
            );
        }
        thread::sleep(Duration::from_millis(500));
        let cpu = idle_cpu(vm.child.id(), Duration::from_secs(5))?;
        // Every connection of the suite and the measurements is gone: no session leaked.
        let open = stats_counter(addr, "connections_open")?;
        println!("qemu stats after the run: connections_open = {open} (this STATS connection)");
        if open != 1 {
            return Err(format!("{} sessions still open after the run (expected only ours)", open - 1).into());
        }
        println!("qemu idle: {:.2}% of one host core over 5 s", cpu * 100.0);
        if cpu > IDLE_CPU_LIMIT {
            return Err(format!(
                "idle QEMU used {:.1}% of a core (limit {:.0}%)",
                cpu * 100.0,
                IDLE_CPU_LIMIT * 100.0
            )
            .into());
        }
        if let Some(status) = vm.exited() {
            return Err(format!("QEMU exited: {status}").into());
        }
        stop_gracefully(&mut vm, addr, control)
    })();
    vm.stop();
    let failures = vm.failures();
    result?;
    if !failures.is_empty() {
        return Err(format!("firmware logged failures:\n{}", failures.join("\n")).into());
    }
    if start.elapsed() > TEST_BUDGET {
        return Err(format!(
            "the QEMU test took {:.0} s (budget {:?})",
            start.elapsed().as_secs_f64(),
            TEST_BUDGET
        )
        .into());
    }
    println!("qemu test: passed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The graceful stop (step 5 of the module docs): an ECHO client connected, one byte to UART0,
/// then ERROR 7 and EOF on that client, QEMU exiting 0 by itself, and the final counters logged.
fn stop_gracefully(vm: &mut Vm, addr: SocketAddr, control: SocketAddr) -> Result {
    let limit = Duration::from_millis(TEST_DRAIN_TIMEOUT_MS) + STOP_MARGIN;
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(limit))?;
    let echo = frame(64, 41, b"before the stop");
    let mut reply = vec![0u8; echo.len()];
    round_trip(&mut client, &echo, &mut reply)
        .map_err(|e| format!("qemu stop: ECHO before the stop: {e}"))?;
    if reply != echo {
        return Err(format!("qemu stop: ECHO reply differs from the request: {reply:?}").into());
    }
    let mut uart = TcpStream::connect_timeout(&control, Duration::from_secs(2))
        .map_err(|e| format!("qemu stop: cannot reach the UART0 control socket {control}: {e}"))?;
    uart.write_all(b"q")?;
    let stopped_at = Instant::now();

    // Exactly one ERROR 7 with `seq` 0, then EOF.
    let mut header = [0u8; 12];
    client.read_exact(&mut header).map_err(|e| format!("qemu stop: no ERROR 7 after the stop byte: {e}"))?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = u16::from_be_bytes([header[4], header[5]]);
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let seq = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if flags != 0 || len < 2 || len > MAX_BODY as usize {
        return Err(format!("qemu stop: expected ERROR 7, got a frame header {header:?}").into());
    }
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).map_err(|e| format!("qemu stop: ERROR frame cut short: {e}"))?;
    let code = u16::from_be_bytes([body[0], body[1]]);
    if kind != 3 || code != 7 || seq != 0 {
        return Err(format!(
            "qemu stop: expected ERROR 7 (SHUTTING_DOWN) with seq 0, got kind {kind} code {code} seq {seq} ({:?})",
            String::from_utf8_lossy(&body[2..])
        )
        .into());
    }
    let mut rest = [0u8; 64];
    match client.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => {
            return Err(format!("qemu stop: {n} bytes after ERROR 7 instead of EOF: {:?}", &rest[..n]).into())
        }
        Err(e) => return Err(format!("qemu stop: no EOF after ERROR 7: {e}").into()),
    }
    drop(client);

    // QEMU exits by itself: semihosting exit 0 once `serve_until` has returned.
    let status = loop {
        if let Some(status) = vm.exited() {
            break status;
        }
        if stopped_at.elapsed() > limit {
            return Err(format!("qemu stop: QEMU still running {limit:?} after the stop byte").into());
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = stopped_at.elapsed();
    drop(uart);
    if !status.success() {
        return Err(format!("qemu stop: firmware exited with {status} (expected 0)").into());
    }
    vm.join_log();
    let log = vm.log_lines();
    let last = log.iter().rev().find(|l| l.contains("doorway stopped:"));
    let Some(last) = last else {
        let hint = if have_defmt_print() { "" } else { " (defmt-print is missing: `cargo xtask setup`)" };
        return Err(format!(
            "qemu stop: the firmware log has no `doorway stopped:` line with the final counters{hint}"
        )
        .into());
    };
    let open = log_counter(last, "connections_open=");
    // `errors_sent_1..7=[n1, n2, ..., n7]`: the ERROR counters by code.
    let error_7 = last
        .split_once("errors_sent_1..7=[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(list, _)| list.split(',').nth(6))
        .and_then(|n| n.trim().parse::<u64>().ok());
    if open != Some(0) || error_7.unwrap_or(0) == 0 {
        return Err(format!(
            "qemu stop: final counters should show connections_open=0 and at least one ERROR 7: {last}"
        )
        .into());
    }
    println!("qemu stop: ERROR 7 received, firmware exited 0 in {} ms", took.as_millis());
    println!("qemu stop: final counters logged: {last}");
    Ok(())
}

/// The number after `key` in a firmware log line.
fn log_counter(line: &str, key: &str) -> Option<u64> {
    let (_, rest) = line.split_once(key)?;
    rest.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
}

/// Runs `cmd`, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result {
    eprintln!("$ {cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}").into()) };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {limit:?}").into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One frame: 12-byte header (length, kind, flags 0, seq; big-endian) and the body.
fn frame(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends `request` and reads exactly one reply of `reply_len` bytes.
fn round_trip(stream: &mut TcpStream, request: &[u8], reply: &mut [u8]) -> std::io::Result<()> {
    stream.write_all(request)?;
    stream.read_exact(reply)
}

/// Polls with PING until the firmware answers PONG, QEMU exits, or [`BOOT_TIMEOUT`] passes.
fn wait_until_serving(vm: &mut Vm, addr: SocketAddr) -> Result {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let ping = frame(1, 7, b"up?");
    let mut reply = [0u8; 15];
    loop {
        if let Some(status) = vm.exited() {
            return Err(format!("QEMU exited before the firmware served: {status}").into());
        }
        let attempt = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            round_trip(&mut s, &ping, &mut reply)
        })();
        if attempt.is_ok() && reply == frame(2, 7, b"up?")[..] {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the firmware did not answer PING on {addr} within {BOOT_TIMEOUT:?}").into());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Asks the firmware for STATS on a new connection and returns one counter.
fn stats_counter(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&frame(66, 1, b""))?;
    let mut header = [0u8; 12];
    s.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let json = String::from_utf8_lossy(&body);
    let key = format!("\"{name}\":");
    let at = json.find(&key).ok_or_else(|| format!("STATS has no {name}: {json}"))? + key.len();
    let digits: String = json[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    Ok(digits.parse()?)
}

/// Echo throughput and latency through QEMU.
struct Measurement {
    count: usize,
    per_second: f64,
    p50_us: u128,
    p99_us: u128,
}

/// `connections` threads each do ECHO ping-pong (64-byte bodies) for `length`.
fn measure_echo(addr: SocketAddr, connections: usize, length: Duration) -> Result<Measurement> {
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            thread::spawn(move || -> std::io::Result<Vec<u32>> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let body = [w as u8; 64];
                let mut reply = [0u8; 76];
                let mut latencies = Vec::new();
                let deadline = Instant::now() + length;
                let mut seq = 0u32;
                while Instant::now() < deadline && latencies.len() < 1_000_000 {
                    seq = seq.wrapping_add(1);
                    let request = frame(64, seq, &body);
                    let t = Instant::now();
                    round_trip(&mut s, &request, &mut reply)?;
                    if reply[..] != request[..] {
                        return Err(std::io::Error::other("echo reply differs from the request"));
                    }
                    latencies.push(t.elapsed().as_micros() as u32);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        let latencies = worker.join().map_err(|_| "echo worker panicked")??;
        all.extend(latencies);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if all.is_empty() {
        return Err("no echo completed".into());
    }
    all.sort_unstable();
    let pick = |q: f64| u128::from(all[((all.len() as f64 * q) as usize).min(all.len() - 1)]);
    Ok(Measurement {
        count: all.len(),
        per_second: all.len() as f64 / elapsed,
        p50_us: pick(0.50),
        p99_us: pick(0.99),
    })
}

/// The share of one core `pid` used over `window` (utime + stime from `/proc/<pid>/stat`).
fn idle_cpu(pid: u32, window: Duration) -> Result<f64> {
    let ticks = |pid: u32| -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("malformed /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
        let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
        Ok(utime + stime)
    };
    let hz = 100.0; // USER_HZ on Linux
    let before = ticks(pid)?;
    let t = Instant::now();
    thread::sleep(window);
    let after = ticks(pid)?;
    Ok((after - before) as f64 / hz / t.elapsed().as_secs_f64())
}
