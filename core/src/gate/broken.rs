//! The gate's seeded bugs (SPEC.md §11, §15.3), kept out of the rule: each decision point a
//! negative needs hands its correct outcome to one `seam_*` method here, which passes it through
//! untouched unless the bug that breaks that point is selected (never without the `seeded-bugs`
//! feature). See `parent/broken.rs` for the pattern.

use super::{Gate, Held, shed_key};
use crate::seeded::SeededBug as Bug;
use crate::time::Time;

impl Gate {
    /// Does the table have room for one more accept? (`AcceptPastCapacity`: always.)
    pub(super) fn seam_has_room(&self, room: bool) -> bool {
        room || self.bugs.is(Bug::AcceptPastCapacity)
    }

    /// May a pressure report shed? When the table is full (`ShedWithRoom`: always).
    pub(super) fn seam_sheds(&self, full: bool) -> bool {
        full || self.bugs.is(Bug::ShedWithRoom)
    }

    /// A held connection's place in the shedding order; `None`: it may not be shed
    /// (`ShedProtected`: the first second and the rate protect nothing; `ShedCompleteHead`: a
    /// complete head is a candidate too, last).
    pub(super) fn seam_shed_key(&self, held: Held, now: Time) -> Option<(u8, u64, Time)> {
        match held {
            Held::Complete if self.bugs.is(Bug::ShedCompleteHead) => Some((2, 0, Time::ZERO)),
            _ => shed_key(held, now, self.cfg.min_rate, !self.bugs.is(Bug::ShedProtected)),
        }
    }

    /// May the gate close a connection whose head is complete? Never (`ShedCompleteHead`: when it
    /// is shed).
    pub(super) fn seam_closes_complete(&self) -> bool {
        self.bugs.is(Bug::ShedCompleteHead)
    }
}
