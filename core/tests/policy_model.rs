//! proptest-state-machine: the core's spare-server policy (the system under test, carried out on a
//! real slot board through the slot protocol) against a deliberately simple reference model written
//! line by line from Apache's `perform_idle_server_maintenance` (shared/reference/apache-prefork.md
//! §1.5, quoted in the comments), plus the one documented difference (SPEC.md §5.3: spawns never
//! make more children live than max_request_workers).
//!
//! Invariants checked after every step (SPEC.md §9): never spawn into a non-Dead slot (I6), at most
//! one retirement per tick (I5), spawn rate in {1,2,4,8,16,32} (I8), live <= max_request_workers <=
//! server_limit after any spawn (I7), derived counts equal a recount (I9).

use prefork_core::policy::{Decision, PolicyLog, SpareLimits, SpareServerPolicy};
use prefork_core::scoreboard::{ChildSlot, Counts, MemoryBoard, ScoreboardView, SlotTable};
use prefork_core::slot::{SlotState, SlotWord};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestError, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use std::cell::Cell;

/// Steps: maintenance ticks, and what children and operators do between them.
#[derive(Clone, Debug)]
pub enum Step {
    /// A maintenance tick (`allowed`: spawning not held back by the parent).
    Tick { allowed: bool },
    /// The child in `slot` finished starting: `S -> _`.
    ChildReady(usize),
    /// The child in `slot` takes a connection: `_ -> R`.
    ChildBusy(usize),
    /// The child in `slot` finished its connection: `R/W/K/L/C -> _`.
    ChildIdle(usize),
    /// The child in `slot` exited (normally or killed) and was reaped: `-> .`.
    ChildExit(usize),
    /// The child in `slot` exited with CHILDSICK and was reaped (the rate resets to 1).
    ChildSick(usize),
    /// Graceful restart with a new max_request_workers: every live slot `-> G`; 10-tick hold-off.
    GracefulRestart { max_request_workers: u32 },
}

#[derive(Clone, Debug)]
pub struct Model {
    server_limit: usize,
    min_spare: u32,
    max_spare: u32,
    mrw: u32,
    states: Vec<SlotState>,
    // Apache's retained data:
    idle_spawn_rate: u32,
    hold_off_on_exponential_spawning: u32,
    maxclients_reported: bool,
    // What the last tick did (compared with the SUT):
    spawned: Vec<usize>,
    retired: Option<usize>,
    log: Option<PolicyLog>,
}

impl Model {
    /// perform_idle_server_maintenance, as in apache-prefork.md §1.5.
    fn maintain(&mut self, allowed: bool) {
        self.spawned.clear();
        self.retired = None;
        self.log = None;
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
        let alive = self.states.iter().filter(|s| **s != SlotState::Dead).count();
        free_slots.truncate((self.mrw as usize).saturating_sub(alive));

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
            } else if allowed {
                if self.idle_spawn_rate >= 8 {
                    self.log =
                        Some(PolicyLog::SeemsBusy { spawning: self.idle_spawn_rate, idle, total: total_non_dead });
                }
                for &slot in &free_slots {
                    self.states[slot] = SlotState::Starting; // make_child(slot)
                }
                self.spawned = free_slots;
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

    fn limits(&self) -> SpareLimits {
        SpareLimits { min_spare: self.min_spare, max_spare: self.max_spare, max_request_workers: self.mrw }
    }
}

pub struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (1usize..=40, 1u32..=6, 1u32..=6)
            .prop_flat_map(|(server_limit, min_spare, gap)| {
                (Just(server_limit), Just(min_spare), Just(min_spare + gap), 1..=server_limit as u32)
            })
            .prop_map(|(server_limit, min_spare, max_spare, mrw)| Model {
                server_limit,
                min_spare,
                max_spare,
                mrw,
                states: vec![SlotState::Dead; server_limit],
                idle_spawn_rate: 1,
                hold_off_on_exponential_spawning: 0,
                maxclients_reported: false,
                spawned: vec![],
                retired: None,
                log: None,
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Step> {
        // Only valid steps are generated (preconditions stay as a guard while shrinking).
        let slots = |pred: fn(SlotState) -> bool| -> Vec<usize> {
            (0..m.server_limit).filter(|&i| pred(m.states[i])).collect()
        };
        let n = m.server_limit as u32;
        let mut choices: Vec<(u32, BoxedStrategy<Step>)> = vec![
            (6, Just(Step::Tick { allowed: true }).boxed()),
            (1, Just(Step::Tick { allowed: false }).boxed()),
            (1, (1..=n).prop_map(|max_request_workers| Step::GracefulRestart { max_request_workers }).boxed()),
        ];
        let mut add = |weight: u32, from: Vec<usize>, make: fn(usize) -> Step| {
            if !from.is_empty() {
                choices.push((weight, proptest::sample::select(from).prop_map(make).boxed()));
            }
        };
        add(4, slots(|s| s == SlotState::Starting), Step::ChildReady);
        add(4, slots(|s| s == SlotState::Ready), Step::ChildBusy);
        add(3, slots(SlotState::is_busy), Step::ChildIdle);
        add(2, slots(SlotState::is_live), Step::ChildExit);
        add(1, slots(SlotState::is_live), Step::ChildSick);
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
            Step::ChildExit(s) | Step::ChildSick(s) => state(s).is_some_and(SlotState::is_live),
            Step::GracefulRestart { max_request_workers } => (1..=m.server_limit as u32).contains(&max_request_workers),
            Step::Tick { .. } => true,
        }
    }

    fn apply(mut m: Model, step: &Step) -> Model {
        match *step {
            Step::Tick { allowed } => m.maintain(allowed),
            Step::ChildReady(s) | Step::ChildIdle(s) => m.states[s] = SlotState::Ready,
            Step::ChildBusy(s) => m.states[s] = SlotState::BusyRead,
            Step::ChildExit(s) => m.states[s] = SlotState::Dead,
            Step::ChildSick(s) => {
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
            }
        }
        m
    }
}

/// Which system under test: the real one, or a deliberately broken variant (negative tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The core as it is: counts derived from slot states; the first winning claim only.
    Correct,
    /// Seeded bug: counts kept as separate counters updated on events (PHP-FPM's design, peers.md §6),
    /// which forget to move idle/busy children to graceful on a restart: they drift.
    SeparateCounters,
    /// Seeded bug: every retirement candidate is claimed, not just the first that wins.
    ClaimsEveryCandidate,
}

pub trait Which {
    const VARIANT: Variant;
}
pub struct Correct;
impl Which for Correct {
    const VARIANT: Variant = Variant::Correct;
}
pub struct SeparateCounters;
impl Which for SeparateCounters {
    const VARIANT: Variant = Variant::SeparateCounters;
}
pub struct ClaimsEveryCandidate;
impl Which for ClaimsEveryCandidate {
    const VARIANT: Variant = Variant::ClaimsEveryCandidate;
}

/// The system under test: the core's policy, carried out on a slot board through the protocol.
pub struct Sut {
    board: MemoryBoard<Cell<u64>>,
    born: Vec<SlotWord>,
    policy: SpareServerPolicy,
    limits: SpareLimits,
    generation: u32,
    variant: Variant,
    /// Only for `Variant::SeparateCounters`: the counters it maintains instead of deriving.
    counters: Counts,
}

impl Sut {
    fn child(&self, slot: usize) -> ChildSlot<'_, Cell<u64>> {
        ChildSlot::attach(&self.board, slot, self.born[slot]).unwrap()
    }

    /// The counts the variant believes in.
    fn counts(&self) -> Counts {
        match self.variant {
            Variant::SeparateCounters => self.counters,
            _ => ScoreboardView::capture(&self.board).counts(),
        }
    }

    fn count_move(&mut self, from: SlotState, to: SlotState) {
        fn field(c: &mut Counts, s: SlotState) -> &mut usize {
            match s {
                SlotState::Dead => &mut c.dead,
                SlotState::Starting => &mut c.starting,
                SlotState::Ready => &mut c.ready,
                SlotState::Graceful => &mut c.graceful,
                SlotState::IdleKill => &mut c.idle_kill,
                _ => &mut c.busy,
            }
        }
        let from = field(&mut self.counters, from);
        *from = from.saturating_sub(1);
        *field(&mut self.counters, to) += 1;
    }
}

pub struct PolicyTest<V>(std::marker::PhantomData<V>);

impl<V: Which> StateMachineTest for PolicyTest<V> {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(m: &Model) -> Sut {
        Sut {
            board: MemoryBoard::new(m.server_limit),
            born: vec![SlotWord::EMPTY; m.server_limit],
            policy: SpareServerPolicy::new(),
            limits: m.limits(),
            generation: 0,
            variant: V::VARIANT,
            counters: Counts { dead: m.server_limit, ..Counts::default() },
        }
    }

    fn apply(mut sut: Sut, m: &Model, step: Step) -> Sut {
        match step {
            Step::Tick { allowed } => {
                let view = ScoreboardView::capture(&sut.board);
                let out = sut.policy.tick(sut.limits, &view, allowed);
                let mut spawned = vec![];
                let mut retired = vec![];
                match out.decision {
                    Decision::Spawn { slots } => {
                        assert!(!slots.is_empty() && slots.len() <= 32);
                        for slot in slots {
                            // I6: spawn() refuses any slot that is not Dead.
                            let word =
                                sut.board.slot(slot).unwrap().spawn(sut.generation).expect("spawn into a Dead slot");
                            sut.born[slot] = word;
                            sut.count_move(SlotState::Dead, SlotState::Starting);
                            spawned.push(slot);
                        }
                    }
                    Decision::Retire { candidates } => {
                        for slot in candidates {
                            let seen = view.slots[slot].unwrap();
                            if sut.board.slot(slot).unwrap().claim_idle(seen).is_ok() {
                                retired.push(slot);
                                sut.count_move(SlotState::Ready, SlotState::IdleKill);
                                if sut.variant != Variant::ClaimsEveryCandidate {
                                    break;
                                }
                            }
                        }
                    }
                    Decision::Steady | Decision::AtMaxRequestWorkers | Decision::SpawnPaused => {}
                }
                assert!(retired.len() <= 1, "I5: at most one retirement per tick");
                assert_eq!(spawned, m.spawned, "spawned slots");
                assert_eq!(retired.first().copied(), m.retired, "retired slot");
                assert_eq!(out.log, m.log, "log");
                if !spawned.is_empty() {
                    let live = ScoreboardView::capture(&sut.board).counts().live();
                    assert!(live <= sut.limits.max_request_workers as usize, "I7: spawning past max_request_workers");
                }
            }
            Step::ChildReady(s) | Step::ChildIdle(s) => {
                let from = sut.board.slot(s).unwrap().read().unwrap().state;
                sut.child(s).set(SlotState::Ready).unwrap();
                sut.count_move(from, SlotState::Ready);
            }
            Step::ChildBusy(s) => {
                sut.child(s).set(SlotState::BusyRead).unwrap();
                sut.count_move(SlotState::Ready, SlotState::BusyRead);
            }
            Step::ChildExit(s) | Step::ChildSick(s) => {
                let born = sut.born[s];
                let was = sut.board.slot(s).unwrap().reap(born).unwrap().state;
                sut.count_move(was, SlotState::Dead);
                if matches!(step, Step::ChildSick(_)) {
                    sut.policy.on_child_sick();
                }
            }
            Step::GracefulRestart { max_request_workers } => {
                sut.generation += 1;
                sut.board.publish_generation(sut.generation);
                for slot in 0..sut.board.slot_count() {
                    let before = sut.board.slot(slot).unwrap().mark_graceful().unwrap();
                    // The counter bookkeeping "forgets" idle and busy children here (the drift).
                    if before == SlotState::Starting {
                        sut.count_move(before, SlotState::Graceful);
                    }
                }
                sut.limits.max_request_workers = max_request_workers;
                sut.policy.on_graceful_restart();
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let rate = sut.policy.idle_spawn_rate();
        assert!([1, 2, 4, 8, 16, 32].contains(&rate), "I8: rate {rate}");
        assert_eq!(rate, m.idle_spawn_rate);
        assert_eq!(sut.policy.hold_off(), m.hold_off_on_exponential_spawning);
        assert!(sut.limits.max_request_workers as usize <= m.server_limit, "I7");
        // I9: derived counts equal a recount of the (reference) states, and the states agree.
        let view = ScoreboardView::capture(&sut.board);
        let states: Vec<SlotState> = (0..m.server_limit).map(|i| view.state(i).unwrap()).collect();
        assert_eq!(states, m.states);
        let mut recount = Counts::default();
        for s in &m.states {
            recount.add(Some(*s));
        }
        assert_eq!(sut.counts(), recount, "I9: counts drifted from a recount");
        assert_eq!(sut.counts().total(), m.server_limit);
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

/// Runs the same state-machine test on variant `V`; returns the minimal failing case, if any.
fn counterexample<V: Which>() -> Option<String> {
    let config =
        ProptestConfig { cases: 512, failure_persistence: None, max_shrink_iters: 64, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(&Reference::sequential_strategy(1..300), |(init, steps, seen)| {
        PolicyTest::<V>::test_sequential(config.clone(), init, steps, seen);
        Ok(())
    });
    match result {
        Err(TestError::Fail(why, (init, steps, _))) => {
            Some(format!("{why}: {} steps from {:?} ...", steps.len(), (init.server_limit, init.mrw)))
        }
        _ => None,
    }
}

#[test]
fn negative_separate_counters_drift_and_proptest_catches_it() {
    let found = counterexample::<SeparateCounters>();
    assert!(found.is_some(), "proptest must find the drift of separately kept counters");
    eprintln!("caught as expected: {}", found.unwrap());
}

#[test]
fn negative_claiming_every_candidate_and_proptest_catches_it() {
    let found = counterexample::<ClaimsEveryCandidate>();
    assert!(found.is_some(), "proptest must find the double retirement");
    eprintln!("caught as expected: {}", found.unwrap());
}
