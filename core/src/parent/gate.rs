//! The gate process's lifecycle (SPEC.md §15.5): with `accept_filter = "httpready"` the parent
//! keeps one gate running beside the children, as it keeps the children.
//!
//! ```text
//!   start / restart done ──> StartGate ─Ok(pid)─> running ──exits──> StartGate again (at once if
//!                                 │                  │               it ran a second or more; else
//!                                 └─Err─> retry at the next tick     at the next tick after one)
//!   graceful restart: StopGate(Retire) the old one (it stops accepting, finishes the heads it
//!                     holds, hands them over, exits), StartGate a new one with the new settings
//!   graceful stop:    StopGate(Drain): it takes what the listen queues hold, finishes, exits;
//!                     gated children drain the channel until it hangs up
//!   hand-over:        StopGate(Finish): no more accepts, it finishes what it holds; gated
//!                     children drain the channel until it hangs up
//!   stop, hard restart, fatal: StopGate(Now) for every gate
//! ```
//!
//! A gate is not a child: it has no slot and does not count towards `max_request_workers`; its
//! exit is never a child's (the parent tells them apart by pid, from its own records).

use super::{Parent, ParentAction, ParentLog, Pid, Stage};
use crate::exit::ExitStatus;
use crate::time::Time;
use std::time::Duration;

/// A gate that exits within this long of its start is restarted only after this long (a gate
/// that cannot run must not be forked in a loop).
pub const GATE_RESTART_DELAY: Duration = Duration::from_secs(1);

pub use crate::gate::GateStop;

/// The parent's record of its gates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Gates {
    /// The gate taking connections, and when it started; `Some((None, _))` between `StartGate`
    /// and its answer.
    current: Option<(Option<Pid>, Time)>,
    /// Gates told to stop that have not exited yet.
    leaving: Vec<Pid>,
    /// No gate before this (after a failed start, or an early exit).
    not_before: Option<Time>,
}

impl Parent {
    /// Does this configuration run a gate?
    pub(super) fn gate_wanted(&self) -> bool {
        self.config.accept_filter == crate::config::AcceptFilter::HttpReady
    }

    /// The gate taking connections now, if one is running.
    pub fn gate_pid(&self) -> Option<Pid> {
        self.gates.current.and_then(|(pid, _)| pid)
    }

    /// Starts a gate if one is wanted and none runs (and no delay holds it back).
    pub(super) fn start_gate(&mut self, now: Time) {
        if !self.gate_wanted() || self.gates.current.is_some() || self.gates.not_before.is_some_and(|t| now < t) {
            return;
        }
        self.gates.not_before = None;
        self.gates.current = Some((None, now));
        self.actions.push_back(ParentAction::StartGate);
    }

    /// The driver's answer to `StartGate`.
    pub(crate) fn handle_gate_started(&mut self, now: Time, started: Result<Pid, String>) {
        match started {
            Ok(pid) => {
                self.gates.current = Some((Some(pid), now));
                self.log(ParentLog::GateStarted { pid });
            }
            Err(why) => {
                self.gates.current = None;
                self.gates.not_before = Some(now + GATE_RESTART_DELAY);
                self.log(ParentLog::GateFailed { pid: None, why });
            }
        }
    }

    /// Tells the current gate to stop (`how`), and with `Now` every leaving one too.
    pub(super) fn stop_gates(&mut self, how: GateStop) {
        if let Some((Some(pid), _)) = self.gates.current.take() {
            self.gates.leaving.push(pid);
            if how != GateStop::Now {
                self.actions.push_back(ParentAction::StopGate { pid, how });
            }
        }
        if how == GateStop::Now {
            for &pid in &self.gates.leaving {
                self.actions.push_back(ParentAction::StopGate { pid, how });
            }
        }
    }

    /// waitpid() reported `pid`: if it is one of the gates, handle its exit and say so.
    pub(super) fn gate_exited(&mut self, now: Time, pid: Pid, status: ExitStatus) -> bool {
        if let Some(i) = self.gates.leaving.iter().position(|&p| p == pid) {
            self.gates.leaving.swap_remove(i);
            self.log(ParentLog::GateExited { pid, status, replaced: false });
            return true;
        }
        let Some((Some(current), since)) = self.gates.current else { return false };
        if current != pid {
            return false;
        }
        self.gates.current = None;
        let running = self.stage == Stage::Running;
        self.log(ParentLog::GateExited { pid, status, replaced: running });
        if running {
            if now.since(since) < GATE_RESTART_DELAY {
                self.gates.not_before = Some(now + GATE_RESTART_DELAY);
            }
            self.start_gate(now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AcceptFilter, PoolConfig};
    use crate::{MemoryBoard, ParentDriver, Recorder};
    use std::sync::atomic::AtomicU64;

    fn gated() -> PoolConfig {
        PoolConfig { accept_filter: AcceptFilter::HttpReady, start_servers: 1, ..PoolConfig::default() }
    }

    fn gate_actions(p: &mut Recorder) -> Vec<ParentAction> {
        p.take().into_iter().filter(|a| matches!(a, ParentAction::StartGate | ParentAction::StopGate { .. })).collect()
    }

    #[test]
    fn a_gated_pool_starts_one_gate_and_restarts_it_when_it_dies() {
        let board: MemoryBoard<AtomicU64> = MemoryBoard::new(8);
        let mut platform = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(gated()), Time::ZERO, &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![ParentAction::StartGate]);
        let gate = driver.parent().gate_pid().expect("the recorder forks it");
        // It ran for a while: replaced at once.
        driver.handle_child_exit(Time::from_secs(10), gate, ExitStatus::Signaled(9), None, &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![ParentAction::StartGate]);
        let second = driver.parent().gate_pid().unwrap();
        assert_ne!(second, gate);
        // It died at once: not again before a second has passed, and again when it has.
        driver.handle_child_exit(Time::from_millis(10_100), second, ExitStatus::Code(1), None, &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![]);
        driver.handle_timeout(Time::from_millis(11_099), &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![]);
        driver.handle_timeout(Time::from_millis(11_100), &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![ParentAction::StartGate]);
        // One that lived exactly the delay is replaced at once.
        let third = driver.parent().gate_pid().unwrap();
        driver.handle_child_exit(Time::from_millis(12_100), third, ExitStatus::Code(1), None, &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![ParentAction::StartGate]);
    }

    #[test]
    fn a_hand_over_finishes_the_gate_and_gated_children_drain_its_channel() {
        use crate::scoreboard::{DRAINING, SlotTable};
        use std::sync::atomic::Ordering;
        let board: MemoryBoard<AtomicU64> = MemoryBoard::new(8);
        let mut platform = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(gated()), Time::ZERO, &board, &mut platform);
        let gate = driver.parent().gate_pid().unwrap();
        platform.take();
        driver.handle_command(Time::from_secs(1), crate::Command::HandOver, &board, &mut platform);
        let effects = platform.take();
        assert!(effects.contains(&ParentAction::StopGate { pid: gate, how: GateStop::Finish }), "{effects:?}");
        assert!(effects.contains(&ParentAction::CloseListeners), "the listeners are the other server's");
        assert_ne!(board.generation_word().load(Ordering::Acquire) & DRAINING, 0, "gated children drain the channel");
    }

    #[test]
    fn an_ungated_pool_has_no_gate_and_its_children_are_not_gated() {
        let board: MemoryBoard<AtomicU64> = MemoryBoard::new(8);
        let mut platform = Recorder::new(100);
        let cfg = PoolConfig { accept_filter: AcceptFilter::Data, ..gated() };
        let driver = ParentDriver::start(Parent::new(cfg), Time::ZERO, &board, &mut platform);
        assert!(driver.parent().gate_pid().is_none());
        let effects = platform.take();
        assert!(!effects.contains(&ParentAction::StartGate));
        assert!(effects.iter().any(|a| matches!(a, ParentAction::Spawn(s) if !s.child.gated)));
    }

    #[test]
    fn a_retired_gate_that_exits_is_not_the_current_one_nor_a_lost_child() {
        let board: MemoryBoard<AtomicU64> = MemoryBoard::new(8);
        let mut platform = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(gated()), Time::ZERO, &board, &mut platform);
        let old = driver.parent().gate_pid().unwrap();
        let t = Time::from_secs(5);
        driver.handle_command(t, crate::Command::GracefulRestart(Box::new(gated())), &board, &mut platform);
        let new = driver.parent().gate_pid().unwrap();
        platform.take();
        driver.handle_child_exit(t, old, ExitStatus::Code(0), None, &board, &mut platform);
        let effects = platform.take();
        assert!(
            effects.iter().any(|a| matches!(a, ParentAction::Log(ParentLog::GateExited { pid, replaced: false, .. })
                if *pid == old)),
            "{effects:?}"
        );
        assert!(!effects.iter().any(|a| matches!(a, ParentAction::Log(ParentLog::LongLostChild { .. }))));
        assert_eq!(driver.parent().gate_pid(), Some(new), "the new gate goes on");
        assert!(!effects.contains(&ParentAction::StartGate));
    }

    #[test]
    fn stops_and_restarts_tell_the_gate_how_to_leave() {
        let board: MemoryBoard<AtomicU64> = MemoryBoard::new(8);
        let mut platform = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(gated()), Time::ZERO, &board, &mut platform);
        assert!(platform.take().iter().any(|a| matches!(a, ParentAction::Spawn(s) if s.child.gated)));
        let first = driver.parent().gate_pid().unwrap();
        let t = Time::from_secs(5);
        driver.handle_command(t, crate::Command::GracefulRestart(Box::new(gated())), &board, &mut platform);
        let second = driver.parent().gate_pid().unwrap();
        assert_eq!(
            gate_actions(&mut platform),
            vec![ParentAction::StopGate { pid: first, how: GateStop::Retire }, ParentAction::StartGate]
        );
        driver.handle_command(t, crate::Command::GracefulStop, &board, &mut platform);
        assert_eq!(gate_actions(&mut platform), vec![ParentAction::StopGate { pid: second, how: GateStop::Drain }]);
        driver.handle_command(t, crate::Command::Stop, &board, &mut platform);
        assert_eq!(
            gate_actions(&mut platform),
            vec![
                ParentAction::StopGate { pid: first, how: GateStop::Now },
                ParentAction::StopGate { pid: second, how: GateStop::Now }
            ]
        );
        // Their exits are the gates', each its own, not long-lost children.
        for gate in [first, second] {
            driver.handle_child_exit(t, gate, ExitStatus::Code(0), None, &board, &mut platform);
            let effects = platform.take();
            assert!(
                effects
                    .iter()
                    .any(|a| matches!(a, ParentAction::Log(ParentLog::GateExited { pid, replaced: false, .. })
                    if *pid == gate)),
                "{gate}: {effects:?}"
            );
            assert!(!effects.iter().any(|a| matches!(a, ParentAction::Log(ParentLog::LongLostChild { .. }))));
        }
    }
}
