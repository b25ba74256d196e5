//! The driver contract in code (SPEC.md §7.1): one loop that carries out the parent's actions on a
//! [`Platform`], answering every `Spawn` before anything else can happen.
//!
//! Every driver of the [`Parent`] goes through [`ParentDriver`]: the real server (`prefork-server`,
//! on fork() and signals), the deterministic simulation (`core/tests/common`), and the stateright
//! and shuttle models (`prefork-model`). A platform only says how each effect happens; *when*
//! effects happen, in which order, and how their outcomes go back to the parent is decided here,
//! once. The contract holds by construction, not by checks:
//!
//! * the parent's inputs and its action queue are private to the core: `ParentDriver` is the
//!   only way to feed it, and it owns the parent, lending it out only as `&Parent`;
//! * [`ParentDriver::start`] is the constructor, so a parent is started exactly once;
//! * [`Platform::spawn`] returns the outcome of the fork, which the driver reports to the parent
//!   before it performs the next action, so no input can arrive while a spawn is unanswered;
//! * every action is complete in itself ([`Spawn`], [`Signal`]): a platform gets no `&Parent` and
//!   no board, and has nothing to ask the parent back.
//!
//! ```text
//!   start / handle_*(now, …, board, platform)   (handle_timeout first asks platform.observe)
//!      └─> the parent's input ──> actions, in order:
//!            Spawn(spawn)          ─> platform.spawn ─ Ok(pid) ─> the parent records the pid
//!                                                   └ Err(why) ─> the parent backs off (may add actions)
//!            Wake { slot, pid }    ─> platform.wake
//!            Signal(signal)        ─> platform.signal
//!            CloseListeners        ─> platform.close_listeners
//!            DrainListeners        ─> platform.drain_listeners
//!            StartSuccessor        ─> platform.start_successor ─ Ok(pid) / Err(why) ─> the parent
//!            StopSuccessor { pid } ─> platform.stop_successor
//!            Log(line)             ─> platform.log
//!            Event(event)          ─> platform.event   (Ready, Reloading, Stopping)
//!            Exit { code }         ─> returned (and kept: exit_code())
//! ```

use crate::exit::{ExitReason, ExitStatus};
use crate::parent::{
    Command, Observation, Parent, ParentAction, ParentEvent, ParentLog, Pid, Signal, Spawn, SuccessorReport,
};
use crate::scoreboard::SlotTable;
use crate::time::Time;

/// How a driver performs the parent's effects on its platform: processes, signals, sockets, logs.
/// Each method gets one complete action; none gets the parent or the board.
pub trait Platform {
    /// fork() a child as `spawn` says: it runs [`crate::parent::ChildSpec::child_loop`] on
    /// `ChildSlot::attach(board, spawn.slot, spawn.born)`. Returns the child's pid, or why there
    /// is none (the parent logs it, AH00159, and backs off).
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String>;

    /// Nudges child `pid` in `slot`, whose slot holds a directive for it: a readiness wait must
    /// return, and so must a blocked accept-lock acquisition (SPEC.md §7.1).
    fn wake(&mut self, slot: usize, pid: Pid);

    /// Sends `signal.signal` to child `signal.pid`, to that process only (a pid from the parent's
    /// own table). `signal.reason` says why the parent kills a child of a running pool (the
    /// watchdog, a slot that stayed damaged; `None`: a stop or restart).
    fn signal(&mut self, signal: &Signal);

    /// What each listener's accept queue holds now, in the configuration's order (empty once the
    /// listeners are closed), and who holds the accept lock if the kernel can tell. Asked before
    /// every timeout: the watchdog's evidence (SPEC.md §7.8).
    fn observe(&mut self) -> Observation;

    /// Closes every listening socket (stops only; restarts keep them).
    fn close_listeners(&mut self);

    /// A graceful stop: every listening socket stops taking new connections but keeps what its
    /// queue holds, for the draining children; then the parent's own copies are closed (SPEC.md
    /// §7.5). The sockets close when the last child lets go of them.
    fn drain_listeners(&mut self);

    /// Starts the successor of an upgrade (SPEC.md §7.11): the server's binary again, handed the
    /// listening sockets; it reports `SuccessorReport::Ready` once it serves. Its pid, or why
    /// there is none. A platform that cannot upgrade says so.
    fn start_successor(&mut self) -> Result<Pid, String> {
        Err("this server cannot upgrade in place".into())
    }

    /// Starts a gate (SPEC.md §15.5): a process that accepts on every listener, holds each
    /// connection until its request head is complete, and hands it to a child. A platform that
    /// cannot (the default) says why; the parent tries again later.
    fn start_gate(&mut self) -> Result<Pid, String> {
        Err("this platform cannot run a gate".into())
    }

    /// Tells the gate `pid` to stop, `how`.
    fn stop_gate(&mut self, pid: Pid, how: crate::parent::GateStop) {
        let _ = (pid, how);
    }

    /// Stops the successor `pid` (SIGTERM).
    fn stop_successor(&mut self, pid: Pid) {
        let _ = pid;
    }

    /// Records what the parent reports ([`ParentLog::level`], [`ParentLog::apache_code`]).
    fn log(&mut self, line: ParentLog);

    /// Hears what happened ([`ParentEvent`]: the lifecycle, for a service manager).
    fn event(&mut self, event: ParentEvent);
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
    /// Cold start: takes `parent` (created with [`Parent::new`], seeded bugs already selected),
    /// publishes its generation, forks `start_servers` children and starts ticking
    /// (SPEC.md §7.2).
    pub fn start<T, P>(parent: Parent, now: Time, board: &T, platform: &mut P) -> Self
    where
        T: SlotTable + ?Sized,
        P: Platform + ?Sized,
    {
        let mut driver = ParentDriver { parent, exit: None };
        driver.parent.start(now, board);
        driver.dispatch(now, board, platform);
        driver
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

    /// Time passed (the parent's tick, look, watchdog or stop ladder, with the platform's
    /// [`Platform::observe`]).
    pub fn handle_timeout<T, P>(&mut self, now: Time, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform + ?Sized,
    {
        let observed = platform.observe();
        self.parent.handle_timeout(now, board, &observed);
        self.dispatch(now, board, platform)
    }

    /// The operator's command (a signal, or `-k`).
    pub fn handle_command<T, P>(&mut self, now: Time, command: Command, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform + ?Sized,
    {
        self.parent.handle_command(now, command, board);
        self.dispatch(now, board, platform)
    }

    /// What the successor of an upgrade did (SPEC.md §7.11): it serves, or it exited (this
    /// parent reaped it: it is this parent's child, not one of the pool's).
    pub fn handle_successor<T, P>(
        &mut self,
        now: Time,
        report: SuccessorReport,
        board: &T,
        platform: &mut P,
    ) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform + ?Sized,
    {
        self.parent.handle_successor(now, report, board);
        self.dispatch(now, board, platform)
    }

    /// waitpid() reported that `pid` ended with `status`. `reported` is the reason the child left
    /// in its slot record, if the driver keeps one (it labels the log line; SPEC.md §7.3).
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
        P: Platform + ?Sized,
    {
        self.parent.handle_child_exit(now, pid, status, reported, board);
        self.dispatch(now, board, platform)
    }

    /// The one loop that turns actions into effects.
    fn dispatch<T, P>(&mut self, now: Time, board: &T, platform: &mut P) -> Option<i32>
    where
        T: SlotTable + ?Sized,
        P: Platform + ?Sized,
    {
        while let Some(action) = self.parent.poll_action() {
            match action {
                ParentAction::Spawn(spawn) => match platform.spawn(&spawn) {
                    Ok(pid) => self.parent.handle_spawned(spawn.slot, pid, board),
                    Err(why) => self.parent.handle_spawn_failed(now, spawn.slot, &why, board),
                },
                ParentAction::Wake { slot, pid } => platform.wake(slot, pid),
                ParentAction::Signal(signal) => platform.signal(&signal),
                ParentAction::CloseListeners => platform.close_listeners(),
                ParentAction::DrainListeners => platform.drain_listeners(),
                ParentAction::StartSuccessor => {
                    let started = platform.start_successor();
                    self.parent.handle_successor_started(now, started);
                }
                ParentAction::StopSuccessor { pid } => platform.stop_successor(pid),
                ParentAction::StartGate => {
                    let started = platform.start_gate();
                    self.parent.handle_gate_started(now, started);
                }
                ParentAction::StopGate { pid, how } => platform.stop_gate(pid, how),
                ParentAction::Log(line) => platform.log(line),
                ParentAction::Event(event) => platform.event(event),
                ParentAction::Exit { code } => self.exit = Some(code),
            }
        }
        self.exit
    }
}

/// A platform that performs nothing and records every effect, in order, as the action that asked
/// for it. Spawns succeed with pids counting up from `next_pid` (or all fail, with `fail_spawns`);
/// what it observes is what `observation` says. For examples, tests, the loom models and the fuzz bodies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Every effect so far.
    pub effects: Vec<ParentAction>,
    /// The pid the next spawn gets.
    pub next_pid: Pid,
    /// Make every spawn fail.
    pub fail_spawns: bool,
    /// What [`Platform::observe`] answers.
    pub observation: Observation,
}

impl Recorder {
    /// A recorder whose first child gets `first_pid`.
    pub fn new(first_pid: Pid) -> Self {
        Recorder { effects: Vec::new(), next_pid: first_pid, fail_spawns: false, observation: Observation::default() }
    }

    /// The effects recorded since the last call.
    pub fn take(&mut self) -> Vec<ParentAction> {
        std::mem::take(&mut self.effects)
    }
}

impl Recorder {
    /// The pid a fork gets (a child's or a successor's), unless forks are switched off.
    fn fork(&mut self) -> Result<Pid, String> {
        if self.fail_spawns {
            return Err("spawning is switched off".into());
        }
        self.next_pid += 1;
        Ok(self.next_pid - 1)
    }
}

impl Platform for Recorder {
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        self.effects.push(ParentAction::Spawn(*spawn));
        self.fork()
    }
    fn wake(&mut self, slot: usize, pid: Pid) {
        self.effects.push(ParentAction::Wake { slot, pid });
    }
    fn signal(&mut self, signal: &Signal) {
        self.effects.push(ParentAction::Signal(*signal));
    }
    fn observe(&mut self) -> Observation {
        self.observation.clone()
    }
    fn close_listeners(&mut self) {
        self.effects.push(ParentAction::CloseListeners);
    }
    fn drain_listeners(&mut self) {
        self.effects.push(ParentAction::DrainListeners);
    }
    fn start_successor(&mut self) -> Result<Pid, String> {
        self.effects.push(ParentAction::StartSuccessor);
        self.fork()
    }
    fn stop_successor(&mut self, pid: Pid) {
        self.effects.push(ParentAction::StopSuccessor { pid });
    }
    fn start_gate(&mut self) -> Result<Pid, String> {
        self.effects.push(ParentAction::StartGate);
        self.fork()
    }
    fn stop_gate(&mut self, pid: Pid, how: crate::parent::GateStop) {
        self.effects.push(ParentAction::StopGate { pid, how });
    }
    fn log(&mut self, line: ParentLog) {
        self.effects.push(ParentAction::Log(line));
    }
    fn event(&mut self, event: ParentEvent) {
        self.effects.push(ParentAction::Event(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, RawPoolConfig};
    use crate::exit::code;
    use crate::parent::KillSignal;
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

    fn kinds(effects: &[ParentAction]) -> Vec<&'static str> {
        effects
            .iter()
            .map(|a| match a {
                ParentAction::Spawn(_) => "spawn",
                ParentAction::Log(ParentLog::Resumed { .. }) => "resumed",
                ParentAction::Event(ParentEvent::Ready { .. }) => "ready",
                ParentAction::Event(ParentEvent::Stopping { .. }) => "stopping",
                ParentAction::Signal(_) => "signal",
                ParentAction::CloseListeners => "close",
                ParentAction::DrainListeners => "drain",
                _ => "other",
            })
            .collect()
    }

    /// Each spawn carries its child's connection limit: `max_connections_per_child` plus a jitter
    /// seeded by the slot and the word the child is born with, so children of one start differ
    /// and the same start gives the same limits on every run (pinned here), and a slot's next
    /// child (a new incarnation) draws again.
    #[test]
    fn each_spawn_carries_a_connection_limit_that_differs_per_child_and_per_run_is_the_same() {
        let raw = RawPoolConfig {
            start_servers: Some(4),
            max_connections_per_child: Some(100),
            max_connections_per_child_jitter: Some(50),
            ..Default::default()
        };
        let config = PoolConfig::from_raw(&raw).unwrap().value;
        let limits = |effects: Vec<ParentAction>| -> Vec<(usize, u64)> {
            effects
                .into_iter()
                .filter_map(|a| match a {
                    ParentAction::Spawn(s) => Some((s.slot, s.child.connection_limit)),
                    _ => None,
                })
                .collect()
        };
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(config.server_limit as usize);
        let mut p = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(config.clone()), Time::ZERO, &board, &mut p);
        let first = limits(p.take());
        assert_eq!(first, [(0, 125), (1, 119), (2, 123), (3, 140)]);
        assert!(first.iter().all(|&(_, l)| (100..=150).contains(&l)));
        let mut again = Recorder::new(100);
        ParentDriver::start(Parent::new(config), Time::ZERO, &MemoryBoard::<Cell<u64>>::new(256), &mut again);
        assert_eq!(limits(again.take()), first, "the same start, the same limits");
        // Slot 0's child leaves; its successor is a new incarnation with a limit of its own.
        driver.handle_child_exit(Time::ZERO, 100, ExitStatus::Code(0), None, &board, &mut p);
        driver.handle_timeout(Time::from_millis(1000), &board, &mut p);
        let next = limits(p.take());
        assert_eq!(next.first(), Some(&(0, 100)), "a new draw for slot 0: {next:?}");
    }

    #[test]
    fn every_spawn_is_answered_before_the_next_effect_and_effects_keep_their_order() {
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(4);
        let mut p = Recorder::new(100);
        let mut driver = ParentDriver::start(Parent::new(config()), Time::ZERO, &board, &mut p);
        // Each pid went back to the parent as its spawn was performed: the records and the pid
        // words hold them, in spawn order.
        let pids: Vec<Option<Pid>> = driver.parent().children().map(|(_, c)| c.pid).collect();
        assert_eq!(pids, [Some(100), Some(101), Some(102)]);
        assert_eq!((0..3).map(|s| board.slot(s).unwrap().board_pid()).collect::<Vec<_>>(), [100, 101, 102]);
        let effects = p.take();
        assert_eq!(kinds(&effects), ["spawn", "spawn", "spawn", "resumed", "ready"]);
        let spec = match &effects[0] {
            ParentAction::Spawn(s) => s.child,
            _ => unreachable!(),
        };
        assert_eq!((spec.listeners, spec.lock_in_use, spec.connection_limit), (1, false, 0), "the spawn says it all");
        // A stop: the stop is announced, the listeners closed, a signal to each child (with its
        // slot), then, once all are reaped, the exit.
        assert_eq!(driver.handle_command(Time::ZERO, Command::Stop, &board, &mut p), None);
        let effects = p.take();
        assert_eq!(kinds(&effects), ["close", "stopping", "other", "signal", "signal", "signal"]);
        let signalled: Vec<(usize, Pid)> = effects
            .into_iter()
            .filter_map(|a| match a {
                ParentAction::Signal(Signal { slot, pid, signal: KillSignal::Term, reason: None }) => Some((slot, pid)),
                _ => None,
            })
            .collect();
        assert_eq!(signalled, [(0, 100), (1, 101), (2, 102)], "every child gets the stop's SIGTERM, with its slot");
        for pid in 100..103 {
            let exit = driver.handle_child_exit(Time::ZERO, pid, ExitStatus::Signaled(15), None, &board, &mut p);
            assert_eq!(exit, if pid == 102 { Some(code::OK) } else { None });
        }
        assert_eq!(driver.exit_code(), Some(code::OK));
        assert_eq!(driver.poll_timeout(), None, "an exited parent wants no more timeouts");
    }

    /// A graceful stop drains the listeners, a hand-over closes them (SPEC.md §7.5); a platform
    /// that cannot start a successor answers an upgrade with its reason, and nothing changes.
    #[test]
    fn stops_reach_the_platform_as_drain_or_close_and_an_upgrade_without_support_is_refused() {
        struct NoUpgrade(Recorder);
        impl Platform for NoUpgrade {
            fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
                self.0.spawn(spawn)
            }
            fn wake(&mut self, slot: usize, pid: Pid) {
                self.0.wake(slot, pid)
            }
            fn signal(&mut self, signal: &Signal) {
                self.0.signal(signal)
            }
            fn observe(&mut self) -> Observation {
                self.0.observe()
            }
            fn close_listeners(&mut self) {
                self.0.close_listeners()
            }
            fn drain_listeners(&mut self) {
                self.0.drain_listeners()
            }
            fn log(&mut self, line: ParentLog) {
                self.0.log(line)
            }
            fn event(&mut self, event: ParentEvent) {
                self.0.event(event)
            }
        }
        for (stop, kind) in [(Command::GracefulStop, "drain"), (Command::HandOver, "close")] {
            let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(4);
            let mut rec = NoUpgrade(Recorder::new(100));
            let mut driver = ParentDriver::start(Parent::new(config()), Time::ZERO, &board, &mut rec);
            rec.0.take();
            driver.handle_command(Time::ZERO, Command::Upgrade, &board, &mut rec);
            let refused = rec.0.take();
            assert!(
                rec.start_gate().is_err_and(|e| e.contains("cannot run a gate")),
                "a platform without a gate says so"
            );
            assert!(
                refused.iter().any(|a| matches!(a, ParentAction::Log(l @ ParentLog::UpgradeFailed { pid: None, .. })
                    if l.to_string().contains("cannot upgrade in place"))),
                "{refused:?}"
            );
            assert_eq!(driver.parent().phase(), crate::parent::Phase::Running);
            driver.handle_command(Time::ZERO, stop, &board, &mut rec);
            let effects = rec.0.take();
            assert!(kinds(&effects).contains(&kind), "{kind}: {effects:?}");
        }
    }

    #[test]
    fn a_failed_spawn_is_reported_at_once_leaves_the_slot_dead_and_is_logged_once() {
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(4);
        let mut rec = Recorder { fail_spawns: true, ..Recorder::new(100) };
        // The failures logged, checking that every fork attempted was one the parent asked for.
        let failures = |rec: &mut Recorder| -> Vec<String> {
            let effects = rec.take();
            let forks = effects.iter().filter(|a| matches!(a, ParentAction::Spawn(_))).count();
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
        let mut driver = ParentDriver::start(Parent::new(config()), Time::ZERO, &board, &mut rec);
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
