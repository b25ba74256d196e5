//! Repair (SPEC.md §7.6): the parent knows which processes exist, the board says what they do; a
//! slot that disagrees with the parent's records is rewritten (and logged), never trusted.

use super::{ChildRecord, Parent, ParentAction, ParentLog, SlotProblem};
use crate::scoreboard::{ScoreboardView, SlotTable};
use crate::slot::{SlotError, SlotState, SlotWord};

impl Parent {
    /// Makes the board agree with the parent's records (the parent knows which processes exist;
    /// the board says what they do). Never panics; logs every change.
    pub(super) fn repair<T: SlotTable + ?Sized>(&mut self, view: &mut ScoreboardView, board: &T) {
        for slot in 0..self.slots(board).min(view.slots.len()) {
            let rec = self.children[slot];
            let (problem, wanted) = match (rec, view.slots[slot]) {
                (None, Ok(w)) if w.state == SlotState::Dead => continue,
                (None, Ok(w)) => (SlotProblem::NoChild(w.state), w.with_state(SlotState::Dead)),
                (None, Err(e)) => (SlotProblem::Corrupt(e), SlotWord::EMPTY),
                (Some(r), Ok(w))
                    if w.incarnation == r.born.incarnation
                        && w.generation == r.born.generation
                        && w.state.is_live() =>
                {
                    continue;
                }
                (Some(r), Ok(w)) => (SlotProblem::Foreign(w), r.born.with_state(SlotState::Graceful)),
                (Some(r), Err(e)) => (SlotProblem::Corrupt(e), r.born.with_state(SlotState::Graceful)),
            };
            let Ok(cell) = board.slot(slot) else { continue };
            let seen = match view.slots[slot] {
                Ok(w) => w.encode(),
                Err(SlotError::CorruptWord { raw, .. }) => raw,
                Err(_) => cell.raw(),
            };
            if let Err(now) = cell.repair(seen, wanted) {
                // Changed meanwhile: decide with what is there now, look again at the next tick.
                view.slots[slot] = SlotWord::decode(now);
                continue;
            }
            view.slots[slot] = Ok(wanted);
            self.log(ParentLog::SlotRepaired { slot, problem, wrote: wanted.state });
            if let Some(ChildRecord { pid: Some(pid), .. }) = rec {
                self.actions.push_back(ParentAction::Wake { slot, pid });
            }
        }
    }
}
