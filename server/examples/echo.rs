//! A preforking line-echo server on `prefork-server`: every line a client sends comes back, one
//! child per connection, Apache's pool management around it.
//!
//! ```sh
//! cargo run -p prefork-server --example echo                 # 127.0.0.1:7070
//! cargo run -p prefork-server --example echo 127.0.0.1:7070 [::1]:7070   # two listeners: the accept lock is used
//! printf 'hello\nworld\n' | nc -q1 127.0.0.1 7070
//! kill -USR1 <pid>   # graceful restart     kill -TERM <pid>   # stop
//! ```
//!
//! Run as root, it drops the children to `nobody`.

use prefork_core::config::{PoolConfig, RawPoolConfig};
use prefork_core::scoreboard::SlotUpdate;
use prefork_core::slot::SlotState;
use prefork_server::{Connection, Server};
use std::io::{BufRead, BufReader, Write};

/// One connection: echo lines until the client closes, showing R (reading) and W (writing) in the
/// scoreboard; on a graceful restart or stop, answer the line in hand and close.
fn echo(conn: &mut Connection<'_>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.stream().try_clone()?);
    let mut line = String::new();
    loop {
        conn.status().set(SlotState::BusyRead);
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed
        }
        let started = std::time::Instant::now();
        conn.status().request(line.trim_end());
        let last = conn.status().set(SlotState::BusyWrite) == SlotUpdate::Graceful;
        conn.stream().write_all(line.as_bytes())?;
        conn.status().count_request(line.len() as u64, started.elapsed());
        if last {
            return Ok(());
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut listen: Vec<String> = std::env::args().skip(1).collect();
    if listen.is_empty() {
        listen.push("127.0.0.1:7070".into());
    }
    let root = nix::unistd::geteuid().is_root();
    let raw = RawPoolConfig {
        listen: Some(listen),
        start_servers: Some(3),
        min_spare_servers: Some(2),
        max_spare_servers: Some(5),
        max_request_workers: Some(32),
        server_limit: Some(32),
        user: root.then(|| "nobody".into()),
        ..Default::default()
    };
    let config = match PoolConfig::from_raw(&raw) {
        Ok(c) => c.value,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(2);
        }
    };
    println!("echo server, parent pid {}", std::process::id());
    match Server::builder(config).service(echo).run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    }
}
