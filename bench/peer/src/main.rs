//! `doorway-peer`: the tokio benchmark peer's command line.
//!
//! `doorway-peer [--listen ADDR] [--udp ADDR] [--threads N] [--max-body BYTES]`. Once it accepts
//! it prints `doorway-peer listening on <ip:port>` to stdout (the real port when port 0 was asked),
//! then, with `--udp`, `doorway-peer udp on <ip:port>`: the same convention as `doorway`. SIGTERM
//! or SIGINT ends it with status 0; a bad argument ends it with status 2.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: doorway-peer [--listen ADDR] [--udp ADDR] [--threads N] [--max-body BYTES]";

struct Args {
    listen: SocketAddr,
    /// Also answer datagrams on this UDP address.
    udp: Option<SocketAddr>,
    threads: Option<usize>,
    max_body: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 7201)),
        udp: None,
        threads: None,
        max_body: doorway_core::frame::DEFAULT_MAX_BODY,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--udp" => args.udp = Some(value()?.parse().map_err(|e| format!("--udp: {e}"))?),
            "--threads" => {
                let n: usize = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
                if n == 0 {
                    return Err("--threads must be at least 1".into());
                }
                args.threads = Some(n);
            }
            "--max-body" => args.max_body = value()?.parse().map_err(|e| format!("--max-body: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// Raises the soft open-file limit to the hard limit: the bench holds 10,000 idle connections.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; failure leaves the old limit, which is harmless.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("doorway-peer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doorway-peer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match doorway_peer::bind(args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("doorway-peer: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let udp = match args.udp.map(doorway_peer::udp::bind).transpose() {
        Ok(udp) => udp,
        Err(e) => {
            eprintln!("doorway-peer: cannot bind UDP {:?}: {e}", args.udp);
            return ExitCode::FAILURE;
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "doorway-peer listening on {local}")?;
        if let Some(socket) = udp {
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            writeln!(stdout, "doorway-peer udp on {}", socket.local_addr()?)?;
            // On a worker thread, like the connection tasks.
            tokio::spawn(doorway_peer::udp::serve(socket, args.max_body));
        }
        stdout.flush()?;
        drop(stdout);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            served = doorway_peer::serve(listener, args.max_body) => served,
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    // Do not wait for connection tasks still blocked on their sockets.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorway-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
