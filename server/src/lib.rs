//! # prefork-server
//!
//! The thin shell that runs `prefork-core`'s checked machines on real processes: the parent binds
//! the listeners, creates the scoreboard in `MAP_SHARED` memory, forks children, reaps them on
//! `SIGCHLD`, and turns Apache's signals into the core's commands; each child drops privileges and
//! runs the core's child loop over the listeners, the accept lock and its own slot. Everything
//! protocol-shaped (when to spawn, whom to retire, what a restart does, how a child claims work) is
//! decided by `prefork-core`; this crate only performs it (SPEC.md §1.5). It carries no HTTP, no
//! command line and no configuration file format: `preforkd` (`server/preforkd/`) is one service
//! built on it.
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
//!
//! | module | what |
//! |---|---|
//! | [`Service`], [`Connection`], [`Status`], [`Stream`] | what an embedder writes and gets (`service.rs`) |
//! | [`PoolView`], [`PoolSnapshot`] | the pool, read-only, for status pages (`view.rs`) |
//! | [`Server`] | building and running (`server.rs`) |
//! | [`Reloaded`], [`Lifecycle`], [`ServerError`] | what a server runs with and reports (`options.rs`) |
//! | [`harness`] | a service on a socket pair in this process, without forking (tests, fuzzing) |
//! | `supervisor.rs`, `os.rs` | the parent: its logic on a `System` trait, and the real system (fork, signalfd, waitpid) |
//! | `child.rs` | a child: set-up after fork(), then the core's child loop on epoll, accept4 and the lock |
//! | `gate.rs` | the gate: the core's gate machine on epoll, and the channels that pass connections to children and back |
//! | [`shm`], [`locks`], [`listeners`] | the scoreboard mapping, the four accept locks, the listening sockets |
//! | [`upgrade`] | a binary upgrade in place: what the old parent hands its successor |
//! | [`agent`] | the parent's answer to a load balancer's agent check, and the operator's word for it |
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod agent;
mod child;
mod creds;
mod gate;
#[doc = include_str!("../../docs/embedding.md")]
pub mod guide {}
/// README.md's embedding example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub mod harness;
pub mod listeners;
pub mod locks;
mod options;
mod os;
mod server;
mod service;
pub mod shm;
mod supervisor;
pub mod upgrade;
mod view;

pub use listeners::{ListenQueue, Listener};
pub use options::{Lifecycle, OnReady, Reloaded, Reloader, ServerError};
pub use server::Server;
pub use service::{Connection, NextRequest, Service, Status, Stream};
pub use shm::{Scoreboard, SlotInfo};
pub use view::{GateSnapshot, ListenerInfo, PoolSnapshot, PoolView, Totals, WatchdogKills};

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
