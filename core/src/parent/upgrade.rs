//! A binary upgrade in place (SPEC.md §7.11): the parent starts its successor (the new binary) on
//! the same listening sockets, and hands over to it once it says it serves.
//!
//! ```text
//!   Running ──Upgrade──> StartSuccessor ─Err(why)─> UpgradeFailed; Running, as before
//!                             │ Ok(pid)
//!                             v
//!                   pending (≤ UPGRADE_TIMEOUT) ──successor Exited──> UpgradeFailed; Running
//!                             │      └──timeout──> StopSuccessor(pid), UpgradeFailed; Running
//!                       successor Ready
//!                             v
//!                   hand-over: a graceful stop that leaves the sockets (and their queues) to the
//!                   successor (`CloseListeners`, no drain), Stopping, Exit(0)
//! ```
//!
//! Nothing is lost either way: until the successor is ready the old pool serves alone; after, the
//! old children finish what they hold while the successor's children take what is queued.

use super::{Parent, ParentAction, ParentLog, Pid, Stage};
use crate::exit::ExitStatus;
use crate::scoreboard::SlotTable;
use crate::time::Time;
use std::time::Duration;

/// How long a successor may take to say it serves before the upgrade is given up (and the
/// successor stopped).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the driver hears from the successor it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuccessorReport {
    /// It serves (its own parent announced `Ready`).
    Ready,
    /// It exited (reaped by this parent, whose child it is).
    Exited(ExitStatus),
}

/// The successor being started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Successor {
    pub(super) pid: Pid,
    pub(super) since: Time,
}

impl Parent {
    /// The operator asked for an upgrade (`Command::Upgrade`).
    pub(super) fn begin_upgrade(&mut self) {
        match (&self.stage, self.successor) {
            (Stage::Running, None) => self.actions.push_back(ParentAction::StartSuccessor),
            (_, Some(s)) => self.log(ParentLog::UpgradeIgnored { pending: Some(s.pid), phase: self.phase() }),
            _ => self.log(ParentLog::UpgradeIgnored { pending: None, phase: self.phase() }),
        }
    }

    /// The driver's answer to `StartSuccessor`.
    pub(crate) fn handle_successor_started(&mut self, now: Time, started: Result<Pid, String>) {
        match started {
            Ok(pid) => {
                self.successor = Some(Successor { pid, since: now });
                self.log(ParentLog::UpgradeStarted { pid });
            }
            Err(why) => self.log(ParentLog::UpgradeFailed { pid: None, why }),
        }
    }

    /// What the successor did. Only a pending successor counts: once handed over (or given up),
    /// its exit is nothing to this parent.
    pub(crate) fn handle_successor<T: SlotTable + ?Sized>(&mut self, now: Time, report: SuccessorReport, board: &T) {
        let Some(s) = self.successor else { return };
        match report {
            SuccessorReport::Exited(status) => {
                self.successor = None;
                self.log(ParentLog::UpgradeFailed {
                    pid: Some(s.pid),
                    why: match status {
                        ExitStatus::Code(c) => format!("the new server exited with code {c} before it was ready"),
                        ExitStatus::Signaled(sig) => {
                            format!("the new server was killed by signal {sig} before it was ready")
                        }
                    },
                });
            }
            SuccessorReport::Ready => {
                self.successor = None;
                self.log(ParentLog::UpgradeReady { pid: s.pid });
                self.handle_command(now, super::Command::HandOver, board);
            }
        }
    }

    /// A stop came while a successor was starting: it is stopped too (the operator stops the
    /// server, not only the old binary).
    pub(super) fn cancel_successor(&mut self, why: &str) {
        if let Some(s) = self.successor.take() {
            self.actions.push_back(ParentAction::StopSuccessor { pid: s.pid });
            self.log(ParentLog::UpgradeFailed { pid: Some(s.pid), why: format!("{why}; stopping the new server") });
        }
    }

    /// When a pending successor is given up.
    pub(super) fn successor_deadline(&self) -> Option<Time> {
        self.successor.map(|s| s.since + UPGRADE_TIMEOUT)
    }

    /// At a timeout: a successor that did not become ready in time is stopped and given up.
    pub(super) fn check_successor(&mut self, now: Time) {
        if let Some(s) = self.successor
            && now >= s.since + UPGRADE_TIMEOUT
        {
            self.successor = None;
            self.actions.push_back(ParentAction::StopSuccessor { pid: s.pid });
            self.log(ParentLog::UpgradeFailed {
                pid: Some(s.pid),
                why: format!("the new server was not ready within {}s; stopping it", UPGRADE_TIMEOUT.as_secs()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, RawPoolConfig};
    use crate::driver::{ParentDriver, Recorder};
    use crate::parent::{Command, ParentEvent, Phase};
    use crate::scoreboard::{DRAINING, MemoryBoard};
    use std::cell::Cell;

    struct Old {
        board: MemoryBoard<Cell<u64>>,
        driver: ParentDriver,
        platform: Recorder,
    }

    fn old() -> Old {
        let raw = RawPoolConfig { start_servers: Some(2), server_limit: Some(4), ..Default::default() };
        let board = MemoryBoard::new(4);
        let mut platform = Recorder::new(100);
        let driver = ParentDriver::start(
            Parent::new(PoolConfig::from_raw(&raw).unwrap().value),
            Time::ZERO,
            &board,
            &mut platform,
        );
        platform.take();
        Old { board, driver, platform }
    }

    impl Old {
        fn command(&mut self, at: u64, command: Command) -> Vec<ParentAction> {
            self.driver.handle_command(Time::from_millis(at), command, &self.board, &mut self.platform);
            self.platform.take()
        }
        fn report(&mut self, at: u64, report: SuccessorReport) -> Vec<ParentAction> {
            self.driver.handle_successor(Time::from_millis(at), report, &self.board, &mut self.platform);
            self.platform.take()
        }
        fn timeout(&mut self, at: u64) -> Vec<ParentAction> {
            self.driver.handle_timeout(Time::from_millis(at), &self.board, &mut self.platform);
            self.platform.take()
        }
        fn logged(effects: &[ParentAction], f: impl Fn(&ParentLog) -> bool) -> bool {
            effects.iter().any(|a| matches!(a, ParentAction::Log(l) if f(l)))
        }
    }

    #[test]
    fn a_ready_successor_gets_the_sockets_and_the_old_parent_stops_gracefully_without_draining() {
        let mut o = old();
        let started = o.command(10, Command::Upgrade);
        assert_eq!(started[0], ParentAction::StartSuccessor);
        assert!(Old::logged(&started, |l| matches!(l, ParentLog::UpgradeStarted { pid: 102 })));
        assert!(o.driver.poll_timeout() <= Some(Time::from_millis(10) + UPGRADE_TIMEOUT));
        assert_eq!(o.driver.parent().phase(), Phase::Running, "the old pool serves alone until then");
        let handed = o.report(500, SuccessorReport::Ready);
        assert!(Old::logged(&handed, |l| matches!(l, ParentLog::UpgradeReady { pid: 102 })));
        assert!(handed.contains(&ParentAction::CloseListeners), "its copies only: the successor holds the sockets");
        assert!(!handed.contains(&ParentAction::DrainListeners), "no drain: the successor takes what is queued");
        assert!(handed.contains(&ParentAction::Event(ParentEvent::Stopping { graceful: true })));
        assert_eq!(o.driver.parent().phase(), Phase::Draining);
        assert_eq!(o.board.generation_word().get() & DRAINING, 0);
        assert!(
            o.report(900, SuccessorReport::Exited(ExitStatus::Code(0))).is_empty(),
            "its exit is nothing to us now"
        );
    }

    #[test]
    fn a_successor_that_exits_or_is_late_is_given_up_and_the_old_parent_serves_on() {
        let mut o = old();
        o.command(0, Command::Upgrade);
        let failed = o.report(200, SuccessorReport::Exited(ExitStatus::Code(1)));
        assert!(Old::logged(&failed, |l| matches!(l, ParentLog::UpgradeFailed { pid: Some(102), why }
            if why.contains("exited with code 1"))));
        assert_eq!(o.driver.parent().phase(), Phase::Running);
        assert!(o.report(300, SuccessorReport::Ready).is_empty(), "nothing pending: a late report changes nothing");
        // At 450 ms: off the grid of ticks and looks, so only the upgrade's own deadline is due then.
        assert_eq!(o.command(450, Command::Upgrade)[0], ParentAction::StartSuccessor, "a new try is allowed");
        let late = Time::from_millis(450) + UPGRADE_TIMEOUT;
        let mut effects = vec![];
        while o.driver.poll_timeout().is_some_and(|t| t <= late) {
            let t = o.driver.poll_timeout().unwrap();
            let now = o.timeout(t.as_millis());
            let stopped = now.contains(&ParentAction::StopSuccessor { pid: 103 });
            assert_eq!(
                stopped,
                t == late,
                "given up exactly at its deadline (a timeout of its own), not before: {t:?}"
            );
            effects.extend(now);
        }
        assert!(effects.contains(&ParentAction::StopSuccessor { pid: 103 }), "{effects:?}");
        assert!(Old::logged(&effects, |l| matches!(l, ParentLog::UpgradeFailed { pid: Some(103), .. })));
        assert!(o.report(late.as_millis() + 1, SuccessorReport::Ready).is_empty());
        assert_eq!(o.driver.parent().phase(), Phase::Running);
    }

    #[test]
    fn an_upgrade_under_way_or_outside_running_is_ignored_a_failed_start_reported_and_a_stop_ends_it() {
        let mut o = old();
        o.command(0, Command::Upgrade);
        let again = o.command(1, Command::Upgrade);
        assert!(Old::logged(&again, |l| matches!(l, ParentLog::UpgradeIgnored { pending: Some(102), .. })));
        let stopped = o.command(2, Command::Stop);
        assert!(
            stopped.contains(&ParentAction::StopSuccessor { pid: 102 }),
            "the operator stops the server, all of it"
        );
        let late = o.command(3, Command::Upgrade);
        assert!(Old::logged(&late, |l| matches!(
            l,
            ParentLog::UpgradeIgnored { pending: None, phase: Phase::Stopping }
        )));
        let mut o = old();
        o.platform.fail_spawns = true;
        let failed = o.command(0, Command::Upgrade);
        assert!(Old::logged(&failed, |l| matches!(l, ParentLog::UpgradeFailed { pid: None, .. })));
        assert_eq!(o.driver.parent().phase(), Phase::Running);
    }
}
