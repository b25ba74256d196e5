//! # prefork-model
//!
//! Checks `prefork-core`'s own state machines (never a copy) under three checkers, each with crash
//! injection and with seeded bugs it must catch (SPEC.md §11):
//!
//! | checker | where | what it explores |
//! |---|---|---|
//! | loom | `tests/loom.rs` | the slot protocol and the accept-lock protocol on loom atomics: every interleaving and weak-memory outcome up to a preemption bound |
//! | shuttle | [`shuttle_system`], `tests/shuttle.rs` | the whole system (parent, children, clients, operator, faults) on shuttle threads, under random and PCT schedules |
//! | stateright | [`system`], `tests/stateright.rs`, `examples/explorer.rs` | every reachable state of a small system (parent, up to 3 children, 2 listeners, crashes, restarts) |
//!
//! Threads stand in for processes, in-memory queues for listen sockets, and a simulated lock with
//! the kernel's release-on-exit semantics (or, for a negative test, without) for the accept lock.
#![warn(missing_docs)]

pub mod fuzzing;
pub mod gate_system;
mod seeded;
pub mod shuttle_system;
pub mod system;
pub mod words;

use prefork_core::config::{PoolConfig, RawPoolConfig};

/// A pool for the checks: 1 or 2 loopback listeners (2 put the accept lock in use), and
/// `start_servers`, `min_spare_servers`, `max_spare_servers`, `max_request_workers` (also the
/// `server_limit`).
pub fn pool(listeners: usize, start: i64, min_spare: i64, max_spare: i64, limit: i64) -> PoolConfig {
    pool_with_limits(listeners, start, min_spare, max_spare, limit, limit)
}

/// The same with a `max_request_workers` below the `server_limit`.
pub fn pool_with_limits(
    listeners: usize,
    start: i64,
    min_spare: i64,
    max_spare: i64,
    max_request_workers: i64,
    server_limit: i64,
) -> PoolConfig {
    let listen = ["127.0.0.1:1", "127.0.0.1:2"][..listeners.clamp(1, 2)].iter().map(|s| s.to_string()).collect();
    PoolConfig::from_raw(&RawPoolConfig {
        listen: Some(listen),
        start_servers: Some(start),
        min_spare_servers: Some(min_spare),
        max_spare_servers: Some(max_spare),
        max_request_workers: Some(max_request_workers),
        server_limit: Some(server_limit),
        // Demand spawning (the default) at the ticks only: looks between ticks would be extra
        // timeouts that use up the models' tick budgets (the looks are checked by the core's
        // tests, `parent_lifecycle.rs`, and on real processes).
        demand_interval_ms: Some(1000),
        ..Default::default()
    })
    .expect("a valid pool")
    .value
}
