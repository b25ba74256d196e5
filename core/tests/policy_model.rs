//! proptest-state-machine: the core's real [`Parent`] (the system under test: its maintenance
//! ticks, reaping and graceful restarts, carried out on a real slot board) against a deliberately
//! simple reference model written line by line from Apache's `server_main_loop` and
//! `perform_idle_server_maintenance` (shared/reference/apache-prefork.md §1.4–1.5, quoted in the
//! comments), plus the one documented difference (SPEC.md §5.3: spawns never make more children
//! live than max_request_workers).
//!
//! Checked at every step (SPEC.md §9): at most one retirement per tick (I5); spawns go into the
//! lowest `Dead` slots below max_request_workers (I6); no spawn makes more children live than
//! max_request_workers (I7); the spawn rate is one of 1, 2, 4 … 32 and follows Apache's (I8); every
//! decision is the one Apache's algorithm takes on a recount of the same board (I9). Then the
//! negative tests: a seeded bug in the core's production code for each of I5, I6, I8 and I9, which
//! proptest must catch, by the specific violation.

use prefork_core::config::{PoolConfig, RawPoolConfig};
use prefork_core::exit::{ExitStatus, code};
use prefork_core::parent::{Command, Parent, ParentAction, ParentLog, Pid, Spawn};
use prefork_core::policy::PolicyLog;
use prefork_core::scoreboard::{ChildSlot, Counts, MemoryBoard, ScoreboardView, SlotTable};
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_core::{ParentDriver, Recorder};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestError, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

/// Steps: maintenance ticks, and what children and operators do between them.
#[derive(Clone, Debug)]
pub enum Step {
    /// One second passes: the parent's maintenance tick.
    Tick,
    /// The child in `slot` finished starting: `S -> _`.
    ChildReady(usize),
    /// The child in `slot` takes a connection: `_ -> R`.
    ChildBusy(usize),
    /// The child in `slot` finished its connection: `R/W/K/L/C -> _`.
    ChildIdle(usize),
    /// The child in `slot` exited normally and was reaped: `-> .`.
    ChildExit(usize),
    /// The child in `slot` (ready or busy, two seconds old or more: not a crash loop) exited with
    /// CHILDSICK and was reaped.
    ChildSick(usize),
    /// Graceful restart with a new max_request_workers: every live slot `-> G`.
    GracefulRestart { max_request_workers: u32 },
}

/// Apache's parent, as far as these steps go.
#[derive(Clone, Debug)]
pub struct Model {
    server_limit: usize,
    start_servers: u32,
    min_spare: u32,
    max_spare: u32,
    mrw: u32,
    states: Vec<SlotState>,
    /// The second each slot's child was forked in.
    born_at: Vec<u64>,
    now: u64,
    // Apache's retained data and main-loop state:
    idle_spawn_rate: u32,
    hold_off_on_exponential_spawning: u32,
    maxclients_reported: bool,
    remaining_children_to_start: u32,
    // What the last step did (compared with the SUT):
    spawned: Vec<usize>,
    retired: Option<usize>,
    log: Option<PolicyLog>,
}

impl Model {
    fn alive(&self) -> usize {
        self.states.iter().filter(|s| **s != SlotState::Dead).count()
    }

    /// make_child(slot): the parent writes SERVER_STARTING, then forks.
    fn make_child(&mut self, slot: usize) {
        self.states[slot] = SlotState::Starting;
        self.born_at[slot] = self.now;
        self.spawned.push(slot);
    }

    /// startup_children(n): the lowest SERVER_DEAD slots below MaxRequestWorkers (and, our
    /// difference, never more live children than MaxRequestWorkers).
    fn startup_children(&mut self, mut n: u32) {
        for i in 0..self.mrw as usize {
            if n == 0 || self.alive() >= self.mrw as usize {
                break;
            }
            if self.states[i] == SlotState::Dead {
                self.make_child(i);
                n -= 1;
            }
        }
    }

    /// perform_idle_server_maintenance, as in apache-prefork.md §1.5.
    fn maintain(&mut self) {
        // idle = 0; free_len = 0; for i in 0..MaxRequestWorkers { ... }
        let mut idle = 0usize;
        let mut free_slots = Vec::new();
        let mut total_non_dead = 0usize;
        for i in 0..self.mrw as usize {
            let st = self.states[i];
            if st == SlotState::Dead {
                if free_slots.len() < self.idle_spawn_rate as usize {
                    free_slots.push(i); // lowest slots first
                }
            } else {
                if st.code() <= SlotState::Ready.code() {
                    idle += 1; // STARTING(1) and READY(2) count as idle
                }
                total_non_dead += 1;
            }
        }
        // Documented difference (SPEC.md §5.3): never more live children than MaxRequestWorkers.
        free_slots.truncate((self.mrw as usize).saturating_sub(self.alive()));

        if idle > self.max_spare as usize {
            // kill exactly ONE child per cycle (ours: the highest Ready slot, by claim)
            self.retired = (0..self.mrw as usize).rev().find(|&i| self.states[i] == SlotState::Ready);
            if let Some(i) = self.retired {
                self.states[i] = SlotState::IdleKill;
            }
            self.idle_spawn_rate = 1;
        } else if idle < self.min_spare as usize {
            if free_slots.is_empty() {
                if !self.maxclients_reported {
                    self.log = Some(PolicyLog::ReachedMaxRequestWorkers);
                    self.maxclients_reported = true;
                }
                self.idle_spawn_rate = 1;
            } else {
                if self.idle_spawn_rate >= 8 {
                    self.log =
                        Some(PolicyLog::SeemsBusy { spawning: self.idle_spawn_rate, idle, total: total_non_dead });
                }
                for slot in free_slots {
                    self.make_child(slot);
                }
                if self.hold_off_on_exponential_spawning > 0 {
                    self.hold_off_on_exponential_spawning -= 1;
                } else if self.idle_spawn_rate < 32 {
                    self.idle_spawn_rate *= 2;
                }
            }
        } else {
            self.idle_spawn_rate = 1;
        }
    }
}

pub struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (1usize..=40, 1u32..=6, 1u32..=6)
            .prop_flat_map(|(server_limit, min_spare, gap)| {
                let n = server_limit as u32;
                (Just(server_limit), Just(min_spare), Just(min_spare + gap), 1..=n, 1..=n)
            })
            .prop_map(|(server_limit, min_spare, max_spare, mrw, start_servers)| {
                let mut m = Model {
                    server_limit,
                    start_servers,
                    min_spare,
                    max_spare,
                    mrw,
                    states: vec![SlotState::Dead; server_limit],
                    born_at: vec![0; server_limit],
                    now: 0,
                    idle_spawn_rate: 1,
                    hold_off_on_exponential_spawning: 0,
                    maxclients_reported: false,
                    remaining_children_to_start: 0,
                    spawned: vec![],
                    retired: None,
                    log: None,
                };
                // Cold start: remaining_children_to_start = min(StartServers, MaxRequestWorkers),
                // started at once.
                m.startup_children(start_servers.min(mrw));
                m
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Step> {
        // Only valid steps are generated (preconditions stay as a guard while shrinking).
        let slots = |pred: &dyn Fn(usize, SlotState) -> bool| -> Vec<usize> {
            (0..m.server_limit).filter(|&i| pred(i, m.states[i])).collect()
        };
        let n = m.server_limit as u32;
        let mut choices: Vec<(u32, BoxedStrategy<Step>)> = vec![
            (7, Just(Step::Tick).boxed()),
            (1, (1..=n).prop_map(|max_request_workers| Step::GracefulRestart { max_request_workers }).boxed()),
        ];
        let mut add = |weight: u32, from: Vec<usize>, make: fn(usize) -> Step| {
            if !from.is_empty() {
                choices.push((weight, proptest::sample::select(from).prop_map(make).boxed()));
            }
        };
        add(4, slots(&|_, s| s == SlotState::Starting), Step::ChildReady);
        add(4, slots(&|_, s| s == SlotState::Ready), Step::ChildBusy);
        add(3, slots(&|_, s| s.is_busy()), Step::ChildIdle);
        add(2, slots(&|_, s| s.is_live()), Step::ChildExit);
        add(1, slots(&|i, s| sick_may_exit(m, i, s)), Step::ChildSick);
        proptest::strategy::Union::new_weighted(choices).boxed()
    }

    /// Re-checked while shrinking, which can shrink the initial state (a smaller server_limit)
    /// under transitions generated for a larger one: every index is checked, never trusted.
    fn preconditions(m: &Model, step: &Step) -> bool {
        let state = |s: usize| m.states.get(s).copied();
        match *step {
            Step::ChildReady(s) => state(s) == Some(SlotState::Starting),
            Step::ChildBusy(s) => state(s) == Some(SlotState::Ready),
            Step::ChildIdle(s) => state(s).is_some_and(SlotState::is_busy),
            Step::ChildExit(s) => state(s).is_some_and(SlotState::is_live),
            Step::ChildSick(s) => state(s).is_some_and(|st| sick_may_exit(m, s, st)),
            Step::GracefulRestart { max_request_workers } => (1..=m.server_limit as u32).contains(&max_request_workers),
            Step::Tick => true,
        }
    }

    fn apply(mut m: Model, step: &Step) -> Model {
        m.spawned.clear();
        m.retired = None;
        m.log = None;
        match *step {
            Step::Tick => {
                m.now += 1;
                if m.remaining_children_to_start > 0 {
                    // "1 s passed without any reaping": startup_children(remaining); remaining = 0;
                    // and no maintenance on this pass.
                    let n = std::mem::take(&mut m.remaining_children_to_start);
                    m.startup_children(n);
                } else {
                    m.maintain();
                }
            }
            Step::ChildReady(s) | Step::ChildIdle(s) => m.states[s] = SlotState::Ready,
            Step::ChildBusy(s) => m.states[s] = SlotState::BusyRead,
            Step::ChildExit(s) => {
                m.states[s] = SlotState::Dead;
                // else if (remaining_children_to_start && slot < MaxRequestWorkers) make_child(slot)
                // (ours, SPEC.md §5.3: and fewer live children than MaxRequestWorkers).
                if m.remaining_children_to_start > 0 && s < m.mrw as usize && m.alive() < m.mrw as usize {
                    m.make_child(s);
                    m.remaining_children_to_start -= 1;
                }
            }
            Step::ChildSick(s) => {
                // if (st == APEXIT_CHILDSICK) idle_spawn_rate = 1;  (and no refill)
                m.states[s] = SlotState::Dead;
                m.idle_spawn_rate = 1;
            }
            Step::GracefulRestart { max_request_workers } => {
                for st in &mut m.states {
                    if *st != SlotState::Dead && !st.is_directive() {
                        *st = SlotState::Graceful;
                    }
                }
                m.mrw = max_request_workers;
                m.hold_off_on_exponential_spawning = 10;
                m.remaining_children_to_start = m.start_servers.min(m.mrw);
            }
        }
        m
    }
}

/// A child that exits sick here is no crash loop (the brake is the stateright model's and the
/// simulation's to check): it got past starting and has lived two seconds.
fn sick_may_exit(m: &Model, slot: usize, state: SlotState) -> bool {
    (state == SlotState::Ready || state.is_busy()) && m.now >= m.born_at[slot] + 2
}

/// The seeded bug the system under test runs with (`None`: the core as it is).
pub trait Which {
    const BUG: Option<SeededBug>;
}
pub struct Correct;
impl Which for Correct {
    const BUG: Option<SeededBug> = None;
}
macro_rules! seeded {
    ($($name:ident),*) => {$(
        pub struct $name;
        impl Which for $name {
            const BUG: Option<SeededBug> = Some(SeededBug::$name);
        }
    )*};
}
seeded!(RetireEveryCandidate, SpawnHighestFirst, SickKeepsRate, IdleIgnoresStarting);

/// The system under test: the core's `Parent` on a slot board, with children that are only slot
/// words (written through the child's side of the slot protocol).
pub struct Sut {
    board: MemoryBoard<Cell<u64>>,
    driver: ParentDriver,
    /// Performs the parent's effects by recording them (forks succeed at once).
    platform: Recorder,
    /// The configuration it was given (restarts change only max_request_workers).
    raw: RawPoolConfig,
    born: Vec<SlotWord>,
    pids: BTreeMap<usize, Pid>,
    now: Time,
}

impl Sut {
    fn child(&self, slot: usize) -> ChildSlot<'_, Cell<u64>> {
        ChildSlot::attach(&self.board, slot, self.born[slot]).unwrap()
    }

    fn states(&self) -> Vec<SlotState> {
        let view = ScoreboardView::capture(&self.board);
        (0..self.board.slot_count()).map(|i| view.state(i).expect("no corrupt slot")).collect()
    }

    /// Performs the parent's actions as a driver does (forks succeed at once); returns the slots
    /// it forked into and what the policy logged.
    fn drain(&mut self) -> (Vec<usize>, Vec<PolicyLog>) {
        let (mut spawned, mut logs) = (vec![], vec![]);
        for action in self.platform.take() {
            match action {
                ParentAction::Spawn(Spawn { slot, born, .. }) => {
                    let pid = self.driver.parent().children().find(|(s, _)| *s == slot).and_then(|(_, c)| c.pid);
                    self.born[slot] = born;
                    self.pids.insert(slot, pid.expect("the fork's pid went back to the parent"));
                    spawned.push(slot);
                }
                ParentAction::Wake { slot, pid } => {
                    assert_eq!(self.pids.get(&slot), Some(&pid), "a wake-up for a child the parent does not have");
                }
                ParentAction::Log(ParentLog::Policy(l)) => logs.push(l),
                ParentAction::Log(_) | ParentAction::Event(_) => {}
                other => panic!("I4: a running pool's parent asked for {other:?}"),
            }
        }
        (spawned, logs)
    }

    fn exit(&mut self, slot: usize, status: ExitStatus) -> Vec<usize> {
        let pid = self.pids.remove(&slot).expect("a live child");
        self.driver.handle_child_exit(self.now, pid, status, None, &self.board, &mut self.platform);
        self.drain().0
    }
}

pub struct PolicyTest<V>(std::marker::PhantomData<V>);

impl<V: Which> StateMachineTest for PolicyTest<V> {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(m: &Model) -> Sut {
        let raw = RawPoolConfig {
            start_servers: Some(i64::from(m.start_servers)),
            min_spare_servers: Some(i64::from(m.min_spare)),
            max_spare_servers: Some(i64::from(m.max_spare)),
            max_request_workers: Some(i64::from(m.mrw)),
            server_limit: Some(m.server_limit as i64),
            // Apache's algorithm, which has neither demand spawning nor a fork-rate limit
            // (`demand_spawning_*` below check those).
            spawn_mode: Some("ramp".into()),
            fork_rate_limit: Some(100_000),
            ..Default::default()
        };
        let config = PoolConfig::from_raw(&raw).expect("a valid pool").value;
        let mut parent = Parent::new(config);
        if let Some(bug) = V::BUG {
            parent.seed_bug(bug);
        }
        let board = MemoryBoard::new(m.server_limit);
        let mut platform = Recorder::new(100);
        let driver = ParentDriver::start(parent, Time::ZERO, &board, &mut platform);
        let mut sut = Sut {
            board,
            driver,
            platform,
            raw,
            born: vec![SlotWord::EMPTY; m.server_limit],
            pids: BTreeMap::new(),
            now: Time::ZERO,
        };
        let (spawned, _) = sut.drain();
        assert_eq!(spawned, m.spawned, "cold start: StartServers into the lowest slots");
        sut
    }

    fn apply(mut sut: Sut, m: &Model, step: Step) -> Sut {
        match step {
            Step::Tick => {
                let before = sut.states();
                let mrw = sut.driver.parent().config().max_request_workers as usize;
                sut.now += Duration::from_secs(1);
                sut.driver.handle_timeout(sut.now, &sut.board, &mut sut.platform);
                let (spawned, logs) = sut.drain();
                let after = sut.states();
                let retired: Vec<usize> = (0..before.len())
                    .filter(|&i| before[i] == SlotState::Ready && after[i] == SlotState::IdleKill)
                    .collect();
                assert!(retired.len() <= 1, "I5: {} children retired in one tick (slots {retired:?})", retired.len());
                let lowest: Vec<usize> =
                    (0..mrw).filter(|&i| before[i] == SlotState::Dead).take(spawned.len()).collect();
                assert_eq!(
                    spawned, lowest,
                    "I6: spawned into {spawned:?}; the lowest dead slots below max_request_workers were {lowest:?}"
                );
                let live = after.iter().filter(|s| s.is_live()).count();
                assert!(
                    spawned.is_empty() || live <= mrw,
                    "I7: a tick's spawns make {live} children live, max_request_workers {mrw}"
                );
                assert_eq!(
                    (&spawned, retired.first(), logs.first()),
                    (&m.spawned, m.retired.as_ref(), m.log.as_ref()),
                    "I9: the tick's decision (spawned, retired, log) is not the one Apache's algorithm takes on a recount of the same board {before:?}"
                );
            }
            Step::ChildReady(s) | Step::ChildIdle(s) => {
                sut.child(s).set(SlotState::Ready).unwrap();
            }
            Step::ChildBusy(s) => {
                sut.child(s).set(SlotState::BusyRead).unwrap();
            }
            Step::ChildExit(s) => {
                let refilled = sut.exit(s, ExitStatus::Code(code::OK));
                assert_eq!(refilled, m.spawned, "the graceful-restart refill (Apache: 1-for-1 at once)");
            }
            Step::ChildSick(s) => {
                let refilled = sut.exit(s, ExitStatus::Code(code::CHILDSICK));
                assert_eq!(refilled, m.spawned, "a sick child is not replaced at once (Apache)");
            }
            Step::GracefulRestart { max_request_workers } => {
                let raw =
                    RawPoolConfig { max_request_workers: Some(i64::from(max_request_workers)), ..sut.raw.clone() };
                let config = PoolConfig::from_raw(&raw).expect("a valid pool").value;
                let command = Command::GracefulRestart(Box::new(config));
                sut.driver.handle_command(sut.now, command, &sut.board, &mut sut.platform);
                let (spawned, _) = sut.drain();
                assert!(spawned.is_empty(), "a graceful restart forks nothing at once");
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let rate = sut.driver.parent().policy().idle_spawn_rate();
        assert!([1, 2, 4, 8, 16, 32].contains(&rate), "I8: rate {rate}");
        assert_eq!(rate, m.idle_spawn_rate, "I8: the spawn rate is {rate}, Apache's is {}", m.idle_spawn_rate);
        assert_eq!(sut.driver.parent().policy().hold_off(), m.hold_off_on_exponential_spawning, "I8: the hold-off");
        assert_eq!(sut.states(), m.states, "the board and Apache's slots");
        assert_eq!(sut.driver.parent().live_children(), m.alive(), "I14: the parent's records and the board");
        // I9: the counts the core derives are a recount of the states, and add up to the slots.
        let mut recount = Counts::default();
        for s in &m.states {
            recount.add(Some(*s));
        }
        let counts = ScoreboardView::capture(&sut.board).counts();
        assert_eq!(counts, recount, "I9: counts are not a recount");
        assert_eq!(counts.total(), m.server_limit, "I9: counts do not add up to the slots");
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]
    #[test]
    fn spare_server_policy_matches_apaches_algorithm(sequential 1..300 => PolicyTest<Correct>);
}

/// Runs the same state-machine test with the seeded bug of `V`; proptest must fail it, and the
/// minimal failing case must be the `expected` violation (a substring of its message).
fn expect_counterexample<V: Which>(expected: &str) {
    let config =
        ProptestConfig { cases: 512, failure_persistence: None, max_shrink_iters: 256, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(&Reference::sequential_strategy(1..300), |(init, steps, seen)| {
        PolicyTest::<V>::test_sequential(config.clone(), init, steps, seen);
        Ok(())
    });
    let Err(TestError::Fail(why, (init, steps, _))) = result else {
        panic!("proptest must catch the seeded bug {:?}", V::BUG);
    };
    let why = why.to_string();
    eprintln!(
        "{:?} caught as expected: {} steps from server_limit {}, max_request_workers {}: {why}",
        V::BUG,
        steps.len(),
        init.server_limit,
        init.mrw
    );
    assert!(why.contains(expected), "{:?}: caught, but not as {expected:?}: {why}", V::BUG);
}

#[test]
fn negative_retiring_every_candidate_is_caught() {
    expect_counterexample::<RetireEveryCandidate>("I5:");
}

#[test]
fn negative_spawning_into_the_highest_slots_is_caught() {
    expect_counterexample::<SpawnHighestFirst>("I6:");
}

#[test]
fn negative_a_sick_exit_that_keeps_the_rate_is_caught() {
    expect_counterexample::<SickKeepsRate>("I8:");
}

#[test]
fn negative_idle_counted_without_starting_children_is_caught() {
    expect_counterexample::<IdleIgnoresStarting>("I9:");
}
