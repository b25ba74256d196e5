//! Seeded bugs: deliberately broken variants of the protocol that the model checkers must catch
//! (SPEC.md §11). A checker that cannot find its seeded bug is a defect of the checker.
//!
//! The variants can only be selected with the `seeded-bugs` cargo feature
//! (`Parent::seed_bug`, `ChildLoop::seed_bug`); without it every check for a bug is a constant
//! `false` and compiles away.

/// A deliberately broken variant of a protocol step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeededBug {
    /// The child loop never takes the accept lock, even when it is in use (two listeners): two
    /// children end up in the wait+accept section. Caught by shuttle and stateright (I10).
    NoAcceptLock,
    /// The parent retires an idle child by sending SIGTERM to the pid it saw idle in its snapshot,
    /// without the compare-and-swap claim: a child that took work meanwhile is killed mid-request.
    /// Caught by loom (I4).
    RetireWithoutClaim,
    /// On reaping, the parent refills the slot with the generation of the child it reaped instead
    /// of the running generation: old-generation children keep appearing after a graceful restart.
    /// Caught by stateright (I13, L1).
    IgnoreGenerationOnReap,
    /// The graceful-restart refill in `Parent::handle_child_exit` forgets `max_request_workers`:
    /// it refills a reaped slot even when the children still draining already fill the (lowered)
    /// limit. Caught by stateright (I7: a spawn makes more children live than the limit).
    RefillPastLimit,
    /// A child that finds a directive (`G`, `I`) on its slot when accept() returns leaves at once,
    /// dropping the connection it just accepted. Caught by stateright (I11).
    DropConnectionOnDirective,
    /// The maintenance tick ignores the policy's `Spawn` decision: a crashed child is never
    /// replaced. Caught by stateright (L2: the pool returns to `min_spare_servers` idle children).
    NoRespawn,
    /// A child told to leave while it holds the accept lock exits without releasing it first.
    /// Caught by stateright (I10: a child releases the lock before it exits).
    ExitHoldingLock,
    /// The crash-loop brake never engages: children that die right after start are replaced at
    /// the policy's rate for ever. Caught by stateright (I16) and the deterministic simulation.
    NoCrashBrake,
    /// A child "tidies up" on exit: it writes its own slot `Dead`, a state only the parent
    /// writes. Caught by stateright (I1/I2: every write a child makes is a row of its side of the
    /// transition table).
    ChildClearsItsSlot,
    /// The work claim is a plain store instead of a compare-and-swap from `Ready`: a retirement
    /// claim (`I`) the parent made meanwhile is overwritten. Caught by stateright (I3: a child
    /// never overwrites a parent directive).
    WorkClaimByStore,
    /// The stop ladder sends `SIGKILL` at its first step (3 s) instead of `SIGTERM` at 3, 5 and
    /// 7 s. Caught by stateright (I15: the ladder's signals and times) and the deterministic
    /// simulation.
    HurriedKill,
    /// The stop ladder stalls after the first `SIGTERM`: no more signals, no `SIGKILL`, no giving
    /// up. A child that ignores `SIGTERM` keeps the parent waiting for ever. Caught by stateright
    /// (L3: a stop ends).
    NoStopEscalation,
    /// The maintenance tick claims every retirement candidate it can, not only the first: several
    /// idle children retire in one tick. Caught by proptest (I5).
    RetireEveryCandidate,
    /// The maintenance tick forks into the highest `Dead` slots instead of the lowest. Caught by
    /// proptest (I6).
    SpawnHighestFirst,
    /// A `CHILDSICK` exit does not reset the spawn rate: the parent goes on forking fast while
    /// the system is short of resources. Caught by proptest (I8).
    SickKeepsRate,
    /// The spare-server policy counts only `Ready` children as idle, not `Starting` ones (Apache
    /// counts both): children still starting are not seen, and the ramp overshoots. Caught by
    /// proptest (I9: the tick's decision is not the one a recount of the board gives).
    IdleIgnoresStarting,
    /// The child always picks the lowest readable listener instead of going round-robin: a
    /// listener that stays readable can be passed over for ever. Caught by the `child_events` fuzz
    /// body (I12).
    NoRoundRobin,
    /// Reaping forgets to write the slot back to `Dead`: the board shows a child the parent no
    /// longer has (until a repair). Caught by stateright (I9/I14).
    ReapLeavesSlot,
    /// A restart's configuration is applied as it comes, `server_limit` included (no
    /// `restrict_to_running`). Caught by the deterministic simulation (I17).
    ServerLimitFollowsReload,
    /// A `CHILDFATAL` exit stops the server whatever the child's generation (Apache's PR 39311
    /// race: an old child's fatal error during a restart). Caught by the deterministic
    /// simulation (I18).
    OldFatalStops,
    /// The child's work claim first writes its new state with no owner (generation and
    /// incarnation 0), then the whole word: a snapshot in between sees a torn word. Caught by
    /// loom (I20).
    TornClaim,
    /// The accept-lock watchdog does not require connections to be waiting: a holder that waits
    /// in an idle pool is killed. Caught by stateright (I27).
    WatchdogWithoutQueue,
    /// Graceful restarts and stops mark slots `G` but never wake the children (neither at once
    /// nor at the next ticks): an idle old child waits for a connection for ever. Caught by
    /// stateright (L1).
    NoGracefulWake,
    /// The maintenance tick ignores the policy's `Retire` decision: idle children above
    /// `max_spare_servers` are never retired. Caught by the deterministic simulation (L2).
    NoRetire,
    /// The watchdog finds a stalled child but never kills it: a stalled accept-lock holder wedges
    /// every listener. Caught by stateright (L4).
    WatchdogNeverKills,
    /// Demand spawning ignores `fork_rate_limit`: a flood of waiting connections forks as fast as
    /// slots allow. Caught by proptest (I28: forks in any second stay within the limit).
    NoForkRateLimit,
    /// Demand spawning counts only free slots, not the children alive: with old-generation
    /// children still draining above a lowered `max_request_workers`, it forks past the limit.
    /// Caught by proptest (I7).
    DemandPastMaxRequestWorkers,
    /// The parent writes the running generation only when it changes (start, restarts), as before
    /// issue 21: a scribbled generation word makes every new child leave at once, for ever (the
    /// outage the black-box attack found). Caught by stateright and shuttle (L5: the pool returns
    /// to `min_spare_servers` within a tick of the last scribble).
    NoRepublish,
    /// A stop signals the pid each slot's pid word names instead of the pid in the parent's
    /// table (Apache before CVE-2007-3304): a child that scribbled a pid there makes the parent
    /// signal any process. Caught by stateright and shuttle (I29: the parent signals only its own
    /// children).
    SignalPidFromBoard,
    /// The repair looks up "the child that owns this incarnation" by using a foreign word's
    /// incarnation as an index into the parent's table (a value from shared memory used as an
    /// index, the class of CVE-2019-0211): a scribbled incarnation panics the parent. Caught by
    /// stateright and shuttle (I30: the parent never panics).
    IndexFromBoard,
    /// A hard restart announces `Ready` as soon as it begins, while the old children are still
    /// being stopped (a service manager would send traffic to a pool that is not there yet).
    /// Caught by stateright, shuttle and the deterministic simulation (I31: the lifecycle events
    /// come in their order, and `Ready` only when the pool runs).
    ReadyEarly,
    /// A child told to leave in a graceful stop leaves at once, as before issue 24, instead of
    /// draining the listen queues first: connections queued when the stop came are reset when
    /// the last child lets go of the sockets. Caught by stateright and shuttle (I32: a graceful
    /// stop serves every connection that was queued).
    NoDrain,
    /// The gate sheds under pressure even while its table has room (a connection that could have
    /// waited is closed). Caught by proptest (G2).
    ShedWithRoom,
    /// The gate's shedding order counts a complete head (queued for a child) as a candidate, last:
    /// with the table full of complete heads, one is closed. Caught by proptest (G1).
    ShedCompleteHead,
    /// The gate's shedding order forgets `request_read_min_rate` and the first second: a head
    /// arriving at a decent rate, or a connection that has just arrived, can be shed. Caught by
    /// proptest (G3).
    ShedProtected,
    /// A gated child in a graceful stop leaves at its first empty read of the gate's channel, as
    /// an ungated child leaves after a round of empty listeners: a head the draining gate
    /// completes later is left in the channel with no child to take it. Caught by stateright
    /// (G5).
    GatedDrainEndsWhenEmpty,
    /// The gate tells the shell to accept whatever its table holds: it holds more connections
    /// (descriptors) than `accept_filter_connections`. Caught by proptest (G4).
    AcceptPastCapacity,
}

#[cfg(test)]
mod tests {
    use super::SeededBug;

    #[test]
    fn bugs_of_the_parent_and_of_the_child_loop_are_told_apart() {
        for bug in [SeededBug::NoRepublish, SeededBug::SignalPidFromBoard, SeededBug::IndexFromBoard] {
            assert!(bug.in_parent(), "{bug:?}");
        }
        for bug in [SeededBug::NoAcceptLock, SeededBug::TornClaim, SeededBug::ChildClearsItsSlot] {
            assert!(!bug.in_parent(), "{bug:?}");
        }
    }
}

impl SeededBug {
    /// Does the bug live in the parent ([`crate::Parent::seed_bug`]) rather than the child loop
    /// ([`crate::ChildLoop::seed_bug`])?
    pub const fn in_parent(self) -> bool {
        matches!(
            self,
            SeededBug::RetireWithoutClaim
                | SeededBug::IgnoreGenerationOnReap
                | SeededBug::RefillPastLimit
                | SeededBug::NoRespawn
                | SeededBug::NoCrashBrake
                | SeededBug::HurriedKill
                | SeededBug::NoStopEscalation
                | SeededBug::RetireEveryCandidate
                | SeededBug::SpawnHighestFirst
                | SeededBug::SickKeepsRate
                | SeededBug::IdleIgnoresStarting
                | SeededBug::ReapLeavesSlot
                | SeededBug::ServerLimitFollowsReload
                | SeededBug::OldFatalStops
                | SeededBug::WatchdogWithoutQueue
                | SeededBug::NoGracefulWake
                | SeededBug::NoRetire
                | SeededBug::WatchdogNeverKills
                | SeededBug::NoForkRateLimit
                | SeededBug::DemandPastMaxRequestWorkers
                | SeededBug::NoRepublish
                | SeededBug::SignalPidFromBoard
                | SeededBug::IndexFromBoard
                | SeededBug::ReadyEarly
        )
    }
}

/// The bug a machine runs with: always "none" without the `seeded-bugs` feature (a zero-sized
/// field that compiles away).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct BugSwitch {
    #[cfg(feature = "seeded-bugs")]
    bug: Option<SeededBug>,
}

impl BugSwitch {
    /// No bug (for `const` constructors).
    pub(crate) const NONE: BugSwitch = BugSwitch {
        #[cfg(feature = "seeded-bugs")]
        bug: None,
    };

    /// Selects `bug`.
    #[cfg(feature = "seeded-bugs")]
    pub(crate) fn set(&mut self, bug: SeededBug) {
        self.bug = Some(bug);
    }

    /// Is `bug` selected?
    pub(crate) fn is(&self, bug: SeededBug) -> bool {
        #[cfg(feature = "seeded-bugs")]
        return self.bug == Some(bug);
        #[cfg(not(feature = "seeded-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}
