//! The driver contract in code (SPEC.md §7.1): one loop that carries out the parent's actions on a
//! [`Platform`], answering every `Spawn` before anything else can happen.
//!
//! Every driver of the [`Parent`] goes through [`ParentDriver`]: the real server (`prefork-server`,
//! on fork() and signals), the deterministic simulation (`core/tests/common`), and the stateright
//! and shuttle models (`prefork-model`). A platform only says how each effect happens; *when*
//! effects happen, in which order, and how their outcomes go back to the parent is decided here,
//! once. Because `ParentDriver` owns the parent and lends it out only as `&Parent`, no driver can
//! feed the parent an event while a `Spawn` is unanswered, or forget to answer one.
//!
//! ```text
//!   handle_*(now, …, board, platform)      (handle_timeout first asks platform.observe)
//!      └─> Parent::handle_*  ──> actions, in order:
//!            Spawn { slot, born }  ─> platform.spawn ─ Ok(pid) ─> Parent::handle_spawned
//!                                                   └ Err(why) ─> Parent::handle_spawn_failed (may add actions)
//!            Wake { slot, pid }    ─> platform.wake
//!            Signal { pid, sig, stall } ─> platform.signal
//!            CloseListeners        ─> platform.close_listeners
//!            Log(line)             ─> platform.log
//!            Exit { code }         ─> returned (and kept: exit_code())
//! ```
//!
//! The raw `Parent` calls (`poll_action`, `handle_spawned`, …) stay public for the fuzz body that
//! feeds the parent impossible sequences on purpose (`prefork_model::fuzzing::parent_events`).

use crate::exit::{ExitReason, ExitStatus, KillReason};
use crate::parent::{Command, KillSignal, Observation, Parent, ParentAction, ParentLog, Pid};
use crate::scoreboard::SlotTable;
use crate::slot::SlotWord;
use crate::time::Time;

/// How a driver performs the parent's effects on its platform: processes, signals, sockets, logs.
///
/// `T` is the scoreboard the children run on (the server's shared memory, a model's cells).
pub trait Platform<T: SlotTable + ?Sized> {
    /// fork() a child for `slot`, whose word already holds `born` (state `Starting`): the child runs
    /// the child loop on `ChildSlot::attach(board, slot, born)` with `parent.config()` in force.
    /// Returns the child's pid, or why there is none (the parent logs it, AH00159, and backs off).
    fn spawn(&mut self, parent: &Parent, board: &T, slot: usize, born: SlotWord) -> Result<Pid, String>;

    /// Nudges child `pid` in `slot`, whose slot holds a directive for it: a readiness wait must
    /// return, and so must a blocked accept-lock acquisition (SPEC.md §7.1).
    fn wake(&mut self, slot: usize, pid: Pid);

    /// Sends `signal` to child `pid`, to that process only (a pid from the parent's own table).
    /// `reason` says why the parent kills a child of a running pool (the watchdog, a slot that
    /// stayed damaged; `None`: a stop or restart). `parent` is the parent at that moment (the
    /// models check its phase: retirement must never use a signal).
    fn signal(&mut self, parent: &Parent, board: &T, pid: Pid, signal: KillSignal, reason: Option<KillReason>);

    /// What each listener's accept queue holds now, in the configuration's order (empty once the
    /// listeners are closed), and who holds the accept lock if the kernel can tell. Asked before
    /// every timeout: the watchdog's evidence (SPEC.md §7.8).
    fn observe(&mut self) -> Observation;

    /// Closes every listening socket (stops only; restarts keep them).
    fn close_listeners(&mut self);

    /// Records what the parent reports ([`ParentLog::level`], [`ParentLog::apache_code`]).
    fn log(&mut self, line: ParentLog);
}

/// The [`Parent`] together with the driver contract: each `handle_*` call feeds the parent one
/// input and then performs every action it asks for on the platform, in order, answering each
/// `Spawn` at once. Returns the parent's exit code once it has asked to exit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParentDriver {
    parent: Parent,
    exit: Option<i32>,
}

impl ParentDriver {
    /// Drives `parent` (created with [`Parent::new`], seeded bugs already selected).
    pub fn new(parent: Parent) -> Self {
        ParentDriver { parent, exit: None }
    }

    /// The parent, to read (configuration, generation, phase, children …).
    pub fn parent(&self) -> &Parent {
        &self.parent
    }

    /// The code the parent exited with, once it has.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// When [`ParentDriver::handle_timeout`] wants to be called next (`None` after the exit).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.exit.is_some() { None } else { self.parent.poll_timeout() }
    }

    /// Cold start ([`Parent::start`]).
    pub fn start<T, P>(&mut self, now: Time, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform<T> + ?Sized,
    {
        self.parent.start(now, board);
        self.dispatch(now, board, platform)
    }

    /// Time passed ([`Parent::handle_timeout`], with the platform's [`Platform::observe`]).
    pub fn handle_timeout<T, P>(&mut self, now: Time, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform<T> + ?Sized,
    {
        let seen = platform.observe();
        self.parent.handle_timeout(now, board, &seen);
        self.dispatch(now, board, platform)
    }

    /// The operator's command ([`Parent::handle_command`]).
    pub fn handle_command<T, P>(&mut self, now: Time, command: Command, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform<T> + ?Sized,
    {
        self.parent.handle_command(now, command, board);
        self.dispatch(now, board, platform)
    }

    /// waitpid() reported a child's end ([`Parent::handle_child_exit`]).
    pub fn handle_child_exit<T, P>(
        &mut self,
        now: Time,
        pid: Pid,
        status: ExitStatus,
        reported: Option<ExitReason>,
        board: &T,
        platform: &mut P,
    ) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform<T> + ?Sized,
    {
        self.parent.handle_child_exit(now, pid, status, reported, board);
        self.dispatch(now, board, platform)
    }

    /// The one loop that turns actions into effects.
    fn dispatch<T, P>(&mut self, now: Time, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform<T> + ?Sized,
    {
        while let Some(action) = self.parent.poll_action() {
            match action {
                ParentAction::Spawn { slot, born } => match platform.spawn(&self.parent, board, slot, born) {
                    Ok(pid) => self.parent.handle_spawned(slot, pid, board),
                    Err(why) => self.parent.handle_spawn_failed(now, slot, &why, board),
                },
                ParentAction::Wake { slot, pid } => platform.wake(slot, pid),
                ParentAction::Signal { pid, signal, reason } => {
                    platform.signal(&self.parent, board, pid, signal, reason)
                }
                ParentAction::CloseListeners => platform.close_listeners(),
                ParentAction::Log(line) => platform.log(line),
                ParentAction::Exit { code } => self.exit = Some(code),
            }
        }
        self.exit
    }
}

/// A platform that performs nothing and records every effect, in order, as the action that asked
/// for it. Spawns succeed with pids counting up from `next_pid` (or all fail, with `fail_spawns`);
/// what it sees is what `seen` says. For examples, the loom models and the fuzz bodies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Every effect so far.
    pub effects: Vec<ParentAction>,
    /// The pid the next spawn gets.
    pub next_pid: Pid,
    /// Make every spawn fail.
    pub fail_spawns: bool,
    /// What [`Platform::observe`] answers.
    pub seen: Observation,
}

impl Recorder {
    /// A recorder whose first child gets `first_pid`.
    pub fn new(first_pid: Pid) -> Self {
        Recorder { effects: Vec::new(), next_pid: first_pid, fail_spawns: false, seen: Observation::default() }
    }

    /// The effects recorded since the last call.
    pub fn take(&mut self) -> Vec<ParentAction> {
        std::mem::take(&mut self.effects)
    }
}

impl<T: SlotTable + ?Sized> Platform<T> for Recorder {
    fn spawn(&mut self, _: &Parent, _: &T, slot: usize, born: SlotWord) -> Result<Pid, String> {
        self.effects.push(ParentAction::Spawn { slot, born });
        if self.fail_spawns {
            return Err("spawning is switched off".into());
        }
        self.next_pid += 1;
        Ok(self.next_pid - 1)
    }
    fn wake(&mut self, slot: usize, pid: Pid) {
        self.effects.push(ParentAction::Wake { slot, pid });
    }
    fn signal(&mut self, _: &Parent, _: &T, pid: Pid, signal: KillSignal, reason: Option<KillReason>) {
        self.effects.push(ParentAction::Signal { pid, signal, reason });
    }
    fn observe(&mut self) -> Observation {
        self.seen.clone()
    }
    fn close_listeners(&mut self) {
        self.effects.push(ParentAction::CloseListeners);
    }
    fn log(&mut self, line: ParentLog) {
        self.effects.push(ParentAction::Log(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, RawPoolConfig};
    use crate::exit::code;
    use crate::scoreboard::{MemoryBoard, ScoreboardView};
    use std::cell::Cell;

    fn config() -> PoolConfig {
        let raw = RawPoolConfig {
            start_servers: Some(3),
            min_spare_servers: Some(1),
            max_spare_servers: Some(4),
            server_limit: Some(4),
            ..Default::default()
        };
        PoolConfig::from_raw(&raw).unwrap().value
    }

    /// A platform that checks, at every effect, that every spawn it performed was answered.
    struct Strict {
        rec: Recorder,
        spawned: Vec<usize>,
        checked: usize,
    }

    impl Strict {
        fn answered(&mut self, parent: &Parent) {
            for &slot in &self.spawned {
                let pending = parent.children().any(|(s, c)| s == slot && c.pid.is_none());
                assert!(!pending, "an effect ran while the spawn for slot {slot} was unanswered");
            }
            self.checked += 1;
        }
    }

    impl<T: SlotTable + ?Sized> Platform<T> for Strict {
        fn spawn(&mut self, parent: &Parent, board: &T, slot: usize, born: SlotWord) -> Result<Pid, String> {
            self.answered(parent);
            assert!(parent.children().any(|(s, c)| s == slot && c.pid.is_none()), "slot {slot} is claimed");
            self.spawned.push(slot);
            self.rec.spawn(parent, board, slot, born)
        }
        fn wake(&mut self, slot: usize, pid: Pid) {
            self.checked += 1;
            Platform::<T>::wake(&mut self.rec, slot, pid);
        }
        fn signal(&mut self, parent: &Parent, board: &T, pid: Pid, signal: KillSignal, reason: Option<KillReason>) {
            self.answered(parent);
            self.rec.signal(parent, board, pid, signal, reason);
        }
        fn observe(&mut self) -> Observation {
            Platform::<T>::observe(&mut self.rec)
        }
        fn close_listeners(&mut self) {
            Platform::<T>::close_listeners(&mut self.rec);
        }
        fn log(&mut self, line: ParentLog) {
            Platform::<T>::log(&mut self.rec, line);
        }
    }

    #[test]
    fn every_spawn_is_answered_before_the_next_effect_and_effects_keep_their_order() {
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(4);
        let mut driver = ParentDriver::new(Parent::new(config()));
        let mut p = Strict { rec: Recorder::new(100), spawned: vec![], checked: 0 };
        assert_eq!(driver.start(Time::ZERO, &board, &mut p), None);
        let pids: Vec<Option<Pid>> = driver.parent().children().map(|(_, c)| c.pid).collect();
        assert_eq!(pids, [Some(100), Some(101), Some(102)]);
        let kinds: Vec<&str> = p
            .rec
            .take()
            .iter()
            .map(|a| match a {
                ParentAction::Spawn { .. } => "spawn",
                ParentAction::Log(ParentLog::Resumed { .. }) => "resumed",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["spawn", "spawn", "spawn", "resumed"]);
        // A stop: a signal to each child (checked: no spawn pending), then, once all are reaped, exit.
        assert_eq!(driver.handle_command(Time::ZERO, Command::Stop, &board, &mut p), None);
        let signalled: Vec<Pid> = p
            .rec
            .take()
            .into_iter()
            .filter_map(|a| match a {
                ParentAction::Signal { pid, signal: KillSignal::Term, reason: None } => Some(pid),
                _ => None,
            })
            .collect();
        assert_eq!(signalled, [100, 101, 102], "every child gets the stop's SIGTERM, recorded");
        for pid in 100..103 {
            let exit = driver.handle_child_exit(Time::ZERO, pid, ExitStatus::Signaled(15), None, &board, &mut p);
            assert_eq!(exit, if pid == 102 { Some(code::OK) } else { None });
        }
        assert!(p.checked >= 6, "{}", p.checked);
        assert_eq!(driver.exit_code(), Some(code::OK));
        assert_eq!(driver.poll_timeout(), None, "an exited parent wants no more timeouts");
    }

    #[test]
    fn a_failed_spawn_is_reported_at_once_leaves_the_slot_dead_and_is_logged_once() {
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(4);
        let mut driver = ParentDriver::new(Parent::new(config()));
        let mut rec = Recorder { fail_spawns: true, ..Recorder::new(100) };
        // The failures logged, checking that every fork attempted was one the parent asked for and
        // nothing else was logged as a misuse.
        let failures = |rec: &mut Recorder| -> Vec<String> {
            let effects = rec.take();
            let misuse = effects.iter().filter(|a| matches!(a, ParentAction::Log(ParentLog::DriverMisuse { .. })));
            assert_eq!(misuse.count(), 0, "{effects:?}");
            let forks = effects.iter().filter(|a| matches!(a, ParentAction::Spawn { .. })).count();
            let failed: Vec<String> = effects
                .into_iter()
                .filter_map(|a| match a {
                    ParentAction::Log(l @ ParentLog::ForkFailed { .. }) => Some(l.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(forks, failed.len(), "one fork per failure: the rest of the batch is cancelled");
            failed
        };
        let failed = |secs: u64| {
            vec![format!("fork: unable to fork a child for slot 0: spawning is switched off; retrying in {secs}s")]
        };
        // start_servers 3: the first fork fails, and the two queued behind it are cancelled (no
        // fork before the back-off is over); the failure is logged once, with the system's reason.
        driver.start(Time::ZERO, &board, &mut rec);
        assert_eq!(driver.parent().live_children(), 0);
        assert_eq!(ScoreboardView::capture(&board).letters(), "....");
        assert_eq!(failures(&mut rec), failed(1));
        // The back-off doubles: 1 s, then 2 s (no fork at 2 s), then 4 s.
        driver.handle_timeout(Time::from_secs(1), &board, &mut rec);
        assert_eq!(failures(&mut rec), failed(2));
        driver.handle_timeout(Time::from_secs(2), &board, &mut rec);
        assert_eq!(failures(&mut rec), Vec::<String>::new(), "still backing off");
        driver.handle_timeout(Time::from_secs(3), &board, &mut rec);
        assert_eq!(failures(&mut rec), failed(4));
        rec.fail_spawns = false;
        driver.handle_timeout(Time::from_secs(6), &board, &mut rec);
        assert_eq!(driver.parent().live_children(), 0, "still backing off");
        driver.handle_timeout(Time::from_secs(7), &board, &mut rec);
        assert_eq!(driver.parent().live_children(), 1, "forks work again, from a rate of one (I8)");
    }
}
