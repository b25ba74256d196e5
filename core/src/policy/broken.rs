//! The spare-server policy's seeded bugs (SPEC.md §11), kept out of the rule: each decision point
//! a negative needs hands its correct outcome to one `seam_*` method here, which passes it through
//! untouched unless the bug that breaks that point is selected (never without the `seeded-bugs`
//! feature). See `parent/broken.rs` for the pattern.

use super::SpareServerPolicy;
use crate::scoreboard::Counts;
use crate::seeded::SeededBug as Bug;

impl SpareServerPolicy {
    /// The idle children the policy counts: `Starting` and `Ready` (`IdleIgnoresStarting`: only
    /// `Ready`).
    pub(super) fn seam_idle(&self, below: &Counts) -> usize {
        if self.bugs.is(Bug::IdleIgnoresStarting) { below.ready } else { below.idle() }
    }

    /// How many forks demand spawning may ask for: `budget`, what `max_request_workers` leaves
    /// (`DemandPastMaxRequestWorkers`: `want`, all it wants).
    pub(super) fn seam_demand_budget(&self, want: usize, budget: usize) -> usize {
        if self.bugs.is(Bug::DemandPastMaxRequestWorkers) { want } else { budget }
    }

    /// Whether `fork_rate_limit` applies (`NoForkRateLimit`: never).
    pub(super) fn seam_fork_rate_limited(&self) -> bool {
        !self.bugs.is(Bug::NoForkRateLimit)
    }
}
