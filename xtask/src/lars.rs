//! `cargo xtask lars [--db URL] [--smoke]`: the whole Lars system with one command.
//!
//! Builds `lars-dns`, `lars-reporter`, `lars-agent` and the `get_host` example in release mode,
//! creates a fresh SQLite database under `target/lars-demo/` (unless `--db mysql://...` names
//! another) with a demo route (module 1/1 on three nodes), starts the three programs on their
//! default ports (7778, 7779, UDP 8888-8890), prints where each listens and how to query the
//! agent, then waits. Ctrl-C reaches the three programs too (they share the terminal's process
//! group): each drains and exits 0.
//!
//! `--smoke` (the `lars` CI job) does the same on free ports, asks the agent for a host with the
//! example client until the route arrives, stops the three with SIGTERM and checks each exited 0.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{cargo, project_root, run as run_cmd, Result};

/// The demo route: module (1, 1) on three nodes.
const DEMO_ROUTE: [&str; 3] = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

/// A started program, stopped by its PID when dropped.
struct Program {
    name: &'static str,
    child: Child,
}

impl Program {
    /// Starts `bin` with `args` and waits for a stdout line starting with `ready` (its listening line).
    fn start(name: &'static str, bin: &Path, args: &[String], ready: &str) -> Result<Program> {
        eprintln!("$ {} {}", bin.display(), args.join(" "));
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    println!("{line}");
                    if line.starts_with(ready) {
                        break;
                    }
                }
                _ => return Err(format!("{name} exited before it was ready").into()),
            }
            if Instant::now() > deadline {
                return Err(format!("{name} not ready within 30 s").into());
            }
        }
        // Keep echoing what it prints.
        std::thread::spawn(move || {
            for line in lines.map_while(std::result::Result::ok) {
                println!("{line}");
            }
        });
        Ok(Program { name, child })
    }

    /// SIGTERM, then its exit status within 20 s.
    fn stop(mut self) -> Result {
        let pid = self.child.id().to_string();
        run_cmd(Command::new("kill").args(["-TERM", &pid]))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    return Err(format!("{} exited with {status} after SIGTERM", self.name).into());
                }
                eprintln!("{} stopped cleanly", self.name);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not stop within 20 s of SIGTERM", self.name).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1.
fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first of three consecutive free UDP ports on 127.0.0.1.
fn free_udp_base() -> Result<u16> {
    for _ in 0..200 {
        let first = UdpSocket::bind("127.0.0.1:0")?;
        let base = first.local_addr()?.port();
        if base < 65_000 && (1..3).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err("no three consecutive free UDP ports".into())
}

/// Runs the system (`smoke`: on free ports, checked and stopped).
pub fn run(db: Option<String>, smoke: bool) -> Result {
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "doorway-lars",
        "--bin",
        "lars-dns",
        "--bin",
        "lars-reporter",
        "--bin",
        "lars-agent",
        "--example",
        "get_host",
    ]))?;
    let release = target_dir().join("release");
    let demo = target_dir().join("lars-demo");
    std::fs::create_dir_all(&demo)?;
    let db = match db {
        Some(url) => url,
        None => {
            let file = demo.join("lars.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            format!("sqlite://{}", file.display())
        }
    };
    let mut route = vec!["route".to_string(), "set".into(), "1".into(), "1".into()];
    route.extend(DEMO_ROUTE.iter().map(|s| s.to_string()));
    route.extend(["--db".to_string(), db.clone()]);
    run_cmd(Command::new(release.join("lars-dns")).args(&route))?;

    let (dns_port, reporter_port, udp_base) =
        if smoke { (free_tcp_port()?, free_tcp_port()?, free_udp_base()?) } else { (7778, 7779, 8888) };
    let at = |port: u16| format!("127.0.0.1:{port}");
    let dns = Program::start(
        "lars-dns",
        &release.join("lars-dns"),
        &["--listen".into(), at(dns_port), "--db".into(), db.clone()],
        "lars-dns listening",
    )?;
    let reporter = Program::start(
        "lars-reporter",
        &release.join("lars-reporter"),
        &["--listen".into(), at(reporter_port), "--db".into(), db.clone()],
        "lars-reporter listening",
    )?;
    let agent = Program::start(
        "lars-agent",
        &release.join("lars-agent"),
        &[
            "--udp-base".into(),
            at(udp_base),
            "--dns".into(),
            at(dns_port),
            "--reporter".into(),
            at(reporter_port),
        ],
        &format!("lars-agent udp on {}", at(udp_base + 2)),
    )?;
    let example = release.join("examples").join("get_host");
    println!(
        "\nLars is up: lars-dns {}, lars-reporter {}, lars-agent UDP {}-{} (database {db}).\n\
         Ask the agent for a node of the demo module (1, 1):\n  {} 1 1 3 {}\n\
         Edit routes: {} route set MODID CMDID IP:PORT... --db {db}\n\
         Ctrl-C stops all three.",
        at(dns_port),
        at(reporter_port),
        udp_base,
        udp_base + 2,
        example.display(),
        at(udp_base),
        release.join("lars-dns").display(),
    );
    if !smoke {
        let mut programs = [dns, reporter, agent];
        for p in &mut programs {
            let status = p.child.wait()?;
            eprintln!("{} exited with {status}", p.name);
        }
        return Ok(());
    }
    // Smoke: the agent hands out a node of the demo route once lars-dns has answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(&example).args(["1", "1", "1", &at(udp_base)]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && DEMO_ROUTE.iter().any(|n| text.contains(n)) {
            print!("{text}");
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the agent never handed out a demo node: {text}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop()?;
    reporter.stop()?;
    dns.stop()?;
    eprintln!("lars smoke test passed");
    Ok(())
}
