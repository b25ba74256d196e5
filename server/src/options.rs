//! What a server runs with and reports: the [`Options`] the builder collects, what a restart
//! runs with ([`Reloaded`]), lifecycle moments for a service manager ([`Lifecycle`]), and what
//! can stop a start ([`ServerError`]). A leaf: the builder (`server.rs`), the parent's system
//! (`os.rs`) and its logic (`supervisor.rs`) all read it, and it reads none of them.

use crate::listeners::Listener;
use crate::service::Service;
use prefork_core::config::{Checked, PoolConfig};
use prefork_core::parent::ParentEvent;
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
    /// The agent-check port (`agent_listen`) could not be bound.
    #[error("cannot listen for agent checks: {0}")]
    Agent(io::Error),
    /// The gate's channels could not be made (`accept_filter = "httpready"`).
    #[error("cannot set up the gate (accept_filter = \"httpready\"): {0}")]
    Gate(String),
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

/// Lifecycle moments, for a service manager (systemd's `sd_notify`): the core's
/// [`ParentEvent`]s, as they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Serving: after start-up, and again when a restart is in force.
    Ready,
    /// A restart was accepted and is under way.
    Reloading,
    /// Stopping (a stop, a graceful stop, or a child's fatal error).
    Stopping,
}

impl From<&ParentEvent> for Lifecycle {
    fn from(event: &ParentEvent) -> Self {
        match event {
            ParentEvent::Ready { .. } => Lifecycle::Ready,
            ParentEvent::Reloading { .. } => Lifecycle::Reloading,
            ParentEvent::Stopping { .. } => Lifecycle::Stopping,
        }
    }
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
    pub(crate) handoff: Option<crate::upgrade::Handoff>,
    pub(crate) notify: Option<Box<dyn FnMut(Lifecycle)>>,
}
