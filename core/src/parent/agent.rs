//! The load balancer's agent check (SPEC.md §7.10): what the parent tells HAProxy about its pool.
//!
//! HAProxy's `agent-check` connects to a port of each server every few seconds (`agent-inter`),
//! reads one line and closes. The answer is a pure function of what the parent knows: its phase,
//! the children it has and what their slots show as it believes them (a word it does not believe
//! counts as its own record says, §7.6), the accept queues, and the operator's word
//! (`preforkd -k ready|drain|maint`).
//!
//! ```text
//!   the pool runs, operator ready    "up ready N%"   N: the free share of max_request_workers
//!   the pool runs, operator drain    "up drain"      no new connections; the held ones go on
//!   the pool runs, operator maint    "maint"         out of the farm (HAProxy's MAINT)
//!   a hard restart replaces the pool "up drain"      "up ready N%" again once it runs
//!   a graceful stop                  "drain"         it takes no new connection any more
//!   a stop                           "down #stopping"
//! ```
//!
//! `N` = max(1, ⌈100 · free / max_request_workers⌉), free = max_request_workers − children not
//! idle (busy, finishing, being retired) − connections waiting in the accept queues, at least 0.
//! A pool with no idle child but room to fork still has capacity: demand spawning forks for the
//! queue at once (§5.1a). The floor of 1 % keeps a full server in the farm: were every server
//! drained when full, HAProxy would answer 503 at once instead of queueing; with 1 % a full
//! server gets about one new connection in a hundred while another has room.

use super::{Observation, Parent, Phase};
use crate::scoreboard::SlotTable;
use std::fmt;

/// The operator's word for the balancer (`preforkd -k ready|drain|maint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OperatorState {
    /// In the farm, weighted by free capacity.
    #[default]
    Ready,
    /// No new connections (HAProxy's DRAIN: weight 0); those held go on.
    Drain,
    /// Out of the farm (HAProxy's MAINT).
    Maint,
}

impl OperatorState {
    /// Every word, in the order `--help` lists them.
    pub const ALL: [OperatorState; 3] = [OperatorState::Ready, OperatorState::Drain, OperatorState::Maint];

    /// The word (`-k` action, the state file's content, HAProxy's word).
    pub fn name(self) -> &'static str {
        match self {
            OperatorState::Ready => "ready",
            OperatorState::Drain => "drain",
            OperatorState::Maint => "maint",
        }
    }

    /// The state a word names (surrounding white space ignored), if any.
    pub fn parse(word: &str) -> Option<OperatorState> {
        let word = word.trim();
        Self::ALL.into_iter().find(|s| s.name() == word)
    }
}

/// What the parent answers an agent check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentAnswer {
    /// The pool runs: take new connections with this share (1 to 100) of the configured weight.
    Up {
        /// Percent of the server's configured weight.
        weight: u8,
    },
    /// Up, but send no new connections: the operator's drain, or a hard restart under way.
    Drain,
    /// Out of the farm: the operator's maint.
    Maint,
    /// A graceful stop: nothing new; what is held finishes.
    Stopping,
    /// A stop: the server is going away.
    Down,
}

impl fmt::Display for AgentAnswer {
    /// The line HAProxy reads (without its newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAnswer::Up { weight } => write!(f, "up ready {weight}%"),
            AgentAnswer::Drain => f.write_str("up drain"),
            AgentAnswer::Maint => f.write_str("maint"),
            AgentAnswer::Stopping => f.write_str("drain"),
            AgentAnswer::Down => f.write_str("down #stopping"),
        }
    }
}

impl Parent {
    /// The answer to a load balancer's agent check now (SPEC.md §7.10). A query: it changes
    /// nothing, repairs nothing and logs nothing.
    pub fn agent_answer<T: SlotTable + ?Sized>(
        &self,
        board: &T,
        observed: &Observation,
        operator: OperatorState,
    ) -> AgentAnswer {
        match self.phase() {
            Phase::New | Phase::Restarting => return AgentAnswer::Drain,
            Phase::Draining => return AgentAnswer::Stopping,
            Phase::Stopping | Phase::Exited => return AgentAnswer::Down,
            Phase::Running => {}
        }
        match operator {
            OperatorState::Drain => return AgentAnswer::Drain,
            OperatorState::Maint => return AgentAnswer::Maint,
            OperatorState::Ready => {}
        }
        let counts = self.believed_view(board).counts();
        let limit = self.max_request_workers(board).max(1);
        let held = counts.live() - counts.idle();
        let waiting: usize = observed.queues.iter().map(|q| q.waiting as usize).sum();
        let free = limit.saturating_sub(held).saturating_sub(waiting);
        let weight = (100 * free).div_ceil(limit).clamp(1, 100);
        AgentAnswer::Up { weight: weight as u8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, RawPoolConfig};
    use crate::driver::{ParentDriver, Recorder};
    use crate::parent::{Command, ParentAction, QueueDepth, Spawn};
    use crate::scoreboard::{ChildSlot, MemoryBoard};
    use crate::slot::SlotState;
    use crate::time::Time;
    use std::cell::Cell;

    struct Pool {
        board: MemoryBoard<Cell<u64>>,
        driver: ParentDriver,
        spawns: Vec<Spawn>,
        platform: Recorder,
    }

    /// Four children of four (`max_request_workers` 4), all starting.
    fn pool() -> Pool {
        let raw = RawPoolConfig {
            start_servers: Some(4),
            min_spare_servers: Some(1),
            max_spare_servers: Some(4),
            server_limit: Some(4),
            max_request_workers: Some(4),
            ..Default::default()
        };
        let board = MemoryBoard::new(4);
        let mut platform = Recorder::new(100);
        let parent = Parent::new(PoolConfig::from_raw(&raw).unwrap().value);
        let driver = ParentDriver::start(parent, Time::ZERO, &board, &mut platform);
        let spawns = platform
            .take()
            .into_iter()
            .filter_map(|a| match a {
                ParentAction::Spawn(s) => Some(s),
                _ => None,
            })
            .collect();
        Pool { board, driver, spawns, platform }
    }

    impl Pool {
        fn set(&self, child: usize, states: &[SlotState]) {
            let s = self.spawns[child];
            let slot = ChildSlot::attach(&self.board, s.slot, s.born).unwrap();
            for &state in states {
                slot.set(state).unwrap();
            }
        }
        fn answer(&self, waiting: u32, operator: OperatorState) -> AgentAnswer {
            let observed = Observation { queues: vec![QueueDepth { waiting, exact: true }], lock_holder: None };
            self.driver.parent().agent_answer(&self.board, &observed, operator)
        }
        fn command(&mut self, command: Command) {
            self.driver.handle_command(Time::ZERO, command, &self.board, &mut self.platform);
        }
    }

    #[test]
    fn the_weight_is_the_free_share_of_max_request_workers_rounded_up_and_at_least_one_percent() {
        let p = pool();
        assert_eq!(p.answer(0, OperatorState::Ready), AgentAnswer::Up { weight: 100 }, "starting children are idle");
        for child in 0..4 {
            p.set(child, &[SlotState::Ready]);
        }
        assert_eq!(p.answer(0, OperatorState::Ready).to_string(), "up ready 100%");
        p.set(0, &[SlotState::BusyRead]);
        assert_eq!(p.answer(0, OperatorState::Ready), AgentAnswer::Up { weight: 75 });
        p.set(1, &[SlotState::BusyRead, SlotState::Keepalive]);
        assert_eq!(
            p.answer(1, OperatorState::Ready),
            AgentAnswer::Up { weight: 25 },
            "a waiting connection takes a share"
        );
        p.set(2, &[SlotState::BusyRead]);
        p.set(3, &[SlotState::BusyRead]);
        assert_eq!(p.answer(5, OperatorState::Ready), AgentAnswer::Up { weight: 1 }, "full: the floor, not drain");
    }

    #[test]
    fn a_word_the_parent_does_not_believe_counts_as_its_own_record_says() {
        let p = pool();
        for child in 0..4 {
            p.set(child, &[SlotState::Ready]);
        }
        p.board.slot_word(0).set(u64::MAX); // corrupt: the parent believes its child is leaving
        assert_eq!(p.answer(0, OperatorState::Ready), AgentAnswer::Up { weight: 75 });
    }

    #[test]
    fn the_operator_and_the_phase_decide_before_the_weight() {
        let mut p = pool();
        assert_eq!(p.answer(0, OperatorState::Drain).to_string(), "up drain");
        assert_eq!(p.answer(0, OperatorState::Maint).to_string(), "maint");
        p.command(Command::GracefulStop);
        assert_eq!(p.answer(0, OperatorState::Ready).to_string(), "drain", "a graceful stop");
        assert_eq!(p.answer(0, OperatorState::Maint), AgentAnswer::Stopping, "whatever the operator said");
        p.command(Command::Stop);
        assert_eq!(p.answer(0, OperatorState::Ready).to_string(), "down #stopping");
        let mut p = pool();
        let cfg = Box::new(p.driver.parent().config().clone());
        p.command(Command::HardRestart(cfg));
        assert_eq!(p.answer(0, OperatorState::Ready), AgentAnswer::Drain, "a hard restart replaces the pool");
    }

    #[test]
    fn operator_words_read_back_and_nothing_else_is_one() {
        for s in OperatorState::ALL {
            assert_eq!(OperatorState::parse(&format!("{}\n", s.name())), Some(s));
        }
        assert_eq!(OperatorState::parse("READY"), None);
        assert_eq!(OperatorState::parse("up"), None);
        assert_eq!(OperatorState::parse(""), None);
    }
}
