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

use crate::config::SpawnMode;
use crate::scoreboard::ScoreboardView;
use crate::slot::SlotState;
use crate::time::Time;
use std::collections::VecDeque;
use std::time::Duration;

mod broken;

/// Highest spawn rate (Apache `MAX_SPAWN_RATE`).
pub const MAX_SPAWN_RATE: u32 = 32;
/// Spawn rate from which "server seems busy" is logged (Apache AH00162).
pub const BUSY_LOG_RATE: u32 = 8;
/// Spawning ticks without rate doubling after a graceful restart (`hold_off_on_exponential_spawning`).
pub const GRACEFUL_HOLD_OFF: u32 = 10;

/// What the policy works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpareLimits {
    /// `min_spare_servers`.
    pub min_spare: u32,
    /// `max_spare_servers`.
    pub max_spare: u32,
    /// `max_request_workers`.
    pub max_request_workers: u32,
    /// `spawn_mode`.
    pub mode: SpawnMode,
    /// `fork_rate_limit`: forks in any window of [`FORK_WINDOW`].
    pub fork_rate_limit: u32,
}

impl SpareLimits {
    /// Apache's policy (the ramp) with these three numbers and the default fork-rate limit.
    pub const fn ramp(min_spare: u32, max_spare: u32, max_request_workers: u32) -> SpareLimits {
        SpareLimits {
            min_spare,
            max_spare,
            max_request_workers,
            mode: SpawnMode::Ramp,
            fork_rate_limit: crate::config::DEFAULT_FORK_RATE_LIMIT,
        }
    }
}

impl From<&crate::config::PoolConfig> for SpareLimits {
    fn from(c: &crate::config::PoolConfig) -> Self {
        SpareLimits {
            min_spare: c.min_spare_servers,
            max_spare: c.max_spare_servers,
            max_request_workers: c.max_request_workers,
            mode: c.spawn_mode,
            fork_rate_limit: c.fork_rate_limit,
        }
    }
}

/// The window `fork_rate_limit` counts forks in.
pub const FORK_WINDOW: Duration = Duration::from_secs(1);

/// The forks of the last [`FORK_WINDOW`], by tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ForkWindow {
    batches: VecDeque<(Time, u32)>,
}

impl ForkWindow {
    /// Forks still allowed at `now` under `limit`.
    pub fn left(&mut self, now: Time, limit: u32) -> u32 {
        while self.batches.front().is_some_and(|&(at, _)| now.since(at) >= FORK_WINDOW) {
            self.batches.pop_front();
        }
        limit.saturating_sub(self.batches.iter().map(|&(_, n)| n).sum())
    }

    /// `n` forks at `now`.
    pub fn record(&mut self, now: Time, n: u32) {
        if n > 0 {
            self.batches.push_back((now, n));
        }
    }
}

/// Children demand spawning wants: one for every waiting connection, and `min_spare` idle after
/// them (children still starting count as idle).
fn demand_need(limits: SpareLimits, waiting: usize, idle: usize) -> usize {
    (waiting + limits.min_spare as usize).saturating_sub(idle)
}

/// What the parent saw outside the scoreboard for a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Demand {
    /// Connections waiting in the listeners' accept queues.
    pub waiting: usize,
    /// The time of the tick (for `fork_rate_limit`).
    pub now: Time,
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
    forks: ForkWindow,
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
            forks: ForkWindow { batches: VecDeque::new() },
            bugs: crate::seeded::BugSwitch::NONE,
        }
    }

    /// Selects a deliberately broken variant (also through [`crate::Parent::seed_bug`]).
    #[cfg(feature = "seeded-bugs")]
    pub fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
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

    /// One maintenance tick over `view` with nothing seen outside the board and no fork-rate
    /// window: Apache's `perform_idle_server_maintenance` as it is (for tests of the ramp).
    pub fn tick(&mut self, limits: SpareLimits, view: &ScoreboardView, spawn_allowed: bool) -> Maintenance {
        self.maintain(limits, view, spawn_allowed, None)
    }

    /// A look between ticks in [`SpawnMode::Demand`]: the spawn part of [`Self::maintain`] only,
    /// when connections wait; never a retirement. `Steady` when there is nothing to do.
    pub fn spawn_on_demand(
        &mut self,
        limits: SpareLimits,
        view: &ScoreboardView,
        spawn_allowed: bool,
        demand: Demand,
    ) -> Maintenance {
        let mrw = limits.max_request_workers as usize;
        let below = view.counts_below(mrw);
        let idle = below.idle();
        if limits.mode != SpawnMode::Demand || demand.waiting == 0 || demand_need(limits, demand.waiting, idle) == 0 {
            return Maintenance { decision: Decision::Steady, log: None, idle, total: below.total() - below.dead };
        }
        self.maintain(limits, view, spawn_allowed, Some(demand))
    }

    /// One maintenance tick over `view`. `spawn_allowed` is false while the parent holds spawning
    /// back; the rate then stays as it is. `demand`: the connections waiting and the time, for
    /// [`SpawnMode::Demand`] and `fork_rate_limit` (without it, neither applies).
    pub fn maintain(
        &mut self,
        limits: SpareLimits,
        view: &ScoreboardView,
        spawn_allowed: bool,
        demand: Option<Demand>,
    ) -> Maintenance {
        let mrw = limits.max_request_workers as usize;
        let below = view.counts_below(mrw);
        let idle = self.seam_idle(&below);
        let total = below.total() - below.dead;
        // Children anywhere on the board (old generations may sit above a lowered max_request_workers).
        let everywhere = view.counts();
        let alive = everywhere.live() + everywhere.corrupt;

        let waiting = demand.map_or(0, |d| d.waiting);
        let demand_mode = limits.mode == SpawnMode::Demand && demand.is_some();
        // Demand: enough children for the connections waiting, plus min_spare idle after them.
        let need = if demand_mode { demand_need(limits, waiting, idle) } else { 0 };

        let mut log = None;
        let decision = if idle > limits.max_spare as usize && waiting == 0 {
            self.idle_spawn_rate = 1;
            let candidates =
                (0..mrw.min(view.slots.len())).rev().filter(|&i| view.state(i) == Some(SlotState::Ready)).collect();
            Decision::Retire { candidates }
        } else if idle < limits.min_spare as usize || need > 0 {
            let want = if demand_mode { need } else { self.idle_spawn_rate as usize };
            let budget = want.min(mrw.saturating_sub(alive));
            let budget = if demand_mode { self.seam_demand_budget(want, budget) } else { budget };
            let free: Vec<usize> = (0..mrw.min(view.slots.len()))
                .filter(|&i| view.state(i) == Some(SlotState::Dead))
                .take(budget)
                .collect();
            // fork_rate_limit: forks in the last FORK_WINDOW count against it.
            let allowed = match demand {
                Some(d) if self.seam_fork_rate_limited() => self.forks.left(d.now, limits.fork_rate_limit) as usize,
                _ => usize::MAX,
            };
            if free.is_empty() {
                if !self.max_workers_reported {
                    self.max_workers_reported = true;
                    log = Some(PolicyLog::ReachedMaxRequestWorkers);
                }
                self.idle_spawn_rate = 1;
                Decision::AtMaxRequestWorkers
            } else if !spawn_allowed || allowed == 0 {
                Decision::SpawnPaused
            } else {
                let slots: Vec<usize> = free.into_iter().take(allowed).collect();
                if let Some(d) = demand {
                    self.forks.record(d.now, slots.len() as u32);
                }
                if demand_mode {
                    if slots.len() >= BUSY_LOG_RATE as usize {
                        log = Some(PolicyLog::SeemsBusy { spawning: slots.len() as u32, idle, total });
                    }
                } else {
                    if self.idle_spawn_rate >= BUSY_LOG_RATE {
                        log = Some(PolicyLog::SeemsBusy { spawning: self.idle_spawn_rate, idle, total });
                    }
                    if self.hold_off > 0 {
                        self.hold_off -= 1;
                    } else if self.idle_spawn_rate < MAX_SPAWN_RATE {
                        self.idle_spawn_rate *= 2;
                    }
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

    const LIMITS: SpareLimits = SpareLimits::ramp(5, 10, 64);

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

    /// A look between ticks spawns only in demand mode and only for connections that wait: not in
    /// Apache's ramp mode (even with connections waiting), and not for a pool merely below
    /// `min_spare` (that is the tick's job). When it has nothing to do it still reports what it
    /// counted.
    #[test]
    fn a_look_spawns_only_in_demand_mode_and_only_for_waiting_connections() {
        let demand = SpareLimits { mode: SpawnMode::Demand, ..LIMITS };
        let empty = board(&[], 8);
        let at = |waiting| Demand { waiting, now: Time::ZERO };
        let mut p = SpareServerPolicy::new();
        let ramp = p.spawn_on_demand(LIMITS, &empty, true, at(5));
        assert_eq!(ramp.decision, Decision::Steady, "ramp mode never looks");
        let quiet = p.spawn_on_demand(demand, &empty, true, at(0));
        assert_eq!(quiet.decision, Decision::Steady, "below min_spare but nothing waits: the tick's job");
        assert_eq!(spawned(&p.spawn_on_demand(demand, &empty, true, at(2))).len(), 7, "2 waiting + min_spare 5");
        // Enough idle children for what waits: nothing to do, and the counts are the board's.
        let busy = board(&[(Ready, 6), (BusyRead, 2)], 12);
        let m = p.spawn_on_demand(demand, &busy, true, at(1));
        assert_eq!((m.decision, m.idle, m.total), (Decision::Steady, 6, 8));
    }

    /// A batch of no forks leaves no trace in the fork-rate window (it would only grow the state a
    /// model checker stores).
    #[test]
    fn an_empty_batch_is_not_recorded() {
        let mut w = ForkWindow::default();
        w.record(Time::ZERO, 0);
        assert_eq!(w, ForkWindow::default());
        w.record(Time::ZERO, 2);
        assert_eq!(w.left(Time::ZERO, 3), 1);
    }

    #[test]
    fn empty_pool_ramps_one_two_four_up_to_thirty_two() {
        let mut p = SpareServerPolicy::new();
        let limits = SpareLimits::ramp(100, 200, 256);
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
        let limits = SpareLimits::ramp(2, 4, 4);
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
        let limits = SpareLimits::ramp(2, 4, 3);
        let m = p.tick(limits, &ScoreboardView::from_states([Graceful, Graceful, Graceful]), true);
        assert_eq!(m.decision, Decision::AtMaxRequestWorkers);
    }

    #[test]
    fn children_above_a_lowered_max_request_workers_use_up_the_budget() {
        // max_request_workers was lowered from 6 to 3 on a restart; three old children still live above.
        let mut p = SpareServerPolicy { idle_spawn_rate: 4, ..SpareServerPolicy::new() };
        let limits = SpareLimits::ramp(2, 4, 3);
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
        let limits = SpareLimits::ramp(5, 10, 256);
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
        let limits = SpareLimits::ramp(1, 2, 2);
        assert_eq!(spawned(&p.tick(limits, &view, true)), [1]);
    }

    fn demand(waiting: usize, ms: u64) -> Option<Demand> {
        Some(Demand { waiting, now: Time::from_millis(ms) })
    }

    fn demand_limits(min: u32, max: u32, mrw: u32, fork_rate_limit: u32) -> SpareLimits {
        SpareLimits { mode: SpawnMode::Demand, fork_rate_limit, ..SpareLimits::ramp(min, max, mrw) }
    }

    #[test]
    fn demand_spawns_what_the_waiting_connections_need_at_once() {
        let mut p = SpareServerPolicy::new();
        // 8 children busy, 56 connections waiting: all 56 free slots at once (61 would be needed
        // to keep min_spare idle after them, max_request_workers allows 56).
        let view = board(&[(BusyWrite, 8)], 64);
        let m = p.maintain(demand_limits(5, 20, 64, 64), &view, true, demand(56, 1000));
        assert_eq!(spawned(&m), (8..64).collect::<Vec<_>>());
        assert_eq!(m.log, Some(PolicyLog::SeemsBusy { spawning: 56, idle: 0, total: 8 }));
        // Nothing waiting, 2 idle below min_spare 5: the 3 missing at once, not 1 then 2.
        let mut p = SpareServerPolicy::new();
        let view = board(&[(Ready, 2), (BusyRead, 3)], 64);
        assert_eq!(spawned(&p.maintain(demand_limits(5, 20, 64, 64), &view, true, demand(0, 1000))).len(), 3);
        // Children still starting count as idle: no second batch for the same connections, only
        // the min_spare_servers that should stay idle after them.
        let view = board(&[(BusyWrite, 8), (Starting, 56)], 128);
        let m = p.maintain(demand_limits(5, 60, 128, 64), &view, true, demand(56, 1100));
        assert_eq!(spawned(&m).len(), 5);
    }

    #[test]
    fn demand_forks_at_most_fork_rate_limit_in_any_second() {
        let mut p = SpareServerPolicy::new();
        let limits = demand_limits(5, 20, 200, 20);
        let view = board(&[(BusyWrite, 8)], 200);
        assert_eq!(spawned(&p.maintain(limits, &view, true, demand(150, 1000))).len(), 20);
        // 100 ms later the window is spent: nothing, and the rate limit is not "max workers".
        let view = board(&[(BusyWrite, 28)], 200);
        let m = p.maintain(limits, &view, true, demand(150, 1100));
        assert_eq!((m.decision, m.log), (Decision::SpawnPaused, None));
        // A second after the first batch: 20 more.
        assert_eq!(spawned(&p.maintain(limits, &view, true, demand(150, 2000))).len(), 20);
    }

    #[test]
    fn connections_waiting_keep_idle_children_from_being_retired() {
        let mut p = SpareServerPolicy::new();
        let view = board(&[(Ready, 30)], 64);
        let limits = demand_limits(5, 20, 64, 64);
        assert_eq!(p.maintain(limits, &view, true, demand(3, 1000)).decision, Decision::Steady);
        assert!(matches!(p.maintain(limits, &view, true, demand(0, 2000)).decision, Decision::Retire { .. }));
    }
}
