//! The parent process's logic: one loop around the core's `ParentDriver`, on a [`System`].
//!
//! ```text
//! start: ParentDriver::start (the core's lifecycle events, Ready, Reloading, Stopping, reach the
//!        system as they happen: systemd and `on_ready` hear them there)
//! loop {
//!   wait for notices until the core's next timeout
//!   ChildExited        -> reap every exited child (waitpid WNOHANG) -> core.handle_child_exit
//!   Restart{graceful}  -> reload the configuration -> reconfigure listeners, lock, accounts
//!                         (either refused: logged, nothing changes) -> core.handle_command
//!   GracefulStop, Stop -> core.handle_command
//!   timeout due        -> reap (a missed SIGCHLD is caught within a tick) -> core.handle_timeout
//! }
//! ```
//!
//! Everything that is a system call lives behind [`System`]: `crate::os::Os` is the real one
//! (fork, signalfd, waitpid, kill, sockets, locks); the tests below script one, so the restart,
//! refusal and reap paths are checked without a single fork.

use crate::options::{Reloaded, Reloader};
use crate::service::Service;
use crate::shm::{Published, Scoreboard};
use prefork_core::config::{Checked, PoolConfig};
use prefork_core::driver::{ParentDriver, Platform};
use prefork_core::exit::{ExitReason, ExitStatus};
use prefork_core::parent::{
    Command, Level, Observation, OperatorState, Parent, ParentEvent, ParentLog, Pid, Signal, Spawn, SuccessorReport,
};
use prefork_core::scoreboard::SlotTable;
use prefork_core::time::Time;
use std::rc::Rc;

/// What the operating system tells the parent (Apache's signals, already interpreted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// SIGCHLD: one or more children exited.
    ChildExited,
    /// SIGUSR1 (graceful) or SIGHUP.
    Restart {
        /// SIGUSR1.
        graceful: bool,
    },
    /// SIGWINCH (sent by someone, not a terminal resize).
    GracefulStop,
    /// SIGTERM, SIGINT.
    Stop,
    /// A load balancer's agent check is waiting on the agent port (SPEC.md §7.10).
    AgentCheck,
    /// SIGUSR2: a binary upgrade (SPEC.md §7.11).
    Upgrade,
    /// The successor of an upgrade said it serves.
    SuccessorReady,
}

/// The parent's side of the operating system: the core's effects ([`Platform`], lifecycle
/// events included) plus what the supervision loop itself needs.
pub(crate) trait System: Platform {
    /// The monotonic clock, as the core's time.
    fn now(&self) -> Time;
    /// Blocks until something happens or `until` (if any) passes; what happened, in order.
    fn wait(&mut self, until: Option<Time>) -> Vec<Notice>;
    /// One child that has exited and is not reaped yet (`waitpid(WNOHANG)`), if any, with the
    /// reason it left in its slot record if it is one this system forked.
    fn reap(&mut self) -> Option<(Pid, ExitStatus, Option<ExitReason>)>;
    /// Brings listeners, accept lock and accounts in line with `next` (running `current`): either
    /// all of it, or nothing and the reason. Where the listeners are not the configuration's
    /// (inherited from a service manager), `next.listen` is set to the ones there are.
    fn reconfigure(&mut self, current: &PoolConfig, next: &mut PoolConfig) -> Result<(), String>;
    /// The service new children get from now on (old children keep theirs).
    fn replace_service(&mut self, service: Box<dyn Service>);
    /// The supervisor's own log lines (the core's go through [`Platform::log`]).
    fn note(&mut self, level: Level, message: String);
    /// Do the listening sockets outlive this server (every one was handed over by a service
    /// manager, which keeps it open and queueing for the next start)? Then a graceful stop hands
    /// the queues over instead of draining them (SPEC.md §7.5).
    fn sockets_outlive_us(&self) -> bool {
        false
    }
    /// The operator's word for the load balancer (`preforkd -k ready|drain|maint`).
    fn agent_operator(&mut self) -> OperatorState {
        OperatorState::Ready
    }
    /// Answers the agent checks waiting with `line` (SPEC.md §7.10).
    fn answer_agent_checks(&mut self, line: &str) {
        let _ = line;
    }
    /// How the successor of an upgrade ended, if it exited (reaped by [`System::reap`], which
    /// does not return it: it is not one of the pool's children).
    fn successor_exited(&mut self) -> Option<ExitStatus> {
        None
    }
}

/// The parent: the core's machine with the driver contract, the shared board, the system, and
/// how restarts get their configuration.
pub(crate) struct Supervisor<S> {
    driver: ParentDriver,
    board: Rc<Scoreboard>,
    /// What the parent writes into the board besides the core's words, from its own memory.
    published: Published,
    system: S,
    reload: Option<Reloader>,
    /// The configuration in force, as the core's last `Ready` said.
    running: PoolConfig,
}

/// The platform the driver performs the parent's effects on: the system, with the supervisor
/// hearing the configuration each `Ready` brings.
struct Listening<'a, S> {
    system: &'a mut S,
    running: &'a mut PoolConfig,
}

impl<S: System> Platform for Listening<'_, S> {
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        self.system.spawn(spawn)
    }
    fn wake(&mut self, slot: usize, pid: Pid) {
        self.system.wake(slot, pid);
    }
    fn signal(&mut self, signal: &Signal) {
        self.system.signal(signal);
    }
    fn observe(&mut self) -> Observation {
        self.system.observe()
    }
    fn close_listeners(&mut self) {
        self.system.close_listeners();
    }
    fn drain_listeners(&mut self) {
        self.system.drain_listeners();
    }
    fn start_successor(&mut self) -> Result<Pid, String> {
        self.system.start_successor()
    }
    fn stop_successor(&mut self, pid: Pid) {
        self.system.stop_successor(pid);
    }
    fn start_gate(&mut self) -> Result<Pid, String> {
        self.system.start_gate()
    }
    fn stop_gate(&mut self, pid: Pid, how: prefork_core::parent::GateStop) {
        self.system.stop_gate(pid, how);
    }
    fn log(&mut self, line: ParentLog) {
        self.system.log(line);
    }
    fn event(&mut self, event: ParentEvent) {
        if let ParentEvent::Ready { config, .. } = &event {
            self.running.clone_from(config);
        }
        self.system.event(event);
    }
}

impl<S: System> Supervisor<S> {
    /// Starts the pool (StartServers children; the system hears `Ready`).
    pub(crate) fn start(config: PoolConfig, board: Rc<Scoreboard>, mut system: S, reload: Option<Reloader>) -> Self {
        let now_ms = crate::unix_ms();
        let now = system.now();
        let origin_ms = now_ms.saturating_sub(now.as_millis());
        let published = Published::new(board.slot_count(), std::process::id(), now_ms, origin_ms);
        let mut running = config.clone();
        let mut platform = Listening { system: &mut system, running: &mut running };
        let driver = ParentDriver::start(Parent::new(config), now, &*board, &mut platform);
        let mut supervisor = Supervisor { driver, board, published, system, reload, running };
        supervisor.published.write(&supervisor.board, supervisor.driver.parent(), now_ms);
        supervisor
    }

    /// Runs until the parent exits; its exit code.
    pub(crate) fn run(&mut self) -> i32 {
        loop {
            if let Some(code) = self.driver.exit_code().or_else(|| self.turn()) {
                return code;
            }
        }
    }

    /// A load balancer asks how the pool is (SPEC.md §7.10): the core's answer, from what the
    /// system observes now and the operator's word.
    fn answer_agent_checks(&mut self) {
        let observed = self.system.observe();
        let operator = self.system.agent_operator();
        let answer = self.driver.parent().agent_answer(&*self.board, &observed, operator);
        self.system.answer_agent_checks(&answer.to_string());
    }

    /// One turn: wait for notices or the next timeout, handle them.
    pub(crate) fn turn(&mut self) -> Option<i32> {
        for notice in self.system.wait(self.driver.poll_timeout()) {
            let exit = match notice {
                Notice::ChildExited => self.reap(),
                Notice::Restart { graceful } => self.restart(graceful),
                Notice::GracefulStop => self.command(if self.system.sockets_outlive_us() {
                    Command::HandOver
                } else {
                    Command::GracefulStop
                }),
                Notice::Stop => self.command(Command::Stop),
                Notice::AgentCheck => {
                    self.answer_agent_checks();
                    None
                }
                Notice::Upgrade => self.command(Command::Upgrade),
                Notice::SuccessorReady => self.successor(SuccessorReport::Ready),
            };
            if exit.is_some() {
                return exit;
            }
        }
        if self.driver.poll_timeout().is_some_and(|t| t <= self.system.now()) {
            // A child whose SIGCHLD never arrived (or was coalesced away before its exit was
            // complete) is found here, within one tick, instead of holding its slot for ever.
            if let Some(code) = self.reap() {
                return Some(code);
            }
            let now = self.system.now();
            return self.drive(|driver, board, platform| driver.handle_timeout(now, board, platform));
        }
        None
    }

    /// Feeds the core one input through the driver (its effects and events happen on the
    /// system), then writes everything the parent publishes into the board from its own memory
    /// (a scribbled header is put right here).
    fn drive(
        &mut self,
        input: impl FnOnce(&mut ParentDriver, &Scoreboard, &mut Listening<'_, S>) -> Option<i32>,
    ) -> Option<i32> {
        let mut platform = Listening { system: &mut self.system, running: &mut self.running };
        let exit = input(&mut self.driver, &self.board, &mut platform);
        self.published.write(&self.board, self.driver.parent(), crate::unix_ms());
        exit
    }

    fn command(&mut self, command: Command) -> Option<i32> {
        let now = self.system.now();
        self.drive(|driver, board, platform| driver.handle_command(now, command, board, platform))
    }

    /// SIGUSR1 / SIGHUP: a new configuration, or a clear refusal that changes nothing.
    fn restart(&mut self, graceful: bool) -> Option<i32> {
        let kind = if graceful { "graceful restart" } else { "restart" };
        let current = &self.running;
        let reloaded = match self.reload.as_mut() {
            Some(reload) => reload(current),
            None => Ok(Reloaded::from(Checked { value: current.clone(), warnings: vec![] })),
        };
        let reloaded = match reloaded {
            Ok(r) => r,
            Err(why) => {
                self.system.note(
                    Level::Error,
                    format!(
                        "{kind} refused: the new configuration is invalid: {why}; still running with the previous one"
                    ),
                );
                return None;
            }
        };
        for w in &reloaded.config.warnings {
            self.system.note(Level::Warn, format!("configuration: {w}"));
        }
        let mut next = reloaded.config.value;
        if let Err(why) = self.system.reconfigure(&self.running, &mut next) {
            self.system
                .note(Level::Error, format!("{kind} refused: {why}; still running with the previous configuration"));
            return None;
        }
        if let Some(service) = reloaded.service {
            self.system.replace_service(service);
        }
        let next = Box::new(next);
        self.command(if graceful { Command::GracefulRestart(next) } else { Command::HardRestart(next) })
    }

    /// Reaps every exited child (signals coalesce: one SIGCHLD may stand for several).
    fn reap(&mut self) -> Option<i32> {
        while let Some((pid, status, reported)) = self.system.reap() {
            let now = self.system.now();
            let exit = self
                .drive(|driver, board, platform| driver.handle_child_exit(now, pid, status, reported, board, platform));
            if exit.is_some() {
                return exit;
            }
        }
        match self.system.successor_exited() {
            Some(status) => self.successor(SuccessorReport::Exited(status)),
            None => None,
        }
    }

    /// What the successor of an upgrade did (SPEC.md §7.11).
    fn successor(&mut self, report: SuccessorReport) -> Option<i32> {
        let now = self.system.now();
        self.drive(|driver, board, platform| driver.handle_successor(now, report, board, platform))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Lifecycle, Reloaded};
    use prefork_core::config::RawPoolConfig;
    use prefork_core::parent::{KillSignal, Phase, QueueDepth};
    use std::collections::VecDeque;
    use std::time::Duration;

    /// A system that does what the script says: notices to deliver, children that exit, forks
    /// that fail, reconfigurations that are refused; it records every effect.
    #[derive(Default)]
    struct Scripted {
        now: Time,
        notices: VecDeque<Vec<Notice>>,
        exited: VecDeque<(Pid, ExitStatus, Option<ExitReason>)>,
        next_pid: Pid,
        fork_error: Option<String>,
        reconfigure_error: Option<String>,
        alive: Vec<Pid>,
        spawns: usize,
        wakes: Vec<Pid>,
        signals: Vec<(Pid, KillSignal)>,
        listeners_closed: bool,
        listeners_drained: bool,
        /// The listeners are a service manager's ([`System::sockets_outlive_us`]).
        sockets_outlive_us: bool,
        logs: Vec<ParentLog>,
        notes: Vec<(Level, String)>,
        moments: Vec<Lifecycle>,
        reconfigured: Vec<PoolConfig>,
        services_replaced: usize,
        queues: Vec<QueueDepth>,
    }

    impl Platform for Scripted {
        fn spawn(&mut self, _: &Spawn) -> Result<Pid, String> {
            self.spawns += 1;
            if let Some(e) = &self.fork_error {
                return Err(e.clone());
            }
            self.next_pid += 1;
            self.alive.push(self.next_pid);
            Ok(self.next_pid)
        }
        fn wake(&mut self, _: usize, pid: Pid) {
            self.wakes.push(pid);
        }
        fn signal(&mut self, &Signal { pid, signal, .. }: &Signal) {
            self.signals.push((pid, signal));
            // Every child dies of its first signal.
            if let Some(i) = self.alive.iter().position(|&p| p == pid) {
                self.alive.remove(i);
                let status = ExitStatus::Signaled(if signal == KillSignal::Term { 15 } else { 9 });
                self.exited.push_back((pid, status, None));
                self.notices.push_front(vec![Notice::ChildExited]);
            }
        }
        fn close_listeners(&mut self) {
            self.listeners_closed = true;
        }
        fn drain_listeners(&mut self) {
            self.listeners_drained = true;
        }
        fn observe(&mut self) -> Observation {
            Observation { queues: self.queues.clone(), lock_holder: None }
        }
        fn log(&mut self, line: ParentLog) {
            self.logs.push(line);
        }
        fn event(&mut self, event: ParentEvent) {
            self.moments.push(Lifecycle::from(&event));
        }
    }

    impl System for Scripted {
        fn sockets_outlive_us(&self) -> bool {
            self.sockets_outlive_us
        }
        fn now(&self) -> Time {
            self.now
        }
        fn wait(&mut self, until: Option<Time>) -> Vec<Notice> {
            match self.notices.pop_front() {
                Some(n) => n,
                None => {
                    // Nothing scripted: time passes to the next timeout.
                    self.now = self.now.max(until.unwrap_or(self.now + Duration::from_secs(1)));
                    vec![]
                }
            }
        }
        fn reap(&mut self) -> Option<(Pid, ExitStatus, Option<ExitReason>)> {
            self.exited.pop_front()
        }
        fn reconfigure(&mut self, _: &PoolConfig, next: &mut PoolConfig) -> Result<(), String> {
            match &self.reconfigure_error {
                Some(e) => Err(e.clone()),
                None => {
                    self.reconfigured.push(next.clone());
                    Ok(())
                }
            }
        }
        fn replace_service(&mut self, _: Box<dyn Service>) {
            self.services_replaced += 1;
        }
        fn note(&mut self, level: Level, message: String) {
            self.notes.push((level, message));
        }
    }

    fn config(start: i64) -> PoolConfig {
        let raw = RawPoolConfig {
            start_servers: Some(start),
            min_spare_servers: Some(1),
            max_spare_servers: Some(5),
            server_limit: Some(8),
            // Each timeout a maintenance tick (no demand looks between): `turns` counts ticks.
            demand_interval_ms: Some(1000),
            ..Default::default()
        };
        PoolConfig::from_raw(&raw).unwrap().value
    }

    fn supervisor(reload: Option<Reloader>) -> Supervisor<Scripted> {
        let board = Rc::new(Scoreboard::create(8, 1, 0).unwrap());
        let s = Supervisor::start(config(3), board, Scripted { next_pid: 100, ..Scripted::default() }, reload);
        assert_eq!(s.driver.exit_code(), None);
        assert_eq!(s.system.alive, [101, 102, 103]);
        s
    }

    /// Runs turns until the script is used up (and at most `n`).
    fn turns(s: &mut Supervisor<Scripted>, n: usize) -> Option<i32> {
        for _ in 0..n {
            if let Some(code) = s.turn() {
                return Some(code);
            }
        }
        None
    }

    #[test]
    fn a_restart_with_an_invalid_configuration_is_refused_and_changes_nothing() {
        let reload: Reloader =
            Box::new(|_: &PoolConfig| Err("preforkd.toml:3: start_servers = -1 is out of range".into()));
        let mut s = supervisor(Some(reload));
        s.system.notices.push_back(vec![Notice::Restart { graceful: true }]);
        assert_eq!(turns(&mut s, 1), None);
        let (level, note) = s.system.notes.last().cloned().unwrap();
        assert_eq!(level, Level::Error);
        assert_eq!(
            note,
            "graceful restart refused: the new configuration is invalid: preforkd.toml:3: start_servers = -1 is out of range; still running with the previous one"
        );
        assert_eq!(s.driver.parent().generation(), 0, "no new generation");
        assert!(s.system.reconfigured.is_empty(), "listeners, lock and accounts untouched");
        assert!(s.system.wakes.is_empty() && s.system.signals.is_empty(), "no child was told anything");
        assert_eq!(s.system.moments, [Lifecycle::Ready], "no RELOADING for a refused restart");
    }

    #[test]
    fn a_restart_whose_listeners_cannot_be_bound_is_refused_and_changes_nothing() {
        let reload: Reloader =
            Box::new(|running: &PoolConfig| Ok(Reloaded::from(Checked { value: running.clone(), warnings: vec![] })));
        let mut s = supervisor(Some(reload));
        s.system.reconfigure_error = Some("listen 127.0.0.1:80: Permission denied".into());
        s.system.notices.push_back(vec![Notice::Restart { graceful: false }]);
        assert_eq!(turns(&mut s, 1), None);
        assert_eq!(
            s.system.notes.last().unwrap().1,
            "restart refused: listen 127.0.0.1:80: Permission denied; still running with the previous configuration"
        );
        assert_eq!(s.driver.parent().generation(), 0);
        assert_eq!(s.driver.parent().phase(), Phase::Running);
        assert!(s.system.signals.is_empty(), "a refused hard restart stops no child");
    }

    #[test]
    fn a_graceful_restart_reconfigures_swaps_the_service_and_reports_reloading_then_ready() {
        let reload: Reloader = Box::new(|_: &PoolConfig| {
            Ok(Reloaded {
                config: Checked { value: config(2), warnings: vec![] },
                service: Some(Box::new(|_: &mut crate::Connection<'_>| Ok(()))),
            })
        });
        let mut s = supervisor(Some(reload));
        s.system.notices.push_back(vec![Notice::Restart { graceful: true }]);
        assert_eq!(turns(&mut s, 1), None);
        assert_eq!(s.system.reconfigured, [config(2)]);
        assert_eq!(s.system.services_replaced, 1);
        assert_eq!(s.driver.parent().generation(), 1);
        assert_eq!(s.system.wakes, [101, 102, 103], "every old child is told to finish up");
        assert_eq!(s.system.moments, [Lifecycle::Ready, Lifecycle::Reloading, Lifecycle::Ready]);
    }

    #[test]
    fn a_hard_restart_reports_ready_when_the_new_children_are_up() {
        let mut s = supervisor(None);
        s.system.notices.push_back(vec![Notice::Restart { graceful: false }]);
        turns(&mut s, 4);
        assert_eq!(s.system.signals.iter().map(|s| s.0).collect::<Vec<_>>(), [101, 102, 103]);
        assert_eq!(s.driver.parent().phase(), Phase::Running);
        assert_eq!(s.system.alive, [104, 105, 106]);
        assert_eq!(s.system.moments, [Lifecycle::Ready, Lifecycle::Reloading, Lifecycle::Ready]);
        let at = s.driver.parent().stats().restarted_at.expect("the core records when the new pool started");
        let h = s.board.header();
        let (started, restarted) = (
            h.started_ms.load(std::sync::atomic::Ordering::Relaxed),
            h.restarted_ms.load(std::sync::atomic::Ordering::Relaxed),
        );
        assert!(restarted >= started && restarted - started <= at.as_millis() + 1_000, "the restart time is published");
    }

    #[test]
    fn a_child_whose_sigchld_was_missed_is_reaped_at_the_next_tick() {
        let mut s = supervisor(None);
        // Child 102 crashed, but no SIGCHLD notice ever arrives.
        s.system.alive.retain(|&p| p != 102);
        s.system.exited.push_back((102, ExitStatus::Signaled(9), None));
        assert_eq!(s.driver.parent().live_children(), 3);
        assert_eq!(turns(&mut s, 1), None, "the next timeout is due after one wait");
        assert!(
            s.system.logs.iter().any(|l| matches!(l, ParentLog::ChildExited { pid: 102, .. })),
            "reaped at the tick: {:?}",
            s.system.logs
        );
        assert!(s.driver.parent().slot_of(102).is_none());
        assert_eq!(s.driver.parent().live_children(), 2);
        assert_eq!(crate::view::PoolSnapshot::take(&s.board).letters(), "S.S.....", "its slot is free again");
    }

    #[test]
    fn a_failed_fork_is_logged_once_with_its_reason_and_retried_later() {
        let board = Rc::new(Scoreboard::create(8, 1, 0).unwrap());
        let system =
            Scripted { next_pid: 100, fork_error: Some("fork: EAGAIN: Try again".into()), ..Scripted::default() };
        let mut s = Supervisor::start(config(1), board, system, None);
        assert_eq!(s.driver.exit_code(), None);
        let failed: Vec<String> =
            s.system.logs.iter().filter(|l| l.apache_code() == Some("AH00159")).map(ToString::to_string).collect();
        assert_eq!(failed, ["fork: unable to fork a child for slot 0: fork: EAGAIN: Try again; retrying in 1s"]);
        assert!(s.system.notes.is_empty(), "the supervisor adds no second line for the same failure");
        assert_eq!(crate::view::PoolSnapshot::take(&s.board).letters(), "........", "the slot is free again");
        s.system.fork_error = None;
        turns(&mut s, 3);
        assert!(!s.system.alive.is_empty(), "forks work again: children are spawned");
    }

    #[test]
    fn a_stop_signals_every_child_and_exits_with_ok_once_all_are_reaped() {
        let mut s = supervisor(None);
        s.system.notices.push_back(vec![Notice::Stop]);
        assert_eq!(turns(&mut s, 5), Some(0));
        assert!(s.system.listeners_closed);
        assert_eq!(s.system.moments, [Lifecycle::Ready, Lifecycle::Stopping]);
    }

    /// SIGWINCH is a graceful stop that drains the listen queues, or a hand-over (the sockets
    /// closed here, no drain) when a service manager keeps them (SPEC.md §7.5).
    #[test]
    fn sigwinch_drains_the_listeners_unless_a_service_manager_keeps_them() {
        for outlive in [false, true] {
            let mut s = supervisor(None);
            s.system.sockets_outlive_us = outlive;
            s.system.notices.push_back(vec![Notice::GracefulStop]);
            turns(&mut s, 1);
            assert_eq!(
                (s.system.listeners_drained, s.system.listeners_closed),
                (!outlive, outlive),
                "sockets outlive the server: {outlive}"
            );
            assert_eq!(s.system.moments, [Lifecycle::Ready, Lifecycle::Stopping]);
        }
    }
}
