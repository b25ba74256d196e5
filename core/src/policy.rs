//! The spare-server policy: Apache 2.4's `perform_idle_server_maintenance` (SPEC.md §5).
//!
//! Once per maintenance tick the parent captures a [`ScoreboardView`] and asks
//! [`SpareServerPolicy::tick`] what to do:
//!
//! * count idle children (`Starting` + `Ready`) among the slots below `max_request_workers`;
//! * more than `max_spare_servers` idle: retire **one** idle child, and reset the spawn rate to 1;
//! * fewer than `min_spare_servers` idle: spawn into the lowest `Dead` slots, `idle_spawn_rate` of
//!   them at most, then double the rate (1, 2, 4 … 32) unless the 10-tick hold-off after a graceful
//!   restart is running; with no `Dead` slot left, report "reached MaxRequestWorkers" once and reset
//!   the rate to 1;
//! * otherwise reset the rate to 1.
//!
//! The policy only decides. The parent carries the decision out: it writes `Starting` into each slot
//! before forking, and it retires by a compare-and-swap claim `Ready -> IdleKill` on the candidates in
//! the order given, stopping at the first claim that wins ([`crate::scoreboard::Slot::claim_idle`]).
//! A candidate that took work since the snapshot makes its claim fail; it is never retired.

use crate::scoreboard::ScoreboardView;
use crate::slot::SlotState;

/// Highest spawn rate (Apache `MAX_SPAWN_RATE`).
pub const MAX_SPAWN_RATE: u32 = 32;
/// Spawn rate from which "server seems busy" is logged (Apache AH00162).
pub const BUSY_LOG_RATE: u32 = 8;
/// Spawning ticks without rate doubling after a graceful restart (`hold_off_on_exponential_spawning`).
pub const GRACEFUL_HOLD_OFF: u32 = 10;

/// The three numbers the policy works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpareLimits {
    /// `min_spare_servers`.
    pub min_spare: u32,
    /// `max_spare_servers`.
    pub max_spare: u32,
    /// `max_request_workers`.
    pub max_request_workers: u32,
}

impl From<&crate::config::PoolConfig> for SpareLimits {
    fn from(c: &crate::config::PoolConfig) -> Self {
        SpareLimits {
            min_spare: c.min_spare_servers,
            max_spare: c.max_spare_servers,
            max_request_workers: c.max_request_workers,
        }
    }
}

/// What one tick decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Idle is within `[min_spare, max_spare]`: nothing to do.
    Steady,
    /// Too many idle children: claim the first of these `Ready` slots that can still be claimed
    /// (highest slot first), and only that one.
    Retire {
        /// `Ready` slots below max_request_workers, highest first.
        candidates: Vec<usize>,
    },
    /// Too few idle children: fork one child into each of these `Dead` slots (lowest first).
    Spawn {
        /// The slots, lowest first; `1 <= len <= rate`.
        slots: Vec<usize>,
    },
    /// Too few idle children, but no slot may be used: every slot below max_request_workers is
    /// taken, or as many children as max_request_workers are alive.
    AtMaxRequestWorkers,
    /// Too few idle children, but the parent holds spawning back (crash-loop brake, fork back-off).
    SpawnPaused,
}

/// A message the tick wants logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyLog {
    /// AH00161: "server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers
    /// setting" (error level, once per parent lifetime).
    ReachedMaxRequestWorkers,
    /// AH00162: "server seems busy, (you may need to increase StartServers, or Min/MaxSpareServers),
    /// spawning N children, there are I idle, and T total children" (info level).
    SeemsBusy {
        /// The spawn rate (Apache prints the rate, not the number of free slots).
        spawning: u32,
        /// Idle children below max_request_workers.
        idle: usize,
        /// Live children below max_request_workers.
        total: usize,
    },
}

/// The outcome of one tick.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Maintenance {
    /// What to do.
    pub decision: Decision,
    /// What to log, if anything.
    pub log: Option<PolicyLog>,
    /// Idle children counted (slots below max_request_workers).
    pub idle: usize,
    /// Live children counted (slots below max_request_workers).
    pub total: usize,
}

/// The state the policy keeps between ticks (Apache keeps it in `retained` data, across reloads).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpareServerPolicy {
    idle_spawn_rate: u32,
    hold_off: u32,
    max_workers_reported: bool,
    bugs: crate::seeded::BugSwitch,
}

impl Default for SpareServerPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl SpareServerPolicy {
    /// A fresh policy: rate 1, no hold-off.
    pub const fn new() -> Self {
        SpareServerPolicy {
            idle_spawn_rate: 1,
            hold_off: 0,
            max_workers_reported: false,
            bugs: crate::seeded::BugSwitch::NONE,
        }
    }

    /// Selects a deliberately broken variant (through [`crate::Parent::seed_bug`]).
    #[cfg(feature = "seeded-bugs")]
    pub(crate) fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
        self.bugs.set(bug);
    }

    /// The current spawn rate: always one of 1, 2, 4, 8, 16, 32.
    pub fn idle_spawn_rate(&self) -> u32 {
        self.idle_spawn_rate
    }

    /// Spawning ticks left without rate doubling.
    pub fn hold_off(&self) -> u32 {
        self.hold_off
    }

    /// Has AH00161 been reported?
    pub fn max_workers_reported(&self) -> bool {
        self.max_workers_reported
    }

    /// A graceful restart happened: no doubling for the next [`GRACEFUL_HOLD_OFF`] spawning ticks.
    pub fn on_graceful_restart(&mut self) {
        self.hold_off = GRACEFUL_HOLD_OFF;
    }

    /// A child exited with `APEXIT_CHILDSICK` (resource shortage), a fork failed, or the crash-loop
    /// brake engaged: fork slowly again.
    pub fn on_child_sick(&mut self) {
        self.idle_spawn_rate = 1;
    }

    /// One maintenance tick over `view`. `spawn_allowed` is false while the parent holds spawning
    /// back; the rate then stays as it is.
    pub fn tick(&mut self, limits: SpareLimits, view: &ScoreboardView, spawn_allowed: bool) -> Maintenance {
        let mrw = limits.max_request_workers as usize;
        let below = view.counts_below(mrw);
        let idle = if self.bugs.is(crate::seeded::SeededBug::IdleIgnoresStarting) { below.ready } else { below.idle() };
        let total = below.total() - below.dead;
        // Children anywhere on the board (old generations may sit above a lowered max_request_workers).
        let everywhere = view.counts();
        let alive = everywhere.live() + everywhere.corrupt;

        let mut log = None;
        let decision = if idle > limits.max_spare as usize {
            self.idle_spawn_rate = 1;
            let candidates =
                (0..mrw.min(view.slots.len())).rev().filter(|&i| view.state(i) == Some(SlotState::Ready)).collect();
            Decision::Retire { candidates }
        } else if idle < limits.min_spare as usize {
            let budget = (self.idle_spawn_rate as usize).min(mrw.saturating_sub(alive));
            let slots: Vec<usize> = (0..mrw.min(view.slots.len()))
                .filter(|&i| view.state(i) == Some(SlotState::Dead))
                .take(budget)
                .collect();
            if slots.is_empty() {
                if !self.max_workers_reported {
                    self.max_workers_reported = true;
                    log = Some(PolicyLog::ReachedMaxRequestWorkers);
                }
                self.idle_spawn_rate = 1;
                Decision::AtMaxRequestWorkers
            } else if !spawn_allowed {
                Decision::SpawnPaused
            } else {
                if self.idle_spawn_rate >= BUSY_LOG_RATE {
                    log = Some(PolicyLog::SeemsBusy { spawning: self.idle_spawn_rate, idle, total });
                }
                if self.hold_off > 0 {
                    self.hold_off -= 1;
                } else if self.idle_spawn_rate < MAX_SPAWN_RATE {
                    self.idle_spawn_rate *= 2;
                }
                Decision::Spawn { slots }
            }
        } else {
            self.idle_spawn_rate = 1;
            Decision::Steady
        };
        Maintenance { decision, log, idle, total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotState::{self, *};

    const LIMITS: SpareLimits = SpareLimits { min_spare: 5, max_spare: 10, max_request_workers: 64 };

    fn board(states: &[(SlotState, usize)], len: usize) -> ScoreboardView {
        let mut v: Vec<SlotState> = states.iter().flat_map(|&(s, n)| std::iter::repeat_n(s, n)).collect();
        v.resize(len, Dead);
        ScoreboardView::from_states(v)
    }

    fn spawned(m: &Maintenance) -> Vec<usize> {
        match &m.decision {
            Decision::Spawn { slots } => slots.clone(),
            other => panic!("expected a spawn, got {other:?}"),
        }
    }

    #[test]
    fn empty_pool_ramps_one_two_four_up_to_thirty_two() {
        let mut p = SpareServerPolicy::new();
        let limits = SpareLimits { min_spare: 100, max_spare: 200, max_request_workers: 256 };
        let mut states = vec![Dead; 256];
        let mut sizes = vec![];
        for _ in 0..8 {
            let view = ScoreboardView::from_states(states.clone());
            let slots = spawned(&p.tick(limits, &view, true));
            sizes.push(slots.len());
            for s in slots {
                states[s] = BusyWrite; // all busy: idle stays 0
            }
        }
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn spawns_go_to_the_lowest_dead_slots() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        let view = ScoreboardView::from_states([BusyRead, Dead, BusyRead, Dead, Dead, Dead, Dead, Dead]);
        let m = p.tick(SpareLimits { max_request_workers: 8, ..LIMITS }, &view, true);
        assert_eq!(spawned(&m), [1, 3, 4, 5]);
        assert_eq!(p.idle_spawn_rate(), 8);
    }

    #[test]
    fn starting_counts_as_idle() {
        let mut p = SpareServerPolicy::new();
        let m = p.tick(LIMITS, &board(&[(Starting, 3), (Ready, 2)], 64), true);
        assert_eq!((m.idle, m.decision), (5, Decision::Steady));
    }

    #[test]
    fn too_many_idle_retires_exactly_one_candidate_list_highest_first_and_resets_rate() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 16, ..SpareServerPolicy::new() };
        let view = board(&[(Ready, 6), (BusyRead, 1), (Starting, 3), (Ready, 3)], 64);
        let m = p.tick(LIMITS, &view, true);
        assert_eq!(m.idle, 12);
        assert_eq!(m.decision, Decision::Retire { candidates: vec![12, 11, 10, 5, 4, 3, 2, 1, 0] });
        assert_eq!(p.idle_spawn_rate(), 1);
    }

    #[test]
    fn full_pool_reports_max_request_workers_once() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 8, ..SpareServerPolicy::new() };
        let limits = SpareLimits { min_spare: 2, max_spare: 4, max_request_workers: 4 };
        let view = ScoreboardView::from_states([BusyRead, BusyWrite, Keepalive, Ready, Dead, Dead]);
        assert!(!p.max_workers_reported());
        let m = p.tick(limits, &view, true);
        assert_eq!((m.decision, m.log), (Decision::AtMaxRequestWorkers, Some(PolicyLog::ReachedMaxRequestWorkers)));
        assert!(p.max_workers_reported());
        assert_eq!(p.idle_spawn_rate(), 1);
        let m = p.tick(limits, &view, true);
        assert_eq!((m.decision, m.log), (Decision::AtMaxRequestWorkers, None), "reported once");
    }

    #[test]
    fn graceful_slots_occupy_capacity() {
        let mut p = SpareServerPolicy::new();
        let limits = SpareLimits { min_spare: 2, max_spare: 4, max_request_workers: 3 };
        let m = p.tick(limits, &ScoreboardView::from_states([Graceful, Graceful, Graceful]), true);
        assert_eq!(m.decision, Decision::AtMaxRequestWorkers);
    }

    #[test]
    fn children_above_a_lowered_max_request_workers_use_up_the_budget() {
        // max_request_workers was lowered from 6 to 3 on a restart; three old children still live above.
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        let limits = SpareLimits { min_spare: 2, max_spare: 4, max_request_workers: 3 };
        let view = ScoreboardView::from_states([Ready, Dead, Dead, Graceful, Graceful, BusyRead]);
        assert_eq!(p.tick(limits, &view, true).decision, Decision::AtMaxRequestWorkers);
        assert_eq!(p.idle_spawn_rate(), 1, "hitting the limit resets the rate");
        // One old child left above the limit: a rate of 4 is cut to the budget of 3 - 1 = 2.
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        let view = ScoreboardView::from_states([Dead, Dead, Dead, Graceful, Dead, Dead]);
        assert_eq!(spawned(&p.tick(limits, &view, true)), [0, 1]);
    }

    #[test]
    fn seems_busy_is_logged_from_rate_eight_with_apaches_numbers() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 8, ..SpareServerPolicy::new() };
        let m = p.tick(LIMITS, &board(&[(BusyRead, 20), (Ready, 1)], 64), true);
        assert_eq!(m.log, Some(PolicyLog::SeemsBusy { spawning: 8, idle: 1, total: 21 }));
        assert_eq!(spawned(&m).len(), 8);
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        assert_eq!(p.tick(LIMITS, &board(&[(BusyRead, 20)], 64), true).log, None);
    }

    #[test]
    fn graceful_hold_off_suspends_doubling_for_ten_spawning_ticks() {
        let mut p = SpareServerPolicy::new();
        p.on_graceful_restart();
        let busy = board(&[(BusyRead, 1)], 256);
        let limits = SpareLimits { min_spare: 5, max_spare: 10, max_request_workers: 256 };
        for tick in 0..10 {
            assert_eq!(spawned(&p.tick(limits, &busy, true)).len(), 1, "tick {tick}");
        }
        assert_eq!(p.hold_off(), 0);
        assert_eq!(spawned(&p.tick(limits, &busy, true)).len(), 1);
        assert_eq!(spawned(&p.tick(limits, &busy, true)).len(), 2, "doubling resumes");
    }

    #[test]
    fn steady_and_sick_reset_the_rate() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 32, ..SpareServerPolicy::new() };
        assert_eq!(p.tick(LIMITS, &board(&[(Ready, 7)], 64), true).decision, Decision::Steady);
        assert_eq!(p.idle_spawn_rate(), 1);
        p.idle_spawn_rate = 16;
        p.on_child_sick();
        assert_eq!(p.idle_spawn_rate(), 1);
    }

    #[test]
    fn paused_spawning_keeps_the_rate() {
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        let m = p.tick(LIMITS, &board(&[], 64), false);
        assert_eq!(m.decision, Decision::SpawnPaused);
        assert_eq!(p.idle_spawn_rate(), 4);
    }

    #[test]
    fn corrupt_slots_are_neither_idle_nor_free() {
        let mut p = SpareServerPolicy::new();
        let mut view = ScoreboardView::from_states([Dead, Dead]);
        view.slots[0] = Err(crate::slot::SlotError::CorruptWord { raw: 7, code: 7 });
        let limits = SpareLimits { min_spare: 1, max_spare: 2, max_request_workers: 2 };
        assert_eq!(spawned(&p.tick(limits, &view, true)), [1]);
    }
}
