//! Building and running a server: [`Server::builder`], what a restart runs with ([`Reloaded`]),
//! lifecycle moments for a service manager ([`Lifecycle`]), and what can stop a start
//! ([`ServerError`]).

use crate::listeners::Listener;
use crate::service::{Connection, Service};
use prefork_core::config::{Checked, PoolConfig};
use std::io;
use std::path::PathBuf;

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

/// Everything a server runs with (what the builder collected).
pub(crate) struct Options {
    pub(crate) config: PoolConfig,
    pub(crate) service: Box<dyn Service>,
    pub(crate) reload: Option<Reloader>,
    pub(crate) on_ready: Option<OnReady>,
    pub(crate) lock_dir: PathBuf,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) inherited: Option<Vec<Listener>>,
    pub(crate) notify: Option<Box<dyn FnMut(Lifecycle)>>,
}

/// Builds and runs a server.
pub struct Server {
    options: Options,
}

impl Server {
    /// A server for `config` (validated: `PoolConfig::from_raw`). Until [`Server::service`] is
    /// called, it closes every connection at once.
    pub fn builder(config: PoolConfig) -> Server {
        Server {
            options: Options {
                config,
                service: Box::new(|_: &mut Connection<'_>| Ok(())),
                reload: None,
                on_ready: None,
                lock_dir: std::env::temp_dir(),
                pid_file: None,
                inherited: None,
                notify: None,
            },
        }
    }

    /// The connection handler.
    pub fn service(mut self, service: impl Service) -> Server {
        self.options.service = Box::new(service);
        self
    }

    /// How a restart (SIGUSR1, SIGHUP) gets its configuration; by default it keeps the running one.
    /// An `Err` rejects the restart (logged) and the server keeps running as it is.
    pub fn reload(mut self, reload: impl FnMut(&PoolConfig) -> Result<Reloaded, String> + 'static) -> Server {
        self.options.reload = Some(Box::new(reload));
        self
    }

    /// Serves on these already-listening sockets (systemd socket activation) instead of binding
    /// the configured addresses; they are kept across restarts.
    pub fn listeners(mut self, listeners: Vec<Listener>) -> Server {
        self.options.inherited = Some(listeners);
        self
    }

    /// Called at lifecycle moments (for `sd_notify`).
    pub fn notify(mut self, f: impl FnMut(Lifecycle) + 'static) -> Server {
        self.options.notify = Some(Box::new(f));
        self
    }

    /// Called once after the listeners are bound and the first children started.
    pub fn on_ready(mut self, f: impl FnOnce(&[Listener]) + 'static) -> Server {
        self.options.on_ready = Some(Box::new(f));
        self
    }

    /// Where the fcntl/flock lock file is created (default: the temp directory).
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Server {
        self.options.lock_dir = dir.into();
        self
    }

    /// Writes the parent's pid there while it runs.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Server {
        self.options.pid_file = Some(path.into());
        self
    }

    /// Runs the parent in this process until it stops; returns the exit code (0 after a stop,
    /// 1 after a fatal child error). Call it from a single-threaded process: it forks.
    pub fn run(self) -> Result<i32, ServerError> {
        crate::os::run(self.options)
    }
}
