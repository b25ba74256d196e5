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
//! | [`atomic`], [`scoreboard`] | §3, §4 | the shared-memory protocol and the derived view |
//! | [`policy`] | §5 | the spare-server policy (`perform_idle_server_maintenance`) |
//! | [`child`] | §6 | the child loop |
//! | [`exit`] | §6.4, §7.3 | exit reasons, codes and causes |
//! | [`parent`] | §7 | the parent lifecycle |
//! | [`config`] | §8 | directives, defaults, clamps |
//! | [`time`] | §1 | time as an argument |
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod atomic;
pub mod child;
pub mod config;
pub mod exit;
pub mod parent;
pub mod policy;
pub mod scoreboard;
pub mod slot;
pub mod time;

pub use child::{ChildAction, ChildEvent, ChildLoop};
pub use config::{PoolConfig, RawPoolConfig};
pub use parent::{Command, Parent, ParentAction};
pub use policy::SpareServerPolicy;
pub use scoreboard::{ChildSlot, MemoryBoard, ScoreboardView, Slot, SlotTable};
pub use slot::{SlotState, SlotWord};
pub use time::Time;
