//! Checking the board against the parent's records (SPEC.md §3.4, §7.6).
//!
//! The parent's own memory is the truth: which children exist, the word each was born with, and
//! what the parent told each of them (`G`, `I`). The board is its message to the children and,
//! coming back, untrusted input: a slot says what its child is doing only where it holds a word
//! that child could have written. Every decision (spawn, retire, refill, health) is taken from
//! [`Parent::checked_view`], never from raw board words.
//!
//! ```text
//!   record       slot holds                                   verdict    written back
//!   none         Dead (any incarnation)                       fine       -
//!   none         anything else                                damaged    Dead
//!   child b      b's incarnation+generation, a live state     fine       -
//!                that the parent's record allows
//!   child b      corrupt, other incarnation/generation, Dead  damaged    b as its directive, or G
//!   child b, d   not d (the parent's directive was lost)      damaged    b as d
//!   child b      G or I the parent never wrote                damaged    b as G
//! ```
//!
//! Within a child's own working states (`S _ R W K L C`) the parent believes what the slot says:
//! between two checks a child may move through any number of them, and a forged one looks like a
//! real one. Believing a forged one is safe: a forged `_` lets
//! the parent claim a busy child, which finishes its connection and leaves; a forged `S` or busy
//! state makes it count one idle child more or less for a tick.
//!
//! A damaged slot of a child is repaired and the child told to leave (woken; it finishes the
//! work in hand). If its slot is found damaged again at a later check, the parent kills it by the
//! pid in its own table: a child whose slot keeps being overwritten may never see its directive.
//! Neither counts as a crash (the crash-loop brake ignores both).

use super::{ChildRecord, Parent, ParentAction, ParentLog, SlotProblem};
use crate::atomic::{AtomicWord, Ordering};
use crate::exit::KillReason;
use crate::scoreboard::{ScoreboardView, SlotTable};
use crate::slot::{SlotState, SlotWord};

/// How the parent judges one slot word against its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The content is possible: this is what the parent believes the slot shows.
    Fine(SlotWord),
    /// The content is impossible: what was wrong, and the word the parent writes back (and
    /// believes from now on).
    Damaged {
        /// What was wrong.
        problem: SlotProblem,
        /// The word the parent's records give.
        repair: SlotWord,
    },
}

/// Judges the raw word `raw` of a slot whose record is `rec` (`None`: no child lives there).
/// `empty` is the word of an empty slot by the parent's records. Pure: no board access.
pub(super) fn judge(rec: Option<&ChildRecord>, empty: SlotWord, raw: u64) -> Verdict {
    let word = SlotWord::decode(raw);
    let Some(r) = rec else {
        return match word {
            // Nothing lives here: whatever a Dead word says about incarnations is no one's.
            Ok(w) if w.state == SlotState::Dead => Verdict::Fine(empty),
            Ok(w) => Verdict::Damaged { problem: SlotProblem::NoChild(w.state), repair: empty },
            Err(e) => Verdict::Damaged { problem: SlotProblem::Corrupt(e), repair: empty },
        };
    };
    let leave = r.born.with_state(r.directive.unwrap_or(SlotState::Graceful));
    let damaged = |problem| Verdict::Damaged { problem, repair: leave };
    let w = match word {
        Ok(w) => w,
        Err(e) => return damaged(SlotProblem::Corrupt(e)),
    };
    if w.incarnation != r.born.incarnation || w.generation != r.born.generation || w.state == SlotState::Dead {
        return damaged(SlotProblem::Foreign(w));
    }
    match (r.directive, w.state) {
        (Some(d), found) if found == d => Verdict::Fine(w),
        (Some(d), found) => damaged(SlotProblem::DirectiveLost { directive: d, found }),
        (None, found) if found.is_directive() => damaged(SlotProblem::DirectiveForged(found)),
        (None, _) => Verdict::Fine(w),
    }
}

impl Parent {
    /// The word of slot `slot` while no child lives there (the parent's incarnation counter).
    pub(super) fn empty_word(&self, slot: usize) -> SlotWord {
        SlotWord { state: SlotState::Dead, incarnation: self.incarnations[slot], generation: 0 }
    }

    /// The board as the parent believes it: every slot judged against the records ([`judge`]),
    /// the running generation from the parent's memory, a damaged slot read as the word its
    /// records give. Repairs, counts and logs nothing: the looks between ticks and queries (the
    /// agent check, SPEC.md §7.10) use it as it is; the next tick repairs ([`Parent::checked_view`]).
    pub(super) fn believed_view<T: SlotTable + ?Sized>(&self, board: &T) -> ScoreboardView {
        let slots = self.slots(board);
        let mut view = ScoreboardView { generation: self.generation, slots: Vec::with_capacity(slots) };
        for slot in 0..slots {
            view.slots.push(Ok(match self.judge_slot(board, slot) {
                Verdict::Fine(w) => w,
                Verdict::Damaged { problem, repair: word } => {
                    self.seam_damaged_slot(problem);
                    word
                }
            }));
        }
        view
    }

    fn judge_slot<T: SlotTable + ?Sized>(&self, board: &T, slot: usize) -> Verdict {
        let raw = board.slot_word(slot).load(Ordering::Acquire);
        judge(self.children[slot].as_ref(), self.empty_word(slot), raw)
    }

    /// [`Parent::believed_view`], and with `repair` (maintenance ticks, start and restart) every
    /// damaged slot is written back and logged, its child told to leave, or killed if it was
    /// damaged at an earlier check; without it (the looks between ticks) the view only believes
    /// the records, and the next tick repairs.
    pub(super) fn checked_view<T: SlotTable + ?Sized>(&mut self, board: &T, repair: bool) -> ScoreboardView {
        if !repair {
            return self.believed_view(board);
        }
        let slots = self.slots(board);
        let mut view = ScoreboardView { generation: self.generation, slots: Vec::with_capacity(slots) };
        for slot in 0..slots {
            if let Ok(cell) = board.slot(slot) {
                // Re-assert the pid the parent publishes (status pages read it; nothing else does).
                cell.publish_pid(self.children[slot].and_then(|c| c.pid).unwrap_or(0));
            }
            match self.judge_slot(board, slot) {
                Verdict::Fine(w) => view.slots.push(Ok(w)),
                Verdict::Damaged { problem, repair: word } => {
                    self.seam_damaged_slot(problem);
                    view.slots.push(Ok(word));
                    self.repair_slot(board, slot, problem, word);
                }
            }
        }
        view
    }

    /// Writes `word` back into damaged slot `slot`; tells its child to leave, or kills it if its
    /// slot was damaged at an earlier check. Logs once per child (and once per empty slot).
    fn repair_slot<T: SlotTable + ?Sized>(&mut self, board: &T, slot: usize, problem: SlotProblem, word: SlotWord) {
        let Ok(cell) = board.slot(slot) else { return };
        cell.put(word);
        self.stats.slots_repaired += 1;
        let Some(rec) = self.children[slot].as_mut() else {
            self.log(ParentLog::SlotRepaired { slot, problem, wrote: word.state });
            return;
        };
        if rec.killed.is_some() {
            return; // already on its way out
        }
        let pid = rec.pid;
        // Damaged at an earlier check (checks that repair come at most once per instant: ticks,
        // start, the end of a hard restart, each moving the next tick on).
        if rec.damaged {
            let Some(pid) = pid else { return };
            self.log(ParentLog::SlotDamagedAgain { pid, slot, problem });
            self.kill(slot, pid, KillReason::SlotDamaged);
        } else {
            rec.damaged = true;
            rec.directive = Some(word.state);
            self.log(ParentLog::SlotRepaired { slot, problem, wrote: word.state });
            if let Some(pid) = pid {
                self.actions.push_back(ParentAction::Wake { slot, pid });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotError;
    use crate::time::Time;

    fn rec(directive: Option<SlotState>) -> ChildRecord {
        ChildRecord {
            pid: Some(7),
            born: SlotWord { state: SlotState::Starting, incarnation: 5, generation: 2 },
            spawned_at: Time::ZERO,
            directive,
            damaged: false,
            killed: None,
        }
    }

    const EMPTY: SlotWord = SlotWord { state: SlotState::Dead, incarnation: 5, generation: 0 };

    fn word(state: SlotState, incarnation: u32, generation: u32) -> u64 {
        SlotWord { state, incarnation, generation }.encode()
    }

    #[test]
    fn every_row_of_the_judging_table() {
        use SlotState::*;
        let fine = |w: u64| Verdict::Fine(SlotWord::decode(w).unwrap());
        let child = rec(None);
        let leave = child.born.with_state(Graceful);
        // No child: any Dead word is fine (and believed as the parent's own empty word).
        assert_eq!(judge(None, EMPTY, word(Dead, 99, 3)), Verdict::Fine(EMPTY));
        assert_eq!(
            judge(None, EMPTY, word(Ready, 1, 0)),
            Verdict::Damaged { problem: SlotProblem::NoChild(Ready), repair: EMPTY }
        );
        assert_eq!(
            judge(None, EMPTY, 0xff),
            Verdict::Damaged {
                problem: SlotProblem::Corrupt(SlotError::CorruptWord { raw: 0xff, code: 0xff }),
                repair: EMPTY
            }
        );
        // A child: its own word in any state it may show is fine.
        for s in [Starting, Ready, BusyRead, BusyWrite, Keepalive, Logging, Closing] {
            assert_eq!(judge(Some(&child), EMPTY, word(s, 5, 2)), fine(word(s, 5, 2)), "{s}");
        }
        for (raw, problem) in [
            (u64::MAX, SlotProblem::Corrupt(SlotError::CorruptWord { raw: u64::MAX, code: 0xff })),
            (word(Ready, 6, 2), SlotProblem::Foreign(SlotWord::decode(word(Ready, 6, 2)).unwrap())),
            (word(Ready, 5, 3), SlotProblem::Foreign(SlotWord::decode(word(Ready, 5, 3)).unwrap())),
            (word(Dead, 5, 2), SlotProblem::Foreign(SlotWord::decode(word(Dead, 5, 2)).unwrap())),
            (word(IdleKill, 5, 2), SlotProblem::DirectiveForged(IdleKill)),
            (word(Graceful, 5, 2), SlotProblem::DirectiveForged(Graceful)),
        ] {
            assert_eq!(judge(Some(&child), EMPTY, raw), Verdict::Damaged { problem, repair: leave }, "{raw:#x}");
        }
        // A directive the parent gave must stay; it is what the repair writes back.
        let told = rec(Some(IdleKill));
        assert_eq!(judge(Some(&told), EMPTY, word(IdleKill, 5, 2)), fine(word(IdleKill, 5, 2)));
        assert_eq!(
            judge(Some(&told), EMPTY, word(Ready, 5, 2)),
            Verdict::Damaged {
                problem: SlotProblem::DirectiveLost { directive: IdleKill, found: Ready },
                repair: told.born.with_state(IdleKill)
            }
        );
        assert_eq!(
            judge(Some(&told), EMPTY, 0),
            Verdict::Damaged { problem: SlotProblem::Foreign(SlotWord::EMPTY), repair: told.born.with_state(IdleKill) }
        );
    }
}
