//! # prefork-server
//!
//! The thin shell that runs `prefork-core`'s checked machines on real processes: the parent binds
//! the listeners, creates the scoreboard in `MAP_SHARED` memory, forks children, reaps them on
//! `SIGCHLD`, and turns Apache's signals into the core's commands; each child drops privileges and
//! runs the core's child loop over the listeners, the accept lock and its own slot. Everything
//! protocol-shaped (when to spawn, whom to retire, what a restart does, how a child claims work) is
//! decided by `prefork-core`; this crate only performs it (SPEC.md §1.5).
//!
//! ```no_run
//! use prefork_server::{Server, Connection};
//! use std::io::{BufRead, BufReader, Write};
//!
//! let config = prefork_core::PoolConfig::default();
//! let code = Server::builder(config)
//!     .service(|conn: &mut Connection<'_>| {
//!         let mut line = String::new();
//!         BufReader::new(conn.stream()).read_line(&mut line)?;
//!         conn.stream().write_all(line.as_bytes())
//!     })
//!     .run()
//!     .expect("server");
//! std::process::exit(code);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod child;
mod creds;
pub mod daemon;
pub mod fuzzing;
pub mod http;
pub mod listeners;
pub mod locks;
mod parent;
pub mod shm;

use prefork_core::config::{Checked, PoolConfig};
use prefork_core::scoreboard::{ChildSlot, SlotUpdate};
use prefork_core::slot::SlotState;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use listeners::Listener;
pub use shm::{Scoreboard, SlotInfo};

/// What a child does with each accepted connection.
///
/// The service value is created in the parent and copied into every child by `fork()`; each child
/// owns its copy. A child serves one connection at a time.
pub trait Service: 'static {
    /// Called once in each child, after privileges are dropped, before its first connection.
    /// An error ends the child (exit code 7, "sick"; the crash-loop brake limits retries).
    fn child_init(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Serves one connection. The slot shows `R` when this is called; set `W`, `K`, `L`, `C` with
    /// [`Status::set`] as the work goes on. When [`Status::set`] answers
    /// [`SlotUpdate::Graceful`] (a graceful restart or stop), finish the request in hand, tell
    /// the client the connection closes, and return. Errors are logged at debug level.
    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()>;
}

impl<F> Service for F
where
    F: FnMut(&mut Connection<'_>) -> io::Result<()> + 'static,
{
    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()> {
        self(conn)
    }
}

/// An accepted stream: TCP or unix-domain.
#[derive(Debug)]
pub enum Stream {
    /// From a TCP listener.
    Tcp(TcpStream),
    /// From a unix-domain listener.
    Unix(UnixStream),
}

impl Stream {
    /// Sets the read and write timeouts (Apache's `Timeout`).
    pub fn set_timeouts(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    /// Sets how long a read may wait (`SO_RCVTIMEO`; `None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets how long a write may wait (`SO_SNDTIMEO`; `None`: forever).
    pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The child's handle on its own scoreboard slot, for the service.
#[derive(Debug)]
pub struct Status<'a> {
    slot: ChildSlot<'a, AtomicU64>,
    record: &'a shm::SlotRecord,
    listeners: &'a [Listener],
    released: std::cell::Cell<bool>,
}

impl Status<'_> {
    /// Shows what the child is doing: one of `BusyRead`, `BusyWrite`, `Keepalive`, `Logging`,
    /// `Closing`. Answers [`SlotUpdate::Graceful`] when the parent asked the child to finish up (a
    /// graceful restart or stop): the slot keeps showing `G`.
    ///
    /// A child that is winding down will never accept again, so it lets go of the listening
    /// sockets at once (SPEC.md §7.5): after a graceful stop closed the parent's copies, the
    /// sockets close as soon as no child holds them, and new clients are refused instead of
    /// queueing behind a long response (to be reset when the last child leaves).
    pub fn set(&self, state: SlotState) -> SlotUpdate {
        let update = match self.slot.set(state) {
            Ok(update) => update,
            // Not a busy state, or the slot was damaged: nothing to show; wind down to be safe.
            Err(_) => SlotUpdate::Graceful,
        };
        if update == SlotUpdate::Graceful && !self.released.replace(true) {
            listeners::release_in_child(self.listeners);
        }
        update
    }

    /// Has the parent asked this child to finish up (graceful restart or stop)?
    pub fn winding_down(&self) -> bool {
        !matches!(self.slot.check(), Ok(SlotUpdate::Applied)) || self.slot.generation_changed()
    }

    /// Shows the current request line (cut at [`shm::REQUEST_BYTES`]).
    pub fn request(&self, line: &str) {
        self.record.set_texts(None, Some(line));
    }

    /// Counts one request and the bytes sent for it.
    pub fn count_request(&self, bytes_sent: u64) {
        self.record.requests.fetch_add(1, Ordering::Relaxed);
        self.record.bytes.fetch_add(bytes_sent, Ordering::Relaxed);
    }

    /// The slot index.
    pub fn slot(&self) -> usize {
        self.slot.index()
    }
}

/// One accepted connection, handed to [`Service::serve`].
#[derive(Debug)]
pub struct Connection<'a> {
    stream: Stream,
    peer: String,
    peer_addr: Option<std::net::SocketAddr>,
    listener: usize,
    status: Status<'a>,
    board: &'a Scoreboard,
    listeners: &'a [Listener],
}

impl<'a> Connection<'a> {
    /// The stream.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The peer's address as text (`ip:port`, or `unix`).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's address (`None` for unix-domain peers).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr
    }

    /// Index of the listener (in the configuration's `listen` order) it arrived on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The whole scoreboard (read it for status pages; write only through [`Connection::status`]).
    pub fn board(&self) -> &'a Scoreboard {
        self.board
    }

    /// Every listener of the pool.
    pub fn listeners(&self) -> &'a [Listener] {
        self.listeners
    }

    /// The child's slot.
    pub fn status(&self) -> &Status<'a> {
        &self.status
    }
}

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(io::Error),
    /// The shared scoreboard could not be created.
    #[error("cannot create the scoreboard: {0}")]
    Scoreboard(io::Error),
    /// The accept lock could not be created.
    #[error("cannot create the {mechanism} accept lock in {dir}: {source}")]
    Lock {
        /// The mechanism.
        mechanism: &'static str,
        /// Its directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `user`/`group` cannot be used (unknown, or missing while running as root).
    #[error("{0}")]
    Credentials(String),
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
    /// The pid file could not be written.
    #[error("cannot write the pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// What a restart runs with: the new pool configuration and, if it changed, a new service for the
/// new children (old children keep theirs until they exit).
pub struct Reloaded {
    /// The validated pool configuration and its warnings.
    pub config: Checked<PoolConfig>,
    /// A new service, or `None` to keep the current one.
    pub service: Option<Box<dyn Service>>,
}

impl From<Checked<PoolConfig>> for Reloaded {
    fn from(config: Checked<PoolConfig>) -> Self {
        Reloaded { config, service: None }
    }
}

/// Produces what a restart runs with, from the running configuration, or says why it cannot.
pub type Reloader = Box<dyn FnMut(&PoolConfig) -> Result<Reloaded, String>>;

/// Lifecycle moments, for a service manager (systemd's `sd_notify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Serving: after start-up, and again after each restart.
    Ready,
    /// A restart was accepted and is under way.
    Reloading,
    /// Stopping (a stop or a graceful stop).
    Stopping,
}
/// Called once the listeners are bound and the first children are forked.
pub type OnReady = Box<dyn FnOnce(&[Listener])>;

/// Builds and runs a server.
pub struct Server {
    config: PoolConfig,
    service: Box<dyn Service>,
    reload: Option<Reloader>,
    on_ready: Option<OnReady>,
    lock_dir: PathBuf,
    pid_file: Option<PathBuf>,
    inherited: Option<Vec<Listener>>,
    notify: Option<Box<dyn FnMut(Lifecycle)>>,
}

impl Server {
    /// A server for `config` (validated: `PoolConfig::from_raw`). Until [`Server::service`] is
    /// called, it closes every connection at once.
    pub fn builder(config: PoolConfig) -> Server {
        Server {
            config,
            service: Box::new(|_: &mut Connection<'_>| Ok(())),
            reload: None,
            on_ready: None,
            lock_dir: std::env::temp_dir(),
            pid_file: None,
            inherited: None,
            notify: None,
        }
    }

    /// The connection handler.
    pub fn service(mut self, service: impl Service) -> Server {
        self.service = Box::new(service);
        self
    }

    /// How a restart (SIGUSR1, SIGHUP) gets its configuration; by default it keeps the running one.
    /// An `Err` rejects the restart (logged) and the server keeps running as it is.
    pub fn reload(mut self, reload: impl FnMut(&PoolConfig) -> Result<Reloaded, String> + 'static) -> Server {
        self.reload = Some(Box::new(reload));
        self
    }

    /// Serves on these already-listening sockets (systemd socket activation) instead of binding
    /// the configured addresses; they are kept across restarts.
    pub fn listeners(mut self, listeners: Vec<Listener>) -> Server {
        self.inherited = Some(listeners);
        self
    }

    /// Called at lifecycle moments (for `sd_notify`).
    pub fn notify(mut self, f: impl FnMut(Lifecycle) + 'static) -> Server {
        self.notify = Some(Box::new(f));
        self
    }

    /// Called once after the listeners are bound and the first children started.
    pub fn on_ready(mut self, f: impl FnOnce(&[Listener]) + 'static) -> Server {
        self.on_ready = Some(Box::new(f));
        self
    }

    /// Where the fcntl/flock lock file is created (default: the temp directory).
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Server {
        self.lock_dir = dir.into();
        self
    }

    /// Writes the parent's pid there while it runs.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Server {
        self.pid_file = Some(path.into());
        self
    }

    /// Runs the parent in this process until it stops; returns the exit code (0 after a stop,
    /// 1 after a fatal child error). Call it from a single-threaded process: it forks.
    pub fn run(self) -> Result<i32, ServerError> {
        parent::run(self)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
