//! Fuzz bodies for the core's state machines. The cargo-fuzz targets in `fuzz/` call these, and
//! `tests/fuzz_corpus.rs` replays every committed corpus input through them on stable, so what
//! the fuzzer found stays checked. Each body decodes arbitrary bytes into a sequence of events,
//! feeds them to the real machines, and panics only when an invariant of SPEC.md §9 breaks (or the
//! code under test panics).

use crate::system::{Budget, Op, SystemModel};
use prefork_core::exit::{ExitReason, ExitStatus};
use prefork_core::parent::{Command, KillSignal, Observation, Phase, Pid, QueueDepth, Signal, Spawn};
use prefork_core::scoreboard::{ChildSlot, MemoryBoard, SlotTable};
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_core::witness::{SimulatedPlatform, Witness, Witnessed};
use prefork_core::{ChildAction, ChildEvent, ChildLoop, Parent, ParentDriver, PoolConfig};
use stateright::{Expectation, Model};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

/// A byte source that yields zeros once the input is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte()))
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The whole system of the stateright model (the real `Parent` and `ChildLoop`s on a board, with
/// clients, crashes and commands), walked along the path the bytes choose: each byte picks one
/// of the enabled actions. Every safety property of the model is checked after every step, and
/// the liveness properties when the walk reaches a state with nothing left to do.
pub fn system_walk(data: &[u8]) {
    system_walk_with(data, None)
}

/// [`system_walk`] with a seeded bug (the negative tests: the walk must catch it).
pub fn system_walk_with(data: &[u8], bug: Option<SeededBug>) {
    let mut b = Bytes(data);
    let shape = b.byte();
    let listeners = 1 + usize::from(shape & 1);
    let budget = Budget {
        stalls: (shape >> 5) % 3,
        grace: 4,
        fork_failures: shape >> 7,
        ..Budget::new(30, 30, 1 + (shape >> 1) % 4, 1 + (shape >> 3) % 4)
    };
    let ops = vec![Op::GracefulRestart, Op::HardRestart, Op::GracefulStop, Op::Stop];
    let mut model = SystemModel::new(SystemModel::small_pool(listeners), budget, ops);
    model.bug = bug;
    // Half the walks restart into a lower max_request_workers (2 of 3 slots), with children that
    // ignore SIGTERM.
    if shape & 0x80 != 0 {
        model.restart_pool = Some(crate::pool_with_limits(listeners, 2, 1, 2, 2, 3));
        model.children_ignore_term = true;
    }
    let properties = model.properties();
    let mut state = model.init_states().swap_remove(0);
    let mut path = Vec::new();
    let check = |state: &_, path: &Vec<_>, terminal: bool| {
        for p in &properties {
            let relevant = match p.expectation {
                Expectation::Always => true,
                Expectation::Eventually => terminal,
                Expectation::Sometimes => false,
            };
            if relevant && !(p.condition)(&model, state) {
                panic!("{:?} property {:?} fails after {path:?}", p.expectation, p.name);
            }
        }
    };
    check(&state, &path, false);
    while !b.done() {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        if actions.is_empty() {
            check(&state, &path, true);
            return;
        }
        let action = actions[usize::from(b.byte()) % actions.len()];
        path.push(action);
        if let Some(next) = model.next_state(&state, action) {
            state = next;
            check(&state, &path, false);
        }
    }
}

/// A pool of 6 slots whose `max_request_workers` is 3 to 6: restarts raise and lower it (I7).
fn pool(b: &mut Bytes<'_>) -> PoolConfig {
    let shape = b.byte();
    crate::pool_with_limits(
        1 + usize::from(shape & 1),
        1 + i64::from(shape >> 1 & 3),
        1,
        2 + i64::from(shape >> 3 & 3),
        3 + i64::from(shape >> 5 & 3),
        6,
    )
}

/// The parent alone, with arbitrary events, including ones a correct driver never sends: exits of
/// pids it never forked, reports for slots it did not ask for, time that jumps, commands at any
/// moment, slot words overwritten with garbage, children writing any state. Checks after every
/// event: spawns go into `Dead` slots below the limit and leave `Starting` there (I6); a spawn
/// never makes more children live than `max_request_workers` (I7); the spawn rate is a power of
/// two up to 32 (I8); signals go only to the parent's own children (I15); after a tick the board
/// agrees with the parent's records (I14).
pub fn parent_events(data: &[u8]) {
    parent_events_with(data, None)
}

/// [`parent_events`] with a seeded bug in the parent (negative tests).
pub fn parent_events_with(data: &[u8], bug: Option<SeededBug>) {
    let mut b = Bytes(data);
    let config = pool(&mut b);
    let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(config.server_limit as usize);
    let mut parent = Parent::new(config.clone());
    crate::seeded::seed_parent(&mut parent, bug);
    let mut now = Time::ZERO;
    let mut world = Witnessed(EventWorld {
        board: &board,
        children: BTreeMap::new(),
        next_pid: 100,
        fail: false,
        spawned: false,
        observation: Observation::default(),
        witness: Witness::new(&config),
    });
    let mut driver = ParentDriver::start(parent, now, &board, &mut world);
    world.check(&driver);
    while !b.done() && driver.exit_code().is_none() {
        match b.byte() % 9 {
            0 => {
                now += Duration::from_millis(u64::from(b.byte()) * 20);
                if driver.poll_timeout().is_some_and(|t| t <= now) {
                    world.observation = queues(now);
                    driver.handle_timeout(now, &board, &mut world);
                    // Maintenance ticks repair the board; stops only reclaim children.
                    let view = prefork_core::ScoreboardView::capture(&board);
                    let phase = driver.parent().phase();
                    let counts = if phase == Phase::Running { view.counts() } else { Default::default() };
                    assert_eq!(
                        counts.corrupt,
                        0,
                        "I14: corrupt slots remain after a tick: {} ({phase:?})",
                        view.letters()
                    );
                }
            }
            1 => {
                // The next forks fail (or work again).
                world.fail = b.byte() % 8 == 0;
            }
            2 => {
                // A child exits (or a pid the parent never forked).
                let pid = match world.children.keys().nth(usize::from(b.byte()) % (world.children.len() + 1)) {
                    Some(&pid) => pid,
                    None => 1 + Pid::from(b.byte()),
                };
                let status = match b.byte() % 6 {
                    0 => ExitStatus::Code(0),
                    1 => ExitStatus::Code(7),
                    2 => ExitStatus::Code(15),
                    3 => ExitStatus::Signaled(9),
                    4 => ExitStatus::Signaled(11),
                    _ => ExitStatus::Signaled(15),
                };
                let reason = ExitReason::ALL.get(usize::from(b.byte()) % 10).copied();
                world.children.remove(&pid);
                world.witness.reaped(pid);
                driver.handle_child_exit(now, pid, status, reason, &board, &mut world);
            }
            3 => {
                let command = match b.byte() % 4 {
                    0 => Command::GracefulRestart(Box::new(pool(&mut b))),
                    1 => Command::HardRestart(Box::new(pool(&mut b))),
                    2 => Command::GracefulStop,
                    _ => Command::Stop,
                };
                driver.handle_command(now, command, &board, &mut world);
            }
            4 => {
                // Garbage in a slot.
                let slot = usize::from(b.byte()) % board.slot_count();
                board.slot_word(slot).set(b.u64());
            }
            5 if !world.children.is_empty() => {
                // A child writes its slot (any state; illegal ones are refused by the slot).
                let (slot, born) = *world.children.values().nth(usize::from(b.byte()) % world.children.len()).unwrap();
                if let Ok(me) = ChildSlot::attach(&board, slot, born) {
                    let _ = me.set(SlotState::from_code(b.byte() % 12).unwrap_or(SlotState::Ready));
                }
            }
            6 => {
                // Time may also not move, or the driver may call early.
                world.observation = queues(now);
                driver.handle_timeout(now, &board, &mut world);
            }
            7 if !world.children.is_empty() => {
                // A signalled child dies of it.
                let pid = *world.children.keys().nth(usize::from(b.byte()) % world.children.len()).unwrap();
                world.children.remove(&pid);
                world.witness.reaped(pid);
                let sig = if b.byte() & 1 == 0 { 15 } else { 9 }; // SIGTERM or SIGKILL
                driver.handle_child_exit(now, pid, ExitStatus::Signaled(sig), None, &board, &mut world);
            }
            _ => {}
        }
        world.check(&driver);
    }
}

/// The processes of [`parent_events`], and the checks every effect is held to.
struct EventWorld<'a> {
    /// The board, to check that each spawn's slot holds its born word (I6).
    board: &'a MemoryBoard<Cell<u64>>,
    children: BTreeMap<Pid, (usize, SlotWord)>,
    next_pid: Pid,
    /// Forks fail.
    fail: bool,
    /// Something was spawned during the current input.
    spawned: bool,
    observation: Observation,
    /// The rules every effect is held to (I6, I7, I13, I29, I31).
    witness: Witness,
}

impl EventWorld<'_> {
    /// After each input: the parent's records agree (I7: no more children live than the limit
    /// after spawning; above a lowered limit old ones may stay, but no spawn may happen then); the
    /// spawn rate is a power of two up to 32 (I8); the lifecycle events agree with the parent
    /// (I31). Each effect was held to the witness's rules as it happened.
    fn check(&mut self, driver: &ParentDriver) {
        let parent = driver.parent();
        let limit = parent.config().max_request_workers as usize;
        if std::mem::take(&mut self.spawned) {
            let live = parent.live_children();
            assert!(live <= limit, "I7: {live} live children after spawning, limit {limit}");
        }
        let rate = parent.policy().idle_spawn_rate();
        assert!(rate.is_power_of_two() && rate <= 32, "I8: spawn rate {rate}");
        if let Err(b) = self.witness.after_input(parent.phase()) {
            panic!("{b}");
        }
    }
}

impl SimulatedPlatform for EventWorld<'_> {
    fn witness(&mut self) -> &mut Witness {
        &mut self.witness
    }
    fn spawn(&mut self, &Spawn { slot, born, .. }: &Spawn) -> Result<Pid, String> {
        assert_eq!(self.board.slot(slot).unwrap().read(), Ok(born), "I6: the slot holds the born word");
        if self.fail {
            return Err("fuzzed fork failure".into());
        }
        self.spawned = true;
        self.next_pid += 1;
        self.children.insert(self.next_pid, (slot, born));
        Ok(self.next_pid)
    }
    fn wake(&mut self, _: usize, _: Pid) {}
    fn signal(&mut self, _: &Signal) {}
    fn observe(&mut self) -> Observation {
        self.observation.clone()
    }
}

/// The parent over arbitrary board bytes (SPEC.md §14): the input alternates between writes of
/// any value into any word of the shared memory (slot, activity, pid and generation words) and the
/// parent's inputs (ticks, restarts), while children behave as the child loop does at its top
/// (leave on a directive, a moved generation or a slot that is not their own; otherwise show
/// `Ready`). Checked throughout: the parent signals only its own children (I29), never panics and
/// never reports a broken driver contract (I30). Once the input is used up, no more scribbles: within
/// [`RECOVERY_TICKS`] ticks the board agrees with the parent's records again, the generation word
/// is the parent's, and `min_spare_servers` children are idle (L5). No crash, kill or fork failure
/// is injected here, so nothing excuses a slower recovery (the crash-loop brake must not hear of
/// the board's damage).
pub fn board_bytes(data: &[u8]) {
    board_bytes_with(data, None)
}

/// Ticks [`board_bytes`] allows after the last scribble: one repairs and forks, one reaps what the
/// repair told to leave and forks again (children here leave only between ticks).
pub const RECOVERY_TICKS: usize = 2;

/// [`board_bytes`] with a seeded bug in the parent (negative tests).
pub fn board_bytes_with(data: &[u8], bug: Option<SeededBug>) {
    let mut b = Bytes(data);
    let config = pool(&mut b);
    let slots = config.server_limit as usize;
    let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(slots);
    let mut parent = Parent::new(config.clone());
    crate::seeded::seed_parent(&mut parent, bug);
    let mut world =
        Witnessed(ByteWorld { children: BTreeMap::new(), witness: Witness::new(&config), exits: vec![], next_pid: 0 });
    let tick = config.maintenance_interval;
    let mut now = Time::ZERO;
    let mut driver = ParentDriver::start(parent, now, &board, &mut world);
    while !b.done() {
        match b.byte() % 5 {
            0 | 1 => {
                for _ in 0..1 + b.byte() % 8 {
                    let target = usize::from(b.byte()) % (1 + 3 * slots);
                    let value = b.u64();
                    let word = match target {
                        0 => board.generation_word(),
                        t if t <= slots => board.slot_word(t - 1),
                        t if t <= 2 * slots => board.activity_word(t - 1 - slots),
                        t => board.pid_word(t - 1 - 2 * slots).expect("a pid word"),
                    };
                    word.set(value);
                }
            }
            2 => {
                now += tick;
                driver.handle_timeout(now, &board, &mut world);
            }
            3 => {
                let cfg = Box::new(driver.parent().config().clone());
                let command = if b.byte() & 1 == 0 { Command::GracefulRestart(cfg) } else { Command::HardRestart(cfg) };
                driver.handle_command(now, command, &board, &mut world);
            }
            _ => world.children_step(&board),
        }
        deliver_exits(&mut world, now, &board, &mut driver);
    }
    // No more scribbles: the pool comes back.
    for _ in 0..RECOVERY_TICKS {
        world.children_step(&board);
        deliver_exits(&mut world, now, &board, &mut driver);
        now += tick;
        driver.handle_timeout(now, &board, &mut world);
        // A hard restart under way may need its ladder (children here die of the first signal).
        while driver.parent().phase() == Phase::Restarting {
            deliver_exits(&mut world, now, &board, &mut driver);
            now += tick;
            driver.handle_timeout(now, &board, &mut world);
        }
    }
    world.children_step(&board);
    let parent = driver.parent();
    assert_eq!(board.running_generation(), parent.generation(), "L5: the generation word is the parent's");
    let counts = prefork_core::ScoreboardView::capture(&board).counts();
    assert!(
        counts.corrupt == 0 && counts.live() == parent.live_children(),
        "L5: the board agrees with the parent's records {RECOVERY_TICKS} ticks after the last scribble: {}, {} children",
        prefork_core::ScoreboardView::capture(&board).letters(),
        parent.live_children()
    );
    for (slot, c) in parent.children() {
        assert_eq!(board.slot(slot).unwrap().board_pid(), u64::from(c.pid.unwrap_or(0)), "L5: slot {slot}'s pid word");
    }
    let (min, mrw) = (parent.config().min_spare_servers as usize, parent.config().max_request_workers as usize);
    assert!(
        counts.idle() >= min || counts.live() >= mrw,
        "L5: {} idle children {RECOVERY_TICKS} ticks after the last scribble (min_spare_servers {min}): {}",
        counts.idle(),
        prefork_core::ScoreboardView::capture(&board).letters()
    );
}

/// The children of [`board_bytes`]: pids, slots and born words; exits waiting to be reaped.
struct ByteWorld {
    children: BTreeMap<Pid, (usize, SlotWord)>,
    /// The rules every effect is held to (I6, I7, I13, I29, I31).
    witness: Witness,
    exits: Vec<(Pid, ExitStatus, Option<ExitReason>)>,
    next_pid: Pid,
}

impl ByteWorld {
    /// Every child takes the step the child loop takes at its top: leave on a directive, a moved
    /// generation, or a slot that is not its own (which it may say in its record); otherwise show
    /// `Ready`.
    fn children_step(&mut self, board: &MemoryBoard<Cell<u64>>) {
        let mut leaving = vec![];
        for (&pid, &(slot, born)) in &self.children {
            let Ok(me) = ChildSlot::attach(board, slot, born) else { continue };
            let reason = me.directive().or_else(|| match me.set(SlotState::Ready) {
                Ok(prefork_core::scoreboard::SlotUpdate::Applied) => None,
                Ok(prefork_core::scoreboard::SlotUpdate::Graceful) => Some(ExitReason::Graceful),
                Ok(prefork_core::scoreboard::SlotUpdate::Retire) => Some(ExitReason::Retired),
                Err(_) => Some(ExitReason::SlotLost),
            });
            if let Some(reason) = reason {
                leaving.push((pid, ExitStatus::Code(reason.exit_code()), Some(reason)));
            }
        }
        for (pid, status, reason) in leaving {
            self.children.remove(&pid);
            self.exits.push((pid, status, reason));
        }
    }
}

/// Reports every exit to the parent, oldest first.
fn deliver_exits(
    world: &mut Witnessed<ByteWorld>,
    now: Time,
    board: &MemoryBoard<Cell<u64>>,
    driver: &mut ParentDriver,
) {
    while !world.exits.is_empty() {
        let (pid, status, reason) = world.exits.remove(0);
        world.witness.reaped(pid);
        driver.handle_child_exit(now, pid, status, reason, board, world);
    }
}

impl SimulatedPlatform for ByteWorld {
    fn witness(&mut self) -> &mut Witness {
        &mut self.witness
    }
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        self.children.insert(pid, (spawn.slot, spawn.born));
        Ok(pid)
    }
    fn wake(&mut self, _: usize, _: Pid) {}
    fn signal(&mut self, &Signal { pid, signal, .. }: &Signal) {
        if self.children.remove(&pid).is_some() {
            let sig = if signal == KillSignal::Term { 15 } else { 9 };
            self.exits.push((pid, ExitStatus::Signaled(sig), None));
        }
    }
    fn observe(&mut self) -> Observation {
        Observation::default()
    }
}

/// What the listen queues hold at `now`: a pattern that comes and goes (taken from the time, not
/// from the input, so that the committed corpora keep their meaning).
fn queues(now: Time) -> Observation {
    Observation {
        queues: vec![QueueDepth { waiting: (now.as_millis() / 20 % 3) as u32, exact: true }],
        lock_holder: None,
    }
}

/// One child loop with arbitrary driver events, including illegal ones, while the parent's side
/// writes directives or garbage into its slot. The loop must answer every event with an action or
/// an error, never panic; it never asks to accept outside the lock when the lock is in use (I10),
/// never accepts without its work claim, and never serves without an accepted connection (I11).
pub fn child_events(data: &[u8]) {
    child_events_with(data, None)
}

/// [`child_events`] with a seeded bug in the child loop (negative tests).
pub fn child_events_with(data: &[u8], bug: Option<SeededBug>) {
    let mut b = Bytes(data);
    let shape = b.byte();
    let listeners = 1 + usize::from(shape % 3);
    let lock = shape & 4 != 0;
    let board: MemoryBoard<Cell<u64>> = MemoryBoard::new(2);
    let born = board.slot(0).unwrap().spawn(0).unwrap();
    let Ok(me) = ChildSlot::attach(&board, 0, born) else { return };
    let mut child = ChildLoop::new(listeners, lock, u64::from(b.byte() % 8));
    crate::seeded::seed_child(&mut child, bug);
    let mut ready = [0usize; 3];
    let mut accepted = false;
    // I12: how many accepts in a row passed over each listener while it was readable.
    let mut passed_over = [0usize; 3];
    let mut last: Option<ChildAction> = None;
    while !b.done() {
        if b.byte() % 5 == 0 {
            // The parent's side.
            let slot = board.slot(0).unwrap();
            match b.byte() % 5 {
                0 => {
                    let _ = slot.mark_graceful();
                }
                1 => {
                    if let Ok(idle) = slot.read() {
                        let _ = slot.claim_idle(idle);
                    }
                }
                2 => board.generation_word().set(u64::from(b.byte() % 3)),
                3 => board.slot_word(0).set(b.u64()),
                _ => {}
            }
        }
        // Every listener readable (half the time: what a busy server sees), or a few, possibly
        // out of range.
        let n = if b.byte() & 1 == 0 {
            ready.iter_mut().enumerate().for_each(|(i, r)| *r = i);
            listeners
        } else {
            let n = 1 + usize::from(b.byte()) % listeners;
            for (i, r) in ready.iter_mut().enumerate().take(n) {
                *r = (i + usize::from(b.byte())) % (listeners + 1);
            }
            n
        };
        // Three bytes in four send what a correct driver would (so that whole accept cycles
        // happen), the rest any event at all.
        let pick = b.byte();
        let event = match if pick >= 0x40 { 12 } else { pick % 12 } {
            0 => ChildEvent::Started,
            1 => ChildEvent::LockAcquired,
            2 => ChildEvent::LockInterrupted,
            3 => ChildEvent::LockFailed,
            4 => ChildEvent::LockReleased,
            5 => ChildEvent::Readable(&ready[..n]),
            6 => ChildEvent::Woken,
            7 => ChildEvent::WaitFailed,
            8 => ChildEvent::Accepted,
            9 => ChildEvent::AcceptEmpty,
            10 => ChildEvent::AcceptFailed,
            11 => ChildEvent::ConnectionDone,
            _ => match last {
                // The event a correct driver would send.
                Some(ChildAction::AcquireLock) => ChildEvent::LockAcquired,
                Some(ChildAction::Wait) => ChildEvent::Readable(&ready[..n]),
                Some(ChildAction::Accept { .. }) => ChildEvent::Accepted,
                Some(ChildAction::ReleaseLock) => ChildEvent::LockReleased,
                Some(ChildAction::Serve) => ChildEvent::ConnectionDone,
                _ => ChildEvent::Started,
            },
        };
        let was_accepted = matches!(event, ChildEvent::Accepted) && matches!(last, Some(ChildAction::Accept { .. }));
        let held_before = child.holds_lock();
        match child.handle(event, &me) {
            Ok(action) => {
                if let ChildAction::Accept { listener } = action {
                    assert!(listener < listeners, "accept on listener {listener} of {listeners}");
                    if let ChildEvent::Readable(r) = event {
                        for (l, passed) in passed_over.iter_mut().enumerate().take(listeners) {
                            *passed = if l != listener && r.contains(&l) { *passed + 1 } else { 0 };
                            assert!(
                                *passed < listeners,
                                "I12: listener {l} was readable and passed over {passed} times in a row ({listeners} listeners)"
                            );
                        }
                    }
                    assert!(!lock || child.holds_lock(), "I10: accept without the lock");
                    assert!(
                        matches!(board.slot(0).unwrap().read(), Ok(w) if w.state == SlotState::BusyRead),
                        "accept without the work claim"
                    );
                }
                if action == ChildAction::AcquireLock {
                    assert!(!held_before || !child.holds_lock(), "asks for a lock it holds");
                }
                accepted |= was_accepted;
                if action == ChildAction::Serve {
                    assert!(accepted, "I11: serve without an accepted connection");
                    accepted = false;
                }
                last = Some(action);
            }
            Err(_) => return, // the driver ends the child
        }
    }
}

/// Replaying committed corpora on stable, shared by the replay tests of every crate with fuzz
/// bodies (`server/tests/fuzz_corpus.rs`, `model/tests/fuzz_corpus.rs`).
pub mod replay {
    use std::path::PathBuf;

    /// The committed inputs of `target`: `fuzz/corpus/<target>/` (which must exist and hold inputs:
    /// a replay of nothing must not pass) and `fuzz/regressions/<target>/` (if any).
    pub fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut out = vec![];
        for dir in ["corpus", "regressions"] {
            let path = root.join(dir).join(target);
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(_) if dir == "regressions" => continue,
                Err(e) => panic!("{}: {e}: the committed corpus of {target} is missing", path.display()),
            };
            for e in entries.flatten() {
                out.push((e.path().display().to_string(), std::fs::read(e.path()).expect("a corpus file")));
            }
        }
        assert!(
            out.iter().any(|(name, _)| name.contains("/corpus/")),
            "fuzz/corpus/{target} holds no inputs: a replay of nothing proves nothing"
        );
        out.sort();
        out
    }

    /// `count` inputs of up to `len` bytes from a fixed xorshift sequence.
    pub fn pseudo_random(count: usize, len: usize) -> Vec<Vec<u8>> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..count)
            .map(|i| {
                (0..(i * 7919) % len + 1)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `body` over the committed inputs of `target` (naming the file that fails) and over
    /// `random` pseudo-random inputs of up to `len` bytes.
    pub fn replay(target: &str, body: fn(&[u8]), random: usize, len: usize) {
        let corpus = inputs(target);
        for (name, data) in &corpus {
            if let Err(e) = std::panic::catch_unwind(|| body(data)) {
                std::panic::resume_unwind(Box::new(format!("{target}: {name}: {:?}", e.downcast_ref::<String>())));
            }
        }
        for data in pseudo_random(random, len) {
            body(&data);
        }
        eprintln!("{target}: {} corpus inputs and {random} pseudo-random inputs replayed", corpus.len());
    }

    /// Negative tests: `body` (with a seeded bug) must fail on one of the pseudo-random inputs,
    /// and the first failure must be the `expected` violation (a substring of its panic message),
    /// not any panic.
    pub fn catches(
        target: &str,
        body: impl Fn(&[u8]) + std::panic::RefUnwindSafe,
        random: usize,
        len: usize,
        expected: &str,
    ) {
        let caught = pseudo_random(random, len).iter().enumerate().find_map(|(i, d)| {
            let err = std::panic::catch_unwind(|| body(d)).err()?;
            let msg =
                err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
            Some((i, msg.unwrap_or_default()))
        });
        let (at, msg) = caught.unwrap_or_else(|| panic!("{target}: the seeded bug went unnoticed in {random} inputs"));
        assert!(msg.contains(expected), "{target}: input {at} failed, but not with {expected:?}: {msg}");
        eprintln!("{target}: seeded bug caught by pseudo-random input {at}: {msg}");
    }
}
