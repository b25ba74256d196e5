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
}

/// The bug a machine runs with: always "none" without the `seeded-bugs` feature (a zero-sized
/// field that compiles away).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct BugSwitch {
    #[cfg(feature = "seeded-bugs")]
    bug: Option<SeededBug>,
}

impl BugSwitch {
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
