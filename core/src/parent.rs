//! The parent lifecycle (SPEC.md §7): start, maintenance, reaping, restarts, stops.
//!
//! ```text
//!            start()
//!   New ───────────────> Running ──── GracefulRestart: generation+1, live slots -> G, wake them,
//!    │                    │  ^ │       refill 1-for-1 as old children exit, rest at the next tick
//!    │ Stop               │  │ │
//!    v                    │  │ └──── tick: repair slots, spare-server policy (spawn / claim+wake one)
//!  Exited <──┐            │  │
//!            │ Stop /     │  └────────────────────────────────────────────────┐
//!            │ HardRestart│                                                   │ all reaped (or gave
//!            │            v                                                   │ up at 10 s): new
//!            │         Reclaiming { then: Restart | Exit }  ──────────────────┘ config, StartServers
//!            │            TERM at 0 s (quiet), TERM at 3, 5, 7 s, KILL at 9 s, give up at 10 s
//!            │            │ then = Exit: all reaped (or gave up)
//!            └────────────┘
//!   Running ── GracefulStop ──> Draining: listeners closed, live slots -> G, wake them;
//!                                 all exited -> Exited; graceful_shutdown_timeout -> Reclaiming{Exit}
//! ```
//!
//! Shape (quinn-proto style): inputs are `handle_*` calls that take `now` and the shared
//! [`SlotTable`]; outputs are drained with [`Parent::poll_action`] until it returns `None`;
//! [`Parent::poll_timeout`] says when to call [`Parent::handle_timeout`] next. The parent writes the
//! scoreboard itself (spawn claims, reaping, graceful marks, retirement claims, repairs): those are
//! memory operations, not I/O. Everything that is a system call is an action: fork, wake a child,
//! send a signal, close the listeners, exit.
//!
//! Driver contract: after a [`ParentAction::Spawn`] the driver forks and reports the result with
//! [`Parent::handle_spawned`] or [`Parent::handle_spawn_failed`] before any other `handle_*` call.

use crate::config::PoolConfig;
use crate::exit::{ExitCause, ExitReason, ExitStatus, code};
use crate::policy::{Decision, PolicyLog, SpareLimits, SpareServerPolicy};
use crate::scoreboard::{ScoreboardView, SlotTable};
use crate::slot::{SlotError, SlotState, SlotWord};
use crate::time::Time;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// A process id as the driver reports it.
pub type Pid = u32;

/// A child dying abnormally within this long of its spawn (or before it reached `Ready`) counts
/// as an early exit for the crash-loop brake.
pub const EARLY_EXIT_WINDOW: Duration = Duration::from_secs(2);
/// Consecutive early exits that engage the crash-loop brake.
pub const CRASH_LOOP_THRESHOLD: u32 = 3;
/// Longest spawn pause of the crash-loop brake (the pause doubles from 1 s up to this).
pub const CRASH_LOOP_MAX_PAUSE: Duration = Duration::from_secs(64);
/// Longest back-off after failed fork()s (doubling from 1 s; Apache sleeps 10 s, blocking).
pub const FORK_RETRY_MAX: Duration = Duration::from_secs(10);
/// Stop escalation (Apache `ap_reclaim_child_processes`): after the initial quiet SIGTERM, these
/// steps at these times since the stop began.
pub const RECLAIM_SCHEDULE: [(Duration, ReclaimStep); 5] = [
    (Duration::from_secs(3), ReclaimStep::Term),
    (Duration::from_secs(5), ReclaimStep::Term),
    (Duration::from_secs(7), ReclaimStep::Term),
    (Duration::from_secs(9), ReclaimStep::Kill),
    (Duration::from_secs(10), ReclaimStep::GiveUp),
];
/// Exit code of the parent when a current-generation child exits with `CHILDFATAL`.
pub const EXIT_CHILD_FATAL: i32 = 1;

/// One step of the stop escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReclaimStep {
    /// SIGTERM every child still alive, logging each (AH00045).
    Term,
    /// SIGKILL every child still alive, logging each (AH00046).
    Kill,
    /// Stop waiting, logging each child still alive (AH00047).
    GiveUp,
}

/// A signal the parent sends to a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillSignal {
    /// SIGTERM: the child exits at once (the request in flight is cut).
    Term,
    /// SIGKILL.
    Kill,
}

/// What the operator asked for (Apache's signals; the driver maps them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// SIGUSR1: new generation with this (already validated) configuration; old children finish
    /// their work and exit; listeners stay open.
    GracefulRestart(Box<PoolConfig>),
    /// SIGHUP: stop every child (TERM escalation), then start afresh with this configuration;
    /// listeners stay open.
    HardRestart(Box<PoolConfig>),
    /// SIGWINCH: close the listeners, let children finish, exit (or stop them after
    /// graceful_shutdown_timeout).
    GracefulStop,
    /// SIGTERM / SIGINT: stop every child (TERM escalation) and exit.
    Stop,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::GracefulRestart(_) => "graceful restart",
            Command::HardRestart(_) => "restart",
            Command::GracefulStop => "graceful stop",
            Command::Stop => "stop",
        }
    }
}

/// What the parent asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParentAction {
    /// fork() a child for `slot`. The slot already holds `born` (state `Starting`); the child runs
    /// [`crate::child::ChildLoop`] on `ChildSlot::attach(board, slot, born)`. Report the outcome
    /// with [`Parent::handle_spawned`] or [`Parent::handle_spawn_failed`].
    Spawn {
        /// The slot.
        slot: usize,
        /// The slot word the child is born with (generation, incarnation).
        born: SlotWord,
    },
    /// Wake the child in `slot` from its wait (its slot holds a directive for it).
    Wake {
        /// The slot.
        slot: usize,
        /// The child.
        pid: Pid,
    },
    /// Send a signal to one child (never to a process group, never to the parent itself).
    Signal {
        /// The child.
        pid: Pid,
        /// The signal.
        signal: KillSignal,
    },
    /// Close every listening socket (stops only; restarts keep them).
    CloseListeners,
    /// Log this.
    Log(ParentLog),
    /// The parent is done: exit the process with `code`.
    Exit {
        /// Exit code.
        code: i32,
    },
}

/// Where the parent is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Created, not started.
    New,
    /// Serving: maintenance runs every tick.
    Running,
    /// Hard restart: stopping every child before starting afresh.
    Restarting,
    /// Graceful stop: waiting for children to finish.
    Draining,
    /// Stop: stopping every child before exiting.
    Stopping,
    /// Done; an `Exit` action was emitted.
    Exited,
}

/// How the parent found a slot that did not match its own records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotProblem {
    /// The word could not be decoded.
    Corrupt(SlotError),
    /// The slot shows a process but the parent has no child there.
    NoChild(SlotState),
    /// The parent has a child there but the slot holds another child's word (or `Dead`).
    Foreign(SlotWord),
}

/// Log severities, as Apache's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something is wrong.
    Error,
    /// Something may be wrong.
    Warn,
    /// Normal but significant.
    Notice,
    /// Informational.
    Info,
}

/// Things the parent reports. [`ParentLog::apache_code`] gives Apache's code where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParentLog {
    /// AH00163: children started, serving.
    Resumed {
        /// The running generation.
        generation: u32,
    },
    /// A message of the spare-server policy (AH00161, AH00162).
    Policy(PolicyLog),
    /// A child was reaped.
    ChildExited {
        /// Its pid.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// Its generation.
        generation: u32,
        /// How it ended.
        cause: ExitCause,
    },
    /// AH00167: waitpid() reported a pid the parent does not know.
    LongLostChild {
        /// The pid.
        pid: Pid,
        /// Its status.
        status: ExitStatus,
    },
    /// AH00050: a current-generation child exited with CHILDFATAL: the server stops.
    ChildFatal {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
    },
    /// AH00166: an old-generation child exited with CHILDFATAL: ignored.
    IgnoringOldFatal {
        /// The child.
        pid: Pid,
    },
    /// AH00171: graceful restart.
    GracefulRestart {
        /// The new generation.
        generation: u32,
    },
    /// AH00173: hard restart.
    HardRestart {
        /// The new generation.
        generation: u32,
    },
    /// AH00169: stopping.
    Stopping,
    /// AH00170: graceful stop.
    GracefulStopping {
        /// graceful_shutdown_timeout, if any.
        timeout: Option<Duration>,
    },
    /// graceful_shutdown_timeout expired with children left: stopping them.
    GracefulStopTimedOut {
        /// Children still alive.
        remaining: usize,
    },
    /// AH00045 / AH00046: a child did not exit yet; sending it a signal.
    StillRunning {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// What is sent.
        sending: KillSignal,
    },
    /// AH00047: a child could not be made to exit; continuing anyway.
    GaveUp {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
    },
    /// AH00159: fork() failed.
    ForkFailed {
        /// The slot it was for.
        slot: usize,
        /// When spawning is tried again.
        retry_in: Duration,
    },
    /// Children keep dying right after start: spawning paused.
    CrashLoop {
        /// Consecutive early exits.
        early_exits: u32,
        /// How long spawning pauses.
        paused_for: Duration,
    },
    /// A slot did not match the parent's records and was rewritten.
    SlotRepaired {
        /// The slot.
        slot: usize,
        /// What was wrong.
        problem: SlotProblem,
        /// The state written.
        wrote: SlotState,
    },
    /// A command that does not apply in this phase.
    CommandIgnored {
        /// The command.
        command: &'static str,
        /// The phase.
        phase: Phase,
    },
    /// A restart configuration tried to change server_limit (AH00179).
    ServerLimitKept {
        /// The value asked for.
        given: u32,
        /// The value kept.
        kept: u32,
    },
    /// A driver call that broke the driver contract (a bug in the driver; nothing was changed).
    DriverMisuse {
        /// What was wrong.
        what: String,
    },
}

impl ParentLog {
    /// Apache's log code for the same event, if it has one.
    pub fn apache_code(&self) -> Option<&'static str> {
        Some(match self {
            ParentLog::Resumed { .. } => "AH00163",
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers) => "AH00161",
            ParentLog::Policy(PolicyLog::SeemsBusy { .. }) => "AH00162",
            ParentLog::ChildExited { cause: ExitCause::Signal(sig), .. } if !expected_signal(*sig) => "AH00052",
            ParentLog::LongLostChild { .. } => "AH00167",
            ParentLog::ChildFatal { .. } => "AH00050",
            ParentLog::IgnoringOldFatal { .. } => "AH00166",
            ParentLog::GracefulRestart { .. } => "AH00171",
            ParentLog::HardRestart { .. } => "AH00173",
            ParentLog::Stopping => "AH00169",
            ParentLog::GracefulStopping { .. } => "AH00170",
            ParentLog::StillRunning { sending: KillSignal::Term, .. } => "AH00045",
            ParentLog::StillRunning { sending: KillSignal::Kill, .. } => "AH00046",
            ParentLog::GaveUp { .. } => "AH00047",
            ParentLog::ForkFailed { .. } => "AH00159",
            ParentLog::ServerLimitKept { .. } => "AH00179",
            _ => return None,
        })
    }

    /// The severity.
    pub fn level(&self) -> Level {
        match self {
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers)
            | ParentLog::ChildFatal { .. }
            | ParentLog::GaveUp { .. }
            | ParentLog::ForkFailed { .. }
            | ParentLog::CrashLoop { .. }
            | ParentLog::SlotRepaired { .. }
            | ParentLog::DriverMisuse { .. }
            | ParentLog::StillRunning { sending: KillSignal::Kill, .. } => Level::Error,
            ParentLog::StillRunning { .. }
            | ParentLog::LongLostChild { .. }
            | ParentLog::GracefulStopTimedOut { .. }
            | ParentLog::CommandIgnored { .. }
            | ParentLog::ServerLimitKept { .. } => Level::Warn,
            ParentLog::ChildExited { cause, .. } => match cause {
                ExitCause::Voluntary(_) => Level::Info,
                ExitCause::Signal(sig) if expected_signal(*sig) => Level::Info,
                _ => Level::Warn,
            },
            ParentLog::Policy(PolicyLog::SeemsBusy { .. }) => Level::Info,
            _ => Level::Notice,
        }
    }
}

/// Signals a child normally dies of (SIGHUP 1, SIGKILL 9, SIGUSR1 10, SIGTERM 15, as Apache's
/// AH00051/AH00052 exclusions): not worth a warning. Any other signal is a crash.
fn expected_signal(sig: i32) -> bool {
    matches!(sig, 1 | 9 | 10 | 15)
}

/// A death that says something is wrong with the child itself: a non-zero exit code or a crash
/// signal (SIGSEGV, SIGABRT …). Deaths by a signal someone sends (SIGKILL from the OOM killer or
/// an operator, SIGTERM …) are not: the capacity they took is replaced at the policy's rate, not
/// held back by the crash-loop brake.
fn self_inflicted(status: ExitStatus) -> bool {
    match status {
        ExitStatus::Signaled(sig) => !expected_signal(sig),
        other => other.is_abnormal(),
    }
}

impl fmt::Display for ParentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParentLog::Resumed { generation } => {
                write!(f, "configured -- resuming normal operations (generation {generation})")
            }
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers) => f.write_str(
                "server reached MaxRequestWorkers setting, consider raising the max_request_workers setting",
            ),
            ParentLog::Policy(PolicyLog::SeemsBusy { spawning, idle, total }) => write!(
                f,
                "server seems busy, (you may need to increase start_servers, or min/max_spare_servers), spawning {spawning} children, there are {idle} idle, and {total} total children"
            ),
            ParentLog::ChildExited { pid, slot, generation, cause } => {
                write!(f, "child {pid} (slot {slot}, generation {generation}) {cause}")
            }
            ParentLog::LongLostChild { pid, status } => write!(f, "long lost child came home! (pid {pid}, {status:?})"),
            ParentLog::ChildFatal { pid, slot } => write!(
                f,
                "child {pid} (slot {slot}) returned a fatal error; every child would fail the same way: shutting down"
            ),
            ParentLog::IgnoringOldFatal { pid } => {
                write!(f, "ignoring fatal error in child {pid} of a previous generation")
            }
            ParentLog::GracefulRestart { generation } => {
                write!(f, "graceful restart requested, doing restart (generation {generation})")
            }
            ParentLog::HardRestart { generation } => {
                write!(f, "restart requested: stopping children, then restarting (generation {generation})")
            }
            ParentLog::Stopping => f.write_str("stop requested, shutting down"),
            ParentLog::GracefulStopping { timeout: Some(t) } => {
                write!(f, "graceful stop requested, shutting down gracefully (children have {}s)", t.as_secs())
            }
            ParentLog::GracefulStopping { timeout: None } => {
                f.write_str("graceful stop requested, shutting down gracefully (waiting for every child)")
            }
            ParentLog::GracefulStopTimedOut { remaining } => {
                write!(f, "graceful_shutdown_timeout expired with {remaining} children left: stopping them")
            }
            ParentLog::StillRunning { pid, slot, sending } => {
                write!(f, "child process {pid} (slot {slot}) still did not exit, sending a {sending:?}")
            }
            ParentLog::GaveUp { pid, slot } => {
                write!(f, "could not make child process {pid} (slot {slot}) exit, attempting to continue anyway")
            }
            ParentLog::ForkFailed { slot, retry_in } => {
                write!(f, "fork: unable to fork a child for slot {slot}; retrying in {}s", retry_in.as_secs())
            }
            ParentLog::CrashLoop { early_exits, paused_for } => write!(
                f,
                "{early_exits} children in a row died right after start; pausing spawns for {}s (check the error log of the children)",
                paused_for.as_secs()
            ),
            ParentLog::SlotRepaired { slot, problem, wrote } => {
                write!(f, "scoreboard slot {slot} was inconsistent ({problem:?}); rewrote it as {wrote}")
            }
            ParentLog::CommandIgnored { command, phase } => {
                write!(f, "{command} ignored: the server is in phase {phase:?}")
            }
            ParentLog::ServerLimitKept { given, kept } => write!(
                f,
                "server_limit cannot change from {kept} to {given} without a full stop and start; keeping {kept}"
            ),
            ParentLog::DriverMisuse { what } => write!(f, "driver contract broken: {what}"),
        }
    }
}

/// The parent's record of one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildRecord {
    /// The child's pid; `None` between a `Spawn` action and `handle_spawned`.
    pub pid: Option<Pid>,
    /// The slot word it was born with.
    pub born: SlotWord,
    /// When the parent claimed the slot for it.
    pub spawned_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Then {
    Restart(Box<PoolConfig>),
    Exit(i32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Stage {
    New,
    Running,
    Reclaiming { started: Time, step: usize, then: Then },
    Draining { deadline: Option<Time> },
    Exited,
}

/// Holds spawning back while children crash right after start, or fork() fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpawnBrake {
    early_exits: u32,
    fork_failures: u32,
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
    fn early_exit(&mut self, now: Time) -> Option<Duration> {
        self.early_exits = self.early_exits.saturating_add(1);
        let over = self.early_exits.checked_sub(CRASH_LOOP_THRESHOLD)?;
        let pause = Duration::from_secs(1 << over.min(6)).min(CRASH_LOOP_MAX_PAUSE);
        self.pause(now, pause);
        Some(pause)
    }

    fn fork_failed(&mut self, now: Time) -> Duration {
        self.fork_failures = self.fork_failures.saturating_add(1);
        let pause = Duration::from_secs(1 << (self.fork_failures - 1).min(4)).min(FORK_RETRY_MAX);
        self.pause(now, pause);
        pause
    }
}

/// The parent state machine. `Clone + Eq + Hash` so that an explicit-state model checker can
/// store and compare whole parents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Parent {
    config: PoolConfig,
    generation: u32,
    stage: Stage,
    policy: SpareServerPolicy,
    brake: SpawnBrake,
    children: Vec<Option<ChildRecord>>,
    remaining_to_start: u32,
    next_tick: Time,
    actions: VecDeque<ParentAction>,
    bugs: crate::seeded::BugSwitch,
}

impl Parent {
    /// A parent for `config` (validated). Nothing happens until [`Parent::start`].
    pub fn new(config: PoolConfig) -> Self {
        Parent {
            children: vec![None; config.server_limit as usize],
            config,
            generation: 0,
            stage: Stage::New,
            policy: SpareServerPolicy::new(),
            brake: SpawnBrake::default(),
            remaining_to_start: 0,
            next_tick: Time::ZERO,
            actions: VecDeque::new(),
            bugs: crate::seeded::BugSwitch::default(),
        }
    }

    /// Selects a deliberately broken variant (negative tests of the model checkers only).
    #[cfg(feature = "seeded-bugs")]
    pub fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
        self.bugs.set(bug);
    }

    fn has_bug(&self, bug: crate::seeded::SeededBug) -> bool {
        self.bugs.is(bug)
    }

    /// The configuration in force.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The running generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The lifecycle phase.
    pub fn phase(&self) -> Phase {
        match &self.stage {
            Stage::New => Phase::New,
            Stage::Running => Phase::Running,
            Stage::Reclaiming { then: Then::Restart(_), .. } => Phase::Restarting,
            Stage::Reclaiming { then: Then::Exit(_), .. } => Phase::Stopping,
            Stage::Draining { .. } => Phase::Draining,
            Stage::Exited => Phase::Exited,
        }
    }

    /// The spare-server policy state (rate, hold-off).
    pub fn policy(&self) -> &SpareServerPolicy {
        &self.policy
    }

    /// The crash-loop brake state.
    pub fn brake(&self) -> &SpawnBrake {
        &self.brake
    }

    /// Every live child: `(slot, record)`.
    pub fn children(&self) -> impl Iterator<Item = (usize, &ChildRecord)> {
        self.children.iter().enumerate().filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    /// Number of live children.
    pub fn live_children(&self) -> usize {
        self.children.iter().flatten().count()
    }

    /// The slot of child `pid`.
    pub fn slot_of(&self, pid: Pid) -> Option<usize> {
        self.children.iter().position(|c| c.is_some_and(|c| c.pid == Some(pid)))
    }

    /// The next action to perform, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ParentAction> {
        self.actions.pop_front()
    }

    /// When [`Parent::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.stage {
            Stage::New | Stage::Exited => None,
            Stage::Running => Some(self.next_tick),
            Stage::Reclaiming { started, step, .. } => RECLAIM_SCHEDULE.get(*step).map(|(d, _)| *started + *d),
            Stage::Draining { deadline } => *deadline,
        }
    }

    fn log(&mut self, l: ParentLog) {
        self.actions.push_back(ParentAction::Log(l));
    }

    fn slots(&self, board: &(impl SlotTable + ?Sized)) -> usize {
        self.children.len().min(board.slot_count())
    }

    fn max_request_workers(&self, board: &(impl SlotTable + ?Sized)) -> usize {
        (self.config.max_request_workers as usize).min(self.slots(board))
    }

    /// Cold start: publish the generation, fork `start_servers` children at once, start ticking.
    pub fn start<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        if self.stage != Stage::New {
            self.log(ParentLog::DriverMisuse { what: "start() called twice".into() });
            return;
        }
        board.publish_generation(self.generation);
        self.stage = Stage::Running;
        let mut view = ScoreboardView::capture(board);
        self.repair(&mut view, board);
        self.startup(now, board, &view, self.config.start_servers);
        self.next_tick = now + self.config.maintenance_interval;
        self.log(ParentLog::Resumed { generation: self.generation });
    }

    /// Spawns up to `n` children into the lowest dead slots (Apache `startup_children`), or defers
    /// them to the next tick while spawning is paused.
    fn startup<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, view: &ScoreboardView, n: u32) {
        if !self.brake.allows(now) {
            self.remaining_to_start = n;
            return;
        }
        let mrw = self.max_request_workers(board);
        let mut left = n as usize;
        for slot in 0..mrw {
            if left == 0 || self.live_children() >= mrw {
                break;
            }
            if self.children[slot].is_none()
                && view.state(slot) == Some(SlotState::Dead)
                && self.spawn(now, board, slot)
            {
                left -= 1;
            }
        }
    }

    fn spawn<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, slot: usize) -> bool {
        self.spawn_in(now, board, slot, self.generation)
    }

    fn spawn_in<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, slot: usize, generation: u32) -> bool {
        match board.slot(slot).and_then(|s| s.spawn(generation)) {
            Ok(born) => {
                self.children[slot] = Some(ChildRecord { pid: None, born, spawned_at: now });
                self.actions.push_back(ParentAction::Spawn { slot, born });
                true
            }
            Err(e) => {
                // Only a slot changed behind the parent's back can refuse a spawn; the next tick repairs it.
                self.log(ParentLog::DriverMisuse { what: format!("spawn into slot {slot} refused: {e}") });
                false
            }
        }
    }

    /// The born word of the spawn pending in `slot` (a `Spawn` action not answered yet); logs a
    /// driver-contract breach if there is none.
    fn pending_spawn(&mut self, slot: usize, call: &str) -> Option<SlotWord> {
        let born = self.children.get(slot).copied().flatten().filter(|r| r.pid.is_none()).map(|r| r.born);
        if born.is_none() {
            self.log(ParentLog::DriverMisuse { what: format!("{call} for slot {slot} without a pending spawn") });
        }
        born
    }

    /// fork() succeeded for `slot`: the child is `pid`.
    pub fn handle_spawned(&mut self, slot: usize, pid: Pid) {
        if self.pending_spawn(slot, "handle_spawned").is_some() {
            if let Some(rec) = self.children[slot].as_mut() {
                rec.pid = Some(pid);
            }
            self.brake.fork_failures = 0;
        }
    }

    /// fork() failed for `slot`: the slot goes back to `Dead` and spawning backs off.
    pub fn handle_spawn_failed<T: SlotTable + ?Sized>(&mut self, now: Time, slot: usize, board: &T) {
        if let Some(born) = self.pending_spawn(slot, "handle_spawn_failed") {
            self.children[slot] = None;
            if let Ok(s) = board.slot(slot) {
                let _ = s.reap(born);
            }
            let retry_in = self.brake.fork_failed(now);
            self.log(ParentLog::ForkFailed { slot, retry_in });
            self.check_done(now, board);
        }
    }

    /// waitpid() reported that `pid` ended with `status`. `reported` is the reason the child left
    /// in its slot record, if the driver keeps one.
    pub fn handle_child_exit<T: SlotTable + ?Sized>(
        &mut self,
        now: Time,
        pid: Pid,
        status: ExitStatus,
        reported: Option<ExitReason>,
        board: &T,
    ) {
        let Some(slot) = self.slot_of(pid) else {
            self.log(ParentLog::LongLostChild { pid, status });
            return;
        };
        let Some(rec) = self.children[slot].take() else {
            return;
        };
        let last = match board.slot(slot).map(|s| s.reap(rec.born)) {
            Ok(Ok(word)) => Some(word.state),
            Ok(Err(e)) => {
                let problem = match e {
                    SlotError::NotOwner { found, .. } => {
                        SlotProblem::Foreign(SlotWord { incarnation: found, ..rec.born })
                    }
                    SlotError::IllegalTransition { from, .. } => SlotProblem::Foreign(rec.born.with_state(from)),
                    other => SlotProblem::Corrupt(other),
                };
                self.log(ParentLog::SlotRepaired { slot, problem, wrote: SlotState::Dead });
                None
            }
            Err(_) => None,
        };
        let cause = ExitCause::classify(status, last, reported);
        let generation = rec.born.generation;
        self.log(ParentLog::ChildExited { pid, slot, generation, cause });
        let current = generation == self.generation;

        if cause == ExitCause::Fatal {
            if !current {
                self.log(ParentLog::IgnoringOldFatal { pid });
            } else if self.stage == Stage::Running {
                self.log(ParentLog::ChildFatal { pid, slot });
                self.actions.push_back(ParentAction::CloseListeners);
                self.begin_reclaim(now, board, Then::Exit(EXIT_CHILD_FATAL));
                return;
            }
        }
        if matches!(cause, ExitCause::Sick(_)) {
            self.policy.on_child_sick();
        }
        let early = last == Some(SlotState::Starting) || now.since(rec.spawned_at) < EARLY_EXIT_WINDOW;
        if current
            && self_inflicted(status)
            && early
            && self.stage == Stage::Running
            && let Some(paused_for) = self.brake.early_exit(now)
        {
            self.policy.on_child_sick();
            self.log(ParentLog::CrashLoop { early_exits: self.brake.early_exits, paused_for });
        }

        if self.stage == Stage::Running
            && self.remaining_to_start > 0
            && slot < self.max_request_workers(board)
            && self.live_children() < self.max_request_workers(board)
            && self.brake.allows(now)
            && self.spawn_in(now, board, slot, self.refill_generation(generation))
        {
            // Graceful-restart refill: replace a reaped child at once (Apache does the same).
            self.remaining_to_start -= 1;
        }
        self.check_done(now, board);
    }

    /// The generation a refilled slot's child is born in: the running one (the seeded bug
    /// `IgnoreGenerationOnReap` uses the reaped child's instead).
    fn refill_generation(&self, reaped: u32) -> u32 {
        if self.has_bug(crate::seeded::SeededBug::IgnoreGenerationOnReap) { reaped } else { self.generation }
    }

    /// The operator's command (a signal, or `-k`).
    pub fn handle_command<T: SlotTable + ?Sized>(&mut self, now: Time, command: Command, board: &T) {
        let name = command.name();
        match (&mut self.stage, command) {
            (Stage::Running, Command::GracefulRestart(cfg)) => {
                self.apply_config(*cfg);
                self.generation = self.generation.wrapping_add(1);
                board.publish_generation(self.generation);
                self.log(ParentLog::GracefulRestart { generation: self.generation });
                self.mark_all_graceful(board);
                self.policy.on_graceful_restart();
                self.remaining_to_start = self.config.start_servers.min(self.config.max_request_workers);
            }
            (Stage::Running, Command::HardRestart(cfg)) => {
                self.generation = self.generation.wrapping_add(1);
                board.publish_generation(self.generation);
                self.log(ParentLog::HardRestart { generation: self.generation });
                self.begin_reclaim(now, board, Then::Restart(cfg));
            }
            (Stage::Running, Command::GracefulStop) => {
                self.actions.push_back(ParentAction::CloseListeners);
                let timeout = self.config.graceful_shutdown_timeout;
                let timeout = (!timeout.is_zero()).then_some(timeout);
                self.log(ParentLog::GracefulStopping { timeout });
                self.remaining_to_start = 0;
                self.mark_all_graceful(board);
                self.stage = Stage::Draining { deadline: timeout.map(|t| now + t) };
                self.check_done(now, board);
            }
            (Stage::Running, Command::Stop) | (Stage::Draining { .. }, Command::Stop) => {
                if self.stage == Stage::Running {
                    self.actions.push_back(ParentAction::CloseListeners);
                }
                self.log(ParentLog::Stopping);
                self.begin_reclaim(now, board, Then::Exit(code::OK));
            }
            (
                Stage::Reclaiming { then: then @ Then::Restart(_), .. },
                Command::GracefulRestart(cfg) | Command::HardRestart(cfg),
            ) => {
                // A restart is already under way: it will use the newest configuration.
                *then = Then::Restart(cfg);
            }
            (Stage::Reclaiming { then: then @ Then::Restart(_), .. }, Command::Stop | Command::GracefulStop) => {
                *then = Then::Exit(code::OK);
                self.actions.push_back(ParentAction::CloseListeners);
                self.log(ParentLog::Stopping);
            }
            (Stage::New, Command::Stop | Command::GracefulStop) => {
                self.stage = Stage::Exited;
                self.actions.push_back(ParentAction::Exit { code: code::OK });
            }
            (Stage::New, Command::GracefulRestart(cfg) | Command::HardRestart(cfg)) => self.apply_config(*cfg),
            _ => {
                let phase = self.phase();
                self.log(ParentLog::CommandIgnored { command: name, phase });
            }
        }
    }

    /// Time passed: run the maintenance tick or the next stop-escalation step if due.
    pub fn handle_timeout<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        match &self.stage {
            Stage::Running if now >= self.next_tick => {
                self.next_tick = now + self.config.maintenance_interval;
                self.tick(now, board);
            }
            Stage::Reclaiming { started, step, .. } => {
                let (started, mut step) = (*started, *step);
                while let Some(&(at, what)) = RECLAIM_SCHEDULE.get(step) {
                    if now < started + at {
                        break;
                    }
                    step += 1;
                    if let Stage::Reclaiming { step: s, .. } = &mut self.stage {
                        *s = step;
                    }
                    let alive: Vec<(usize, Option<Pid>)> = self.children().map(|(i, c)| (i, c.pid)).collect();
                    for (slot, pid) in alive {
                        let Some(pid) = pid else { continue };
                        match what {
                            ReclaimStep::Term | ReclaimStep::Kill => {
                                let signal =
                                    if what == ReclaimStep::Term { KillSignal::Term } else { KillSignal::Kill };
                                self.log(ParentLog::StillRunning { pid, slot, sending: signal });
                                self.actions.push_back(ParentAction::Signal { pid, signal });
                            }
                            ReclaimStep::GiveUp => self.log(ParentLog::GaveUp { pid, slot }),
                        }
                    }
                    if what == ReclaimStep::GiveUp {
                        self.finish_reclaim(now, board);
                        break;
                    }
                }
            }
            Stage::Draining { deadline: Some(d) } if now >= *d => {
                self.log(ParentLog::GracefulStopTimedOut { remaining: self.live_children() });
                self.begin_reclaim(now, board, Then::Exit(code::OK));
            }
            _ => {}
        }
    }

    fn apply_config(&mut self, mut cfg: PoolConfig) {
        if cfg.server_limit != self.config.server_limit {
            self.log(ParentLog::ServerLimitKept { given: cfg.server_limit, kept: self.config.server_limit });
            cfg.server_limit = self.config.server_limit;
            cfg.max_request_workers = cfg.max_request_workers.min(cfg.server_limit);
            cfg.start_servers = cfg.start_servers.min(cfg.max_request_workers);
        }
        self.config = cfg;
    }

    /// Marks every working child `Graceful` and wakes it.
    fn mark_all_graceful<T: SlotTable + ?Sized>(&mut self, board: &T) {
        let alive: Vec<(usize, Option<Pid>)> = self.children().map(|(i, c)| (i, c.pid)).collect();
        for (slot, pid) in alive {
            match board.slot(slot).map(|s| s.mark_graceful()) {
                Ok(Ok(before)) if before.is_live() && !before.is_directive() => {
                    if let Some(pid) = pid {
                        self.actions.push_back(ParentAction::Wake { slot, pid });
                    }
                }
                Ok(Ok(_)) | Err(_) => {}
                // A corrupt word: the repair at the next tick (or the reap) rewrites it.
                Ok(Err(e)) => {
                    let Some(rec) = self.children[slot] else {
                        continue;
                    };
                    let word = rec.born.with_state(SlotState::Graceful);
                    let Ok(cell) = board.slot(slot) else { continue };
                    if cell.repair(cell.raw(), word).is_ok() {
                        self.log(ParentLog::SlotRepaired {
                            slot,
                            problem: SlotProblem::Corrupt(e),
                            wrote: SlotState::Graceful,
                        });
                        if let Some(pid) = pid {
                            self.actions.push_back(ParentAction::Wake { slot, pid });
                        }
                    }
                }
            }
        }
    }

    fn begin_reclaim<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, then: Then) {
        self.remaining_to_start = 0;
        self.stage = Stage::Reclaiming { started: now, step: 0, then };
        let pids: Vec<Pid> = self.children().filter_map(|(_, c)| c.pid).collect();
        for pid in pids {
            self.actions.push_back(ParentAction::Signal { pid, signal: KillSignal::Term });
        }
        self.check_done(now, board);
    }

    /// Ends a stop or restart once no child is left.
    fn check_done<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        if self.live_children() > 0 {
            return;
        }
        match self.stage {
            Stage::Reclaiming { .. } => self.finish_reclaim(now, board),
            Stage::Draining { .. } => {
                self.stage = Stage::Exited;
                self.actions.push_back(ParentAction::Exit { code: code::OK });
            }
            _ => {}
        }
    }

    fn finish_reclaim<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        let Stage::Reclaiming { then, .. } = std::mem::replace(&mut self.stage, Stage::Exited) else {
            return;
        };
        match then {
            Then::Exit(code) => self.actions.push_back(ParentAction::Exit { code }),
            Then::Restart(cfg) => {
                self.apply_config(*cfg);
                self.stage = Stage::Running;
                // Children that would not die keep their slots, marked Graceful so they count as
                // neither idle nor claimable; everything else starts afresh.
                self.mark_all_graceful(board);
                let mut view = ScoreboardView::capture(board);
                self.repair(&mut view, board);
                self.startup(now, board, &view, self.config.start_servers);
                self.next_tick = now + self.config.maintenance_interval;
                self.log(ParentLog::Resumed { generation: self.generation });
            }
        }
    }

    /// One maintenance tick.
    fn tick<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        let mut view = ScoreboardView::capture(board);
        self.repair(&mut view, board);
        self.note_health(now, &view);
        self.rewake(&view);
        if self.remaining_to_start > 0 {
            // Apache: the rest of StartServers after a graceful restart, and no maintenance this pass.
            let n = std::mem::take(&mut self.remaining_to_start);
            self.startup(now, board, &view, n);
            return;
        }
        let m = self.policy.tick(SpareLimits::from(&self.config), &view, self.brake.allows(now));
        if let Some(l) = m.log {
            self.log(ParentLog::Policy(l));
        }
        match m.decision {
            Decision::Spawn { slots } => {
                for slot in slots {
                    self.spawn(now, board, slot);
                }
            }
            Decision::Retire { candidates } if self.has_bug(crate::seeded::SeededBug::RetireWithoutClaim) => {
                // Seeded bug: "kill the idle child by pid", as peers without a claim do.
                if let Some(pid) = candidates.iter().find_map(|&s| self.children.get(s).copied().flatten()?.pid) {
                    self.actions.push_back(ParentAction::Signal { pid, signal: KillSignal::Term });
                }
            }
            Decision::Retire { candidates } => {
                for slot in candidates {
                    let Some(Ok(seen)) = view.slots.get(slot).copied() else {
                        continue;
                    };
                    let Some(Some(rec)) = self.children.get(slot).copied() else {
                        continue;
                    };
                    if board.slot(slot).is_ok_and(|s| s.claim_idle(seen).is_ok()) {
                        if let Some(pid) = rec.pid {
                            self.actions.push_back(ParentAction::Wake { slot, pid });
                        }
                        break;
                    }
                }
            }
            Decision::Steady | Decision::AtMaxRequestWorkers | Decision::SpawnPaused => {}
        }
    }

    /// Wakes again every child whose slot still holds a directive (`G`, `I`). A wake-up can be
    /// lost: a signal that interrupts lock waits may land just before the child enters the
    /// blocking call. Repeating it each tick bounds the delay to one tick (SPEC.md §7.1).
    fn rewake(&mut self, view: &ScoreboardView) {
        let pending: Vec<(usize, Pid)> = self
            .children()
            .filter(|(slot, _)| view.state(*slot).is_some_and(SlotState::is_directive))
            .filter_map(|(slot, c)| Some((slot, c.pid?)))
            .collect();
        for (slot, pid) in pending {
            self.actions.push_back(ParentAction::Wake { slot, pid });
        }
    }

    /// A current-generation child that got past start-up and has lived a while resets the
    /// crash-loop count.
    fn note_health(&mut self, now: Time, view: &ScoreboardView) {
        let healthy = self.children().any(|(slot, c)| {
            c.born.generation == self.generation
                && now.since(c.spawned_at) >= EARLY_EXIT_WINDOW
                && view.state(slot).is_some_and(|s| s == SlotState::Ready || s.is_busy())
        });
        if healthy {
            self.brake.early_exits = 0;
        }
    }

    /// Makes the board agree with the parent's records (the parent knows which processes exist;
    /// the board says what they do). Never panics; logs every change.
    fn repair<T: SlotTable + ?Sized>(&mut self, view: &mut ScoreboardView, board: &T) {
        for slot in 0..self.slots(board).min(view.slots.len()) {
            let rec = self.children[slot];
            let (problem, wanted) = match (rec, view.slots[slot]) {
                (None, Ok(w)) if w.state == SlotState::Dead => continue,
                (None, Ok(w)) => (SlotProblem::NoChild(w.state), w.with_state(SlotState::Dead)),
                (None, Err(e)) => (SlotProblem::Corrupt(e), SlotWord::EMPTY),
                (Some(r), Ok(w))
                    if w.incarnation == r.born.incarnation
                        && w.generation == r.born.generation
                        && w.state.is_live() =>
                {
                    continue;
                }
                (Some(r), Ok(w)) => (SlotProblem::Foreign(w), r.born.with_state(SlotState::Graceful)),
                (Some(r), Err(e)) => (SlotProblem::Corrupt(e), r.born.with_state(SlotState::Graceful)),
            };
            let Ok(cell) = board.slot(slot) else { continue };
            let seen = match view.slots[slot] {
                Ok(w) => w.encode(),
                Err(SlotError::CorruptWord { raw, .. }) => raw,
                Err(_) => cell.raw(),
            };
            if let Err(now) = cell.repair(seen, wanted) {
                // Changed meanwhile: decide with what is there now, look again at the next tick.
                view.slots[slot] = SlotWord::decode(now);
                continue;
            }
            view.slots[slot] = Ok(wanted);
            self.log(ParentLog::SlotRepaired { slot, problem, wrote: wanted.state });
            if let Some(ChildRecord { pid: Some(pid), .. }) = rec {
                self.actions.push_back(ParentAction::Wake { slot, pid });
            }
        }
    }
}
