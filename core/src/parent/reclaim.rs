//! The stop and restart ladder (SPEC.md §7.5): quiet SIGTERM, SIGTERM again at 3, 5 and 7 s,
//! SIGKILL at 9 s, give up at 10 s (Apache's `ap_reclaim_child_processes`); then exit or start afresh.

use super::{KillSignal, Parent, ParentAction, ParentLog, Pid, Signal, Stage, Then};
use crate::exit::code;
use crate::scoreboard::SlotTable;
use crate::time::Time;
use std::time::Duration;

/// Stop escalation (Apache `ap_reclaim_child_processes`): after the initial quiet SIGTERM, these
/// steps at these times since the stop began.
pub const RECLAIM_SCHEDULE: [(Duration, ReclaimStep); 5] = [
    (Duration::from_secs(3), ReclaimStep::Term),
    (Duration::from_secs(5), ReclaimStep::Term),
    (Duration::from_secs(7), ReclaimStep::Term),
    (Duration::from_secs(9), ReclaimStep::Kill),
    (Duration::from_secs(10), ReclaimStep::GiveUp),
];

/// One step of the stop escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReclaimStep {
    /// SIGTERM every child still alive, logging each (AH00045).
    Term,
    /// SIGKILL every child still alive, logging each (AH00046).
    Kill,
    /// Stop waiting, logging each child still alive (AH00047).
    GiveUp,
}

impl Parent {
    /// Runs the ladder's steps that are due at `now` (the stage is `Reclaiming` since `started`,
    /// with `step` steps done).
    pub(super) fn reclaim_step<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, started: Time, mut step: usize) {
        while let Some(&(at, what)) = RECLAIM_SCHEDULE.get(step) {
            if now < started + at {
                break;
            }
            let Some(what) = self.seam_ladder_step(what) else { break };
            step += 1;
            if let Stage::Reclaiming { step: s, .. } = &mut self.stage {
                *s = step;
            }
            let alive: Vec<(usize, Option<Pid>)> = self.children().map(|(i, c)| (i, c.pid)).collect();
            for (slot, pid) in alive {
                let Some(pid) = pid else { continue };
                match what {
                    ReclaimStep::Term | ReclaimStep::Kill => {
                        let signal = if what == ReclaimStep::Term { KillSignal::Term } else { KillSignal::Kill };
                        self.log(ParentLog::StillRunning { pid, slot, sending: signal });
                        self.actions.push_back(ParentAction::Signal(Signal { slot, pid, signal, reason: None }));
                    }
                    ReclaimStep::GiveUp => self.log(ParentLog::GaveUp { pid, slot }),
                }
            }
            if what == ReclaimStep::GiveUp {
                self.finish_reclaim(now, board);
                break;
            }
        }
    }

    pub(super) fn begin_reclaim<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, then: Then) {
        self.remaining_to_start = 0;
        self.stage = Stage::Reclaiming { started: now, step: 0, then };
        self.stop_gates(super::GateStop::Now);
        let children: Vec<(usize, Pid)> = self.children().filter_map(|(i, c)| Some((i, c.pid?))).collect();
        for (slot, pid) in self.seam_stop_targets(board, children) {
            self.actions.push_back(ParentAction::Signal(Signal { slot, pid, signal: KillSignal::Term, reason: None }));
        }
        self.check_done(now, board);
    }

    /// Ends a stop or restart once no child is left.
    pub(super) fn check_done<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        if self.live_children() > 0 {
            return;
        }
        match self.stage {
            Stage::Reclaiming { .. } => self.finish_reclaim(now, board),
            Stage::Draining { .. } => {
                self.stage = Stage::Exited;
                self.actions.push_back(ParentAction::Exit { code: code::OK });
            }
            _ => {}
        }
    }

    pub(super) fn finish_reclaim<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        let Stage::Reclaiming { then, .. } = std::mem::replace(&mut self.stage, Stage::Exited) else {
            return;
        };
        match then {
            Then::Exit(code) => self.actions.push_back(ParentAction::Exit { code }),
            Then::Restart(cfg) => {
                self.apply_config(*cfg);
                self.stage = Stage::Running;
                // Children that would not die keep their slots, marked Graceful so they count as
                // neither idle nor claimable; everything else starts afresh.
                self.mark_all_graceful(board);
                let view = self.checked_view(board, true);
                self.start_gate(now);
                self.startup(now, board, &view, self.config.start_servers);
                self.next_tick = now + self.config.maintenance_interval;
                self.stats.restarted_at = Some(now);
                self.log(ParentLog::Resumed { generation: self.generation });
                self.announce_ready();
            }
        }
    }
}
