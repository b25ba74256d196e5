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
use crate::exit::{ExitCause, ExitReason, ExitStatus, KillReason, code};
use crate::policy::{Decision, SpareLimits, SpareServerPolicy};
use crate::scoreboard::{ScoreboardView, SlotTable};
use crate::slot::{INCARNATION_MASK, SlotError, SlotState, SlotWord};
use crate::time::Time;
use std::collections::VecDeque;

mod agent;
mod brake;
mod broken;
mod gate;
mod lifecycle;
mod log;
mod reclaim;
mod repair;
mod upgrade;
mod watchdog;

pub use agent::{AgentAnswer, OperatorState};
use brake::self_inflicted;
pub use brake::{CRASH_LOOP_MAX_PAUSE, CRASH_LOOP_THRESHOLD, EARLY_EXIT_WINDOW, FORK_RETRY_MAX, SpawnBrake};
pub use gate::{GATE_RESTART_DELAY, GateStop};
pub use lifecycle::{LifecycleError, LifecycleOrder, ParentEvent};
pub use log::{Level, ParentLog, REPEAT_BURST, REPEAT_WINDOW, RepeatFilter};
pub use reclaim::{RECLAIM_SCHEDULE, ReclaimStep};
pub use upgrade::{SuccessorReport, UPGRADE_TIMEOUT};
use watchdog::SlotWatch;
pub use watchdog::{Observation, QueueDepth};

/// A process id as the driver reports it.
pub type Pid = u32;

/// Exit code of the parent when a current-generation child exits with `CHILDFATAL`.
pub const EXIT_CHILD_FATAL: i32 = 1;

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
    /// SIGWINCH: the listeners take no new connection; children finish their work and drain what
    /// the listen queues hold (SPEC.md §7.5), then exit (or are stopped after
    /// graceful_shutdown_timeout).
    GracefulStop,
    /// A graceful stop whose listening sockets outlive this server (a service manager holds them,
    /// or a new server inherited them: SPEC.md §7.5): the parent closes its copies, children
    /// finish their work and leave at once, and what the queues hold is left to the sockets'
    /// other holder.
    HandOver,
    /// SIGTERM / SIGINT: stop every child (TERM escalation) and exit.
    Stop,
    /// SIGUSR2 (`-k upgrade`): start the new binary on the same listening sockets, and hand over
    /// to it once it serves (SPEC.md §7.11).
    Upgrade,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::GracefulRestart(_) => "graceful restart",
            Command::HardRestart(_) => "restart",
            Command::GracefulStop => "graceful stop",
            Command::HandOver => "hand-over",
            Command::Upgrade => "upgrade",
            Command::Stop => "stop",
        }
    }
}

/// What a new child needs from the parent to run: everything the driver hands it at fork().
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildSpec {
    /// The listeners it polls, in the configuration's order (at least one).
    pub listeners: usize,
    /// It takes the accept lock before it waits (SPEC.md §4).
    pub lock_in_use: bool,
    /// Connections it serves before it leaves (`max_connections_per_child` plus its jitter; 0:
    /// no limit).
    pub connection_limit: u64,
    /// The scheduling policy it runs under (`child_scheduling`).
    pub scheduling: crate::config::ChildScheduling,
    /// Its connections come from the gate (`accept_filter = "httpready"`, SPEC.md §15.5), not
    /// from the listeners.
    pub gated: bool,
}

impl ChildSpec {
    /// The child loop this child runs.
    pub fn child_loop(&self) -> crate::child::ChildLoop {
        let child = crate::child::ChildLoop::new(self.listeners, self.lock_in_use, self.connection_limit);
        if self.gated { child.gated() } else { child }
    }
}

/// fork() a child: everything the driver needs, complete in itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spawn {
    /// The slot. It already holds `born` (state `Starting`).
    pub slot: usize,
    /// The slot word the child is born with (generation, incarnation): the child runs
    /// [`ChildSpec::child_loop`] on `ChildSlot::attach(board, slot, born)`.
    pub born: SlotWord,
    /// What the child runs with.
    pub child: ChildSpec,
}

/// Send a signal to one child (never to a process group, never to the parent itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal {
    /// The child's slot (by the parent's records).
    pub slot: usize,
    /// The child: always a pid from the parent's own table, never one read from the board.
    pub pid: Pid,
    /// The signal.
    pub signal: KillSignal,
    /// Why the parent kills a child of a running pool (the watchdog, a slot that stayed damaged);
    /// `None`: a stop or restart.
    pub reason: Option<KillReason>,
}

/// What the parent asks the driver to do. Each action is complete in itself: the driver never
/// needs to ask the parent anything to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParentAction {
    /// fork() a child ([`Platform::spawn`](crate::driver::Platform::spawn)); the driver answers
    /// at once with its pid or why there is none.
    Spawn(Spawn),
    /// Wake the child in `slot` from its wait (its slot holds a directive for it).
    Wake {
        /// The slot.
        slot: usize,
        /// The child.
        pid: Pid,
    },
    /// Send a signal to one child.
    Signal(Signal),
    /// Close every listening socket (stops only; restarts keep them).
    CloseListeners,
    /// Start the successor: the server's binary again, on the same listening sockets (an
    /// upgrade, SPEC.md §7.11). The driver answers at once with its pid or why there is none.
    StartSuccessor,
    /// Stop the successor `pid` (SIGTERM): it was not ready in time.
    StopSuccessor {
        /// The successor.
        pid: Pid,
    },
    /// A graceful stop: take no new connection on any listening socket, but leave what the
    /// listen queues hold for the children, which drain them before they leave (SPEC.md §7.5);
    /// then close the parent's own copies. The sockets close when the last child lets go.
    DrainListeners,
    /// Start a gate (`accept_filter = "httpready"`, SPEC.md §15.5): a process that accepts on
    /// every listener and hands the children complete request heads. The driver answers at once
    /// with its pid or why there is none.
    StartGate,
    /// Tell the gate `pid` to stop, `how`.
    StopGate {
        /// The gate.
        pid: Pid,
        /// Retire, drain, or now.
        how: GateStop,
    },
    /// Log this.
    Log(ParentLog),
    /// Tell the world what happened.
    Event(ParentEvent),
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

/// How the parent found a slot that did not match its own records (SPEC.md §7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotProblem {
    /// The word could not be decoded.
    Corrupt(SlotError),
    /// The slot shows a process but the parent has no child there.
    NoChild(SlotState),
    /// The parent has a child there but the slot holds another child's word (another incarnation
    /// or generation), or `Dead`.
    Foreign(SlotWord),
    /// The parent told the child `directive` (`G`, `I`), and the slot shows something else: a
    /// child never writes over a directive.
    DirectiveLost {
        /// What the parent wrote.
        directive: SlotState,
        /// What the slot shows.
        found: SlotState,
    },
    /// The slot shows a directive (`G`, `I`) the parent never gave: only the parent writes them.
    DirectiveForged(SlotState),
}

impl std::fmt::Display for SlotProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotProblem::Corrupt(e) => write!(f, "{e}"),
            SlotProblem::NoChild(state) => write!(f, "it shows {state} but no child lives there"),
            SlotProblem::Foreign(w) => write!(
                f,
                "it holds the word of another child ({}, incarnation {}, generation {})",
                w.state, w.incarnation, w.generation
            ),
            SlotProblem::DirectiveLost { directive, found } => {
                write!(f, "the parent's directive {directive} was overwritten with {found}")
            }
            SlotProblem::DirectiveForged(state) => write!(f, "it shows {state}, a directive the parent never gave"),
        }
    }
}

/// The parent's counters, for status pages (SPEC.md §12.5). They never change a decision, so
/// they take no part in comparing or hashing parents: the model checkers' state space stays what
/// the protocol makes it.
#[derive(Clone, Debug, Default)]
pub struct ParentStats {
    /// Children forked (successful forks).
    pub spawned: u64,
    /// Children reaped, whatever their cause.
    pub exited: u64,
    /// Of those, children the parent had claimed for retirement that left with code 0.
    pub retired: u64,
    /// Children the watchdog killed for holding the accept lock.
    pub killed_accept_lock: u64,
    /// Children the watchdog killed for a request past `request_deadline`.
    pub killed_request_deadline: u64,
    /// Children killed because their slot was damaged again after a repair.
    pub killed_slot_damaged: u64,
    /// Slot words the parent wrote back because they did not match its records.
    pub slots_repaired: u64,
    /// When the last hard restart started its new pool (`None`: none yet).
    pub restarted_at: Option<Time>,
    /// Per slot: the last child the parent killed there while the pool ran, and why; kept when
    /// the slot is refilled (status pages show it).
    pub last_kills: Vec<Option<(Pid, KillReason)>>,
}

impl PartialEq for ParentStats {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ParentStats {}
impl std::hash::Hash for ParentStats {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// The parent's record of one child: the truth the board is checked against (SPEC.md §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildRecord {
    /// The child's pid; `None` between a `Spawn` action and `handle_spawned`.
    pub pid: Option<Pid>,
    /// The slot word it was born with.
    pub born: SlotWord,
    /// When the parent claimed the slot for it.
    pub spawned_at: Time,
    /// The directive the parent gave it (`Graceful` or `IdleKill`): its slot must show it until
    /// the child is reaped.
    pub directive: Option<SlotState>,
    /// The parent has found its slot damaged (and told it to leave).
    pub damaged: bool,
    /// The parent killed it while the pool ran, and why (it is not reaped yet).
    pub killed: Option<KillReason>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Then {
    Restart(Box<PoolConfig>),
    Exit(i32),
}

/// The parent's state machine state, with the data each state needs (the ladder's start and step,
/// what follows a reclaim, the graceful stop's deadline). Private: [`Phase`] is the one public
/// name for where the parent is, and [`Parent::phase`] the one mapping between them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Stage {
    New,
    Running,
    Reclaiming {
        started: Time,
        step: usize,
        then: Then,
    },
    /// A graceful stop; `drain`: the children drain the listen queues (not in a hand-over).
    Draining {
        deadline: Option<Time>,
        drain: bool,
    },
    Exited,
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
    /// Each slot's incarnation counter: the parent's own, never read back from the board.
    incarnations: Vec<u32>,
    watches: Vec<SlotWatch>,
    remaining_to_start: u32,
    next_tick: Time,
    /// The next look at the accept queues between ticks (`spawn_mode = "demand"`).
    next_look: Time,
    actions: VecDeque<ParentAction>,
    /// The successor of an upgrade under way (SPEC.md §7.11).
    successor: Option<upgrade::Successor>,
    /// The gate and the gates leaving (SPEC.md §15.5).
    gates: gate::Gates,
    stats: ParentStats,
    bugs: crate::seeded::BugSwitch,
}

impl Parent {
    /// A parent for `config` (validated). Nothing happens until [`Parent::start`].
    pub fn new(config: PoolConfig) -> Self {
        let slots = config.server_limit as usize;
        Parent {
            children: vec![None; config.server_limit as usize],
            incarnations: vec![0; config.server_limit as usize],
            watches: vec![SlotWatch::default(); config.server_limit as usize],
            config,
            generation: 0,
            stage: Stage::New,
            policy: SpareServerPolicy::new(),
            brake: SpawnBrake::default(),
            remaining_to_start: 0,
            next_tick: Time::ZERO,
            next_look: Time::ZERO,
            actions: VecDeque::new(),
            successor: None,
            gates: gate::Gates::default(),
            stats: ParentStats { last_kills: vec![None; slots], ..ParentStats::default() },
            bugs: crate::seeded::BugSwitch::default(),
        }
    }

    /// Selects a deliberately broken variant (negative tests of the model checkers only).
    #[cfg(feature = "seeded-bugs")]
    pub fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
        self.bugs.set(bug);
        self.policy.seed_bug(bug);
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

    /// The parent's counters (status pages publish them).
    pub fn stats(&self) -> &ParentStats {
        &self.stats
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
    pub(crate) fn poll_action(&mut self) -> Option<ParentAction> {
        self.actions.pop_front()
    }

    /// When the next maintenance tick is due (while running; a timeout before it is a look or a
    /// watchdog check).
    pub fn next_tick(&self) -> Time {
        self.next_tick
    }

    /// When [`Parent::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let earliest = |a: Option<Time>, b: Option<Time>| a.into_iter().chain(b).min();
        match &self.stage {
            Stage::New | Stage::Exited => None,
            Stage::Running => earliest(
                earliest(earliest(Some(self.next_tick), self.looks().then_some(self.next_look)), self.watch_deadline()),
                self.successor_deadline(),
            ),
            Stage::Reclaiming { started, step, .. } => RECLAIM_SCHEDULE.get(*step).map(|(d, _)| *started + *d),
            // While draining, the ticks go on (the board is checked and the directives re-asserted:
            // a scribble must not keep a child from leaving), and the request deadline is watched.
            Stage::Draining { deadline, .. } => {
                earliest(earliest(*deadline, Some(self.next_tick)), self.watch_deadline())
            }
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
    pub(crate) fn start<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T) {
        debug_assert!(self.stage == Stage::New, "ParentDriver::start is the only caller");
        board.publish_generation(self.generation);
        self.stage = Stage::Running;
        let view = self.checked_view(board, true);
        self.start_gate(now);
        self.startup(now, board, &view, self.config.start_servers);
        self.next_tick = now + self.config.maintenance_interval;
        self.next_look = now + self.config.demand_interval;
        self.log(ParentLog::Resumed { generation: self.generation });
        self.announce_ready();
    }

    fn announce(&mut self, event: ParentEvent) {
        self.actions.push_back(ParentAction::Event(event));
    }

    /// `Ready`, with the configuration now in force.
    fn announce_ready(&mut self) {
        self.announce(ParentEvent::Ready { generation: self.generation, config: Box::new(self.config.clone()) });
    }

    /// Writes what the parent publishes to the children (the running generation) from its own
    /// memory, whatever the board holds: at every input, so a scribbled word is put right at the
    /// next one (SPEC.md §3.4).
    fn publish<T: SlotTable + ?Sized>(&self, board: &T) {
        if matches!(self.stage, Stage::Draining { drain: true, .. }) {
            board.publish_draining(self.generation);
        } else {
            board.publish_generation(self.generation);
        }
    }

    /// Does this parent look at the accept queues between ticks?
    fn looks(&self) -> bool {
        self.config.spawn_mode == crate::config::SpawnMode::Demand
            && self.config.demand_interval < self.config.maintenance_interval
    }

    /// A look between ticks (`spawn_mode = "demand"`): if connections wait and too few children
    /// are idle, fork what they need now rather than at the next tick (SPEC.md §5.1a). Nothing
    /// else of the tick happens here.
    fn look<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, observed: &Observation) {
        let waiting = observed.waiting();
        if waiting == 0 || self.remaining_to_start > 0 {
            return;
        }
        let view = self.checked_view(board, false);
        let demand = crate::policy::Demand { waiting, now };
        let slots = self.policy.spawn_on_demand(SpareLimits::from(&self.config), &view, self.brake.allows(now), demand);
        if let Some(l) = slots.log {
            self.log(ParentLog::Policy(l));
        }
        if let Decision::Spawn { slots } = slots.decision {
            for slot in slots {
                self.spawn(now, board, slot);
            }
        }
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

    /// Writes a new child's word into `slot` (which holds no child by the parent's records,
    /// whatever the board says) and asks for the fork.
    fn spawn_in<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, slot: usize, generation: u32) -> bool {
        // Callers pick slots without a record (`view.state(slot) == Dead` is the checked view's).
        let Ok(cell) = board.slot(slot) else { return false };
        let incarnation = self.incarnations[slot].wrapping_add(1) & INCARNATION_MASK;
        self.incarnations[slot] = incarnation;
        let born = SlotWord { state: SlotState::Starting, incarnation, generation };
        cell.install(born);
        self.children[slot] =
            Some(ChildRecord { pid: None, born, spawned_at: now, directive: None, damaged: false, killed: None });
        let gated = self.gate_wanted();
        let child = ChildSpec {
            listeners: self.config.listen.len(),
            lock_in_use: self.config.lock_in_use() && !gated,
            // Differs per child, the same on every run: the slot and the word it is born with.
            connection_limit: self.config.connection_limit(born.encode().rotate_left(16) ^ slot as u64),
            scheduling: self.config.child_scheduling,
            gated,
        };
        self.actions.push_back(ParentAction::Spawn(Spawn { slot, born, child }));
        true
    }

    /// fork() succeeded for `slot`: the child is `pid` (published in the slot's pid word).
    ///
    /// The [`ParentDriver`](crate::driver::ParentDriver) is the only caller, with the outcome of
    /// the `Spawn` it has just performed, before anything else: the slot's record is there and
    /// waits for its pid (so this, and [`Parent::handle_spawn_failed`], need no guard).
    pub(crate) fn handle_spawned<T: SlotTable + ?Sized>(&mut self, slot: usize, pid: Pid, board: &T) {
        debug_assert!(self.children[slot].is_some_and(|r| r.pid.is_none()), "no spawn pending in slot {slot}");
        if let Some(rec) = self.children[slot].as_mut() {
            rec.pid = Some(pid);
        }
        if let Ok(cell) = board.slot(slot) {
            cell.publish_pid(pid);
        }
        self.stats.spawned += 1;
        self.brake.fork_failures = 0;
    }

    /// fork() failed for `slot` (`error` says why, for the log): the slot goes back to `Dead` and
    /// spawning backs off. The forks still queued from the same batch are cancelled too (their
    /// slots go back to `Dead`): no fork happens before the back-off is over (I16); the policy
    /// asks again then.
    pub(crate) fn handle_spawn_failed<T: SlotTable + ?Sized>(
        &mut self,
        now: Time,
        slot: usize,
        error: &str,
        board: &T,
    ) {
        debug_assert!(self.children[slot].is_some_and(|r| r.pid.is_none()), "no spawn pending in slot {slot}");
        let queued: Vec<usize> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                ParentAction::Spawn(spawn) => Some(spawn.slot),
                _ => None,
            })
            .collect();
        self.actions.retain(|a| !matches!(a, ParentAction::Spawn(_)));
        for slot in std::iter::once(slot).chain(queued) {
            if self.children[slot].take().is_some()
                && let Ok(s) = board.slot(slot)
            {
                s.release(self.empty_word(slot));
            }
        }
        let retry_in = self.brake.fork_failed(now);
        // The system is short of something: start again from one fork per tick.
        self.policy.on_child_sick();
        self.log(ParentLog::ForkFailed { slot, error: error.to_string(), retry_in });
        self.check_done(now, board);
    }

    /// waitpid() reported that `pid` ended with `status`. `reported` is the reason the child left
    /// in its slot record, if the driver keeps one.
    pub(crate) fn handle_child_exit<T: SlotTable + ?Sized>(
        &mut self,
        now: Time,
        pid: Pid,
        status: ExitStatus,
        reported: Option<ExitReason>,
        board: &T,
    ) {
        self.seam_publish(board);
        if self.gate_exited(now, pid, status) {
            return;
        }
        let Some(slot) = self.slot_of(pid) else {
            self.log(ParentLog::LongLostChild { pid, status });
            return;
        };
        let Some(rec) = self.children[slot].take() else {
            return;
        };
        // The slot is empty again by the parent's records, whatever it holds; what it held only
        // labels the exit (the last state, for the crash-loop brake, if it is a word the child
        // could have written).
        let empty = self.empty_word(slot);
        let found = match board.slot(slot) {
            Ok(cell) => self.seam_release_reaped(&cell, empty),
            Err(_) => empty.encode(),
        };
        let (last, damaged_at_exit) = match repair::judge(Some(&rec), empty, found) {
            repair::Verdict::Fine(w) => (Some(w.state), false),
            repair::Verdict::Damaged { problem, .. } => {
                if !rec.damaged && rec.killed.is_none() {
                    self.stats.slots_repaired += 1;
                    self.log(ParentLog::SlotRepaired { slot, problem, wrote: SlotState::Dead });
                }
                (None, true)
            }
        };
        let cause = match (rec.killed, status) {
            (Some(why), ExitStatus::Signaled(9)) => ExitCause::Killed(why),
            _ => ExitCause::classify(status, rec.directive, reported),
        };
        self.stats.exited += 1;
        if rec.directive == Some(SlotState::IdleKill) && status == ExitStatus::Code(code::OK) {
            self.stats.retired += 1;
        }
        let generation = rec.born.generation;
        self.log(ParentLog::ChildExited { pid, slot, generation, cause });
        let current = generation == self.generation;
        // A child whose slot was damaged (or that says so: a lie gains it nothing it could not
        // have by exiting with 0) left because of the board, not because of itself: neither the
        // crash-loop brake nor the sick-child rate reset hears of it (SPEC.md §7.6).
        let excused = rec.damaged || damaged_at_exit || reported == Some(ExitReason::SlotLost);

        if cause == ExitCause::Fatal {
            if !self.seam_fatal_is_current(current) {
                self.log(ParentLog::IgnoringOldFatal { pid });
            } else if self.stage == Stage::Running {
                self.log(ParentLog::ChildFatal { pid, slot });
                self.actions.push_back(ParentAction::CloseListeners);
                self.announce(ParentEvent::Stopping { graceful: false });
                self.begin_reclaim(now, board, Then::Exit(EXIT_CHILD_FATAL));
                return;
            }
        }
        if matches!(cause, ExitCause::Sick(_)) && !excused {
            self.seam_sick_exit();
        }
        let early = last == Some(SlotState::Starting) || now.since(rec.spawned_at) < EARLY_EXIT_WINDOW;
        if current
            && !excused
            && self_inflicted(status)
            && early
            && self.stage == Stage::Running
            && let Some(paused_for) = self.seam_early_exit(now)
        {
            self.policy.on_child_sick();
            self.log(ParentLog::CrashLoop { early_exits: self.brake.early_exits, paused_for });
        }

        let within_limit = slot < self.max_request_workers(board)
            && self.seam_refill_below_limit(self.live_children() < self.max_request_workers(board));
        if self.stage == Stage::Running
            && self.remaining_to_start > 0
            && within_limit
            && self.brake.allows(now)
            && self.spawn_in(now, board, slot, self.seam_refill_generation(generation))
        {
            // Graceful-restart refill: replace a reaped child at once (Apache does the same).
            self.remaining_to_start -= 1;
        }
        self.check_done(now, board);
    }

    /// The operator's command (a signal, or `-k`).
    pub(crate) fn handle_command<T: SlotTable + ?Sized>(&mut self, now: Time, command: Command, board: &T) {
        self.seam_publish(board);
        let name = command.name();
        if matches!(command, Command::Stop | Command::GracefulStop | Command::HandOver) {
            self.cancel_successor("a stop came first");
        }
        match (&mut self.stage, command) {
            (Stage::Running, Command::GracefulRestart(cfg)) => {
                self.apply_config(*cfg);
                self.generation = self.generation.wrapping_add(1);
                board.publish_generation(self.generation);
                self.log(ParentLog::GracefulRestart { generation: self.generation });
                // A new gate with the new settings; the old one finishes what it holds.
                self.stop_gates(GateStop::Retire);
                self.start_gate(now);
                self.announce(ParentEvent::Reloading { generation: self.generation, graceful: true });
                self.mark_all_graceful(board);
                self.policy.on_graceful_restart();
                self.remaining_to_start = self.config.start_servers.min(self.config.max_request_workers);
                self.announce_ready();
            }
            (Stage::Running, Command::HardRestart(cfg)) => {
                self.generation = self.generation.wrapping_add(1);
                board.publish_generation(self.generation);
                self.log(ParentLog::HardRestart { generation: self.generation });
                self.announce(ParentEvent::Reloading { generation: self.generation, graceful: false });
                self.seam_hard_restart_begun();
                self.begin_reclaim(now, board, Then::Restart(cfg));
            }
            (Stage::Running, stop @ (Command::GracefulStop | Command::HandOver)) => {
                let drain_listeners = matches!(stop, Command::GracefulStop);
                self.actions.push_back(if drain_listeners {
                    ParentAction::DrainListeners
                } else {
                    ParentAction::CloseListeners
                });
                self.stop_gates(if drain_listeners { GateStop::Drain } else { GateStop::Finish });
                // Gated children drain the gate's channel in a hand-over too: the gate finishes
                // the heads it holds, and only this pool's children can take them.
                let drain = drain_listeners || self.gate_wanted();
                let timeout = self.config.graceful_shutdown_timeout;
                let timeout = (!timeout.is_zero()).then_some(timeout);
                self.log(ParentLog::GracefulStopping { timeout });
                self.announce(ParentEvent::Stopping { graceful: true });
                self.remaining_to_start = 0;
                // The bit before the marks: a child that sees its `G` also sees that it drains
                // (Release here, Acquire in the child, as for a restart's generation).
                self.stage = Stage::Draining { deadline: timeout.map(|t| now + t), drain };
                self.publish(board);
                self.mark_all_graceful(board);
                self.check_done(now, board);
            }
            (Stage::Running, Command::Stop) | (Stage::Draining { .. }, Command::Stop) => {
                if self.stage == Stage::Running {
                    self.actions.push_back(ParentAction::CloseListeners);
                    self.announce(ParentEvent::Stopping { graceful: false });
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
                self.announce(ParentEvent::Stopping { graceful: false });
                self.log(ParentLog::Stopping);
            }
            (_, Command::Upgrade) => self.begin_upgrade(),
            _ => {
                let phase = self.phase();
                self.log(ParentLog::CommandIgnored { command: name, phase });
            }
        }
    }

    /// Time passed: run the maintenance tick or the next stop-escalation step if due.
    ///
    /// `observed` is what the driver saw just now (the listeners' accept queues, the accept lock's
    /// holder as the kernel knows it): the watchdog's evidence (SPEC.md §7.8).
    pub(crate) fn handle_timeout<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, observed: &Observation) {
        self.seam_publish(board);
        if self.stage == Stage::Running {
            self.check_successor(now);
            self.start_gate(now);
        }
        match &self.stage {
            Stage::Running => {
                if now >= self.next_tick {
                    self.next_tick = now + self.config.maintenance_interval;
                    self.next_look = now + self.config.demand_interval;
                    self.tick(now, board, observed);
                } else if self.looks() && now >= self.next_look {
                    self.next_look = now + self.config.demand_interval;
                    self.look(now, board, observed);
                }
                self.watch(now, board, observed);
            }
            Stage::Reclaiming { started, step, .. } => {
                let (started, step) = (*started, *step);
                self.reclaim_step(now, board, started, step);
            }
            Stage::Draining { deadline, .. } => {
                let timed_out = deadline.is_some_and(|d| now >= d);
                if now >= self.next_tick {
                    self.next_tick = now + self.config.maintenance_interval;
                    // Every child was told to leave: its slot must keep saying so (SPEC.md §7.6).
                    self.checked_view(board, true);
                    self.rewake();
                }
                self.watch(now, board, &Observation::default());
                if timed_out {
                    self.log(ParentLog::GracefulStopTimedOut { remaining: self.live_children() });
                    self.begin_reclaim(now, board, Then::Exit(code::OK));
                }
            }
            _ => {}
        }
    }

    /// A restart's configuration, as far as this parent can apply it (`server_limit` sizes the
    /// board: [`PoolConfig::restrict_to_running`]).
    fn apply_config(&mut self, cfg: PoolConfig) {
        let checked = self.seam_restrict_to_running(cfg);
        for warning in checked.warnings {
            self.log(ParentLog::ConfigAdjusted(warning));
        }
        self.config = checked.value;
    }

    /// Tells every child that has no directive yet to finish up and leave (`G`, written from the
    /// parent's records whatever the slot holds), and wakes it.
    fn mark_all_graceful<T: SlotTable + ?Sized>(&mut self, board: &T) {
        for slot in 0..self.slots(board) {
            let Some(rec) = self.children[slot].as_mut() else { continue };
            if rec.directive.is_some() || rec.killed.is_some() {
                continue;
            }
            let Ok(cell) = board.slot(slot) else { continue };
            cell.put(rec.born.with_state(SlotState::Graceful));
            rec.directive = Some(SlotState::Graceful);
            if let Some(pid) = rec.pid {
                self.seam_wake_told(slot, pid);
            }
        }
    }

    /// One maintenance tick.
    fn tick<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, observed: &Observation) {
        let view = self.checked_view(board, true);
        self.note_health(now, &view);
        self.rewake();
        if self.remaining_to_start > 0 {
            // Apache: the rest of StartServers after a graceful restart, and no maintenance this pass.
            let n = std::mem::take(&mut self.remaining_to_start);
            self.startup(now, board, &view, n);
            return;
        }
        let demand = crate::policy::Demand { waiting: observed.waiting(), now };
        let m = self.policy.maintain(SpareLimits::from(&self.config), &view, self.brake.allows(now), Some(demand));
        if let Some(l) = m.log {
            self.log(ParentLog::Policy(l));
        }
        match self.seam_tick_decision(now, board, &view, m.decision) {
            Decision::Spawn { slots } => {
                for slot in slots {
                    self.spawn(now, board, slot);
                }
            }
            Decision::Retire { candidates } => {
                // The first candidate the claim still finds idle, and only that one.
                for slot in candidates {
                    if self.claim_for_retirement(board, &view, slot) {
                        break;
                    }
                }
            }
            Decision::Steady | Decision::AtMaxRequestWorkers | Decision::SpawnPaused => {}
        }
    }

    /// Claims the idle child in `slot` for retirement (`I`, by compare-and-swap from the word the
    /// view saw: a child that took work meanwhile is not claimed) and wakes it; whether it was.
    fn claim_for_retirement<T: SlotTable + ?Sized>(&mut self, board: &T, view: &ScoreboardView, slot: usize) -> bool {
        let Some(Ok(idle)) = view.slots.get(slot).copied() else {
            return false;
        };
        let Some(Some(rec)) = self.children.get_mut(slot) else {
            return false;
        };
        if rec.directive.is_some() || !board.slot(slot).is_ok_and(|s| s.claim_idle(idle).is_ok()) {
            return false;
        }
        rec.directive = Some(SlotState::IdleKill);
        if let Some(pid) = rec.pid {
            self.actions.push_back(ParentAction::Wake { slot, pid });
        }
        true
    }

    /// Wakes again every child the parent has given a directive (`G`, `I`; by its records, not the
    /// board) and has not killed. A wake-up can be
    /// lost: a signal that interrupts lock waits may land just before the child enters the
    /// blocking call. Repeating it each tick bounds the delay to one tick (SPEC.md §7.1).
    fn rewake(&mut self) {
        let pending: Vec<(usize, Pid)> = self
            .children()
            .filter(|(_, c)| c.directive.is_some() && c.killed.is_none())
            .filter_map(|(slot, c)| Some((slot, c.pid?)))
            .collect();
        for (slot, pid) in pending {
            self.seam_wake_told(slot, pid);
        }
    }

    /// Kills the child `pid` in `slot` while the pool runs (the watchdog; a slot damaged again),
    /// and counts it. It is not reaped yet: its record says why it was killed until it is.
    fn kill(&mut self, slot: usize, pid: Pid, reason: KillReason) {
        if let Some(rec) = self.children.get_mut(slot).and_then(Option::as_mut) {
            rec.killed = Some(reason);
        }
        match reason {
            KillReason::Stalled(crate::exit::Stall::AcceptLock { .. }) => self.stats.killed_accept_lock += 1,
            KillReason::Stalled(crate::exit::Stall::Request { .. }) => self.stats.killed_request_deadline += 1,
            KillReason::SlotDamaged => self.stats.killed_slot_damaged += 1,
        }
        if let Some(last) = self.stats.last_kills.get_mut(slot) {
            *last = Some((pid, reason));
        }
        self.actions.push_back(ParentAction::Signal(Signal {
            slot,
            pid,
            signal: KillSignal::Kill,
            reason: Some(reason),
        }));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawPoolConfig;
    use crate::scoreboard::MemoryBoard;
    use std::cell::Cell;

    /// A slot's incarnation counter is the parent's, and wraps at 24 bits.
    #[test]
    fn incarnations_come_from_the_parents_counter_and_wrap() {
        let raw = RawPoolConfig { start_servers: Some(1), server_limit: Some(2), ..Default::default() };
        let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(2);
        board.slot_word(0).set(SlotWord { state: SlotState::Dead, incarnation: 77, generation: 0 }.encode());
        let mut parent = Parent::new(PoolConfig::from_raw(&raw).unwrap().value);
        parent.incarnations[0] = INCARNATION_MASK;
        parent.start(Time::ZERO, &board);
        let born = std::iter::from_fn(|| parent.poll_action()).find_map(|a| match a {
            ParentAction::Spawn(Spawn { slot: 0, born, .. }) => Some(born),
            _ => None,
        });
        assert_eq!(born.map(|b| b.incarnation), Some(0), "the counter wraps; the word's 77 is ignored");
    }

    /// Counters never change a decision: parents that differ only in them compare and hash equal
    /// (the model checkers' state space stays the protocol's).
    #[test]
    fn the_counters_take_no_part_in_comparing_parents() {
        use std::hash::{BuildHasher, RandomState};
        let parent = Parent::new(PoolConfig::from_raw(&RawPoolConfig::default()).unwrap().value);
        let mut counted = parent.clone();
        counted.stats.spawned = 5;
        counted.stats.slots_repaired = 9;
        assert_eq!(parent, counted);
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(&parent), hasher.hash_one(&counted));
        assert_eq!(counted.stats().spawned, 5);
    }
}
