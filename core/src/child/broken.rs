//! The child loop's seeded bugs (SPEC.md §11), kept out of the rule: each decision point a
//! negative needs hands its correct outcome to one `seam_*` method here, which passes it through
//! untouched unless the bug that breaks that point is selected (never without the `seeded-bugs`
//! feature). See `parent/broken.rs` for the pattern.

use super::{ChildAction, ChildLoop};
use crate::atomic::AtomicWord;
use crate::scoreboard::ChildSlot;
use crate::seeded::SeededBug as Bug;

impl ChildLoop {
    /// After each step (`ChildClearsItsSlot`: a child about to exit writes its own slot `Dead`, a
    /// state only the parent writes).
    pub(super) fn seam_after_step<W: AtomicWord>(&self, action: &ChildAction, slot: &ChildSlot<'_, W>) {
        #[cfg(feature = "seeded-bugs")]
        if self.bugs.is(Bug::ChildClearsItsSlot) && matches!(action, ChildAction::Exit(_)) {
            slot.store_unchecked(crate::slot::SlotState::Dead);
        }
        let _ = (action, slot);
    }

    /// Just before the work claim (`WorkClaimByStore`: a plain store of the busy state first, over
    /// any directive; `TornClaim`: the state written with no owner first).
    pub(super) fn seam_before_work_claim<W: AtomicWord>(&self, slot: &ChildSlot<'_, W>) {
        #[cfg(feature = "seeded-bugs")]
        {
            if self.bugs.is(Bug::WorkClaimByStore) {
                slot.store_unchecked(crate::slot::SlotState::BusyRead);
            }
            if self.bugs.is(Bug::TornClaim) {
                slot.store_torn(crate::slot::SlotState::BusyRead);
            }
        }
        let _ = slot;
    }

    /// A connection was accepted: `None` to serve it (`DropConnectionOnDirective`: a directive
    /// found now makes the child leave, dropping it).
    pub(super) fn seam_accepted<W: AtomicWord>(&mut self, slot: &ChildSlot<'_, W>) -> Option<ChildAction> {
        if !self.bugs.is(Bug::DropConnectionOnDirective) {
            return None;
        }
        let reason = slot.directive()?;
        Some(self.leave(reason, slot))
    }

    /// Must a child leaving in order drain the listen queues first (a graceful stop)?
    /// (`NoDrain`: never; it leaves at once, and the kernel resets what was queued.)
    pub(super) fn seam_drains<W: AtomicWord>(&self, slot: &ChildSlot<'_, W>) -> bool {
        !self.bugs.is(Bug::NoDrain) && slot.drains()
    }

    /// Does a gated child that finds the gate's channel empty in its drain wait for more (until
    /// the channel hangs up)? (`GatedDrainEndsWhenEmpty`: it leaves, as an ungated child does
    /// after a round of empty listeners.)
    pub(super) fn seam_gated_drain_waits(&self) -> bool {
        self.gated && !self.bugs.is(Bug::GatedDrainEndsWhenEmpty)
    }

    /// Does the child take the accept lock before it waits? When the lock is in use
    /// (`NoAcceptLock`: never).
    pub(super) fn seam_takes_lock(&self) -> bool {
        self.lock_in_use && !self.bugs.is(Bug::NoAcceptLock)
    }

    /// Does a child about to exit hold the lock it must release first? (`ExitHoldingLock`: it
    /// exits without releasing it.)
    pub(super) fn seam_holds_lock_at_exit(&self) -> bool {
        self.holding_lock && !self.bugs.is(Bug::ExitHoldingLock)
    }

    /// Where round-robin over the ready listeners starts (`NoRoundRobin`: always at listener 0).
    pub(super) fn seam_cursor(&self) -> usize {
        if self.bugs.is(Bug::NoRoundRobin) { 0 } else { self.cursor }
    }
}
