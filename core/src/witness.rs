//! The rules every effect of a parent is held to (SPEC.md §9: I6, I7, I13, I29, I31), as one
//! checker the simulated worlds share.
//!
//! The core's simulation (`core/tests/common`), stateright, shuttle and the fuzz bodies each
//! perform the parent's effects in their own world, as a [`SimulatedPlatform`]; the driver is
//! handed it inside [`Witnessed`], which holds every effect to the [`Witness`]'s rules before the
//! world carries it out (a spawn, once its pid is known) and hands a [`Breach`] to the world to
//! report its own way (a property, a panic). No world can perform an effect the rules did not
//! see. The world tells the witness what it reaped. Nothing here runs in the server.
//!
//! ```text
//!   spawn(slot, born) -> pid   I6  the slot is below max_request_workers, the word is Starting
//!                              I7  no more children alive than max_request_workers, with this one
//!                              I13 born in the running generation
//!                              (a hard restart forks its new pool before its Ready: those spawns
//!                              are held to the limit that Ready names, in the same input)
//!   wake / signal(slot, pid)   I29 a child the parent forked and has not reaped, in that slot;
//!                                  a kill of a running pool's child is a SIGKILL
//!   event                      I31 in the lifecycle's order; after each input, as the phase says
//! ```

use crate::config::PoolConfig;
use crate::driver::Platform;
use crate::parent::{KillSignal, LifecycleOrder, Observation, ParentEvent, ParentLog, Phase, Pid, Signal, Spawn};
use crate::slot::{SlotState, SlotWord};
use std::collections::BTreeMap;
use std::fmt;

/// An effect that broke an invariant: which one, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Breach {
    /// The invariant, as SPEC.md §9 numbers it (`"I7"`).
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn breach(invariant: &'static str, detail: String) -> Result<(), Breach> {
    Err(Breach { invariant, detail })
}

/// What a world has seen its parent do, and the rules it holds each effect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Witness {
    /// Children forked and not reaped yet: pid → (slot, born word).
    live: BTreeMap<Pid, (usize, SlotWord)>,
    lifecycle: LifecycleOrder,
    /// `max_request_workers` in force (the start's, then each `Ready`'s).
    limit: usize,
    /// Spawns made while no configuration is in force by the events (a hard restart's new pool
    /// is forked before its `Ready`, in the same input): held to I6 and I7 when that `Ready`
    /// names the limit they were made under.
    unnamed: Vec<(usize, bool)>,
}

impl Witness {
    /// A witness of a parent started with `config`.
    pub fn new(config: &PoolConfig) -> Self {
        Witness {
            live: BTreeMap::new(),
            lifecycle: LifecycleOrder::default(),
            limit: config.max_request_workers as usize,
            unnamed: Vec::new(),
        }
    }

    /// The generation the lifecycle events named last (0 before the first `Ready`: the start's
    /// own spawns come first).
    pub fn generation(&self) -> u32 {
        self.lifecycle.generation().unwrap_or(0)
    }

    /// Was the last lifecycle event `Ready` (the pool runs, by the events)?
    pub fn serving(&self) -> bool {
        self.lifecycle.serving()
    }

    /// The platform performed `spawn`: the fork gave `pid`, or failed (`None`).
    pub fn spawned(&mut self, spawn: &Spawn, pid: Option<Pid>) -> Result<(), Breach> {
        let &Spawn { slot, born, .. } = spawn;
        if born.state != SlotState::Starting {
            return breach("I6", format!("a child born {} in slot {slot}, not Starting", born.state));
        }
        if born.generation != self.generation() {
            let running = self.generation();
            return breach(
                "I13",
                format!("a child born in generation {}, the running one is {running}", born.generation),
            );
        }
        if self.lifecycle.reloading() {
            // A hard restart's new pool: its configuration comes with the `Ready` that follows.
            self.unnamed.push((slot, pid.is_some()));
        } else {
            // Every child not reaped, and this one.
            let live = self.live.len() + usize::from(pid.is_some());
            self.within_limit(slot, pid.is_some(), live)?;
        }
        if let Some(pid) = pid {
            self.live.insert(pid, (slot, born));
        }
        Ok(())
    }

    /// I6 and I7 for a spawn into `slot` (which `forked` a child, `live` children with it),
    /// under the limit in force.
    fn within_limit(&self, slot: usize, forked: bool, live: usize) -> Result<(), Breach> {
        if slot >= self.limit {
            return breach("I6", format!("a spawn into slot {slot}, max_request_workers {}", self.limit));
        }
        if forked && live > self.limit {
            return breach("I7", format!("a spawn makes {live} children live, max_request_workers {}", self.limit));
        }
        Ok(())
    }

    /// Is `pid` a child the parent forked and has not reaped, in `slot`?
    fn child_in(&self, slot: usize, pid: Pid) -> Result<(), Breach> {
        match self.live.get(&pid) {
            Some(&(s, _)) if s == slot => Ok(()),
            Some(&(s, _)) => breach("I29", format!("pid {pid} named in slot {slot}; it lives in slot {s}")),
            None => breach("I29", format!("pid {pid} in slot {slot} is not a child the parent has")),
        }
    }

    /// The platform woke `pid` in `slot`.
    pub fn woke(&self, slot: usize, pid: Pid) -> Result<(), Breach> {
        self.child_in(slot, pid)
    }

    /// The platform sent `signal`.
    pub fn signalled(&self, signal: &Signal) -> Result<(), Breach> {
        self.child_in(signal.slot, signal.pid)?;
        if signal.reason.is_some() && signal.signal != KillSignal::Kill {
            return breach("I29", format!("a running pool's child {} killed with {:?}", signal.pid, signal.signal));
        }
        Ok(())
    }

    /// The parent announced `event`.
    pub fn heard(&mut self, event: &ParentEvent) -> Result<(), Breach> {
        self.lifecycle.hear(event).or_else(|e| breach("I31", e.0))?;
        if let ParentEvent::Ready { config, .. } = event {
            self.limit = config.max_request_workers as usize;
            // The held spawns, each counted with the whole new pool (forked in one input).
            for (slot, forked) in std::mem::take(&mut self.unnamed) {
                self.within_limit(slot, forked, self.live.len())?;
            }
        }
        Ok(())
    }

    /// The world reported `pid`'s exit to the parent.
    pub fn reaped(&mut self, pid: Pid) {
        self.live.remove(&pid);
    }

    /// After each input: the events agree with the parent's `phase`.
    pub fn after_input(&self, phase: Phase) -> Result<(), Breach> {
        if let Some(&(slot, _)) = self.unnamed.first() {
            return breach("I31", format!("a spawn into slot {slot} while a hard restart reclaims, and no Ready"));
        }
        self.lifecycle.agrees_with(phase).or_else(|e| breach("I31", e.0))
    }
}

/// A simulated world's half of the [`Platform`]: it performs each effect its own way and keeps
/// the [`Witness`]; [`Witnessed`] holds every effect to the witness's rules on its way in.
pub trait SimulatedPlatform {
    /// The world's witness.
    fn witness(&mut self) -> &mut Witness;
    /// An effect broke a rule: report it (by default, a panic naming the invariant).
    fn breach(&mut self, breach: Breach) {
        panic!("{breach}")
    }
    /// [`Platform::spawn`], in this world.
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String>;
    /// [`Platform::wake`], in this world.
    fn wake(&mut self, slot: usize, pid: Pid);
    /// [`Platform::signal`], in this world.
    fn signal(&mut self, signal: &Signal);
    /// [`Platform::observe`], in this world.
    fn observe(&mut self) -> Observation;
    /// [`Platform::close_listeners`], in this world.
    fn close_listeners(&mut self) {}
    /// [`Platform::drain_listeners`], in this world (by default: as a close, for a world without
    /// listen queues).
    fn drain_listeners(&mut self) {
        self.close_listeners();
    }
    /// [`Platform::log`], in this world.
    fn log(&mut self, _line: ParentLog) {}
    /// [`Platform::event`], in this world (after the witness heard it).
    fn event(&mut self, _event: ParentEvent) {}
}

/// The platform a simulated world hands the driver: the world, with every effect held to its
/// witness's rules.
#[derive(Debug)]
pub struct Witnessed<W>(pub W);

impl<W: SimulatedPlatform> Witnessed<W> {
    fn check(&mut self, rule: impl FnOnce(&mut Witness) -> Result<(), Breach>) {
        if let Err(b) = rule(self.0.witness()) {
            self.0.breach(b);
        }
    }
}

impl<W> std::ops::Deref for Witnessed<W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.0
    }
}

impl<W> std::ops::DerefMut for Witnessed<W> {
    fn deref_mut(&mut self) -> &mut W {
        &mut self.0
    }
}

impl<W: SimulatedPlatform> Platform for Witnessed<W> {
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        let forked = self.0.spawn(spawn);
        let pid = forked.as_ref().ok().copied();
        self.check(|w| w.spawned(spawn, pid));
        forked
    }
    fn wake(&mut self, slot: usize, pid: Pid) {
        self.check(|w| w.woke(slot, pid));
        self.0.wake(slot, pid);
    }
    fn signal(&mut self, signal: &Signal) {
        self.check(|w| w.signalled(signal));
        self.0.signal(signal);
    }
    fn observe(&mut self) -> Observation {
        self.0.observe()
    }
    fn close_listeners(&mut self) {
        self.0.close_listeners();
    }
    fn drain_listeners(&mut self) {
        self.0.drain_listeners();
    }
    fn log(&mut self, line: ParentLog) {
        self.0.log(line);
    }
    fn event(&mut self, event: ParentEvent) {
        self.check(|w| w.heard(&event));
        self.0.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parent::{ChildSpec, KillSignal};

    fn spawn(slot: usize, generation: u32) -> Spawn {
        let born = SlotWord { state: SlotState::Starting, incarnation: 1, generation };
        Spawn {
            slot,
            born,
            child: ChildSpec {
                listeners: 1,
                lock_in_use: false,
                connection_limit: 0,
                scheduling: Default::default(),
                gated: false,
            },
        }
    }

    #[test]
    fn every_rule_bites() {
        let config = PoolConfig { max_request_workers: 2, ..PoolConfig::default() };
        let mut w = Witness::new(&config);
        assert_eq!(w.spawned(&spawn(2, 0), Some(1)).unwrap_err().invariant, "I6");
        assert_eq!(w.spawned(&spawn(0, 1), Some(1)).unwrap_err().invariant, "I13");
        let mut not_starting = spawn(0, 0);
        not_starting.born.state = SlotState::Ready;
        assert_eq!(w.spawned(&not_starting, Some(1)).unwrap_err().invariant, "I6");
        w.spawned(&spawn(0, 0), Some(10)).unwrap();
        w.spawned(&spawn(1, 0), None).unwrap(); // a failed fork adds no child
        w.spawned(&spawn(1, 0), Some(11)).unwrap();
        let over = w.spawned(&spawn(1, 0), Some(12)).unwrap_err();
        assert_eq!(over.to_string(), "I7: a spawn makes 3 children live, max_request_workers 2");
        let term = |slot, pid, reason| Signal { slot, pid, signal: KillSignal::Term, reason };
        w.signalled(&term(0, 10, None)).unwrap();
        w.woke(1, 11).unwrap();
        assert_eq!(w.signalled(&term(1, 10, None)).unwrap_err().invariant, "I29", "the wrong slot");
        assert_eq!(w.signalled(&term(0, 99, None)).unwrap_err().invariant, "I29", "a stranger");
        let watchdog = Some(crate::exit::KillReason::SlotDamaged);
        assert_eq!(w.signalled(&term(0, 10, watchdog)).unwrap_err().invariant, "I29", "a kill is a SIGKILL");
        w.reaped(10);
        assert_eq!(w.woke(0, 10).unwrap_err().invariant, "I29", "reaped");
        // Lifecycle: Ready brings the new limit.
        assert_eq!(w.after_input(Phase::Running).unwrap_err().invariant, "I31", "Ready is owed");
        w.heard(&ParentEvent::Ready {
            generation: 0,
            config: Box::new(PoolConfig { max_request_workers: 1, ..config }),
        })
        .unwrap();
        w.after_input(Phase::Running).unwrap();
        assert!(w.serving());
        assert_eq!(w.spawned(&spawn(1, 0), Some(13)).unwrap_err().invariant, "I6", "the new limit");
        assert_eq!(
            w.heard(&ParentEvent::Ready { generation: 0, config: Box::default() }).unwrap_err().invariant,
            "I31"
        );
    }

    /// A world that performs everything and keeps every breach.
    struct Keeps {
        witness: Witness,
        breaches: Vec<Breach>,
        performed: Vec<&'static str>,
    }

    impl SimulatedPlatform for Keeps {
        fn witness(&mut self) -> &mut Witness {
            &mut self.witness
        }
        fn breach(&mut self, breach: Breach) {
            self.breaches.push(breach);
        }
        fn spawn(&mut self, _: &Spawn) -> Result<Pid, String> {
            self.performed.push("spawn");
            Ok(10)
        }
        fn wake(&mut self, _: usize, _: Pid) {
            self.performed.push("wake");
        }
        fn signal(&mut self, _: &Signal) {
            self.performed.push("signal");
        }
        fn observe(&mut self) -> Observation {
            Observation::default()
        }
        fn event(&mut self, _: ParentEvent) {
            self.performed.push("event");
        }
    }

    /// Every effect handed to a witnessed world passes the witness on its way in: what breaks a
    /// rule reaches the world's `breach`, and the world still performs it (its own checks may
    /// want to see it).
    #[test]
    fn a_witnessed_world_cannot_perform_an_effect_the_rules_did_not_see() {
        let config = PoolConfig { max_request_workers: 1, ..PoolConfig::default() };
        let keeps = Keeps { witness: Witness::new(&config), breaches: vec![], performed: vec![] };
        let mut world = Witnessed(keeps);
        let platform: &mut dyn Platform = &mut world;
        platform.event(ready(0, 1));
        assert_eq!(platform.spawn(&spawn(0, 0)), Ok(10));
        platform.wake(0, 10);
        platform.signal(&Signal { slot: 0, pid: 10, signal: KillSignal::Term, reason: None });
        assert!(world.breaches.is_empty(), "{:?}", world.breaches);
        let platform: &mut dyn Platform = &mut world;
        platform.spawn(&spawn(1, 0)).unwrap();
        platform.wake(0, 99);
        platform.signal(&Signal { slot: 1, pid: 10, signal: KillSignal::Term, reason: None });
        platform.event(ready(0, 1));
        let broken: Vec<&str> = world.breaches.iter().map(|b| b.invariant).collect();
        assert_eq!(broken, ["I6", "I29", "I29", "I31"]);
        assert_eq!(world.performed, ["event", "spawn", "wake", "signal", "spawn", "wake", "signal", "event"]);
    }

    /// A world that does not say otherwise panics at a breach, naming the invariant.
    #[test]
    #[should_panic(expected = "I29: pid 7 in slot 0 is not a child the parent has")]
    fn a_breach_panics_by_default() {
        struct Panics(Witness);
        impl SimulatedPlatform for Panics {
            fn witness(&mut self) -> &mut Witness {
                &mut self.0
            }
            fn spawn(&mut self, _: &Spawn) -> Result<Pid, String> {
                Err("no".into())
            }
            fn wake(&mut self, _: usize, _: Pid) {}
            fn signal(&mut self, _: &Signal) {}
            fn observe(&mut self) -> Observation {
                Observation::default()
            }
        }
        Witnessed(Panics(Witness::new(&PoolConfig::default()))).wake(0, 7);
    }

    fn ready(generation: u32, max_request_workers: u32) -> ParentEvent {
        ParentEvent::Ready { generation, config: Box::new(PoolConfig { max_request_workers, ..PoolConfig::default() }) }
    }

    /// A hard restart forks its new pool before the `Ready` that names its configuration: the
    /// spawns are held to that `Ready`'s limit, and spawns no `Ready` follows are a breach.
    #[test]
    fn a_hard_restarts_new_pool_is_held_to_the_limit_its_ready_names() {
        let config = PoolConfig { max_request_workers: 2, ..PoolConfig::default() };
        let hard = ParentEvent::Reloading { generation: 1, graceful: false };
        let mut w = Witness::new(&config);
        w.heard(&ready(0, 2)).unwrap();
        w.heard(&hard).unwrap();
        w.spawned(&spawn(2, 1), Some(10)).unwrap();
        w.spawned(&spawn(3, 1), Some(11)).unwrap();
        w.spawned(&spawn(1, 1), None).unwrap();
        assert_eq!(w.after_input(Phase::Restarting).unwrap_err().invariant, "I31", "no Ready followed");
        w.heard(&ready(1, 4)).unwrap();
        w.after_input(Phase::Running).unwrap();
        // The same pool under a Ready whose limit it breaks.
        for (max, invariant) in [(3, "I6"), (1, "I7")] {
            let mut w = Witness::new(&config);
            w.heard(&ready(0, 2)).unwrap();
            w.heard(&hard).unwrap();
            w.spawned(&spawn(0, 1), Some(10)).unwrap();
            w.spawned(&spawn(3, 1), Some(11)).unwrap();
            assert_eq!(w.heard(&ready(1, max)).unwrap_err().invariant, invariant, "max_request_workers {max}");
        }
        let mut w = Witness::new(&config);
        w.heard(&ready(0, 2)).unwrap();
        w.heard(&hard).unwrap();
        for (slot, pid) in [(0, 10), (1, 11), (2, 12)] {
            w.spawned(&spawn(slot, 1), Some(pid)).unwrap();
        }
        let over = w.heard(&ready(1, 2)).unwrap_err();
        assert_eq!(over.to_string(), "I7: a spawn makes 3 children live, max_request_workers 2");
    }
}
