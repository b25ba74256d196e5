//! The parent's seeded bugs (SPEC.md §11), kept out of the rule: the deliberately broken variants
//! the checkers' negative tests must catch.
//!
//! Each decision point a negative needs hands its correct outcome (or its correct step) to one
//! `seam_*` method here, which passes it through untouched unless the bug that breaks that point is
//! selected. Without the `seeded-bugs` feature no bug can be selected (`BugSwitch::is` is a
//! constant `false`), so every seam is the rule itself and compiles to it. A reader of the rule
//! reads one call per decision point; the broken variants are all here, each with its bug's name.

use super::reclaim::ReclaimStep;
use super::{KillSignal, Parent, ParentAction, ParentEvent, Pid, Signal, SlotProblem};
use crate::atomic::AtomicWord;
use crate::config::{Checked, PoolConfig};
use crate::policy::Decision;
use crate::scoreboard::{ScoreboardView, Slot, SlotTable};
use crate::seeded::SeededBug as Bug;
use crate::slot::{SlotState, SlotWord};
use crate::time::Time;
use std::time::Duration;

impl Parent {
    /// Writes the running generation at the start of an input (`NoRepublish`: only where it
    /// changes, at the start and at restarts).
    pub(super) fn seam_publish<T: SlotTable + ?Sized>(&self, board: &T) {
        if !self.has_bug(Bug::NoRepublish) {
            self.publish(board);
        }
    }

    /// Empties a reaped child's slot, returning what it held (`ReapLeavesSlot`: leaves it).
    pub(super) fn seam_release_reaped<W: AtomicWord>(&self, cell: &Slot<'_, W>, empty: SlotWord) -> u64 {
        if self.has_bug(Bug::ReapLeavesSlot) { cell.raw() } else { cell.release(empty) }
    }

    /// Does a fatal exit of a child of generation `current` (or not) stop the server?
    /// (`OldFatalStops`: any generation's.)
    pub(super) fn seam_fatal_is_current(&self, current: bool) -> bool {
        current || self.has_bug(Bug::OldFatalStops)
    }

    /// A sick child's exit resets the spawn rate (`SickKeepsRate`: it does not).
    pub(super) fn seam_sick_exit(&mut self) {
        if !self.has_bug(Bug::SickKeepsRate) {
            self.policy.on_child_sick();
        }
    }

    /// An early exit counts for the crash-loop brake: the pause it engages, if any
    /// (`NoCrashBrake`: never).
    pub(super) fn seam_early_exit(&mut self, now: Time) -> Option<Duration> {
        if self.has_bug(Bug::NoCrashBrake) { None } else { self.brake.early_exit(now) }
    }

    /// Is a graceful restart's refill below `max_request_workers`, given `below`, what the parent's
    /// count says? (`RefillPastLimit`: always.)
    pub(super) fn seam_refill_below_limit(&self, below: bool) -> bool {
        below || self.has_bug(Bug::RefillPastLimit)
    }

    /// The generation a refill is born in: the running one (`IgnoreGenerationOnReap`: `reaped`,
    /// the reaped child's).
    pub(super) fn seam_refill_generation(&self, reaped: u32) -> u32 {
        if self.has_bug(Bug::IgnoreGenerationOnReap) { reaped } else { self.generation }
    }

    /// A hard restart began (`ReadyEarly`: announces `Ready` at once, while the old children are
    /// still being stopped).
    pub(super) fn seam_hard_restart_begun(&mut self) {
        if self.has_bug(Bug::ReadyEarly) {
            self.announce(ParentEvent::Ready { generation: self.generation, config: Box::new(self.config.clone()) });
        }
    }

    /// A restart's configuration as this parent can apply it (`ServerLimitFollowsReload`: as it
    /// comes, `server_limit` included).
    pub(super) fn seam_restrict_to_running(&self, cfg: PoolConfig) -> Checked<PoolConfig> {
        if self.has_bug(Bug::ServerLimitFollowsReload) {
            Checked { value: cfg, warnings: vec![] }
        } else {
            self.config.restrict_to_running(cfg)
        }
    }

    /// Wakes a child told to leave (`NoGracefulWake`: never, neither at once nor at later ticks).
    pub(super) fn seam_wake_told(&mut self, slot: usize, pid: Pid) {
        if !self.has_bug(Bug::NoGracefulWake) {
            self.actions.push_back(ParentAction::Wake { slot, pid });
        }
    }

    /// The maintenance tick's decision, to carry out. The broken variants of carrying it out
    /// happen here, and leave `Steady` for the rule:
    /// * `NoRespawn`, `NoRetire`: the decision is ignored;
    /// * `SpawnHighestFirst`: forks go into the highest dead slots;
    /// * `RetireWithoutClaim`: "kill the idle child by pid", as peers without a claim do;
    /// * `RetireEveryCandidate`: every candidate that can be claimed is.
    pub(super) fn seam_tick_decision<T: SlotTable + ?Sized>(
        &mut self,
        now: Time,
        board: &T,
        view: &ScoreboardView,
        decision: Decision,
    ) -> Decision {
        match decision {
            Decision::Spawn { .. } if self.has_bug(Bug::NoRespawn) => Decision::Steady,
            Decision::Spawn { slots } if self.has_bug(Bug::SpawnHighestFirst) => {
                let mrw = self.max_request_workers(board);
                let highest: Vec<usize> =
                    (0..mrw).rev().filter(|&s| view.state(s) == Some(SlotState::Dead)).take(slots.len()).collect();
                for slot in highest {
                    self.spawn(now, board, slot);
                }
                Decision::Steady
            }
            Decision::Retire { .. } if self.has_bug(Bug::NoRetire) => Decision::Steady,
            Decision::Retire { candidates } if self.has_bug(Bug::RetireWithoutClaim) => {
                let child = candidates.iter().find_map(|&s| Some((s, self.children.get(s).copied().flatten()?.pid?)));
                if let Some((slot, pid)) = child {
                    let signal = Signal { slot, pid, signal: KillSignal::Term, reason: None };
                    self.actions.push_back(ParentAction::Signal(signal));
                }
                Decision::Steady
            }
            Decision::Retire { candidates } if self.has_bug(Bug::RetireEveryCandidate) => {
                for slot in candidates {
                    self.claim_for_retirement(board, view, slot);
                }
                Decision::Steady
            }
            decision => decision,
        }
    }

    /// The stop ladder's next step, or `None` to take no more (`NoStopEscalation`: none after the
    /// first SIGTERM; `HurriedKill`: SIGKILL where SIGTERM is due).
    pub(super) fn seam_ladder_step(&self, step: ReclaimStep) -> Option<ReclaimStep> {
        match step {
            _ if self.has_bug(Bug::NoStopEscalation) => None,
            ReclaimStep::Term if self.has_bug(Bug::HurriedKill) => Some(ReclaimStep::Kill),
            step => Some(step),
        }
    }

    /// Whom a stop signals: `children`, from the parent's table (`SignalPidFromBoard`: whatever
    /// each slot's pid word says, as Apache before CVE-2007-3304).
    pub(super) fn seam_stop_targets<T: SlotTable + ?Sized>(
        &self,
        board: &T,
        children: Vec<(usize, Pid)>,
    ) -> Vec<(usize, Pid)> {
        if !self.has_bug(Bug::SignalPidFromBoard) {
            return children;
        }
        children.into_iter().filter_map(|(i, _)| Some((i, board.slot(i).ok()?.board_pid() as Pid))).collect()
    }

    /// A slot holds a word the parent's records do not allow (`IndexFromBoard`: "find the child
    /// that owns this incarnation" with a value from shared memory as an index, the class of
    /// CVE-2019-0211).
    pub(super) fn seam_damaged_slot(&self, problem: SlotProblem) {
        if let SlotProblem::Foreign(w) = problem
            && self.has_bug(Bug::IndexFromBoard)
        {
            let _owner = self.children[w.incarnation as usize];
        }
    }

    /// Do connections wait, for the accept-lock rule? (`WatchdogWithoutQueue`: always.)
    pub(super) fn seam_connections_waiting(&self, waiting: bool) -> bool {
        waiting || self.has_bug(Bug::WatchdogWithoutQueue)
    }

    /// The stall the watchdog acts on (`WatchdogNeverKills`: none).
    pub(super) fn seam_stall<S>(&self, stall: Option<S>) -> Option<S> {
        stall.filter(|_| !self.has_bug(Bug::WatchdogNeverKills))
    }
}
