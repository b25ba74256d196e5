//! Building and running a server: [`Server::builder`] collects the [`Options`] and hands them to
//! the parent process (`os.rs`).

use crate::listeners::Listener;
use crate::options::{Lifecycle, Options, Reloaded, ServerError};
use crate::service::{Connection, Service};
use prefork_core::config::PoolConfig;
use std::path::PathBuf;

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
                handoff: None,
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

    /// Serves on what an old parent handed over in a binary upgrade ([`crate::upgrade::take_handoff`]):
    /// its listening sockets (a configured address that one of them has keeps it), its
    /// agent-check socket, and the pipe on which this server says it is ready, once its pool
    /// serves; the old parent then hands over and stops gracefully (SPEC.md §7.11).
    pub fn handoff(mut self, handoff: crate::upgrade::Handoff) -> Server {
        self.options.handoff = Some(handoff);
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
