//! An explicit-state model of a whole prefork system, for stateright (SPEC.md §11).
//!
//! The state holds the core's own machines: the real [`Parent`], a real [`ChildLoop`] per child
//! process, and the scoreboard words. Every action runs real core code on a [`CellBoard`] loaded
//! from the state and saves the words back. What the model adds is only the *platform*: processes
//! that start, block, crash and get signalled; two listen queues; clients; an accept lock with the
//! kernel's release-on-exit semantics (or, for a negative test, without); the operator's commands;
//! and the passing of time. Events are budgeted (ticks, connections, crashes, commands), which makes
//! the state space finite so stateright can visit every reachable state.
//!
//! Each action is one atomic step. A process can crash between any two of its steps, and the parent
//! and the clients interleave with them in every possible order.

use crate::words::{BoardWords, CellBoard};
use prefork_core::child::{AfterRelease, ChildAction, ChildEvent, ChildLoop, ChildPhase};
use prefork_core::config::PoolConfig;
use prefork_core::driver::ParentDriver;
use prefork_core::exit::{ExitReason, ExitStatus, KillReason, Stall};
use prefork_core::parent::{Command, KillSignal, Observation, Parent, Phase, Pid, QueueDepth, Signal, Spawn};
use prefork_core::scoreboard::{ChildSlot, ScoreboardView};
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{Side, SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_core::witness::{Breach, SimulatedPlatform, Witness, Witnessed};
use stateright::{Model, Property};
use std::time::Duration;

/// How soon after its fork a crash counts towards the crash-loop brake (SPEC.md §7.7).
const EARLY_EXIT: Duration = Duration::from_secs(2);

/// When a stop or hard restart signals its children, counted from its first signal (SPEC.md
/// §7.5, I15): SIGTERM at 0, 3, 5 and 7 s, SIGKILL at 9 s.
const LADDER_TERM_AT: [u64; 4] = [0, 3, 5, 7];
/// See [`LADDER_TERM_AT`].
const LADDER_KILL_AT: u64 = 9;

/// How many events of each kind may still happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Parent timeouts (maintenance ticks and stop-escalation steps).
    pub ticks: u8,
    /// Client connections.
    pub connections: u8,
    /// Child crashes (at any step, including while holding the lock or a connection).
    pub crashes: u8,
    /// Operator commands.
    pub commands: u8,
    /// Child stalls: a process that stops taking steps for ever, at any point of its loop (holding
    /// the accept lock, waiting for it, busy with a connection, idle). Only SIGKILL ends it.
    pub stalls: u8,
    /// Timeouts the parent may still take once every other budget is used up: time that goes on
    /// passing after the run's last event, so that a recovery that needs time (the watchdog, a
    /// respawn, the stop ladder) can happen after it.
    pub grace: u8,
    /// fork() failures: each makes the next fork the parent asks for fail (EAGAIN).
    pub fork_failures: u8,
    /// Scribbles: a child (any process of the pool) writes a value of its choosing into any word
    /// of the shared memory, at any step (SPEC.md §14).
    pub scribbles: u8,
}

impl Budget {
    /// A budget of `ticks` timeouts, `connections`, `crashes` and `commands`, without stalls.
    pub const fn new(ticks: u8, connections: u8, crashes: u8, commands: u8) -> Self {
        Budget { ticks, connections, crashes, commands, stalls: 0, grace: 0, fork_failures: 0, scribbles: 0 }
    }

    /// May a grace timeout happen now (every other event used up)?
    pub fn grace_due(&self) -> bool {
        self.grace > 0
            && self.ticks == 0
            && self.connections == 0
            && self.crashes == 0
            && self.commands == 0
            && self.stalls == 0
            && self.fork_failures == 0
            && self.scribbles == 0
    }
}

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// SIGUSR1.
    GracefulRestart,
    /// SIGHUP.
    HardRestart,
    /// SIGWINCH.
    GracefulStop,
    /// SIGTERM.
    Stop,
}

/// A word of the shared memory a scribbling child overwrites, and with what. The values are the
/// classes the parent must tell apart (SPEC.md §7.6): garbage, an empty word, a plausible word of
/// the slot's own child in a state it did not reach, another child's word; a decoy pid; a moved
/// generation; an activity word that claims everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scribble {
    /// Slot `slot`'s word becomes `value`.
    Slot(u8, SlotGarbage),
    /// Slot `slot`'s activity word becomes all ones (holds the lock, counters at their maximum).
    Activity(u8),
    /// Slot `slot`'s pid word names [`DECOY_PID`], a process that is not a child.
    Pid(u8),
    /// The running-generation word moves one ahead.
    Generation,
}

/// What a scribble writes into a slot word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotGarbage {
    /// All ones: an invalid state code.
    Corrupt,
    /// All zeros: `Dead`, incarnation 0.
    Zero,
    /// The slot's own incarnation and generation in this state (a forged `_`, `I`, `S`).
    Forged(SlotState),
    /// The slot's word with its incarnation's top bit flipped: another child's word.
    Foreign,
}

/// The pid a scribble writes into a pid word: a process that is not a child (init).
pub const DECOY_PID: u64 = 1;

impl Scribble {
    /// Every scribble of a board of `slots` slots, limited to `kinds`.
    pub fn all(slots: usize, kinds: &[ScribbleKind]) -> Vec<Scribble> {
        let mut out = Vec::new();
        for slot in 0..slots as u8 {
            for kind in kinds {
                match kind {
                    ScribbleKind::SlotWords => out.extend(
                        [
                            SlotGarbage::Corrupt,
                            SlotGarbage::Zero,
                            SlotGarbage::Forged(SlotState::Ready),
                            SlotGarbage::Forged(SlotState::IdleKill),
                            SlotGarbage::Forged(SlotState::Starting),
                            SlotGarbage::Foreign,
                        ]
                        .map(|g| Scribble::Slot(slot, g)),
                    ),
                    ScribbleKind::Activity => out.push(Scribble::Activity(slot)),
                    ScribbleKind::Pids => out.push(Scribble::Pid(slot)),
                    ScribbleKind::Generation => {}
                }
            }
        }
        if kinds.contains(&ScribbleKind::Generation) {
            out.push(Scribble::Generation);
        }
        out
    }

    /// Writes it into `board`.
    pub fn apply(self, board: &mut BoardWords) {
        match self {
            Scribble::Slot(slot, garbage) => {
                let slot = usize::from(slot);
                let now = SlotWord::decode(board.slots[slot]).unwrap_or(SlotWord::EMPTY);
                board.slots[slot] = match garbage {
                    SlotGarbage::Corrupt => u64::MAX,
                    SlotGarbage::Zero => 0,
                    SlotGarbage::Forged(state) => now.with_state(state).encode(),
                    SlotGarbage::Foreign => {
                        SlotWord { incarnation: now.incarnation ^ 0x80_0000, ..now.with_state(SlotState::Ready) }
                            .encode()
                    }
                };
            }
            Scribble::Activity(slot) => board.activity[usize::from(slot)] = u64::MAX,
            Scribble::Pid(slot) => board.pids[usize::from(slot)] = DECOY_PID,
            Scribble::Generation => board.generation = board.generation.wrapping_add(1),
        }
    }
}

/// Which words a model's scribbles may hit (each kind multiplies the state space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScribbleKind {
    /// Slot words, with every [`SlotGarbage`].
    SlotWords,
    /// Activity words.
    Activity,
    /// Pid words.
    Pids,
    /// The running generation.
    Generation,
}

/// The model: the pool configuration, the budgets, the lock's crash semantics, and an optional
/// seeded bug.
#[derive(Clone, Debug)]
pub struct SystemModel {
    /// The pool (its `listen` list sets the number of listeners; 2 listeners put the lock in use).
    pub pool: PoolConfig,
    /// Event budgets.
    pub budget: Budget,
    /// Which commands the operator may issue.
    pub ops: Vec<Op>,
    /// Does the kernel release the accept lock when its holder dies (fcntl, flock, SEM_UNDO, robust
    /// pthread)? `false` models a non-robust lock: a negative test.
    pub robust_lock: bool,
    /// A seeded bug (negative tests).
    pub bug: Option<SeededBug>,
    /// Does a wake-up interrupt a child blocked on the accept lock (the driver contract of
    /// SPEC.md §7.1)? `false` models a driver that only wakes readiness waits: a negative test
    /// (an old child waiting for the lock while an idle new child holds it never exits).
    pub wake_interrupts_lock: bool,
    /// Does the kernel hand a released lock straight to a waiter, which then holds it before it
    /// takes another step (SysV semaphores do: the kernel completes the sleeper's `semop`)? The
    /// waiter may be stalled. `false`: every waiter takes the lock itself when it runs (fcntl,
    /// flock, robust pthread mutexes).
    pub lock_handoff: bool,
    /// Does the driver report the lock's holder as the kernel knows it
    /// ([`Observation::lock_holder`])? `false` is a negative test: with `lock_handoff`, a lock
    /// handed to a stalled waiter is invisible to the watchdog.
    pub kernel_lock_evidence: bool,
    /// The configuration restarts bring (`None`: the running one again). With a lower
    /// `max_request_workers`, children above the new limit drain (I7).
    pub restart_pool: Option<PoolConfig>,
    /// Do children ignore SIGTERM (a handler that does not exit)? Then a stop climbs the whole
    /// ladder: SIGTERM at 0, 3, 5 and 7 s, SIGKILL at 9 s (I15, L3).
    pub children_ignore_term: bool,
    /// The scribbles that may happen (with `budget.scribbles`).
    pub scribbles: Vec<Scribble>,
}

/// One child process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    /// Its pid.
    pub pid: Pid,
    /// Its slot.
    pub slot: usize,
    /// The slot word it was born with.
    pub born: SlotWord,
    /// The core's child loop.
    pub child: ChildLoop,
    /// The action it performs next (`None`: not started yet).
    pub next: Option<ChildAction>,
    /// It holds an accepted connection.
    pub conn: bool,
    /// Its wake channel has been written.
    pub woken: bool,
    /// It stopped taking steps (a stall): only SIGKILL ends it.
    pub stalled: bool,
    /// Since when it holds the accept lock (the model's own record, to judge the watchdog).
    pub lock_since: Option<Time>,
    /// Since when it is busy with its connection (from its work claim).
    pub busy_since: Option<Time>,
    /// When it was forked.
    pub spawned_at: Time,
    /// Since when its slot shows the parent's `G` (told to leave).
    pub graceful_since: Option<Time>,
}

/// An exited child the parent has not reaped yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Zombie {
    /// Its pid.
    pub pid: Pid,
    /// What waitpid() reports.
    pub status: ExitStatus,
    /// The reason it left in its record, if it exited by itself.
    pub reason: Option<ExitReason>,
    /// When it was forked.
    pub spawned_at: Time,
    /// Its generation.
    pub generation: u32,
    /// Its slot.
    pub slot: usize,
}

impl Proc {
    /// Has this child claimed work (accepting, holding or serving a connection)?
    pub fn busy(&self) -> bool {
        self.conn
            || matches!(
                self.child.phase(),
                ChildPhase::Accepting | ChildPhase::Serving | ChildPhase::Releasing(AfterRelease::Serve)
            )
    }
}

/// Things that must never happen; set when they do, checked by the properties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Violations {
    /// A child was spawned in a generation older than the running one.
    pub spawned_old: bool,
    /// A child that had claimed work was killed while the pool was running.
    pub killed_busy: bool,
    /// The parent signalled a child while running (retirement must never use a signal; only the
    /// watchdog kills a running pool's child).
    pub signal_while_running: bool,
    /// The watchdog killed a child that had not held the lock with connections waiting, or been
    /// busy with one request, for its limit.
    pub unjustified_kill: bool,
    /// A spawn made more children live than `max_request_workers` (I7).
    pub spawned_over_limit: bool,
    /// A spawn went into a slot at or above `max_request_workers` (I6).
    pub spawned_above_limit_slot: bool,
    /// A child exited by itself while holding an accepted connection (I11).
    pub dropped_connection: bool,
    /// A child exited by itself while holding the accept lock (I10).
    pub exit_holding_lock: bool,
    /// The child loop or its slot returned an error (an event the loop cannot handle).
    pub protocol_error: bool,
    /// A child wrote its slot outside its side of the transition table (I1, I2).
    pub illegal_child_write: bool,
    /// A child overwrote a parent directive (`G`, `I`) (I3).
    pub directive_overwritten: bool,
    /// A stop or hard restart signalled a child off Apache's ladder (I15).
    pub off_the_ladder: bool,
    /// A fork came before the back-off after a fork failure, or the crash-loop pause, was over
    /// (I16).
    pub forked_too_soon: bool,
    /// The parent signalled a process it did not fork, or one it has reaped (I29).
    pub signalled_stranger: bool,
    /// The parent panicked (I30).
    pub parent_panicked: bool,
    /// The parent's lifecycle events came out of order, or disagree with its phase (I31).
    pub lifecycle_out_of_order: bool,
    /// In a graceful stop, the last child holding the listeners left by itself with connections
    /// still queued: the kernel resets them (I32).
    pub drain_dropped: bool,
}

impl Violations {
    /// Notes what the shared [`Witness`] found, as the property that names its invariant.
    fn note(&mut self, breach: &Breach) {
        let flag = match breach.invariant {
            "I6" => &mut self.spawned_above_limit_slot,
            "I7" => &mut self.spawned_over_limit,
            "I13" => &mut self.spawned_old,
            "I29" => &mut self.signalled_stranger,
            "I31" => &mut self.lifecycle_out_of_order,
            other => unreachable!("the witness names no invariant {other}"),
        };
        *flag = true;
    }
}

/// The whole system: the parent (with the driver contract) and everything else.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysState {
    /// The core's parent, driven as every driver drives it.
    pub driver: ParentDriver,
    /// Processes, sockets, lock, clock, counters: the platform.
    pub world: World,
}

/// Everything but the parent: the platform the parent's effects happen on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    /// The shared memory: generation, slot, activity and pid words.
    pub words: BoardWords,
    /// Live child processes, in pid order.
    pub procs: Vec<Proc>,
    /// Connections waiting in each listen queue.
    pub queues: Vec<u8>,
    /// The listeners are open.
    pub listening: bool,
    /// The listeners take new connections (until a graceful stop's `DrainListeners`: then they
    /// keep their queues and close when the last child leaves).
    pub admitting: bool,
    /// Who holds the accept lock.
    pub lock_holder: Option<Pid>,
    /// The lock's holder died and the lock was not released (non-robust lock).
    pub lock_orphaned: bool,
    /// Exited children not yet reaped.
    pub zombies: Vec<Zombie>,
    /// The clock.
    pub now: Time,
    /// The next pid to hand out.
    pub next_pid: Pid,
    /// What may still happen.
    pub budget: Budget,
    /// Connections accepted.
    pub accepted: u8,
    /// Connections served to the end.
    pub served: u8,
    /// Connections lost with the child that held them (crash or kill).
    pub lost: u8,
    /// Connections reset because the listeners closed.
    pub refused: u8,
    /// Connections a child took while draining a graceful stop.
    pub drained: u8,
    /// Children the watchdog killed.
    pub watchdog_kills: u8,
    /// Children that exited because they were retired.
    pub retired: u8,
    /// The kernel released the lock of a holder that died.
    pub lock_freed_by_death: bool,
    /// ... and another child took it afterwards.
    pub lock_recovered: bool,
    /// The parent exited with this code.
    pub exit_code: Option<i32>,
    /// The next fork fails.
    pub fork_broken: bool,
    /// Fork failures in a row, and the earliest time the next fork may happen after the last one
    /// (1, 2, 4, 8, 10 s: I16).
    pub fork_failures_in_row: u8,
    /// See `fork_failures_in_row`.
    pub fork_retry_at: Option<Time>,
    /// Current-generation children that crashed within 2 s of their fork, in a row (no healthy
    /// child seen at a tick since), and the end of the crash-loop pause they call for (I16).
    pub early_crashes: u8,
    /// See `early_crashes`.
    pub crash_pause_until: Option<Time>,
    /// Forks that failed and a fork that succeeded after one.
    pub fork_recovered: bool,
    /// When the running stop or hard restart sent its first signal (the ladder's 0 s).
    pub reclaim_started: Option<Time>,
    /// The operator asked for a stop (SIGTERM).
    pub stop_requested: bool,
    /// SIGKILLs sent by a stop or restart.
    pub ladder_kills: u8,
    /// Children that left after `max_connections_per_child`.
    pub recycled: u8,
    /// Words a child wrote outside the protocol so far (the scribble fault).
    pub scribbles: u8,
    /// Scribbled since the parent's last maintenance tick (which repairs the board).
    pub dirty: bool,
    /// A child was forked after a scribble.
    pub forked_after_scribble: bool,
    /// An activity word was scribbled: the watchdog may act on it (it may kill the slot's child,
    /// never anyone else), so its kills are no longer judged by the model's own record (I27).
    pub activity_scribbled: bool,
    /// The rules every effect is held to (I6, I7, I13, I29, I31), shared by every simulated world.
    pub witness: Witness,
    /// Things that must never happen.
    pub violations: Violations,
}

impl std::ops::Deref for SysState {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl std::ops::DerefMut for SysState {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

impl SysState {
    /// The parent.
    pub fn parent(&self) -> &Parent {
        self.driver.parent()
    }

    /// The snapshot of the board in this state.
    pub fn view(&self) -> ScoreboardView {
        ScoreboardView::capture(&CellBoard::load(&self.words))
    }

    /// The pool is full again: `min_spare_servers` idle children on the board, or
    /// `max_request_workers` live ones (what L2 and L5 ask for at the end of a run).
    pub fn pool_refilled(&self) -> bool {
        let (counts, cfg) = (self.view().counts(), self.parent().config());
        counts.idle() >= cfg.min_spare_servers as usize || counts.live() >= cfg.max_request_workers as usize
    }
}

/// A step of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The parent's next timeout fires (maintenance tick or stop-escalation step).
    Tick,
    /// SIGCHLD: the parent reaps the oldest exited child.
    Reap,
    /// Child `pid` performs its next action and gets the result (start, lock, readiness, accept,
    /// release, serve).
    Step(Pid),
    /// Child `pid`'s wake channel was written: its readiness wait returns `Woken`, or its blocked
    /// lock acquisition returns `LockInterrupted`.
    Woken(Pid),
    /// Child `pid` crashes here.
    Crash(Pid),
    /// Child `pid` stops taking steps, for ever (stopped, traced, stuck in the kernel).
    Stall(Pid),
    /// A client connects to listener `l`.
    Connect(u8),
    /// The operator's command.
    Command(Op),
    /// The next fork fails (EAGAIN: a process limit, memory).
    ForkFailure,
    /// A child writes outside the protocol.
    Scribble(Scribble),
}

impl SystemModel {
    /// The small pool the checks use: 3 slots, `start_servers` 3, `min_spare_servers` 1,
    /// `max_spare_servers` 2 (so both retirement and spawning happen), on 1 or 2 listeners
    /// (2 listeners put the accept lock in use).
    pub fn small_pool(listeners: usize) -> PoolConfig {
        crate::pool(listeners, 3, 1, 2, 3)
    }

    /// A model with these settings and no bug.
    pub fn new(pool: PoolConfig, budget: Budget, ops: Vec<Op>) -> Self {
        SystemModel {
            pool,
            budget,
            ops,
            robust_lock: true,
            bug: None,
            wake_interrupts_lock: true,
            lock_handoff: false,
            kernel_lock_evidence: true,
            restart_pool: None,
            children_ignore_term: false,
            scribbles: vec![],
        }
    }

    /// The configuration generation `generation` runs with (restarts bring `restart_pool`).
    pub fn config_of(&self, generation: u32) -> &PoolConfig {
        match &self.restart_pool {
            Some(pool) if generation > 0 => pool,
            _ => &self.pool,
        }
    }

    /// Feeds the parent one input through the driver; its effects happen on this model's platform.
    fn drive(
        &self,
        s: &mut SysState,
        input: impl FnOnce(&mut ParentDriver, Time, &CellBoard, &mut Witnessed<ModelPlatform<'_>>) -> Option<i32>,
    ) {
        let board = CellBoard::load(&s.world.words);
        let now = s.world.now;
        let mut platform = Witnessed(ModelPlatform { model: self, world: &mut s.world });
        let driver = &mut s.driver;
        // I30: whatever the board holds, the parent never panics (a panic is a violation here, so
        // that stateright reports the path to it).
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input(driver, now, &board, &mut platform))) {
            Ok(Some(code)) => s.world.exit_code = Some(code),
            Ok(None) => {}
            Err(_) => s.world.violations.parent_panicked = true,
        }
        s.world.words = board.save();
        self.after_input(s);
    }

    /// What is checked and noted after each input: the lifecycle agrees with the parent (I31), the
    /// ladder's and the grace deadlines' clocks.
    fn after_input(&self, s: &mut SysState) {
        let phase = s.parent().phase();
        if let Err(b) = s.world.witness.after_input(phase) {
            s.world.violations.note(&b);
        }
        if !matches!(phase, Phase::Stopping | Phase::Restarting) {
            s.world.reclaim_started = None;
        }
        let now = s.world.now;
        let board = s.world.words.slots.clone();
        for p in &mut s.world.procs {
            let marked = SlotWord::decode(board[p.slot]).is_ok_and(|w| w.state == SlotState::Graceful);
            p.graceful_since = if marked { p.graceful_since.or(Some(now)) } else { None };
        }
    }

    /// Records that process `p` ended with `status` (`reason`: it exited by itself).
    fn bury(s: &mut World, p: &Proc, status: ExitStatus, reason: Option<ExitReason>) {
        let zombie = Zombie {
            pid: p.pid,
            status,
            reason,
            spawned_at: p.spawned_at,
            generation: p.born.generation,
            slot: p.slot,
        };
        s.zombies.push(zombie);
    }

    /// Process `i` ends abnormally (crash or signal): what it held is lost, the lock is released if
    /// the kernel releases it.
    fn die(&self, s: &mut World, i: usize, status: ExitStatus) {
        let p = s.procs.remove(i);
        if p.conn {
            s.lost += 1;
        }
        if s.lock_holder == Some(p.pid) {
            if self.robust_lock {
                s.lock_holder = None;
                s.lock_freed_by_death = true;
                self.hand_off(s);
            } else {
                s.lock_orphaned = true;
            }
        }
        Self::bury(s, &p, status, None);
        Self::let_go(s, false);
    }

    /// A process left. After a graceful stop's `DrainListeners` the parent holds no listener, so
    /// the sockets close with the last child: what they still queue is reset. If that child left
    /// by itself (`by_itself`; not a crash or a kill), it left work behind (I32).
    fn let_go(s: &mut World, by_itself: bool) {
        if s.listening && !s.admitting && s.procs.is_empty() {
            let queued = s.queues.iter().sum::<u8>();
            s.violations.drain_dropped |= by_itself && queued > 0;
            s.listening = false;
            s.refused += queued;
            s.queues.iter_mut().for_each(|q| *q = 0);
        }
    }

    /// The lock was just released: with `lock_handoff`, the kernel gives it to the first waiter
    /// (stalled or not), which holds it from now on.
    fn hand_off(&self, s: &mut World) {
        let now = s.now;
        if self.lock_handoff
            && s.lock_holder.is_none()
            && let Some(p) = s.procs.iter_mut().find(|p| p.next == Some(ChildAction::AcquireLock))
        {
            s.lock_holder = Some(p.pid);
            p.lock_since = Some(now);
        }
    }

    /// Feeds `event` to process `i` and applies the action it returns. Everything the child
    /// writes is checked here: its slot word may only move along a row of the child's side of
    /// the transition table, never away from a parent directive (I1-I3); an error from the loop
    /// is a violation, not an exit.
    fn feed(&self, s: &mut SysState, i: usize, event: ChildEvent<'_>) {
        let s = &mut s.world;
        let board = CellBoard::load(&s.words);
        let p = &mut s.procs[i];
        let before = s.words.slots[p.slot];
        let action = ChildSlot::attach(&board, p.slot, p.born)
            .map_err(|_| ())
            .and_then(|slot| p.child.handle(event, &slot).map_err(|_| ()))
            .unwrap_or_else(|()| {
                s.violations.protocol_error = true;
                ChildAction::Exit(ExitReason::ProtocolError)
            });
        s.words = board.save();
        let after = s.words.slots[p.slot];
        if before != after {
            match (SlotWord::decode(before), SlotWord::decode(after)) {
                (Ok(b), _) if b.state.is_directive() => s.violations.directive_overwritten = true,
                (Ok(b), Ok(a))
                    if a.incarnation == b.incarnation
                        && prefork_core::slot::is_legal(Side::Child, b.state, a.state) => {}
                _ => s.violations.illegal_child_write = true,
            }
        }
        p.next = Some(action);
        p.lock_since = if p.child.holds_lock() { p.lock_since.or(Some(s.now)) } else { None };
        p.busy_since = if p.busy() { p.busy_since.or(Some(s.now)) } else { None };
        if let ChildAction::Exit(reason) = action {
            let p = s.procs.remove(i);
            if s.lock_holder == Some(p.pid) {
                // The kernel releases it at exit, but the loop must have released it first.
                s.violations.exit_holding_lock = true;
                s.lock_holder = None;
                self.hand_off(s);
            }
            if p.conn {
                s.violations.dropped_connection = true;
            }
            match reason {
                ExitReason::Retired => s.retired += 1,
                ExitReason::MaxConnections => s.recycled += 1,
                _ => {}
            }
            Self::bury(s, &p, ExitStatus::Code(reason.exit_code()), Some(reason));
            Self::let_go(s, true);
        }
    }

    /// May a grace timeout happen now? Every other event is used up, or (connections, commands)
    /// can no longer happen.
    fn grace_due(&self, s: &SysState) -> bool {
        let mut left = s.budget;
        if !s.listening || !s.admitting || s.exit_code.is_some() {
            left.connections = 0;
        }
        if self.ops.is_empty() || s.exit_code.is_some() {
            left.commands = 0;
        }
        // A stopping parent spawns no more children: once only stalled ones are left, no crash or
        // stall can happen any more.
        let spawns_ended = matches!(s.parent().phase(), Phase::Stopping | Phase::Draining | Phase::Exited);
        if spawns_ended && s.procs.iter().all(|p| p.stalled) {
            left.crashes = 0;
            left.stalls = 0;
        }
        left.grace_due()
    }

    fn ready_listeners(s: &SysState) -> Vec<usize> {
        if !s.listening {
            return vec![];
        }
        (0..s.queues.len()).filter(|&l| s.queues[l] > 0).collect()
    }

    /// Would a wake-up end what process `p` waits for (a readiness wait, or a lock wait the kernel
    /// has not completed yet: a handed-off lock is held, not waited for)?
    fn wakeable(&self, s: &SysState, p: &Proc) -> bool {
        match p.next {
            Some(ChildAction::Wait) => true,
            Some(ChildAction::AcquireLock) => self.wake_interrupts_lock && s.lock_holder != Some(p.pid),
            _ => false,
        }
    }

    /// Can process `p` take a `Step` now (or is it blocked)?
    fn can_step(s: &SysState, p: &Proc) -> bool {
        if p.stalled {
            return false;
        }
        match p.next {
            None => true,
            Some(ChildAction::AcquireLock) => {
                (s.lock_holder.is_none() || s.lock_holder == Some(p.pid)) && !s.lock_orphaned
            }
            Some(ChildAction::Wait) => !Self::ready_listeners(s).is_empty(),
            Some(ChildAction::Exit(_)) => false,
            Some(_) => true,
        }
    }
}

/// Has the run ended (no action possible)?
pub fn terminal(m: &SystemModel, s: &SysState) -> bool {
    let mut actions = Vec::new();
    m.actions(s, &mut actions);
    actions.is_empty()
}

impl Model for SystemModel {
    type State = SysState;
    type Action = Action;

    fn init_states(&self) -> Vec<SysState> {
        let listeners = self.pool.listen.len();
        let mut parent = Parent::new(self.pool.clone());
        crate::seeded::seed_parent(&mut parent, self.bug);
        let mut world = World {
            words: BoardWords::new(self.pool.server_limit as usize),
            procs: vec![],
            queues: vec![0; listeners],
            listening: true,
            admitting: true,
            lock_holder: None,
            lock_orphaned: false,
            zombies: vec![],
            now: Time::ZERO,
            next_pid: 100,
            budget: self.budget,
            accepted: 0,
            served: 0,
            lost: 0,
            refused: 0,
            drained: 0,
            watchdog_kills: 0,
            retired: 0,
            lock_freed_by_death: false,
            lock_recovered: false,
            exit_code: None,
            fork_broken: false,
            fork_failures_in_row: 0,
            fork_retry_at: None,
            early_crashes: 0,
            crash_pause_until: None,
            fork_recovered: false,
            reclaim_started: None,
            stop_requested: false,
            ladder_kills: 0,
            recycled: 0,
            scribbles: 0,
            dirty: false,
            activity_scribbled: false,
            forked_after_scribble: false,
            witness: Witness::new(&self.pool),
            violations: Violations::default(),
        };
        let board = CellBoard::load(&world.words);
        let driver = ParentDriver::start(
            parent,
            Time::ZERO,
            &board,
            &mut Witnessed(ModelPlatform { model: self, world: &mut world }),
        );
        world.words = board.save();
        let mut s = SysState { driver, world };
        self.after_input(&mut s);
        vec![s]
    }

    fn actions(&self, s: &SysState, actions: &mut Vec<Action>) {
        let parent_alive = s.exit_code.is_none();
        // Grace time passes only once every live, non-stalled process has done what it can (the
        // synchronous assumption of SPEC.md §7.8: a running child is faster than the watchdog's
        // limit); the `ticks` budget lets time pass anywhere else, to explore the races.
        let quiescent =
            || s.procs.iter().filter(|p| !p.stalled).all(|p| !(Self::can_step(s, p) || p.woken && self.wakeable(s, p)));
        if parent_alive
            && (s.budget.ticks > 0 || (self.grace_due(s) && s.zombies.is_empty() && quiescent()))
            && s.driver.poll_timeout().is_some()
        {
            actions.push(Action::Tick);
        }
        if parent_alive && !s.zombies.is_empty() {
            actions.push(Action::Reap);
        }
        let wakeable = |p: &Proc| self.wakeable(s, p);
        for p in &s.procs {
            if Self::can_step(s, p) {
                actions.push(Action::Step(p.pid));
            }
            // The driver contract (SPEC.md §7.1): a wake-up interrupts a readiness wait *and* a
            // blocked lock acquisition.
            if p.woken && wakeable(p) && !p.stalled {
                actions.push(Action::Woken(p.pid));
            }
            if s.budget.crashes > 0 && !p.stalled {
                actions.push(Action::Crash(p.pid));
            }
            if s.budget.stalls > 0 && !p.stalled {
                actions.push(Action::Stall(p.pid));
            }
        }
        if parent_alive && s.listening && s.admitting && s.budget.connections > 0 {
            for l in 0..s.queues.len() {
                actions.push(Action::Connect(l as u8));
            }
        }
        if parent_alive && s.budget.commands > 0 {
            actions.extend(self.ops.iter().map(|&op| Action::Command(op)));
        }
        if parent_alive && s.budget.fork_failures > 0 && !s.fork_broken {
            actions.push(Action::ForkFailure);
        }
        if parent_alive && s.budget.scribbles > 0 {
            actions.extend(self.scribbles.iter().map(|&w| Action::Scribble(w)));
        }
    }

    fn next_state(&self, last: &SysState, action: Action) -> Option<SysState> {
        let mut s = last.clone();
        match action {
            Action::Tick => {
                if s.budget.ticks > 0 {
                    s.budget.ticks -= 1;
                } else {
                    s.budget.grace -= 1;
                }
                s.now = s.now.max(s.driver.poll_timeout()?);
                // A healthy child (current generation, 2 s old, ready or busy) ends a crash loop
                // at a tick (SPEC.md §7.7). A child that died but is not reaped yet still looks
                // healthy on the board, and the parent cannot know better.
                let view = s.view();
                let generation = s.parent().generation();
                let healthy = |slot: usize, born_in: u32, spawned_at: Time| {
                    born_in == generation
                        && s.now.since(spawned_at) >= EARLY_EXIT
                        && view.state(slot).is_some_and(|st| st == SlotState::Ready || st.is_busy())
                };
                if s.procs.iter().any(|p| healthy(p.slot, p.born.generation, p.spawned_at))
                    || s.zombies.iter().any(|z| healthy(z.slot, z.generation, z.spawned_at))
                {
                    s.early_crashes = 0;
                }
                let repairs = s.parent().phase() == Phase::Running && s.now >= s.parent().next_tick();
                self.drive(&mut s, |driver, now, board, platform| driver.handle_timeout(now, board, platform));
                // A maintenance tick checks every slot against the records and repairs it.
                s.dirty &= !repairs;
            }
            Action::Reap => {
                let z = s.zombies.remove(0);
                // The crash-loop brake (SPEC.md §7.7): the third early crash of a current-generation
                // child in a row pauses forks for 1 s, each further one doubles it, up to 64 s.
                if z.status == ExitStatus::Signaled(11)
                    && z.generation == s.parent().generation()
                    && s.parent().phase() == Phase::Running
                    && s.now.since(z.spawned_at) < EARLY_EXIT
                {
                    s.early_crashes += 1;
                    if let Some(over) = s.early_crashes.checked_sub(3) {
                        let pause = std::time::Duration::from_secs(1 << over.min(6));
                        s.crash_pause_until = Some(s.now + pause);
                    }
                }
                s.world.witness.reaped(z.pid);
                self.drive(&mut s, |driver, now, board, platform| {
                    driver.handle_child_exit(now, z.pid, z.status, z.reason, board, platform)
                });
            }
            Action::ForkFailure => {
                s.budget.fork_failures -= 1;
                s.fork_broken = true;
            }
            Action::Scribble(what) => {
                s.budget.scribbles -= 1;
                s.scribbles += 1;
                s.dirty = true;
                s.activity_scribbled |= matches!(what, Scribble::Activity(_));
                what.apply(&mut s.world.words);
            }
            Action::Crash(pid) => {
                s.budget.crashes -= 1;
                let i = s.procs.iter().position(|p| p.pid == pid)?;
                self.die(&mut s.world, i, ExitStatus::Signaled(11)); // a crash (SIGSEGV): it feeds the brake
            }
            Action::Stall(pid) => {
                s.budget.stalls -= 1;
                s.procs.iter_mut().find(|p| p.pid == pid)?.stalled = true;
            }
            Action::Connect(l) => {
                s.budget.connections -= 1;
                s.queues[l as usize] += 1;
            }
            Action::Command(op) => {
                s.budget.commands -= 1;
                let cfg = Box::new(self.restart_pool.clone().unwrap_or_else(|| s.parent().config().clone()));
                s.stop_requested |= op == Op::Stop;
                let command = match op {
                    Op::GracefulRestart => Command::GracefulRestart(cfg),
                    Op::HardRestart => Command::HardRestart(cfg),
                    Op::GracefulStop => Command::GracefulStop,
                    Op::Stop => Command::Stop,
                };
                self.drive(&mut s, |driver, now, board, platform| driver.handle_command(now, command, board, platform));
            }
            Action::Woken(pid) => {
                let i = s.procs.iter().position(|p| p.pid == pid)?;
                s.procs[i].woken = false;
                let event = if s.procs[i].next == Some(ChildAction::AcquireLock) {
                    ChildEvent::LockInterrupted
                } else {
                    ChildEvent::Woken
                };
                self.feed(&mut s, i, event);
            }
            Action::Step(pid) => {
                let i = s.procs.iter().position(|p| p.pid == pid)?;
                let p = &s.procs[i];
                match p.next {
                    None => self.feed(&mut s, i, ChildEvent::Started),
                    Some(ChildAction::AcquireLock) => {
                        if (s.lock_holder.is_some() && s.lock_holder != Some(pid)) || s.lock_orphaned {
                            return None;
                        }
                        s.lock_holder = Some(pid);
                        s.lock_recovered |= s.lock_freed_by_death;
                        self.feed(&mut s, i, ChildEvent::LockAcquired);
                    }
                    Some(ChildAction::Wait) => {
                        let ready = Self::ready_listeners(&s);
                        if ready.is_empty() {
                            return None;
                        }
                        self.feed(&mut s, i, ChildEvent::Readable(&ready));
                    }
                    Some(ChildAction::Accept { listener }) => {
                        if s.listening && s.queues[listener] > 0 {
                            s.queues[listener] -= 1;
                            s.accepted += 1;
                            s.drained += u8::from(s.procs[i].child.draining());
                            s.procs[i].conn = true;
                            self.feed(&mut s, i, ChildEvent::Accepted);
                        } else {
                            self.feed(&mut s, i, ChildEvent::AcceptEmpty);
                        }
                    }
                    Some(ChildAction::ReleaseLock) => {
                        if s.lock_holder == Some(pid) {
                            s.lock_holder = None;
                            self.hand_off(&mut s.world);
                        }
                        self.feed(&mut s, i, ChildEvent::LockReleased);
                    }
                    Some(ChildAction::Serve) => {
                        s.procs[i].conn = false;
                        s.served += 1;
                        self.feed(&mut s, i, ChildEvent::ConnectionDone);
                    }
                    Some(ChildAction::Exit(_)) => return None,
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            // Safety (SPEC.md §9).
            Property::always(
                "I10: with the lock in use, at most one child waits and accepts",
                |m: &SystemModel, s: &SysState| {
                    !m.pool.lock_in_use() || s.procs.iter().filter(|p| p.child.in_accept_section()).count() <= 1
                },
            ),
            Property::always(
                "I4: a child that claimed work is never claimed or killed",
                |_: &SystemModel, s: &SysState| {
                    let view = s.view();
                    // A scribble can forge `_` over a busy child, and the parent then claims it
                    // (it finishes its connection and leaves: I11 still holds).
                    !s.violations.killed_busy
                        && (s.scribbles > 0
                            || s.procs.iter().all(|p| {
                                // A retired child draining a graceful stop takes connections
                                // after the claim, without a work claim (SPEC.md §7.5).
                                !p.busy() || p.child.draining() || view.state(p.slot) != Some(SlotState::IdleKill)
                            }))
                },
            ),
            Property::always("I4: retirement never sends a signal", |_: &SystemModel, s: &SysState| {
                !s.violations.signal_while_running
            }),
            Property::always(
                "I27: the watchdog kills only a child that held the lock, or one request, for its limit",
                |_: &SystemModel, s: &SysState| !s.violations.unjustified_kill,
            ),
            Property::always("I13: children are born in the running generation", |_: &SystemModel, s: &SysState| {
                !s.violations.spawned_old
            }),
            Property::always(
                "I7: no spawn makes more children live than max_request_workers",
                |m: &SystemModel, s: &SysState| {
                    !s.violations.spawned_over_limit && s.view().counts().live() <= m.pool.server_limit as usize
                },
            ),
            Property::always(
                "I6: spawns go only into slots below max_request_workers",
                |_: &SystemModel, s: &SysState| !s.violations.spawned_above_limit_slot,
            ),
            Property::always(
                "I1/I2: every write a child makes is a row of its side of the transition table",
                |_: &SystemModel, s: &SysState| !s.violations.illegal_child_write,
            ),
            Property::always("I3: a child never overwrites a parent directive", |_: &SystemModel, s: &SysState| {
                !s.violations.directive_overwritten
            }),
            Property::always("I10: a child releases the lock before it exits", |_: &SystemModel, s: &SysState| {
                !s.violations.exit_holding_lock
            }),
            Property::always(
                "protocol: the child loop never gets an event it cannot handle",
                |_: &SystemModel, s: &SysState| !s.violations.protocol_error,
            ),
            Property::always(
                "I15: a stop sends SIGTERM at 0, 3, 5 and 7 s and SIGKILL at 9 s, nothing else",
                |_: &SystemModel, s: &SysState| !s.violations.off_the_ladder,
            ),
            Property::always(
                "I16: no fork before the fork-failure back-off or the crash-loop pause is over",
                |_: &SystemModel, s: &SysState| !s.violations.forked_too_soon,
            ),
            Property::always("L3: a stop ends within 10 s", |_: &SystemModel, s: &SysState| {
                s.reclaim_started.is_none_or(|t| s.now.since(t) <= Duration::from_secs(10))
            }),
            Property::always("I9/I14: the board agrees with the parent's records", |_: &SystemModel, s: &SysState| {
                let counts = s.view().counts();
                // After a scribble, from the next maintenance tick on.
                s.dirty || (counts.corrupt == 0 && counts.live() == s.parent().live_children())
            }),
            Property::always(
                "I29: the parent signals only its own children, whatever the board says",
                |_: &SystemModel, s: &SysState| !s.violations.signalled_stranger,
            ),
            Property::always(
                "I30: the parent never panics, whatever the board holds",
                |_: &SystemModel, s: &SysState| !s.violations.parent_panicked,
            ),
            Property::always(
                "I31: the lifecycle events come in their order, and Ready only when the pool runs",
                |_: &SystemModel, s: &SysState| !s.violations.lifecycle_out_of_order,
            ),
            Property::always(
                "I11: every accepted connection is served, or lost only with a child that crashed or was killed",
                |_: &SystemModel, s: &SysState| {
                    let holding = s.procs.iter().filter(|p| p.conn).count() as u8;
                    !s.violations.dropped_connection && s.accepted == s.served + s.lost + holding
                },
            ),
            Property::always(
                "I32: a graceful stop serves every queued connection: no child leaves the listeners with work queued",
                |_: &SystemModel, s: &SysState| !s.violations.drain_dropped,
            ),
            Property::always(
                "I10: no child waits forever on a lock whose holder died",
                |_: &SystemModel, s: &SysState| {
                    !(s.lock_orphaned && s.procs.iter().any(|p| p.next == Some(ChildAction::AcquireLock)))
                },
            ),
            // Liveness. Stateright's `eventually P` is met as soon as P holds anywhere on a path, so
            // each condition here can only be true in a terminal state (no action left: the budgets
            // make every run end, and there are no cycles): every complete run must *end* with P.
            Property::eventually(
                "L: every pending connection is taken while a live, non-stalled child can take it",
                |m: &SystemModel, s: &SysState| {
                    terminal(m, s)
                        && (s.queues.iter().all(|&q| q == 0)
                            || !s.listening
                            || s.exit_code.is_some()
                            || s.procs.iter().all(|p| p.stalled))
                },
            ),
            Property::eventually("L1: an old generation disappears", |m: &SystemModel, s: &SysState| {
                terminal(m, s)
                    && (s.exit_code.is_some()
                        || s.procs.iter().all(|p| p.born.generation == s.parent().generation() || p.stalled))
            }),
            Property::eventually(
                "L2: after a crash, a kill or a failed fork the pool returns to min_spare_servers idle children",
                |m: &SystemModel, s: &SysState| {
                    // A run can also end with a crash or a stall unused, when no child is left to
                    // take it: its grace time (which waits for every fault) never began. The runs
                    // that did use every fault are judged.
                    terminal(m, s)
                        && (s.parent().phase() != Phase::Running
                            || s.budget.crashes > 0
                            || s.budget.stalls > 0
                            // The brake delays it (bounded by I16).
                            || !s.parent().brake().allows(s.now)
                            || s.pool_refilled())
                },
            ),
            Property::eventually("L3: a stop ends", |m: &SystemModel, s: &SysState| {
                terminal(m, s) && (!s.stop_requested || s.exit_code.is_some())
            }),
            Property::eventually(
                "L5: after the last scribble, the pool is back to min_spare_servers idle children within the grace ticks",
                |m: &SystemModel, s: &SysState| {
                    // No exemption for the brake: scribbles must never engage it.
                    terminal(m, s)
                        && (s.scribbles == 0
                            || s.budget.scribbles > 0
                            || s.parent().phase() != Phase::Running
                            || s.pool_refilled())
                },
            ),
            // Examples that must exist: a model that cannot reach these proves nothing.
            Property::sometimes("example: a connection is served", |_: &SystemModel, s: &SysState| s.served > 0),
            Property::sometimes(
                "example: a graceful stop serves a connection queued before it",
                |_: &SystemModel, s: &SysState| s.drained > 0 && s.exit_code.is_some(),
            ),
            Property::sometimes("example: a child is forked after a scribble", |_: &SystemModel, s: &SysState| {
                s.forked_after_scribble
            }),
            Property::sometimes("example: an idle child is retired", |_: &SystemModel, s: &SysState| s.retired > 0),
            Property::sometimes("example: a graceful restart completes", |_: &SystemModel, s: &SysState| {
                s.parent().generation() > 0 && !s.procs.is_empty() && s.procs.iter().all(|p| p.born.generation > 0)
            }),
            Property::sometimes("example: the parent exits", |_: &SystemModel, s: &SysState| s.exit_code.is_some()),
            Property::sometimes("example: a dead holder's lock is taken again", |_: &SystemModel, s: &SysState| {
                s.lock_recovered
            }),
            Property::sometimes("example: the watchdog kills a stalled child", |_: &SystemModel, s: &SysState| {
                s.watchdog_kills > 0
            }),
            Property::sometimes(
                "example: a child recycles after max_connections_per_child",
                |_: &SystemModel, s: &SysState| s.recycled > 0,
            ),
            Property::sometimes("example: a fork fails and a later one succeeds", |_: &SystemModel, s: &SysState| {
                s.fork_recovered
            }),
            Property::sometimes("example: the crash-loop brake pauses forks", |_: &SystemModel, s: &SysState| {
                s.crash_pause_until.is_some_and(|t| s.now < t)
            }),
            Property::sometimes("example: a stop climbs the ladder to SIGKILL", |_: &SystemModel, s: &SysState| {
                s.ladder_kills > 0
            }),
            Property::sometimes("example: a second restart completes", |_: &SystemModel, s: &SysState| {
                s.parent().generation() >= 2
                    && s.parent().phase() == Phase::Running
                    && !s.procs.is_empty()
                    && s.procs.iter().all(|p| p.born.generation >= 2)
            }),
            Property::sometimes(
                "example: live children above a lowered max_request_workers drain",
                |_: &SystemModel, s: &SysState| {
                    s.parent().phase() == Phase::Running
                        && s.procs.iter().any(|p| p.born.generation < s.parent().generation())
                        && s.procs.len() > s.parent().config().max_request_workers as usize
                },
            ),
        ]
    }
}

/// The model's platform: what the parent's effects do to the processes, queues and lock.
pub struct ModelPlatform<'a> {
    model: &'a SystemModel,
    world: &'a mut World,
}

impl ModelPlatform<'_> {
    /// The configuration in force, by the generation the lifecycle events named.
    fn config(&self) -> &PoolConfig {
        self.model.config_of(self.world.witness.generation())
    }
}

impl SimulatedPlatform for ModelPlatform<'_> {
    fn witness(&mut self) -> &mut Witness {
        &mut self.world.witness
    }

    /// Notes the breach as the property named after its invariant.
    fn breach(&mut self, breach: Breach) {
        self.world.violations.note(&breach);
    }

    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        let &Spawn { slot, born, child } = spawn;
        let s = &mut *self.world;
        let too_soon = |t: Option<Time>| t.is_some_and(|t| s.now < t);
        if too_soon(s.fork_retry_at) || too_soon(s.crash_pause_until) {
            s.violations.forked_too_soon = true;
        }
        if std::mem::take(&mut s.fork_broken) {
            // Back-off (SPEC.md §7.7): 1 s after the first failure, doubling up to 10 s.
            s.fork_failures_in_row += 1;
            let backoff = Duration::from_secs(1 << (s.fork_failures_in_row - 1).min(4)).min(Duration::from_secs(10));
            s.fork_retry_at = Some(s.now + backoff);
            return Err("fork: Resource temporarily unavailable (model)".into());
        }
        s.fork_recovered |= s.fork_failures_in_row > 0;
        s.fork_failures_in_row = 0;
        s.forked_after_scribble |= s.scribbles > 0;
        let pid = s.next_pid;
        s.next_pid += 1;
        let mut child = child.child_loop();
        crate::seeded::seed_child(&mut child, self.model.bug);
        s.procs.push(Proc {
            pid,
            slot,
            born,
            child,
            next: None,
            conn: false,
            woken: false,
            stalled: false,
            lock_since: None,
            busy_since: None,
            spawned_at: s.now,
            graceful_since: None,
        });
        Ok(pid)
    }

    fn wake(&mut self, _: usize, pid: Pid) {
        if let Some(p) = self.world.procs.iter_mut().find(|p| p.pid == pid) {
            p.woken = true;
        }
    }

    fn signal(&mut self, sent: &Signal) {
        let (lock_limit, request_limit) = (self.config().accept_lock_timeout, self.config().request_deadline);
        let s = &mut *self.world;
        let &Signal { pid, signal, reason, .. } = sent;
        let running = s.witness.serving();
        if running && reason.is_none() {
            s.violations.signal_while_running = true;
        }
        let Some(i) = s.procs.iter().position(|p| p.pid == pid) else { return };
        let p = &s.procs[i];
        if running && reason.is_none() && p.busy() {
            s.violations.killed_busy = true;
        }
        let served_its_time = |since: Option<Time>, limit| since.is_some_and(|t| s.now.since(t) >= limit);
        // One acquisition held for the limit, and connections waiting now (SPEC.md §7.8: the parent
        // sees the queues at its looks; a holder that took a connection between two looks without
        // releasing the lock yet shows no progress it can see).
        let waiting = s.queues.iter().any(|&q| q > 0);
        match reason {
            Some(KillReason::Stalled(_)) if s.activity_scribbled => {}
            Some(KillReason::Stalled(Stall::AcceptLock { .. }))
                if !(waiting && served_its_time(p.lock_since, lock_limit)) =>
            {
                s.violations.unjustified_kill = true;
            }
            // Busy with one request, or told to leave (`G`), for the deadline.
            Some(KillReason::Stalled(Stall::Request { .. }))
                if !served_its_time(p.busy_since, request_limit)
                    && !served_its_time(p.graceful_since, request_limit) =>
            {
                s.violations.unjustified_kill = true;
            }
            // Only a slot that was written outside the protocol can be found damaged.
            Some(KillReason::SlotDamaged) if s.scribbles == 0 => s.violations.unjustified_kill = true,
            _ => {}
        }
        if matches!(reason, Some(KillReason::Stalled(_))) {
            s.watchdog_kills += 1;
        }
        if reason.is_none() && !running {
            let started = *s.reclaim_started.get_or_insert(s.now);
            let at = s.now.since(started);
            let on_ladder = match signal {
                KillSignal::Term => LADDER_TERM_AT.iter().any(|&t| at == Duration::from_secs(t)),
                KillSignal::Kill => at == Duration::from_secs(LADDER_KILL_AT),
            };
            s.violations.off_the_ladder |= !on_ladder;
            s.ladder_kills += u8::from(signal == KillSignal::Kill);
        }
        // A stopped process keeps a SIGTERM pending until it runs again, and a child with a
        // SIGTERM handler that does not exit carries on; SIGKILL ends both.
        if (p.stalled || self.model.children_ignore_term) && signal == KillSignal::Term {
            return;
        }
        let sig = if signal == KillSignal::Term { 15 } else { 9 };
        self.model.die(s, i, ExitStatus::Signaled(sig));
    }

    fn observe(&mut self) -> Observation {
        let s = &*self.world;
        let queues = if s.listening {
            s.queues.iter().map(|&q| QueueDepth { waiting: u32::from(q), exact: true }).collect()
        } else {
            vec![]
        };
        Observation { queues, lock_holder: if self.model.kernel_lock_evidence { s.lock_holder } else { None } }
    }

    fn close_listeners(&mut self) {
        let s = &mut *self.world;
        s.listening = false;
        s.refused += s.queues.iter().sum::<u8>();
        s.queues.iter_mut().for_each(|q| *q = 0);
    }

    fn drain_listeners(&mut self) {
        let s = &mut *self.world;
        s.admitting = false;
        SystemModel::let_go(s, false);
    }
}

/// The model the explorer shows: two listeners (the lock in use), one crash, any one command.
pub fn explorer_model() -> SystemModel {
    let budget = Budget { stalls: 1, grace: 2, ..Budget::new(3, 2, 1, 1) };
    SystemModel::new(
        SystemModel::small_pool(2),
        budget,
        vec![Op::GracefulRestart, Op::HardRestart, Op::GracefulStop, Op::Stop],
    )
}

/// Serves stateright's explorer for [`explorer_model`] on `address` (blocks). Open it in a
/// browser to step through the protocol by hand: every state shows the parent, each child's loop,
/// the board and the queues; every action is a step of the core's machines.
pub fn serve_explorer(address: &str) {
    use stateright::Model;
    explorer_model().checker().threads(1).serve(address);
}
