//! A deterministic simulation of one parent and its children, for tests: the core's own `Parent`
//! (through the `ParentDriver`, like every driver) and `ChildLoop` on a `MemoryBoard<Cell<u64>>`,
//! with a fake clock and fake processes. Nothing here re-implements protocol logic: the platform
//! only performs the effects the machines ask for.
#![allow(dead_code)]

use prefork_core::child::{ChildAction, ChildEvent, ChildLoop};
use prefork_core::config::{PoolConfig, RawPoolConfig};
use prefork_core::driver::ParentDriver;
use prefork_core::exit::{ExitReason, ExitStatus};
use prefork_core::parent::{
    Command, KillSignal, Observation, Parent, ParentEvent, ParentLog, Pid, QueueDepth, Signal, Spawn,
};
use prefork_core::scoreboard::{ChildSlot, MemoryBoard, ScoreboardView, SlotTable};
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_core::witness::{Breach, SimulatedPlatform, Witness, Witnessed};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// How a simulated child process behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs the child loop; dies on SIGTERM.
    #[default]
    Normal,
    /// Crashes (SIGSEGV) as soon as it starts.
    CrashOnStart,
    /// Is killed (SIGKILL, by someone else: the OOM killer, an operator) as soon as it starts.
    KilledOnStart,
    /// Ignores SIGTERM (only SIGKILL kills it).
    IgnoresTerm,
    /// Ignores every signal (a process stuck in the kernel).
    Unkillable,
}

pub struct Proc {
    pub slot: usize,
    pub born: SlotWord,
    pub child: ChildLoop,
    pub last: Option<ChildAction>,
    pub woken: bool,
    pub behaviour: Behaviour,
}

pub struct Sim {
    pub now: Time,
    pub board: MemoryBoard<Cell<u64>>,
    pub driver: ParentDriver,
    pub exit_code: Option<i32>,
    /// Everything but the parent (the simulated platform); its fields read as `sim.procs` etc.
    pub world: World,
}

/// The simulated processes and what the parent did to them.
#[derive(Default)]
pub struct World {
    pub procs: BTreeMap<Pid, Proc>,
    pub next_pid: Pid,
    pub forks: usize,
    pub logs: Vec<(Time, ParentLog)>,
    pub wakes: Vec<(usize, Pid)>,
    pub signals: Vec<(Time, Pid, KillSignal)>,
    pub exits: Vec<(Pid, ExitStatus, Option<ExitReason>)>,
    pub listeners_closed: bool,
    /// `DrainListeners` came (a graceful stop): the queues take no new connection.
    pub listeners_draining: bool,
    /// Connections the children took from the queues while draining a graceful stop.
    pub drained: u32,
    pub fork_fails: bool,
    pub behaviour: Behaviour,
    /// What the listen queues hold (the watchdog's evidence); empty by default.
    pub queues: Vec<QueueDepth>,
    /// Who the "kernel" says holds the accept lock (the watchdog's other evidence).
    pub lock_holder: Option<Pid>,
    /// The parent's lifecycle events, in order.
    pub events: Vec<(Time, ParentEvent)>,
    /// The rules every effect is held to (I6, I7, I13, I29, I31), shared by every simulated
    /// world, and the first breach.
    pub witness: Option<Witness>,
    pub breach: Option<String>,
}

impl std::ops::Deref for Sim {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl std::ops::DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

pub fn config(raw: RawPoolConfig) -> PoolConfig {
    PoolConfig::from_raw(&raw).expect("valid test config").value
}

impl Sim {
    pub fn new(cfg: PoolConfig) -> Sim {
        Self::with(cfg, Behaviour::Normal)
    }

    pub fn with(cfg: PoolConfig, behaviour: Behaviour) -> Sim {
        Self::seeded(cfg, behaviour, None)
    }

    /// A simulation whose parent runs with a seeded bug (negative tests).
    pub fn seeded(cfg: PoolConfig, behaviour: Behaviour, bug: Option<prefork_core::seeded::SeededBug>) -> Sim {
        let mut parent = Parent::new(cfg.clone());
        if let Some(bug) = bug {
            parent.seed_bug(bug);
        }
        let board = MemoryBoard::new(cfg.server_limit as usize);
        let mut world = World { next_pid: 100, behaviour, witness: Some(Witness::new(&cfg)), ..World::default() };
        let driver = ParentDriver::start(
            parent,
            Time::ZERO,
            &board,
            &mut Witnessed(SimPlatform { now: Time::ZERO, world: &mut world }),
        );
        let sim = Sim { now: Time::ZERO, board, driver, exit_code: None, world };
        sim.check_lifecycle();
        sim
    }

    /// Every effect so far kept the witness's rules, and the lifecycle events agree with the
    /// parent's phase (I31).
    fn check_lifecycle(&self) {
        if let Some(b) = &self.breach {
            panic!("{b}");
        }
        if let Err(b) = self.witness().after_input(self.parent().phase()) {
            panic!("{b}");
        }
    }

    fn witness(&self) -> &Witness {
        self.world.witness.as_ref().expect("set at the start")
    }

    /// The parent (to read; inputs go through the driver).
    pub fn parent(&self) -> &Parent {
        self.driver.parent()
    }

    /// Feeds the parent one input through the driver, performing its effects on the simulated
    /// platform.
    pub fn drive(
        &mut self,
        input: impl FnOnce(&mut ParentDriver, Time, &MemoryBoard<Cell<u64>>, &mut Witnessed<SimPlatform<'_>>) -> Option<i32>,
    ) {
        let mut platform = Witnessed(SimPlatform { now: self.now, world: &mut self.world });
        if let Some(code) = input(&mut self.driver, self.now, &self.board, &mut platform) {
            self.exit_code = Some(code);
        }
        self.check_lifecycle();
    }

    /// The operator's command.
    pub fn command(&mut self, command: Command) {
        self.drive(|driver, now, board, platform| driver.handle_command(now, command, board, platform));
    }

    /// Reaps every process that exited (the SIGCHLD + waitpid loop).
    pub fn reap(&mut self) {
        while !self.exits.is_empty() {
            for (pid, status, reason) in std::mem::take(&mut self.exits) {
                self.world.witness.as_mut().expect("set at the start").reaped(pid);
                self.drive(|driver, now, board, platform| {
                    driver.handle_child_exit(now, pid, status, reason, board, platform)
                });
            }
        }
    }

    /// Feeds one event to child `pid` and records its action; an `Exit` ends the process.
    pub fn step(&mut self, pid: Pid, ev: ChildEvent<'_>) -> ChildAction {
        let p = self.world.procs.get_mut(&pid).expect("live pid");
        let slot = ChildSlot::attach(&self.board, p.slot, p.born).unwrap();
        let a = p.child.handle(ev, &slot).expect("legal event");
        p.last = Some(a);
        if let ChildAction::Exit(reason) = a {
            self.procs.remove(&pid);
            self.exits.push((pid, ExitStatus::Code(reason.exit_code()), Some(reason)));
        }
        a
    }

    /// Starts every child that has not started yet (each one reaches `Wait`, or crashes).
    pub fn start_children(&mut self) {
        let new: Vec<Pid> = self.procs.iter().filter(|(_, p)| p.last.is_none()).map(|(&pid, _)| pid).collect();
        for pid in new {
            let signal = match self.procs[&pid].behaviour {
                Behaviour::CrashOnStart => Some(11),
                Behaviour::KilledOnStart => Some(9),
                _ => None,
            };
            if let Some(sig) = signal {
                self.procs.remove(&pid);
                self.exits.push((pid, ExitStatus::Signaled(sig), None));
                continue;
            }
            self.step(pid, ChildEvent::Started);
        }
    }

    /// Delivers pending wake-ups to children waiting in `Wait`.
    pub fn deliver_wakes(&mut self) {
        let woken: Vec<Pid> = self
            .procs
            .iter()
            .filter(|(_, p)| p.woken && p.last == Some(ChildAction::Wait))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in woken {
            self.procs.get_mut(&pid).unwrap().woken = false;
            self.step(pid, ChildEvent::Woken);
        }
    }

    /// Children draining the listen queues (a graceful stop) take what is queued, serve each
    /// connection at once, and find the queues empty in the end.
    pub fn deliver_drains(&mut self) {
        let draining: Vec<Pid> = self
            .procs
            .iter()
            .filter(|(_, p)| p.child.draining() && matches!(p.last, Some(ChildAction::Accept { .. })))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in draining {
            while let Some(ChildAction::Accept { listener }) = self.procs.get(&pid).and_then(|p| p.last) {
                let queued = self.world.queues.get_mut(listener).filter(|q| q.waiting > 0);
                if let Some(q) = queued {
                    q.waiting -= 1;
                    self.world.drained += 1;
                    assert_eq!(self.step(pid, ChildEvent::Accepted), ChildAction::Serve);
                    self.step(pid, ChildEvent::ConnectionDone);
                } else {
                    self.step(pid, ChildEvent::AcceptEmpty);
                }
            }
        }
    }

    /// Child `pid` (waiting) accepts a connection on listener 0 and starts serving it.
    pub fn take_connection(&mut self, pid: Pid) -> ChildAction {
        match self.step(pid, ChildEvent::Readable(&[0])) {
            ChildAction::Accept { .. } => {}
            other => return other,
        }
        self.step(pid, ChildEvent::Accepted)
    }

    /// Child `pid` (serving) finishes its connection.
    pub fn finish_connection(&mut self, pid: Pid) -> ChildAction {
        self.step(pid, ChildEvent::ConnectionDone)
    }

    /// Lets the children react (start, wake) and reaps whoever exited, until nothing changes.
    pub fn settle(&mut self) {
        loop {
            let before = (self.procs.len(), self.exits.len(), self.forks);
            self.start_children();
            self.deliver_wakes();
            self.deliver_drains();
            self.reap();
            if before == (self.procs.len(), self.exits.len(), self.forks) {
                break;
            }
        }
    }

    /// Advances the clock to the parent's next timeout and handles it.
    pub fn next_timeout(&mut self) -> Option<Time> {
        let t = self.driver.poll_timeout()?;
        self.now = self.now.max(t);
        self.drive(|driver, now, board, platform| driver.handle_timeout(now, board, platform));
        Some(self.now)
    }

    /// Advances the clock by `d`, handling every timeout on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.driver.poll_timeout() {
            if t > end {
                break;
            }
            self.next_timeout();
        }
        self.now = end;
    }

    /// One maintenance tick, then let the children react.
    pub fn tick(&mut self) {
        self.next_timeout();
        self.settle();
    }

    pub fn board_generation(&self) -> u32 {
        self.board.running_generation()
    }

    pub fn view(&self) -> ScoreboardView {
        ScoreboardView::capture(&self.board)
    }

    pub fn letters(&self) -> String {
        self.view().letters()
    }

    pub fn state(&self, slot: usize) -> SlotState {
        self.view().state(slot).expect("decodable slot")
    }

    pub fn pid_in(&self, slot: usize) -> Pid {
        self.parent().children().find(|(s, _)| *s == slot).and_then(|(_, c)| c.pid).expect("child in slot")
    }

    pub fn waiting(&self) -> Vec<Pid> {
        self.procs.iter().filter(|(_, p)| p.last == Some(ChildAction::Wait)).map(|(&pid, _)| pid).collect()
    }

    pub fn logged(&self, pred: impl Fn(&ParentLog) -> bool) -> usize {
        self.logs.iter().filter(|(_, l)| pred(l)).count()
    }

    /// Every simulation invariant that must hold between steps.
    pub fn check(&self) {
        let view = self.view();
        let counts = view.counts();
        assert_eq!(counts.corrupt, 0, "{view}");
        assert_eq!(counts.live(), self.parent().live_children(), "board and parent disagree: {view}");
        assert!(
            self.parent().live_children() <= self.parent().config().max_request_workers as usize
                || self.parent().generation() > 0
        );
        for (slot, rec) in self.parent().children() {
            let w = view.slots[slot].unwrap();
            assert_eq!((w.incarnation, w.generation), (rec.born.incarnation, rec.born.generation), "slot {slot}");
            if let Some(pid) = rec.pid {
                let alive = self.procs.contains_key(&pid) || self.exits.iter().any(|e| e.0 == pid);
                assert!(alive, "parent thinks {pid} lives in slot {slot}");
            }
        }
    }
}

/// The simulated platform: the effects of the parent's actions on the simulated processes
/// (held to the shared rules by [`Witnessed`]).
pub struct SimPlatform<'a> {
    now: Time,
    world: &'a mut World,
}

impl SimulatedPlatform for SimPlatform<'_> {
    fn witness(&mut self) -> &mut Witness {
        self.world.witness.as_mut().expect("set at the start")
    }

    /// Keeps the first breach (the simulation's checks report it after the input).
    fn breach(&mut self, breach: Breach) {
        self.world.breach.get_or_insert(breach.to_string());
    }

    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid, String> {
        let &Spawn { slot, born, .. } = spawn;
        if self.world.fork_fails {
            return Err("Resource temporarily unavailable (simulated)".into());
        }
        let pid = self.world.next_pid;
        self.world.next_pid += 1;
        self.world.forks += 1;
        let child = spawn.child.child_loop();
        self.world
            .procs
            .insert(pid, Proc { slot, born, child, last: None, woken: false, behaviour: self.world.behaviour });
        Ok(pid)
    }

    fn wake(&mut self, slot: usize, pid: Pid) {
        self.world.wakes.push((slot, pid));
        if let Some(p) = self.world.procs.get_mut(&pid) {
            p.woken = true;
        }
    }

    fn signal(&mut self, &Signal { pid, signal, .. }: &Signal) {
        self.world.signals.push((self.now, pid, signal));
        let Some(p) = self.world.procs.get(&pid) else {
            return;
        };
        let dies =
            !matches!((p.behaviour, signal), (Behaviour::Unkillable, _) | (Behaviour::IgnoresTerm, KillSignal::Term));
        if dies {
            let sig = if signal == KillSignal::Term { SIGTERM } else { SIGKILL };
            self.world.procs.remove(&pid);
            self.world.exits.push((pid, ExitStatus::Signaled(sig), None));
        }
    }

    fn close_listeners(&mut self) {
        self.world.listeners_closed = true;
        self.world.queues.clear();
    }

    fn drain_listeners(&mut self) {
        self.world.listeners_draining = true;
    }

    fn observe(&mut self) -> Observation {
        Observation { queues: self.world.queues.clone(), lock_holder: self.world.lock_holder }
    }

    fn log(&mut self, line: ParentLog) {
        self.world.logs.push((self.now, line));
    }

    fn event(&mut self, event: ParentEvent) {
        self.world.events.push((self.now, event));
    }
}

pub fn pool(start: i64, min: i64, max: i64, mrw: i64) -> PoolConfig {
    // Apache's ramp: these simulations check Apache's algorithm (`demand_pool` for the default).
    config(RawPoolConfig { spawn_mode: Some("ramp".into()), ..raw_pool(start, min, max, mrw) })
}

/// [`pool`] with the default `spawn_mode = "demand"`.
pub fn demand_pool(start: i64, min: i64, max: i64, mrw: i64) -> PoolConfig {
    config(raw_pool(start, min, max, mrw))
}

fn raw_pool(start: i64, min: i64, max: i64, mrw: i64) -> RawPoolConfig {
    RawPoolConfig {
        start_servers: Some(start),
        min_spare_servers: Some(min),
        max_spare_servers: Some(max),
        max_request_workers: Some(mrw),
        server_limit: Some(mrw.max(1)),
        ..Default::default()
    }
}
