//! The gate with gated children, explored exhaustively (SPEC.md §15.3, G5): the core's
//! [`Gate`] and [`ChildLoop`] (gated) on a board kept in the state, with the hand-over channel
//! between them, connections whose heads arrive in parts or at once, time that runs out their
//! deadlines, and a graceful stop at any point.
//!
//! Property G5: once every child has left, no complete head is left behind (in the channel, or
//! in the gate's queue): a draining gated child leaves only when the channel hangs up, and a
//! head the draining gate completes late still reaches a child. The seeded bug
//! `GatedDrainEndsWhenEmpty` (a gated child that leaves at its first empty read, as an ungated
//! one does after an empty round) must be caught.

use crate::words::{BoardWords, CellBoard};
use prefork_core::child::{ChildAction, ChildEvent, ChildLoop};
use prefork_core::gate::{ConnId, Gate, GateAction, GateConfig, GateStop, HeadProgress};
use prefork_core::scoreboard::{ChildSlot, SlotTable};
use prefork_core::seeded::SeededBug;
use prefork_core::time::Time;
use stateright::{Model, Property};
use std::collections::VecDeque;
use std::time::Duration;

/// The model: how many children and connections, the gate's table, and a seeded bug.
#[derive(Clone, Debug)]
pub struct GateSystem {
    /// Gated children.
    pub children: usize,
    /// Connections that may arrive.
    pub conns: usize,
    /// The gate's table.
    pub capacity: usize,
    /// A deliberately broken child loop (negative tests).
    pub bug: Option<SeededBug>,
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conn {
    /// Not arrived.
    Away,
    /// In the gate, `bytes` of its head so far (0 or 1: begun).
    Reading(u8),
    /// Complete, in the gate's queue.
    Complete,
    /// In the hand-over channel.
    InChannel,
    /// Taken by a child, being served.
    Taken,
    /// Served.
    Served,
    /// Closed by the gate (a deadline, a stop).
    Closed,
}

/// One gated child.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Child {
    lp: ChildLoop,
    /// The slot word it was born with.
    born: prefork_core::slot::SlotWord,
    /// What it asked for and is doing.
    action: ChildAction,
    /// The connection it took.
    holding: Option<ConnId>,
    /// The parent woke it (a graceful mark) and it has not looked yet.
    woken: bool,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GateState {
    gate: Gate,
    gate_exited: bool,
    /// The parent still holds the channel's sending end (until the stop).
    parent_holds: bool,
    channel: VecDeque<ConnId>,
    board: BoardWords,
    children: Vec<Child>,
    conns: Vec<Conn>,
    now: Time,
    ticks: u8,
    stopped: bool,
    /// Heads completed after the stop.
    late: Vec<bool>,
    /// A head completed after the stop was served (the interesting path; an example).
    late_head_served: bool,
    /// The gate closed a connection whose head was complete.
    closed_complete: bool,
}

/// What happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Connection `i` arrives at the gate.
    Arrive(usize),
    /// Connection `i` sends part of its head.
    Part(usize),
    /// Connection `i` sends the rest of its head.
    Rest(usize),
    /// Time passes: `request_read_timeout` (deadlines run out).
    Tick,
    /// Child `i` carries out what it asked for.
    Child(usize),
    /// A graceful stop.
    GracefulStop,
}

const GENERATION: u32 = 1;

fn config(capacity: usize) -> GateConfig {
    GateConfig { capacity, ..GateConfig::default() }
}

impl GateSystem {
    fn hung_up(s: &GateState) -> bool {
        s.gate_exited && !s.parent_holds
    }

    /// Carries out what the gate asks (hand-overs go into the channel at once).
    fn run_gate(s: &mut GateState) {
        while let Some(a) = s.gate.poll_action() {
            match a {
                GateAction::HandOver(id) => {
                    s.channel.push_back(id);
                    s.conns[id as usize] = Conn::InChannel;
                    s.gate.handle_handed(id).expect("the hand-over in flight");
                }
                GateAction::Close(id, _) | GateAction::PassOn(id) => {
                    let c = &mut s.conns[id as usize];
                    s.closed_complete |= matches!(c, Conn::Complete | Conn::InChannel);
                    *c = Conn::Closed;
                }
                GateAction::Exit => s.gate_exited = true,
            }
        }
    }

    /// The event child `i`'s action meets now, if it can proceed.
    fn event_for(s: &GateState, i: usize) -> Option<ChildEvent<'static>> {
        let c = &s.children[i];
        match c.action {
            ChildAction::Wait if !s.channel.is_empty() => Some(ChildEvent::Readable(&[0])),
            ChildAction::Wait if Self::hung_up(s) => Some(ChildEvent::SourceClosed),
            ChildAction::Wait if c.woken => Some(ChildEvent::Woken),
            ChildAction::Wait => None,
            ChildAction::Accept { .. } if !s.channel.is_empty() => Some(ChildEvent::Accepted),
            ChildAction::Accept { .. } if Self::hung_up(s) => Some(ChildEvent::SourceClosed),
            ChildAction::Accept { .. } => Some(ChildEvent::AcceptEmpty),
            ChildAction::Serve => Some(ChildEvent::ConnectionDone),
            ChildAction::Exit(_) => None,
            // No lock in a gated child.
            ChildAction::AcquireLock | ChildAction::ReleaseLock => None,
        }
    }
}

impl Model for GateSystem {
    type State = GateState;
    type Action = Step;

    fn init_states(&self) -> Vec<GateState> {
        let mut words = BoardWords::new(self.children);
        let board = CellBoard::load(&words);
        board.publish_generation(GENERATION);
        let mut children = vec![];
        for i in 0..self.children {
            let born = board.slot(i).expect("slot").spawn(GENERATION).expect("a dead slot");
            let mut lp = ChildLoop::new(1, false, 0).gated();
            crate::seeded::seed_child(&mut lp, self.bug);
            let me = ChildSlot::attach(&board, i, born).expect("attach");
            let action = lp.handle(ChildEvent::Started, &me).expect("started");
            children.push(Child { lp, born, action, holding: None, woken: false });
        }
        words = board.save();
        vec![GateState {
            gate: Gate::new(config(self.capacity)),
            gate_exited: false,
            parent_holds: true,
            channel: VecDeque::new(),
            board: words,
            children,
            conns: vec![Conn::Away; self.conns],
            now: Time::ZERO,
            ticks: 0,
            stopped: false,
            late: vec![false; self.conns],
            late_head_served: false,
            closed_complete: false,
        }]
    }

    fn actions(&self, s: &GateState, actions: &mut Vec<Step>) {
        for (i, c) in s.conns.iter().enumerate() {
            match c {
                Conn::Away if s.gate.accepting() && !s.stopped => actions.push(Step::Arrive(i)),
                Conn::Reading(0) => {
                    actions.push(Step::Part(i));
                    actions.push(Step::Rest(i));
                }
                Conn::Reading(_) => actions.push(Step::Rest(i)),
                _ => {}
            }
        }
        if s.ticks < 1 && s.gate.next_deadline().is_some() {
            actions.push(Step::Tick);
        }
        for i in 0..s.children.len() {
            if Self::event_for(s, i).is_some() {
                actions.push(Step::Child(i));
            }
        }
        if !s.stopped {
            actions.push(Step::GracefulStop);
        }
    }

    fn next_state(&self, last: &GateState, step: Step) -> Option<GateState> {
        let mut s = last.clone();
        let board = CellBoard::load(&s.board);
        match step {
            Step::Arrive(i) => {
                s.gate.handle_accepted(s.now, i as ConnId).ok()?;
                s.conns[i] = Conn::Reading(0);
            }
            Step::Part(i) => {
                s.gate.handle_read(s.now, i as ConnId, 1, HeadProgress::Partial).ok()?;
                s.conns[i] = Conn::Reading(1);
            }
            Step::Rest(i) => {
                s.gate.handle_read(s.now, i as ConnId, 2, HeadProgress::Complete).ok()?;
                s.conns[i] = Conn::Complete;
                s.late[i] = s.stopped;
            }
            Step::Tick => {
                s.ticks += 1;
                s.now += Duration::from_secs(20);
                s.gate.handle_tick(s.now);
            }
            Step::GracefulStop => {
                s.stopped = true;
                board.publish_draining(GENERATION);
                for (i, c) in s.children.iter_mut().enumerate() {
                    if c.lp.exited().is_none() {
                        let _ = board.slot(i).expect("slot").mark_graceful();
                        c.woken = true;
                    }
                }
                s.gate.handle_stop(s.now, GateStop::Drain);
                s.gate.handle_listeners_empty();
                s.parent_holds = false;
            }
            Step::Child(i) => {
                let event = Self::event_for(&s, i)?;
                let me = ChildSlot::attach(&board, i, s.children[i].born).ok()?;
                match event {
                    ChildEvent::Accepted => {
                        let id = s.channel.pop_front()?;
                        s.conns[id as usize] = Conn::Taken;
                        s.children[i].holding = Some(id);
                    }
                    ChildEvent::ConnectionDone => {
                        let id = s.children[i].holding.take()?;
                        s.conns[id as usize] = Conn::Served;
                        s.late_head_served |= s.late[id as usize];
                    }
                    ChildEvent::Woken => s.children[i].woken = false,
                    _ => {}
                }
                let c = &mut s.children[i];
                c.action = c.lp.handle(event, &me).ok()?;
            }
        }
        Self::run_gate(&mut s);
        s.board = board.save();
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("G5: every complete head reaches a child", |_: &GateSystem, s: &GateState| {
                let all_gone = s.children.iter().all(|c| c.lp.exited().is_some());
                !all_gone || (s.channel.is_empty() && s.gate.queued() == 0)
            }),
            Property::always("G1: a complete head is never closed", |_: &GateSystem, s: &GateState| !s.closed_complete),
            Property::sometimes(
                "example: a head completed after the stop is served",
                |_: &GateSystem, s: &GateState| s.late_head_served,
            ),
        ]
    }
}
