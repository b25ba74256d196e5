//! The crash-loop brake and the fork back-off (SPEC.md §7.7): spawning pauses while children die
//! right after start, or while fork() fails.

use super::log::expected_signal;
use crate::exit::ExitStatus;
use crate::time::Time;
use std::time::Duration;

/// A child dying abnormally within this long of its spawn (or before it reached `Ready`) counts
/// as an early exit for the crash-loop brake.
pub const EARLY_EXIT_WINDOW: Duration = Duration::from_secs(2);
/// Consecutive early exits that engage the crash-loop brake.
pub const CRASH_LOOP_THRESHOLD: u32 = 3;
/// Longest spawn pause of the crash-loop brake (the pause doubles from 1 s up to this).
pub const CRASH_LOOP_MAX_PAUSE: Duration = Duration::from_secs(64);
/// Longest back-off after failed fork()s (doubling from 1 s; Apache sleeps 10 s, blocking).
pub const FORK_RETRY_MAX: Duration = Duration::from_secs(10);

/// A death that says something is wrong with the child itself: a non-zero exit code or a crash
/// signal (SIGSEGV, SIGABRT …). Deaths by a signal someone sends (SIGKILL from the OOM killer or
/// an operator, SIGTERM …) are not: the capacity they took is replaced at the policy's rate, not
/// held back by the crash-loop brake.
pub(super) fn self_inflicted(status: ExitStatus) -> bool {
    match status {
        ExitStatus::Signaled(sig) => !expected_signal(sig),
        other => other.is_abnormal(),
    }
}

/// Holds spawning back while children crash right after start, or fork() fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpawnBrake {
    pub(super) early_exits: u32,
    pub(super) fork_failures: u32,
    paused_until: Option<Time>,
}

impl SpawnBrake {
    /// May the parent fork at `now`?
    pub fn allows(&self, now: Time) -> bool {
        self.paused_until.is_none_or(|t| now >= t)
    }

    /// Consecutive early exits seen.
    pub fn early_exits(&self) -> u32 {
        self.early_exits
    }

    /// When spawning resumes, if paused.
    pub fn paused_until(&self) -> Option<Time> {
        self.paused_until
    }

    fn pause(&mut self, now: Time, d: Duration) {
        let until = now + d;
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// Records an early exit; returns the pause if the brake engaged.
    pub(super) fn early_exit(&mut self, now: Time) -> Option<Duration> {
        self.early_exits = self.early_exits.saturating_add(1);
        let over = self.early_exits.checked_sub(CRASH_LOOP_THRESHOLD)?;
        let pause = Duration::from_secs(1 << over.min(6)).min(CRASH_LOOP_MAX_PAUSE);
        self.pause(now, pause);
        Some(pause)
    }

    pub(super) fn fork_failed(&mut self, now: Time) -> Duration {
        self.fork_failures = self.fork_failures.saturating_add(1);
        let pause = Duration::from_secs(1 << (self.fork_failures - 1).min(4)).min(FORK_RETRY_MAX);
        self.pause(now, pause);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_reported_until_it_ends_and_grows() {
        let mut brake = SpawnBrake::default();
        let t = Time::ZERO + Duration::from_secs(10);
        assert_eq!(brake.paused_until(), None);
        assert_eq!(brake.early_exit(t), None);
        assert_eq!(brake.early_exit(t), None);
        assert_eq!(brake.early_exit(t), Some(Duration::from_secs(1)), "the third early exit engages it");
        assert_eq!(brake.paused_until(), Some(t + Duration::from_secs(1)));
        assert!(!brake.allows(t) && brake.allows(t + Duration::from_secs(1)));
        assert_eq!(brake.early_exit(t), Some(Duration::from_secs(2)), "doubling");
        assert_eq!(brake.paused_until(), Some(t + Duration::from_secs(2)));
        // A fork failure's shorter pause never shortens a longer one.
        assert_eq!(brake.fork_failed(t), Duration::from_secs(1));
        assert_eq!(brake.paused_until(), Some(t + Duration::from_secs(2)));
    }
}
