//! The whole system under shuttle (SPEC.md §11): the core's `Parent` on the test's main thread, one
//! shuttle thread per child process running the core's `ChildLoop`, a client thread producing
//! connections on 1-2 simulated listeners, an operator thread sending restarts and stops at random
//! points, and a clock thread. Children die at random steps (also holding the lock or a
//! connection). Shuttle picks the schedule (random or PCT) and every random choice, so a failure is
//! replayable from the schedule it prints.
//!
//! The platform: one `World` under a shuttle `Mutex` with a `Condvar` (listen queues, the accept
//! lock with the kernel's release-on-exit semantics, signals, wake channels, SIGCHLD). The
//! scoreboard is shuttle atomics, read and written by the core's code without the world lock, so
//! shuttle interleaves the real slot protocol.
//!
//! Checked in every execution (a violation panics, and shuttle prints the schedule):
//! * every accepted connection is served exactly once, or lost with the child that accepted it and
//!   died; no connection is accepted twice;
//! * with the lock in use, never two children in the wait+accept section;
//! * no deadlock (shuttle detects it), and no livelock (shuttle's step limit);
//! * live children <= max_request_workers; the board's derived counts equal the real processes;
//! * after a graceful restart, every old-generation child exits and the pool refills (the operator
//!   waits for it; if it never happens the execution cannot finish);
//! * with the scribble fault (a scribbler thread writes random values into random words of the
//!   shared memory: slot, activity, pid and generation words, at random moments): the parent
//!   signals only its own children (I29), never panics (I30), and within [`RECOVERY_BOUND`] of the
//!   last write the pool has `min_spare_servers` children of the running generation whose slots
//!   show their own words again (L5).

use crate::words::{ShuttleWord, shuttle_board};
use prefork_core::atomic::{AtomicWord, Ordering};
use prefork_core::child::{ChildAction, ChildEvent, ChildLoop};
use prefork_core::config::PoolConfig;
use prefork_core::driver::ParentDriver;
use prefork_core::exit::{ExitReason, ExitStatus, KillReason};
use prefork_core::parent::{Command, KillSignal, Observation, Parent, ParentLog, Pid, QueueDepth, Signal, Spawn};
use prefork_core::scoreboard::{ChildSlot, MemoryBoard, ScoreboardView, SlotTable, SlotUpdate};
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_core::witness::{SimulatedPlatform, Witness, Witnessed};
use shuttle::rand::{Rng, thread_rng};
use shuttle::sync::{Condvar, Mutex, MutexGuard};
use shuttle::thread;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A run that has not finished after this much simulated time is stuck (a liveness failure).
pub const MAX_SIMULATED_SECONDS: u64 = 300;

/// L5's bound under shuttle: after the scribbler's last write, the pool is back within this much
/// simulated time (the next maintenance tick repairs and forks; a second tick of slack for a
/// write that lands between a tick's repair and its spawns).
pub const RECOVERY_BOUND: Duration = Duration::from_secs(2);

/// The pid a scribbler writes into pid words: a process that is not a child (init).
pub const DECOY_PID: u64 = 1;

/// What one execution does.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The pool (2 listeners put the accept lock in use).
    pub pool: PoolConfig,
    /// Client connections produced.
    pub connections: u32,
    /// At most this many children die at a random step.
    pub deaths: u32,
    /// At most this many children stall at a random step: they stop taking steps for ever (also
    /// holding the accept lock or a connection); only SIGKILL ends them.
    pub stalls: u32,
    /// Restarts the operator may send (each chosen at random: graceful or hard), before stopping.
    pub restarts: u32,
    /// The configuration the restarts bring (`None`: the same again). A lower
    /// `max_request_workers` leaves children above it to drain (I7).
    pub restart_pool: Option<PoolConfig>,
    /// A seeded bug (negative tests).
    pub bug: Option<SeededBug>,
    /// Does a wake-up interrupt a child blocked on the accept lock (SPEC.md §7.1)? `false` is a
    /// negative test: old children stuck behind the lock outlive a graceful restart.
    pub wake_interrupts_lock: bool,
    /// Before its final stop, the operator waits (up to a minute of simulated time) until the
    /// client is done and every connection was accepted: a pool that leaves connections waiting
    /// then fails the queue-wait check instead of hiding it behind the stop.
    pub drain_before_stop: bool,
    /// Words a scribbler writes into the shared memory, one at a time at random moments (SPEC.md
    /// §14). 0: no scribbler.
    pub scribbles: u32,
    /// Just before its final stop, the operator writes [`DECOY_PID`] into every pid word (a
    /// child that wants the parent to signal someone else).
    pub decoy_before_stop: bool,
}

/// One child process as the platform sees it.
#[derive(Debug, Default)]
struct ProcInfo {
    slot: usize,
    born: u64,
    generation: u32,
    killed: Option<i32>,
    stalled: bool,
    woken: bool,
    in_section: bool,
    conn: Option<u32>,
}

#[derive(Debug, Default)]
struct World {
    queues: Vec<VecDeque<u32>>,
    listening: bool,
    /// The listeners take new connections (until a graceful stop's `DrainListeners`).
    admitting: bool,
    lock_holder: Option<Pid>,
    procs: BTreeMap<Pid, ProcInfo>,
    zombies: VecDeque<(Pid, ExitStatus, Option<ExitReason>)>,
    commands: VecDeque<Command>,
    accepted: BTreeMap<u32, Pid>,
    served: BTreeMap<u32, u32>,
    lost: BTreeMap<u32, Pid>,
    refused: u32,
    deaths_left: u32,
    stalls_left: u32,
    /// How long each connection still in a listen queue has waited while a child could take it.
    queued_for: BTreeMap<u32, Duration>,
    /// The longest any connection waited in a queue while a live, non-stalled child existed.
    longest_wait: Duration,
    clock: Time,
    parent_caught_up: Time,
    generation: u32,
    min_idle_goal: usize,
    parent_done: bool,
    /// Participant threads alive (parent, client, operator, children; not the clock).
    threads: usize,
    /// Participant threads blocked in `Shared::wait` since the last notification.
    sleepers: usize,
    /// Bumped by every notification; a sleeper wakes only for a new epoch.
    epoch: u64,
    /// The parent's log, for diagnostics.
    log: Vec<String>,
    /// Children the watchdog killed.
    watchdog_kills: u32,
    /// The client has produced every connection.
    client_done: bool,
    /// The parent's phase and next timeout at its last step boundary, for diagnostics.
    parent_state: String,
    /// What the operator is doing, for diagnostics.
    operator: String,
    /// The scribbler's writes, for diagnostics.
    scribbled: Vec<String>,
    /// When the scribbler wrote last (once it is done).
    last_scribble: Option<Time>,
    /// The scribbler has written since the parent's last maintenance tick.
    dirty: bool,
    /// After the last write, the pool was seen back (L5).
    recovered: bool,
    /// Bumped by every scribble (a tick clears `dirty` only if none came during it).
    scribble_epoch: u64,
}

struct Shared {
    world: Mutex<World>,
    changed: Condvar,
    /// Wakes the clock when a participant goes to sleep.
    quiet: Condvar,
    board: MemoryBoard<ShuttleWord>,
    lock_in_use: bool,
    /// The longest a queued connection may wait while a live, non-stalled child of the running
    /// generation exists: each stall that can wedge the lock costs the watchdog's limit plus a
    /// tick (its first look), and one more such span of slack.
    max_queue_wait: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
    /// A participant blocks until the world changes (the next notification). Time only passes
    /// while every participant is blocked (a discrete-event simulation), so a run that waits
    /// forever for something that never happens ticks until `MAX_SIMULATED_SECONDS` and fails,
    /// instead of passing.
    fn wait<'a>(&self, mut guard: MutexGuard<'a, World>) -> MutexGuard<'a, World> {
        let epoch = guard.epoch;
        guard.sleepers += 1;
        self.quiet.notify_all();
        while guard.epoch == epoch {
            guard = self.changed.wait(guard).unwrap();
        }
        guard
    }

    /// The world changed: every sleeper becomes runnable.
    fn notify(&self, w: &mut World) {
        w.epoch += 1;
        w.sleepers = 0;
        self.changed.notify_all();
    }

    /// A participant lets `seconds` of simulated time pass (or less, if the server exits: time
    /// stops with it).
    fn sleep<'a>(&self, mut w: MutexGuard<'a, World>, seconds: u64) -> MutexGuard<'a, World> {
        let until = w.clock + Duration::from_secs(seconds);
        while w.clock < until && !w.parent_done {
            w = self.wait(w);
        }
        w
    }

    /// A participant thread ends.
    fn leave(&self, w: &mut World) {
        w.threads -= 1;
        self.notify(w);
        self.quiet.notify_all();
    }
}

/// A process dies abnormally (called by the dying process's thread, which then ends): the kernel
/// releases its lock, its connection is lost, the parent gets a SIGCHLD.
fn die(shared: &Shared, w: &mut World, pid: Pid, status: ExitStatus) {
    let info = w.procs.remove(&pid).expect("a live process dies");
    if w.lock_holder == Some(pid) {
        w.lock_holder = None;
    }
    if let Some(conn) = info.conn {
        w.lost.insert(conn, pid);
    }
    w.zombies.push_back((pid, status, None));
    let_go(w, None);
    shared.leave(w);
}

/// A process left (`by_itself`: it exited, naming this pid; `None`: a crash or a kill). After a
/// graceful stop's `DrainListeners` the parent holds no listener, so the sockets close with the
/// last child, and the kernel resets what they still queue. A child that leaves them so by itself
/// left work behind: I32 (SPEC.md §7.5).
fn let_go(w: &mut World, by_itself: Option<Pid>) {
    if w.listening && !w.admitting && w.procs.is_empty() {
        let queued: usize = w.queues.iter().map(VecDeque::len).sum();
        if let Some(pid) = by_itself {
            assert!(
                queued == 0,
                "I32: child {pid}, the last to hold the listeners in a graceful stop, left {queued} connection(s) queued"
            );
        }
        w.listening = false;
        w.refused += queued as u32;
        w.queues.iter_mut().for_each(VecDeque::clear);
        w.queued_for.clear();
    }
}

/// What a child's platform step produced (the readiness list is owned here, borrowed by the event).
enum Got {
    Event(ChildEvent<'static>),
    Readable(Vec<usize>),
}

fn child_main(
    shared: Arc<Shared>,
    pid: Pid,
    slot: usize,
    born: SlotWord,
    mut child: ChildLoop,
    wake_interrupts_lock: bool,
) {
    let me = ChildSlot::attach(&shared.board, slot, born).expect("own slot");
    let mut next: Option<ChildAction> = None;
    let mut rng = thread_rng();
    loop {
        let got = {
            let mut w = shared.lock();
            if let Some(sig) = w.procs[&pid].killed {
                die(&shared, &mut w, pid, ExitStatus::Signaled(sig));
                return;
            }
            // Stalls happen anywhere in the loop (after start-up: a child stuck before its first
            // step counts as starting, as in Apache; SPEC.md §7.8).
            if next.is_some() && w.stalls_left > 0 && rng.gen_ratio(1, 12) {
                // A stall: no more steps, whatever the child holds. A stopped process keeps a
                // SIGTERM pending; only SIGKILL ends it.
                w.stalls_left -= 1;
                w.procs.get_mut(&pid).unwrap().stalled = true;
                loop {
                    if w.procs[&pid].killed == Some(9) {
                        die(&shared, &mut w, pid, ExitStatus::Signaled(9));
                        return;
                    }
                    w = shared.wait(w);
                }
            }
            if w.deaths_left > 0 && rng.gen_ratio(1, 12) {
                w.deaths_left -= 1;
                die(&shared, &mut w, pid, ExitStatus::Signaled(11)); // a crash (SIGSEGV)
                return;
            }
            match next {
                None => Got::Event(ChildEvent::Started),
                Some(ChildAction::AcquireLock) => loop {
                    let info = &w.procs[&pid];
                    if let Some(sig) = info.killed {
                        die(&shared, &mut w, pid, ExitStatus::Signaled(sig));
                        return;
                    }
                    if info.woken && wake_interrupts_lock {
                        // A wake-up interrupts a blocked lock wait (SPEC.md §7.1).
                        w.procs.get_mut(&pid).unwrap().woken = false;
                        break Got::Event(ChildEvent::LockInterrupted);
                    }
                    if w.lock_holder.is_none() {
                        w.lock_holder = Some(pid);
                        break Got::Event(ChildEvent::LockAcquired);
                    }
                    w = shared.wait(w);
                },
                Some(ChildAction::Wait) => loop {
                    let info = &w.procs[&pid];
                    if let Some(sig) = info.killed {
                        die(&shared, &mut w, pid, ExitStatus::Signaled(sig));
                        return;
                    }
                    if info.woken {
                        w.procs.get_mut(&pid).unwrap().woken = false;
                        break Got::Event(ChildEvent::Woken);
                    }
                    let ready: Vec<usize> =
                        (0..w.queues.len()).filter(|&l| w.listening && !w.queues[l].is_empty()).collect();
                    if !ready.is_empty() {
                        break Got::Readable(ready);
                    }
                    w = shared.wait(w);
                },
                Some(ChildAction::Accept { listener }) => {
                    let conn = if w.listening { w.queues[listener].pop_front() } else { None };
                    if let Some(conn) = conn {
                        w.queued_for.remove(&conn);
                    }
                    match conn {
                        Some(conn) => {
                            assert!(w.accepted.insert(conn, pid).is_none(), "connection {conn} accepted twice");
                            w.procs.get_mut(&pid).unwrap().conn = Some(conn);
                            Got::Event(ChildEvent::Accepted)
                        }
                        None => Got::Event(ChildEvent::AcceptEmpty),
                    }
                }
                Some(ChildAction::ReleaseLock) => {
                    if w.lock_holder == Some(pid) {
                        w.lock_holder = None;
                        shared.notify(&mut w);
                    }
                    Got::Event(ChildEvent::LockReleased)
                }
                Some(ChildAction::Serve) => {
                    drop(w);
                    // The handler moves the slot through its busy states; a Graceful mark means
                    // "answer with Connection: close", which ends the connection here anyway.
                    for state in [SlotState::BusyWrite, SlotState::Logging] {
                        if me.set(state) != Ok(SlotUpdate::Applied) {
                            break;
                        }
                    }
                    let mut w = shared.lock();
                    let conn = w.procs.get_mut(&pid).unwrap().conn.take().expect("serving a connection");
                    *w.served.entry(conn).or_default() += 1;
                    Got::Event(ChildEvent::ConnectionDone)
                }
                Some(ChildAction::Exit(reason)) => {
                    let info = w.procs.remove(&pid).unwrap();
                    assert!(info.conn.is_none(), "child {pid} exits holding a connection");
                    assert_ne!(w.lock_holder, Some(pid), "child {pid} exits holding the lock");
                    w.zombies.push_back((pid, ExitStatus::Code(reason.exit_code()), Some(reason)));
                    let_go(&mut w, Some(pid));
                    shared.leave(&mut w);
                    return;
                }
            }
        };
        let event = match &got {
            Got::Event(e) => *e,
            Got::Readable(ready) => ChildEvent::Readable(ready),
        };
        // The core's step, outside the world lock: it races the parent on the slot word.
        let was_in = child.in_accept_section();
        let action = child.handle(event, &me).expect("the driver follows the protocol");
        next = Some(action);
        let now_in = child.in_accept_section();
        if was_in != now_in {
            let mut w = shared.lock();
            w.procs.get_mut(&pid).unwrap().in_section = now_in;
            let inside = w.procs.values().filter(|p| p.in_section).count();
            assert!(
                !(shared.lock_in_use && inside > 1),
                "two children in the wait+accept section while the lock is in use"
            );
        }
    }
}

/// Checks, at a parent step boundary, that the board and the parent agree with the real processes
/// (and the lifecycle events with the parent, I31).
fn check_board(parent: &Parent, shared: &Shared, w: &World, witness: &Witness) {
    if let Err(b) = witness.after_input(parent.phase()) {
        panic!("{b}");
    }
    assert_eq!(parent.live_children(), w.procs.len() + w.zombies.len(), "the parent's records vs the processes");
    if w.dirty {
        return; // scribbled since the last tick: the next one repairs
    }
    let counts = ScoreboardView::capture(&shared.board).counts();
    assert_eq!(counts.corrupt, 0);
    assert_eq!(counts.live(), parent.live_children(), "derived live count vs the parent's records");
    assert_eq!(parent.live_children(), w.procs.len() + w.zombies.len(), "the parent's records vs the processes");
    assert!(counts.live() <= parent.config().server_limit as usize, "more live children than server_limit");
}

/// Writes one random value into one random word of `board` (slot, activity, pid or generation
/// word); what it wrote, for diagnostics.
fn scribble(board: &MemoryBoard<ShuttleWord>, rng: &mut impl Rng) -> String {
    let slot = rng.gen_range(0..board.slot_count());
    let (word, value, name) = match rng.gen_range(0..10) {
        0..=3 => {
            let now = SlotWord::decode(board.slot_word(slot).load(Ordering::Acquire)).unwrap_or(SlotWord::EMPTY);
            let value = match rng.gen_range(0..5) {
                0 => u64::MAX,
                1 => 0,
                2 => rng.r#gen(),
                3 => {
                    let states = [SlotState::Ready, SlotState::IdleKill, SlotState::Starting, SlotState::Graceful];
                    now.with_state(states[rng.gen_range(0..states.len())]).encode()
                }
                _ => SlotWord { incarnation: now.incarnation ^ 0x80_0000, ..now }.encode(),
            };
            (board.slot_word(slot), value, "slot")
        }
        4 | 5 => (board.activity_word(slot), if rng.gen_bool(0.5) { u64::MAX } else { rng.r#gen() }, "activity"),
        6 => {
            (board.pid_word(slot).expect("a pid word"), if rng.gen_bool(0.5) { DECOY_PID } else { rng.r#gen() }, "pid")
        }
        _ => {
            let g = board.generation_word();
            let value = if rng.gen_bool(0.5) { g.load(Ordering::Acquire).wrapping_add(1) } else { rng.r#gen() };
            (g, value, "generation")
        }
    };
    word.store(value, Ordering::Release);
    format!("{name} {slot} = {value:#x}")
}

/// L5: `min_spare_servers` children of the running generation that are alive, not stalled or
/// being killed, and whose slots show their own words in a working state.
fn pool_is_back(shared: &Shared, w: &World) -> bool {
    let good = w
        .procs
        .values()
        .filter(|p| p.generation == w.generation && p.killed.is_none() && !p.stalled)
        .filter(|p| {
            let born = SlotWord::decode(p.born).unwrap_or(SlotWord::EMPTY);
            let now = SlotWord::decode(shared.board.slot_word(p.slot).load(Ordering::Acquire));
            now.is_ok_and(|now| {
                now.incarnation == born.incarnation
                    && now.generation == born.generation
                    && now.state.is_live()
                    && !now.state.is_directive()
            })
        })
        .count();
    good >= w.min_idle_goal && shared.board.running_generation() == w.generation
}

/// One execution of `scenario`: run it inside `shuttle::check_*` or `shuttle::replay`.
pub fn run(scenario: &Scenario) {
    let cfg = scenario.pool.clone();
    let shared = Arc::new(Shared {
        world: Mutex::new(World {
            queues: vec![VecDeque::new(); cfg.listen.len()],
            listening: true,
            admitting: true,
            deaths_left: scenario.deaths,
            stalls_left: scenario.stalls,
            min_idle_goal: cfg.min_spare_servers as usize,
            threads: 4, // parent, client, operator, scribbler
            ..World::default()
        }),
        changed: Condvar::new(),
        quiet: Condvar::new(),
        board: shuttle_board(cfg.server_limit as usize),
        lock_in_use: cfg.lock_in_use(),
        // Measured against the default limit when the watchdog is off (the negative test).
        max_queue_wait: (if cfg.accept_lock_timeout.is_zero() {
            prefork_core::config::DEFAULT_ACCEPT_LOCK_TIMEOUT
        } else {
            cfg.accept_lock_timeout
        } + cfg.maintenance_interval)
            * (scenario.stalls + 1),
    });

    // Clients.
    let (sh, n) = (shared.clone(), scenario.connections);
    let client = thread::spawn(move || {
        let mut rng = thread_rng();
        for conn in 0..n {
            let mut w = sh.lock();
            if rng.gen_ratio(1, 3) {
                w = sh.sleep(w, 1);
            }
            if w.parent_done {
                w.refused += n - conn; // nobody listens any more
                break;
            }
            if w.listening && w.admitting {
                let l = rng.gen_range(0..w.queues.len());
                w.queues[l].push_back(conn);
                w.queued_for.insert(conn, Duration::ZERO);
                sh.notify(&mut w);
            } else {
                w.refused += 1;
            }
            drop(w);
            thread::yield_now();
        }
        let mut w = sh.lock();
        w.client_done = true;
        sh.leave(&mut w);
    });

    // The clock: one second passes when every participant is blocked and the parent has caught up.
    let sh = shared.clone();
    let clock = thread::spawn(move || {
        let mut w = sh.lock();
        while !w.parent_done {
            if w.sleepers == w.threads && w.parent_caught_up >= w.clock {
                w.clock += Duration::from_secs(1);
                // Liveness with stalls: a queued connection waits only while no live, non-stalled
                // child of the running generation exists (a hard restart replaces them all; a
                // graceful one replaces them as they leave), or the listeners are closing. Time
                // counts against it only while such a child exists.
                let generation = w.generation;
                let able = w.listening
                    && w.procs.values().any(|p| !p.stalled && p.killed.is_none() && p.generation == generation);
                if able {
                    w.queued_for.values_mut().for_each(|waited| *waited += Duration::from_secs(1));
                }
                // L5: after the scribbler's last write, the pool comes back within the bound.
                if let Some(last) = w.last_scribble
                    && !w.recovered
                {
                    if pool_is_back(&sh, &w) {
                        w.recovered = true;
                    } else {
                        assert!(
                            w.clock <= last + RECOVERY_BOUND,
                            "L5: the pool is not back {RECOVERY_BOUND:?} after the last scribble at {last}: board {}, generation word {}, generation {}, procs {:?}, scribbles (last 6) {:?}, parent log (last 12): {:#?}",
                            ScoreboardView::capture(&sh.board).letters(),
                            sh.board.running_generation(),
                            w.generation,
                            w.procs,
                            &w.scribbled[w.scribbled.len().saturating_sub(6)..],
                            &w.log[w.log.len().saturating_sub(12)..],
                        );
                    }
                }
                if let Some(&waited) = w.queued_for.values().max() {
                    w.longest_wait = w.longest_wait.max(waited);
                    assert!(
                        waited <= sh.max_queue_wait,
                        "a connection waited {waited:?} in a listen queue while a live, non-stalled child could take it: procs {:?}, lock {:?}, board {}, activity {:?}, parent {}, clock {} caught up {} sleepers {}/{}, parent log (last 8): {:#?}",
                        w.procs,
                        w.lock_holder,
                        ScoreboardView::capture(&sh.board).letters(),
                        (0..sh.board.slot_count()).map(|i| sh.board.slot(i).map(|s| s.activity())).collect::<Vec<_>>(),
                        w.parent_state,
                        w.clock,
                        w.parent_caught_up,
                        w.sleepers,
                        w.threads,
                        &w.log[w.log.len().saturating_sub(8)..],
                    );
                }
                sh.notify(&mut w);
                assert!(
                    w.clock < Time::from_secs(MAX_SIMULATED_SECONDS),
                    "the run did not finish in {MAX_SIMULATED_SECONDS} simulated seconds: board {}, generation {}, procs {:?}, lock {:?}, queues {:?}, listening {}, zombies {}, threads {} (all blocked), commands {}, operator {:?}, parent log (last 12): {:#?}",
                    ScoreboardView::capture(&sh.board).letters(),
                    w.generation,
                    w.procs,
                    w.lock_holder,
                    w.queues,
                    w.listening,
                    w.zombies.len(),
                    w.threads,
                    w.commands.len(),
                    w.operator,
                    &w.log[w.log.len().saturating_sub(12)..],
                );
            }
            w = sh.quiet.wait(w).unwrap();
        }
    });

    // The operator: restarts at random points, each followed by a wait for the old generation to
    // leave and the pool to refill; then a stop or a graceful stop.
    let (sh, restarts, next_cfg) =
        (shared.clone(), scenario.restarts, scenario.restart_pool.clone().unwrap_or_else(|| cfg.clone()));
    let drain_before_stop = scenario.drain_before_stop;
    let (scribbling, decoy_before_stop) = (scenario.scribbles > 0, scenario.decoy_before_stop);
    let operator = thread::spawn(move || {
        let mut rng = thread_rng();
        for _ in 0..restarts {
            let pause = rng.gen_range(0..4);
            drop(sh.sleep(sh.lock(), pause));
            let command = if rng.gen_bool(0.5) {
                Command::GracefulRestart(Box::new(next_cfg.clone()))
            } else {
                Command::HardRestart(Box::new(next_cfg.clone()))
            };
            let mut w = sh.lock();
            let before = w.generation;
            w.commands.push_back(command);
            sh.notify(&mut w);
            // Liveness: every old-generation child exits, and the pool refills.
            loop {
                w.operator = format!("waiting after restart from generation {before}");
                let generation = w.generation;
                // Stalled children never leave by themselves (a graceful restart waits for them,
                // as Apache does); the rest must.
                let old = w.procs.values().filter(|p| p.generation < generation && !p.stalled).count();
                let fresh = w.procs.values().filter(|p| p.generation == generation && p.killed.is_none()).count();
                if generation > before && old == 0 && fresh >= w.min_idle_goal {
                    break;
                }
                w = sh.wait(w);
            }
        }
        let pause = rng.gen_range(0..4);
        let mut w = sh.sleep(sh.lock(), pause);
        if scribbling {
            // L5 is judged by the clock: wait here until the pool is back after the last write.
            w.operator = "waiting for the pool to come back after the scribbles".into();
            while !(w.parent_done || w.last_scribble.is_some() && w.recovered) {
                w = sh.wait(w);
            }
        }
        if decoy_before_stop {
            for slot in 0..sh.board.slot_count() {
                if let Some(pid) = sh.board.pid_word(slot) {
                    pid.store(DECOY_PID, Ordering::Release);
                }
            }
        }
        if drain_before_stop {
            w.operator = "waiting for every connection to be accepted".into();
            let until = w.clock + Duration::from_secs(60);
            while !(w.client_done && w.queued_for.is_empty()) && w.clock < until && !w.parent_done {
                w = sh.wait(w);
            }
        }
        w.commands.push_back(if rng.gen_bool(0.5) { Command::Stop } else { Command::GracefulStop });
        sh.notify(&mut w);
        sh.leave(&mut w);
    });

    // The scribbler: a child writing outside the protocol, at random moments.
    let (sh, n) = (shared.clone(), scenario.scribbles);
    let scribbler = thread::spawn(move || {
        let mut rng = thread_rng();
        for _ in 0..n {
            let pause = rng.gen_range(0..3);
            let mut w = sh.sleep(sh.lock(), pause);
            if w.parent_done {
                break;
            }
            let what = scribble(&sh.board, &mut rng);
            let line = format!("{} {what}", w.clock);
            w.scribbled.push(line);
            w.dirty = true;
            w.scribble_epoch += 1;
            sh.notify(&mut w);
            drop(w);
            thread::yield_now();
        }
        let mut w = sh.lock();
        if n > 0 {
            // L5 is judged from here on (a scenario without scribbles never is).
            w.last_scribble = Some(w.clock);
        }
        sh.leave(&mut w);
    });

    // The parent, on this thread, driven as every driver drives it: its effects happen on the
    // shuttle platform (each effect takes the world lock; the core's steps run outside it, racing
    // the children on the slot words).
    let mut parent = Parent::new(cfg.clone());
    crate::seeded::seed_parent(&mut parent, scenario.bug);
    let mut platform =
        Witnessed(ShuttlePlatform { shared: &shared, scenario, children: vec![], witness: Witness::new(&cfg) });
    let driver = ParentDriver::start(parent, Time::ZERO, &shared.board, &mut platform);
    let mut exit = driver.exit_code();
    let mut driver = driver;
    loop {
        // Check the invariants at this step boundary.
        {
            let mut w = shared.lock();
            w.generation = driver.parent().generation();
            w.parent_state = format!("{:?}, next timeout {:?}", driver.parent().phase(), driver.poll_timeout());
            check_board(driver.parent(), &shared, &w, &platform.witness);
            shared.notify(&mut w);
            if exit.is_some() {
                w.parent_done = true;
                shared.quiet.notify_all();
                break;
            }
        }
        // Wait for something to do: a reap, a command, or a due timeout.
        let mut w = shared.lock();
        let work = loop {
            if let Some(z) = w.zombies.pop_front() {
                break Work::Reap(z);
            }
            if let Some(c) = w.commands.pop_front() {
                break Work::Command(c);
            }
            if driver.poll_timeout().is_some_and(|t| t <= w.clock) {
                break Work::Timeout;
            }
            if w.parent_caught_up < w.clock {
                w.parent_caught_up = w.clock;
                shared.quiet.notify_all();
            }
            w = shared.wait(w);
        };
        let now = w.clock;
        let epoch = w.scribble_epoch;
        drop(w);
        let board = &shared.board;
        let repairs = matches!(work, Work::Timeout)
            && driver.parent().phase() == prefork_core::parent::Phase::Running
            && now >= driver.parent().next_tick();
        exit = match work {
            Work::Reap((pid, status, reason)) => {
                platform.witness.reaped(pid);
                driver.handle_child_exit(now, pid, status, reason, board, &mut platform)
            }
            Work::Command(c) => driver.handle_command(now, c, board, &mut platform),
            Work::Timeout => driver.handle_timeout(now, board, &mut platform),
        };
        if repairs {
            // The tick checked and repaired every slot: clean, unless a scribble came meanwhile.
            let mut w = shared.lock();
            w.dirty &= w.scribble_epoch != epoch;
        }
    }
    let children = platform.0.children;
    shared.notify(&mut shared.lock());
    let children_spawned = children.len();
    for h in [client, clock, operator, scribbler].into_iter().chain(children) {
        h.join().unwrap();
    }

    // Every connection is accounted for.
    let w = shared.lock();
    for (conn, pid) in &w.accepted {
        match (w.served.get(conn), w.lost.get(conn)) {
            (Some(1), None) => {}
            (None, Some(dead)) => assert_eq!(dead, pid, "connection {conn} lost by a child that did not accept it"),
            other => panic!("connection {conn} accepted by {pid}: served/lost {other:?}"),
        }
    }
    let queued: usize = w.queues.iter().map(VecDeque::len).sum();
    {
        let mut t = TOTALS.lock().unwrap();
        t.executions += 1;
        t.accepted += w.accepted.len() as u64;
        t.served += w.served.len() as u64;
        t.lost += w.lost.len() as u64;
        t.refused += u64::from(w.refused);
        t.spawned += children_spawned as u64;
        t.restarts += u64::from(w.generation);
        t.retired += w.log.iter().filter(|l| l.contains("retired")).count() as u64;
        t.died += w.log.iter().filter(|l| l.contains("killed by signal")).count() as u64;
        t.stalled_killed += u64::from(w.watchdog_kills);
        t.longest_wait = t.longest_wait.max(w.longest_wait);
        t.seconds += w.clock.as_millis() / 1000;
    }
    assert_eq!(
        w.accepted.len() + w.refused as usize + queued,
        scenario.connections as usize,
        "every connection is accepted, refused at close, or still queued"
    );
}

/// Totals over every execution of this process (to show the runs do real work).
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Executions completed.
    pub executions: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections served.
    pub served: u64,
    /// Connections lost with a dying child.
    pub lost: u64,
    /// Connections reset at close.
    pub refused: u64,
    /// Children forked.
    pub spawned: u64,
    /// Restarts performed (generations).
    pub restarts: u64,
    /// Children retired by the spare-server policy.
    pub retired: u64,
    /// Children that died abnormally (crash or signal).
    pub died: u64,
    /// Simulated seconds.
    pub seconds: u64,
    /// Stalled children the watchdog killed.
    pub stalled_killed: u64,
    /// The longest a connection waited while a live, non-stalled child existed.
    pub longest_wait: Duration,
}

static TOTALS: std::sync::Mutex<Totals> = std::sync::Mutex::new(Totals {
    executions: 0,
    accepted: 0,
    served: 0,
    lost: 0,
    refused: 0,
    spawned: 0,
    restarts: 0,
    retired: 0,
    died: 0,
    seconds: 0,
    stalled_killed: 0,
    longest_wait: Duration::ZERO,
});

/// Takes the totals accumulated so far (and resets them).
pub fn take_totals() -> Totals {
    std::mem::take(&mut *TOTALS.lock().unwrap())
}

/// The shuttle platform: the parent's effects on the world (child threads, wake flags, kills,
/// listen queues, the log).
struct ShuttlePlatform<'a> {
    shared: &'a Arc<Shared>,
    scenario: &'a Scenario,
    children: Vec<thread::JoinHandle<()>>,
    /// The rules every effect is held to (I6, I7, I13, I29, I31), shared by every simulated world
    /// (the parent's thread alone uses it).
    witness: Witness,
}

impl SimulatedPlatform for ShuttlePlatform<'_> {
    fn witness(&mut self) -> &mut Witness {
        &mut self.witness
    }

    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        let &Spawn { slot, born, child } = spawn;
        let mut w = self.shared.lock();
        let pid = 100 + self.children.len() as Pid;
        let mut child = child.child_loop();
        crate::seeded::seed_child(&mut child, self.scenario.bug);
        w.procs.insert(pid, ProcInfo { slot, born: born.encode(), generation: born.generation, ..ProcInfo::default() });
        w.threads += 1;
        drop(w);
        let sh = self.shared.clone();
        let interrupts = self.scenario.wake_interrupts_lock;
        self.children.push(thread::spawn(move || child_main(sh, pid, slot, born, child, interrupts)));
        Ok(pid)
    }

    fn wake(&mut self, _: usize, pid: Pid) {
        let mut w = self.shared.lock();
        if let Some(p) = w.procs.get_mut(&pid) {
            p.woken = true;
        }
    }

    fn signal(&mut self, &Signal { pid, signal, reason, .. }: &Signal) {
        let mut w = self.shared.lock();
        if matches!(reason, Some(KillReason::Stalled(_))) {
            w.watchdog_kills += 1;
        }
        if let Some(p) = w.procs.get_mut(&pid) {
            match signal {
                KillSignal::Kill => p.killed = Some(9),
                KillSignal::Term => _ = p.killed.get_or_insert(15),
            }
        }
    }

    fn observe(&mut self) -> Observation {
        let w = self.shared.lock();
        let queues = if w.listening {
            w.queues.iter().map(|q| QueueDepth { waiting: q.len() as u32, exact: true }).collect()
        } else {
            vec![]
        };
        Observation { queues, lock_holder: w.lock_holder }
    }

    fn close_listeners(&mut self) {
        let mut w = self.shared.lock();
        w.listening = false;
        let reset: usize = w.queues.iter().map(VecDeque::len).sum();
        w.refused += reset as u32;
        w.queues.iter_mut().for_each(VecDeque::clear);
        w.queued_for.clear();
    }

    fn drain_listeners(&mut self) {
        let mut w = self.shared.lock();
        w.admitting = false;
        let_go(&mut w, None);
        self.shared.notify(&mut w);
    }

    fn log(&mut self, line: ParentLog) {
        let mut w = self.shared.lock();
        let line = format!("{} {line}", w.clock);
        w.log.push(line);
    }
}

enum Work {
    Reap((Pid, ExitStatus, Option<ExitReason>)),
    Command(Command),
    Timeout,
}
