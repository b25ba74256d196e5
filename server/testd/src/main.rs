//! A line-protocol server for the real-process tests of `prefork-server` (`tests/real.rs` in this
//! crate). Not for production: it answers `whoami` and `open PATH` to show what a child may do.
//!
//! One request per line, one answer per line, until the client closes or sends `quit`:
//! `echo TEXT` → `TEXT`; `whoami` → `uid=U gid=G pid=P slot=S`; `open PATH` → `ok` or
//! `denied <error>`; `sleep MS` → `slept MS` (the slot shows `W` meanwhile).
//! Once the pool is up it prints `LISTEN <address>` per listener, then `READY`, on stdout.

use clap::Parser;
use prefork_core::config::{PoolConfig, RawPoolConfig};
use prefork_core::scoreboard::SlotUpdate;
use prefork_core::slot::SlotState;
use prefork_server::{Connection, Server};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "prefork-server test daemon (line protocol)")]
struct Args {
    /// Address to listen on (repeatable): IP:PORT, [IPv6]:PORT, unix:/path.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: Vec<String>,
    /// start_servers.
    #[arg(long, default_value_t = 2)]
    start: i64,
    /// min_spare_servers.
    #[arg(long, default_value_t = 1)]
    min: i64,
    /// max_spare_servers.
    #[arg(long, default_value_t = 4)]
    max: i64,
    /// max_request_workers (and server_limit).
    #[arg(long, default_value_t = 16)]
    limit: i64,
    /// accept_mutex.
    #[arg(long, default_value = "auto")]
    mutex: String,
    /// maintenance_interval_ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: i64,
    /// max_connections_per_child.
    #[arg(long, default_value_t = 0)]
    max_connections: i64,
    /// graceful_shutdown_timeout (seconds).
    #[arg(long, default_value_t = 0)]
    graceful_timeout: i64,
    /// accept_lock_timeout_ms (the stall watchdog; 0 is off).
    #[arg(long, default_value_t = 2000)]
    accept_lock_timeout_ms: i64,
    /// request_deadline (seconds; 0 is off).
    #[arg(long, default_value_t = 0)]
    request_deadline: i64,
    /// spawn_mode: demand or ramp.
    #[arg(long, default_value = "demand")]
    spawn_mode: String,
    /// fork_rate_limit (forks per second).
    #[arg(long, default_value_t = 64)]
    fork_rate_limit: i64,
    /// user for the children.
    #[arg(long)]
    user: Option<String>,
    /// group for the children.
    #[arg(long)]
    group: Option<String>,
    /// A TOML file of pool settings (snake_case directives) re-read at every restart; the flags
    /// above are the base it overrides.
    #[arg(long)]
    reload_file: Option<std::path::PathBuf>,
    /// Fault injection: each child clears its PR_SET_PDEATHSIG in `child_init` (as a service that
    /// changes credentials would), leaving the wake pipe's hang-up as its only news of the parent's death.
    #[arg(long)]
    clear_pdeathsig: bool,
}

/// The line protocol, with the fault-injection switches.
struct LineService {
    clear_pdeathsig: bool,
}

impl prefork_server::Service for LineService {
    fn child_init(&mut self) -> std::io::Result<()> {
        if self.clear_pdeathsig {
            nix::sys::prctl::set_pdeathsig(None)?;
        }
        Ok(())
    }

    fn serve(&mut self, conn: &mut Connection<'_>) -> std::io::Result<()> {
        serve(conn)
    }
}

fn serve(conn: &mut Connection<'_>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.stream().try_clone()?);
    let mut line = String::new();
    let mut first = true;
    loop {
        // Waiting for the next line is waiting between requests (K), not a request.
        conn.status().set(if first { SlotState::BusyRead } else { SlotState::Keepalive });
        first = false;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        conn.status().set(SlotState::BusyRead);
        let request = line.trim_end();
        conn.status().request(request);
        let closing = conn.status().set(SlotState::BusyWrite) == SlotUpdate::Graceful;
        let (verb, arg) = request.split_once(' ').unwrap_or((request, ""));
        let answer = match verb {
            "echo" => arg.to_string(),
            "whoami" => format!(
                "uid={} gid={} pid={} slot={}",
                nix::unistd::getuid(),
                nix::unistd::getgid(),
                std::process::id(),
                conn.status().slot()
            ),
            "open" => match std::fs::File::open(arg) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("denied {e}"),
            },
            "sleep" => {
                let ms: u64 = arg.parse().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                format!("slept {ms}")
            }
            "quit" => return Ok(()),
            "panic" => panic!("asked to panic"),
            other => format!("unknown {other}"),
        };
        let answer = if closing { format!("{answer} (closing)\n") } else { format!("{answer}\n") };
        conn.stream().write_all(answer.as_bytes())?;
        conn.status().count_request(answer.len() as u64, std::time::Duration::ZERO);
        if closing || conn.status().set(SlotState::Keepalive) == SlotUpdate::Graceful {
            return Ok(()); // graceful restart or stop: finish the request in hand, then close
        }
    }
}

/// `file` settings over `base` ones.
fn merge(base: &RawPoolConfig, file: RawPoolConfig) -> RawPoolConfig {
    RawPoolConfig {
        listen: file.listen.or(base.listen.clone()),
        start_servers: file.start_servers.or(base.start_servers),
        min_spare_servers: file.min_spare_servers.or(base.min_spare_servers),
        max_spare_servers: file.max_spare_servers.or(base.max_spare_servers),
        max_request_workers: file.max_request_workers.or(base.max_request_workers),
        server_limit: file.server_limit.or(base.server_limit),
        accept_mutex: file.accept_mutex.or(base.accept_mutex.clone()),
        maintenance_interval_ms: file.maintenance_interval_ms.or(base.maintenance_interval_ms),
        max_connections_per_child: file.max_connections_per_child.or(base.max_connections_per_child),
        graceful_shutdown_timeout: file.graceful_shutdown_timeout.or(base.graceful_shutdown_timeout),
        accept_lock_timeout_ms: file.accept_lock_timeout_ms.or(base.accept_lock_timeout_ms),
        request_deadline: file.request_deadline.or(base.request_deadline),
        spawn_mode: file.spawn_mode.or(base.spawn_mode.clone()),
        fork_rate_limit: file.fork_rate_limit.or(base.fork_rate_limit),
        user: file.user.or(base.user.clone()),
        group: file.group.or(base.group.clone()),
        ..file
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let a = Args::parse();
    let raw = RawPoolConfig {
        listen: Some(a.listen),
        start_servers: Some(a.start),
        min_spare_servers: Some(a.min),
        max_spare_servers: Some(a.max),
        max_request_workers: Some(a.limit),
        server_limit: Some(a.limit),
        accept_mutex: Some(a.mutex),
        maintenance_interval_ms: Some(a.interval_ms),
        max_connections_per_child: Some(a.max_connections),
        graceful_shutdown_timeout: Some(a.graceful_timeout),
        accept_lock_timeout_ms: Some(a.accept_lock_timeout_ms),
        request_deadline: Some(a.request_deadline),
        spawn_mode: Some(a.spawn_mode),
        fork_rate_limit: Some(a.fork_rate_limit),
        user: a.user,
        group: a.group,
        ..Default::default()
    };
    let config: PoolConfig = match PoolConfig::from_raw(&raw) {
        Ok(c) => {
            for w in &c.warnings {
                tracing::warn!("configuration: {w}");
            }
            c.value
        }
        Err(e) => {
            eprintln!("prefork-testd: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let base = raw.clone();
    let reload_file = a.reload_file.clone();
    let result = Server::builder(config)
        .service(LineService { clear_pdeathsig: a.clear_pdeathsig })
        .reload(move |running| {
            let Some(path) = &reload_file else {
                return Ok(prefork_core::config::Checked { value: running.clone(), warnings: vec![] }.into());
            };
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let file: RawPoolConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let merged = merge(&base, file);
            running.reload(&merged).map(Into::into).map_err(|e| format!("{}: {e}", path.display()))
        })
        .on_ready(|listeners| {
            let mut out = std::io::stdout().lock();
            for l in listeners {
                let _ = writeln!(out, "LISTEN {}", l.local);
            }
            let _ = writeln!(out, "READY");
            let _ = out.flush();
        })
        .run();
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("prefork-testd: {e}");
            std::process::exit(1);
        }
    }
}
