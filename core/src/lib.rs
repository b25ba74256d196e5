//! # prefork-core
//!
//! The prefork protocol (Apache httpd's MPM prefork) as pure, deterministic state machines. No I/O,
//! no clock (time is an argument), no `unsafe`, no system-level dependencies. The same code runs in
//! the real server (`prefork-server`, on fork() and `MAP_SHARED` memory) and under the model
//! checkers (`prefork-model`, on loom/shuttle atomics and an explicit-state explorer).
//!
//! Modules mirror SPEC.md:
//!
//! | module | SPEC.md | what |
//! |---|---|---|
//! | [`slot`] | §2, §3.1 | slot states, letters, the transition table, the slot word |
//! | [`atomic`], [`scoreboard`], [`activity`] | §3, §4 | the shared-memory protocol, the activity word, the derived view |
//! | [`policy`] | §5 | the spare-server policy (`perform_idle_server_maintenance`) |
//! | [`child`] | §6 | the child loop |
//! | [`exit`] | §6.4, §7.3 | exit reasons, codes and causes |
//! | [`gate`] | §15 | the gate: holds connections until a request head is complete (`accept_filter`) |
//! | [`parent`] | §7 | the parent lifecycle |
//! | [`driver`] | §7.1 | the driver contract: one loop from the parent's actions to a platform's effects |
//! | [`config`] | §8 | directives, defaults, clamps |
//! | [`time`] | §1 | time as an argument |
//! | [`seeded`] | §11 | seeded bugs for the checkers' negative tests (feature `seeded-bugs`) |
//! | [`witness`] | §9 | the rules every effect is held to, one checker the simulated worlds share |
//!
//! The machines are sans-IO: feed events with `now`; the effects they ask for (fork, wake,
//! signal, log, lifecycle events …) are carried out on a [`Platform`] by the [`ParentDriver`], the
//! one loop every driver uses:
//!
//! ```
//! use prefork_core::{MemoryBoard, Parent, ParentDriver, PoolConfig, Recorder, SlotTable, Time};
//! use std::sync::atomic::AtomicU64;
//!
//! let config = PoolConfig::default();                  // Apache's defaults, 127.0.0.1:8080
//! let board: MemoryBoard<AtomicU64> = MemoryBoard::new(config.server_limit as usize);
//! let mut platform = Recorder::new(1000);              // a real platform forks in `spawn`
//! let driver = ParentDriver::start(Parent::new(config), Time::ZERO, &board, &mut platform);
//! for effect in platform.take() {
//!     println!("{effect:?}");                           // Spawn(..) … Log(Resumed { .. }), Event(Ready { .. })
//! }
//! assert_eq!(driver.parent().live_children(), 5);
//! assert_eq!(board.slot(0).unwrap().read().unwrap().state.letter(), 'S');
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod activity;
pub mod atomic;
pub mod child;
pub mod config;
pub mod driver;
pub mod exit;
pub mod gate;
pub mod parent;
pub mod policy;
pub mod scoreboard;
pub mod seeded;
pub mod slot;
pub mod time;
pub mod witness;

pub use child::{ChildAction, ChildEvent, ChildLoop};
pub use config::{PoolConfig, RawPoolConfig};
pub use driver::{ParentDriver, Platform, Recorder};
pub use parent::{Command, Parent, ParentAction};
pub use policy::SpareServerPolicy;
pub use scoreboard::{ChildSlot, MemoryBoard, ScoreboardView, Slot, SlotTable, WorkerCounts};
pub use slot::{SlotState, SlotWord};
pub use time::Time;
