//! The child loop (SPEC.md §6): what a child does between fork() and exit().
//!
//! ```text
//!   Started ──> [limit reached? ─yes─> Exit(MaxConnections)]
//!      │        set Ready (directive? -> Exit) · generation moved? -> Exit
//!      │
//!      ├─ lock in use ─> AcquireLock ──LockAcquired──> directive? ─yes─> ReleaseLock -> Exit
//!      │                     ^  └─LockInterrupted─> directive? -> Exit, else AcquireLock
//!      v                                                   │ no
//!    Wait  <───────────────────────────────────────────────┘
//!      │  Woken: directive? -> (ReleaseLock) -> Exit, else Wait
//!      │  Readable(ready listeners): pick one round-robin; generation moved? -> Exit
//!      │      work claim: set BusyRead (CAS Ready -> R); lost to a directive? -> (ReleaseLock) -> Exit
//!      v
//!    Accept(listener)
//!      │  Accepted ──> (ReleaseLock) ──> Serve ──ConnectionDone──> back to the top
//!      │  AcceptEmpty (EAGAIN: a wasted wake-up) ──> (ReleaseLock) ──> back to the top
//!      └─ AcceptFailed ──> (ReleaseLock) ──> Exit(AcceptFailed)
//!
//!   Any orderly exit (Graceful, Retired, MaxConnections) while the parent's DRAINING bit is set
//!   and the slot holds a directive (a graceful stop: nobody else will take what is queued; any
//!   generation), after the lock is released:
//!    Drain: Accept(next listener), no lock, no work claim (the slot stays `G`)
//!      │  Accepted ──> Serve (one request, Connection: close) ──ConnectionDone──> Drain
//!      │  AcceptEmpty ──> Drain the next listener; every listener empty in a row -> Exit(reason)
//!      └─ AcceptFailed ──> Exit(AcceptFailed)
//! ```
//!
//! The machine is driven by [`ChildLoop::handle`]: feed it an event, perform the action it returns,
//! feed back the result. It touches only its own slot, through [`ChildSlot`]. The process may die
//! between any two steps; nothing in the protocol relies on a child finishing a step.
//!
//! Two properties are the reason for the order of steps:
//! * the work claim (`Ready -> BusyRead`, a CAS) comes **before** accept(): the parent's retirement
//!   claim (`Ready -> IdleKill`, a CAS on the same word) either wins, and the child never accepts, or
//!   loses, and the parent picks no-one this tick. A claimed child never holds a connection;
//! * once a connection is accepted it is always served: no exit check sits between `Accepted` and
//!   `Serve`.

use crate::atomic::AtomicWord;
use crate::exit::ExitReason;
use crate::scoreboard::{ChildSlot, SlotUpdate};
use crate::slot::SlotState;
use std::fmt;

mod broken;

/// What the driver tells the child loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildEvent<'a> {
    /// The child is initialised (after fork(), signal reset, privilege drop) and enters the loop.
    Started,
    /// `AcquireLock` succeeded: this child holds the accept lock.
    LockAcquired,
    /// `AcquireLock` returned before taking the lock (EINTR: a signal or wake-up).
    LockInterrupted,
    /// `AcquireLock` failed.
    LockFailed,
    /// `ReleaseLock` is done.
    LockReleased,
    /// `Wait` returned with these listeners readable (indices into the listener list).
    Readable(&'a [usize]),
    /// `Wait` returned for the wake channel, a signal (EINTR) or a timeout.
    Woken,
    /// `Wait` failed.
    WaitFailed,
    /// accept() returned a connection.
    Accepted,
    /// accept() found nothing (EAGAIN) or a transient error (ECONNABORTED, EINTR, EPROTO …).
    AcceptEmpty,
    /// accept() failed with an error that will not go away (EMFILE, ENFILE, ENOBUFS, ENETDOWN …).
    AcceptFailed,
    /// The connection handed over by `Serve` is finished and closed.
    ConnectionDone,
    /// A gated child's `Accept` or `Wait` found the gate's channel hung up: no gate is left to
    /// hand it a connection (SPEC.md §15.5).
    SourceClosed,
}

/// What the child loop asks the driver to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildAction {
    /// Take the accept lock (blocking); answer `LockAcquired`, `LockInterrupted` or `LockFailed`.
    AcquireLock,
    /// Wait until a listener is readable or the wake channel fires; answer `Readable`, `Woken` or
    /// `WaitFailed`.
    Wait,
    /// accept() on this listener (non-blocking); answer `Accepted`, `AcceptEmpty` or `AcceptFailed`.
    Accept {
        /// Index into the listener list.
        listener: usize,
    },
    /// Release the accept lock; answer `LockReleased`.
    ReleaseLock,
    /// Serve the accepted connection. The slot shows `BusyRead`; the handler moves it through
    /// `R W K L C` with [`ChildSlot::set`] and, if that returns [`SlotUpdate::Graceful`], finishes
    /// the request in hand and closes. Answer `ConnectionDone`.
    Serve,
    /// Exit the process with `reason.exit_code()`. The loop is over.
    Exit(ExitReason),
}

/// An event that makes no sense in the loop's current phase (a driver bug). The loop is over: the
/// driver should exit with [`ExitReason::ProtocolError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("child loop in phase {phase:?} cannot handle {event}")]
pub struct UnexpectedEvent {
    /// The phase the loop was in.
    pub phase: ChildPhase,
    /// The event's name.
    pub event: &'static str,
}

/// Where the child loop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildPhase {
    /// Created; waiting for `Started`.
    New,
    /// Asked for the accept lock.
    Locking,
    /// Waiting for readiness (holding the lock if it is in use).
    Waiting,
    /// Asked to accept on a listener.
    Accepting,
    /// Asked to release the lock; what follows is decided.
    Releasing(AfterRelease),
    /// Serving a connection.
    Serving,
    /// Draining the listen queues in a graceful stop: asked to accept on `listener`, after
    /// `empty` listeners in a row had nothing queued.
    Draining {
        /// Index into the listener list.
        listener: usize,
        /// Listeners found empty in a row just before this one.
        empty: usize,
    },
    /// A gated child draining in a graceful stop found the gate's channel empty: it waits for
    /// the next complete head, or for the channel to hang up (every gate gone).
    DrainWaiting,
    /// Asked to exit.
    Exited(ExitReason),
}

/// What follows a lock release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AfterRelease {
    /// Serve the accepted connection.
    Serve,
    /// Back to the top of the loop (after a wasted wake-up).
    Again,
    /// Exit.
    Exit(ExitReason),
}

/// The child loop state machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChildLoop {
    listeners: usize,
    lock_in_use: bool,
    connection_limit: u64,
    connections: u64,
    wasted_wakeups: u64,
    cursor: usize,
    holding_lock: bool,
    /// In the drain of a graceful stop (never left once entered), and why the child leaves after it.
    draining: Option<ExitReason>,
    /// Its connections come from the gate's channel (one source, no lock), not from listeners.
    gated: bool,
    phase: ChildPhase,
    bugs: crate::seeded::BugSwitch,
}

impl ChildLoop {
    /// A child serving `listeners` listeners (at least one), taking the accept lock around wait and
    /// accept if `lock_in_use`, and exiting after `connection_limit` connections (0: never).
    pub fn new(listeners: usize, lock_in_use: bool, connection_limit: u64) -> Self {
        ChildLoop {
            listeners: listeners.max(1),
            lock_in_use,
            connection_limit,
            connections: 0,
            wasted_wakeups: 0,
            cursor: 0,
            holding_lock: false,
            draining: None,
            gated: false,
            phase: ChildPhase::New,
            bugs: crate::seeded::BugSwitch::default(),
        }
    }

    /// A child whose connections come from the gate (`accept_filter = "httpready"`, SPEC.md
    /// §15.5): its one source is the gate's channel, it takes no lock, and its drain in a
    /// graceful stop ends when the channel hangs up (every gate gone), not when it is empty: a
    /// gate still finishing heads may hand over more.
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self.listeners = 1;
        self.lock_in_use = false;
        self
    }

    /// Selects a deliberately broken variant (negative tests of the model checkers only).
    #[cfg(feature = "seeded-bugs")]
    pub fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
        self.bugs.set(bug);
    }

    /// The current phase.
    pub fn phase(&self) -> ChildPhase {
        self.phase
    }

    /// Does the child hold the accept lock (as far as the loop knows)?
    pub fn holds_lock(&self) -> bool {
        self.holding_lock
    }

    /// Is the child in the wait+accept section (the section the accept lock protects)? A drain
    /// is not: it never waits, and the lock keeps waiting children from a herd.
    pub fn in_accept_section(&self) -> bool {
        matches!(self.phase, ChildPhase::Waiting | ChildPhase::Accepting)
    }

    /// Is the child draining the listen queues of a graceful stop?
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Wake-ups that found nothing to accept (the thundering-herd meter).
    pub fn wasted_wakeups(&self) -> u64 {
        self.wasted_wakeups
    }

    /// Has the loop ended?
    pub fn exited(&self) -> Option<ExitReason> {
        match self.phase {
            ChildPhase::Exited(r) => Some(r),
            _ => None,
        }
    }

    /// Feeds one event; returns the next action. The slot is the child's own.
    pub fn handle<W: AtomicWord>(
        &mut self,
        event: ChildEvent<'_>,
        slot: &ChildSlot<'_, W>,
    ) -> Result<ChildAction, UnexpectedEvent> {
        let action = self.step(event, slot)?;
        self.seam_after_step(&action, slot);
        Ok(action)
    }

    fn step<W: AtomicWord>(
        &mut self,
        event: ChildEvent<'_>,
        slot: &ChildSlot<'_, W>,
    ) -> Result<ChildAction, UnexpectedEvent> {
        use ChildEvent as E;
        use ChildPhase as P;
        Ok(match (self.phase, event) {
            (P::New, E::Started) => self.top(slot),

            (P::Locking, E::LockAcquired) => {
                self.holding_lock = true;
                slot.lock_acquired();
                match slot.directive() {
                    Some(reason) => self.leave(reason, slot),
                    None => self.wait(),
                }
            }
            (P::Locking, E::LockInterrupted) => match slot.directive() {
                Some(reason) => self.exit(reason, slot),
                None => ChildAction::AcquireLock,
            },
            (P::Locking, E::LockFailed) => self.exit(ExitReason::LockFailed, slot),

            (P::Waiting, E::Woken) => match slot.directive() {
                Some(reason) => self.leave(reason, slot),
                None => self.wait(),
            },
            (P::Waiting, E::WaitFailed) => self.leave(ExitReason::WaitFailed, slot),
            (P::Waiting, E::Readable(ready)) => {
                let Some(listener) = self.choose(ready) else {
                    return Ok(self.wait());
                };
                if slot.generation_changed() {
                    return Ok(self.leave(ExitReason::Graceful, slot));
                }
                self.seam_before_work_claim(slot);
                match slot.set(SlotState::BusyRead) {
                    Ok(SlotUpdate::Applied) => {
                        self.phase = P::Accepting;
                        ChildAction::Accept { listener }
                    }
                    Ok(SlotUpdate::Graceful) => self.leave(ExitReason::Graceful, slot),
                    Ok(SlotUpdate::Retire) => self.leave(ExitReason::Retired, slot),
                    Err(_) => self.leave(ExitReason::SlotLost, slot),
                }
            }

            (P::Accepting, E::Accepted) => {
                self.connections += 1;
                if let Some(dropped) = self.seam_accepted(slot) {
                    return Ok(dropped);
                }
                self.release_then(AfterRelease::Serve, slot)
            }
            (P::Accepting, E::AcceptEmpty) => {
                self.wasted_wakeups += 1;
                self.release_then(AfterRelease::Again, slot)
            }
            (P::Accepting, E::AcceptFailed) => self.leave(ExitReason::AcceptFailed, slot),

            (P::Draining { .. }, E::Accepted) => {
                self.connections += 1;
                self.phase = P::Serving;
                ChildAction::Serve
            }
            (P::Draining { .. }, E::AcceptEmpty) if self.seam_gated_drain_waits() => {
                self.phase = P::DrainWaiting;
                ChildAction::Wait
            }
            (P::Draining { listener, empty }, E::AcceptEmpty) => self.drain((listener + 1) % self.listeners, empty + 1),
            (P::Draining { .. }, E::AcceptFailed) => self.end(ExitReason::AcceptFailed),
            (P::DrainWaiting, E::Readable(_)) => self.drain(0, 0),
            (P::DrainWaiting, E::Woken) => ChildAction::Wait,
            (P::DrainWaiting, E::WaitFailed) => self.end(ExitReason::WaitFailed),
            (P::Draining { .. } | P::DrainWaiting, E::SourceClosed) if self.gated => {
                self.end(self.draining.unwrap_or(ExitReason::Graceful))
            }
            // Every gate is gone and the parent has let go of the channel: the server stops.
            (P::Waiting | P::Accepting, E::SourceClosed) if self.gated => self.leave(ExitReason::Graceful, slot),

            (P::Releasing(then), E::LockReleased) => {
                self.holding_lock = false;
                slot.lock_released();
                self.after_release(then, slot)
            }

            (P::Serving, E::ConnectionDone) if self.draining() => self.drain(self.cursor, 0),
            (P::Serving, E::ConnectionDone) => self.top(slot),

            (phase, event) => {
                return Err(UnexpectedEvent { phase, event: event_name(event) });
            }
        })
    }

    /// The top of the loop: exit checks, `Ready`, then the lock or the wait.
    fn top<W: AtomicWord>(&mut self, slot: &ChildSlot<'_, W>) -> ChildAction {
        if self.connection_limit > 0 && self.connections >= self.connection_limit {
            return self.exit(ExitReason::MaxConnections, slot);
        }
        match slot.set(SlotState::Ready) {
            Ok(SlotUpdate::Applied) => {}
            Ok(SlotUpdate::Graceful) => return self.exit(ExitReason::Graceful, slot),
            Ok(SlotUpdate::Retire) => return self.exit(ExitReason::Retired, slot),
            Err(_) => return self.exit(ExitReason::SlotLost, slot),
        }
        if slot.generation_changed() {
            return self.exit(ExitReason::Graceful, slot);
        }
        if self.seam_takes_lock() {
            self.phase = ChildPhase::Locking;
            ChildAction::AcquireLock
        } else {
            self.wait()
        }
    }

    fn wait(&mut self) -> ChildAction {
        self.phase = ChildPhase::Waiting;
        ChildAction::Wait
    }

    /// Leave the loop for `reason` (the lock is not held), unless this is an orderly exit
    /// (`Graceful`, `Retired`, `MaxConnections`) in a graceful stop: then drain the listen queues
    /// first (nobody else will take what they hold), and leave for `reason` after.
    fn exit<W: AtomicWord>(&mut self, reason: ExitReason, slot: &ChildSlot<'_, W>) -> ChildAction {
        let orderly = matches!(reason, ExitReason::Graceful | ExitReason::Retired | ExitReason::MaxConnections);
        if orderly && !self.draining() && self.seam_drains(slot) {
            self.draining = Some(reason);
            return self.drain(self.cursor, 0);
        }
        self.end(reason)
    }

    fn end(&mut self, reason: ExitReason) -> ChildAction {
        self.phase = ChildPhase::Exited(reason);
        ChildAction::Exit(reason)
    }

    /// The drain's next step: accept on `listener` unless every listener was empty in a row. It
    /// ends because a graceful stop admits no new connection (`DrainListeners`): each accept
    /// takes one of a finite number, or counts towards a round of empties.
    fn drain(&mut self, listener: usize, empty: usize) -> ChildAction {
        if empty >= self.listeners {
            return self.end(self.draining.unwrap_or(ExitReason::Graceful));
        }
        self.cursor = (listener + 1) % self.listeners;
        self.phase = ChildPhase::Draining { listener, empty };
        ChildAction::Accept { listener }
    }

    /// Release the lock if held, then do `then`.
    fn release_then<W: AtomicWord>(&mut self, then: AfterRelease, slot: &ChildSlot<'_, W>) -> ChildAction {
        if self.holding_lock {
            self.phase = ChildPhase::Releasing(then);
            ChildAction::ReleaseLock
        } else {
            self.after_release(then, slot)
        }
    }

    fn after_release<W: AtomicWord>(&mut self, then: AfterRelease, slot: &ChildSlot<'_, W>) -> ChildAction {
        match then {
            AfterRelease::Serve => {
                self.phase = ChildPhase::Serving;
                ChildAction::Serve
            }
            AfterRelease::Again => self.top(slot),
            AfterRelease::Exit(reason) => self.exit(reason, slot),
        }
    }

    /// Exit, releasing the lock first if it is held.
    fn leave<W: AtomicWord>(&mut self, reason: ExitReason, slot: &ChildSlot<'_, W>) -> ChildAction {
        if self.seam_holds_lock_at_exit() {
            self.phase = ChildPhase::Releasing(AfterRelease::Exit(reason));
            ChildAction::ReleaseLock
        } else {
            self.exit(reason, slot)
        }
    }

    /// Round-robin over the ready listeners: the first ready one at or after the cursor, then the
    /// cursor moves past it. A listener that stays ready is chosen within `listeners` accepts.
    fn choose(&mut self, ready: &[usize]) -> Option<usize> {
        let n = self.listeners;
        let cursor = self.seam_cursor();
        let chosen = ready.iter().copied().filter(|&l| l < n).min_by_key(|&l| (l + n - cursor) % n)?;
        self.cursor = (chosen + 1) % n;
        Some(chosen)
    }
}

fn event_name(e: ChildEvent<'_>) -> &'static str {
    match e {
        ChildEvent::Started => "Started",
        ChildEvent::LockAcquired => "LockAcquired",
        ChildEvent::LockInterrupted => "LockInterrupted",
        ChildEvent::LockFailed => "LockFailed",
        ChildEvent::LockReleased => "LockReleased",
        ChildEvent::Readable(_) => "Readable",
        ChildEvent::Woken => "Woken",
        ChildEvent::WaitFailed => "WaitFailed",
        ChildEvent::Accepted => "Accepted",
        ChildEvent::AcceptEmpty => "AcceptEmpty",
        ChildEvent::AcceptFailed => "AcceptFailed",
        ChildEvent::ConnectionDone => "ConnectionDone",
        ChildEvent::SourceClosed => "SourceClosed",
    }
}

impl fmt::Display for ChildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::{MemoryBoard, SlotTable};
    use crate::slot::SlotWord;
    use ChildAction as A;
    use ChildEvent as E;
    use std::cell::Cell;

    struct Rig {
        board: MemoryBoard<Cell<u64>>,
        born: SlotWord,
    }

    impl Rig {
        fn new() -> Self {
            let board = MemoryBoard::new(2);
            board.publish_generation(1);
            let born = board.slot(0).unwrap().spawn(1).unwrap();
            Rig { board, born }
        }
        fn slot(&self) -> ChildSlot<'_, Cell<u64>> {
            ChildSlot::attach(&self.board, 0, self.born).unwrap()
        }
        fn step(&self, c: &mut ChildLoop, e: ChildEvent<'_>) -> ChildAction {
            c.handle(e, &self.slot()).unwrap()
        }
        fn state(&self) -> SlotState {
            self.board.slot(0).unwrap().read().unwrap().state
        }
        fn claim(&self) -> bool {
            let s = self.board.slot(0).unwrap();
            s.claim_idle(s.read().unwrap()).is_ok()
        }
    }

    #[test]
    fn one_listener_no_lock_accept_serve_loop() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        assert_eq!(r.step(&mut c, E::Started), A::Wait);
        assert_eq!(r.state(), SlotState::Ready);
        assert!(c.in_accept_section() && !c.holds_lock());
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
        assert_eq!(r.state(), SlotState::BusyRead, "work is claimed before accept()");
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve);
        assert!(!c.in_accept_section());
        r.slot().set(SlotState::BusyWrite).unwrap();
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Wait);
        assert_eq!(r.state(), SlotState::Ready);
        assert_eq!(c.connections(), 1);
    }

    #[test]
    fn with_the_lock_wait_and_accept_happen_only_while_holding_it() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        assert_eq!(r.step(&mut c, E::Started), A::AcquireLock);
        assert!(!c.in_accept_section());
        assert_eq!(r.step(&mut c, E::LockAcquired), A::Wait);
        assert!(c.in_accept_section() && c.holds_lock());
        assert_eq!(r.step(&mut c, E::Readable(&[1])), A::Accept { listener: 1 });
        assert!(c.in_accept_section() && c.holds_lock());
        assert_eq!(r.step(&mut c, E::Accepted), A::ReleaseLock, "release right after accept, before serving");
        assert_eq!(r.step(&mut c, E::LockReleased), A::Serve);
        assert!(!c.holds_lock());
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::AcquireLock);
    }

    #[test]
    fn retirement_claim_before_the_work_claim_means_no_accept() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        assert!(r.claim());
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Exit(ExitReason::Retired));
        assert_eq!(r.state(), SlotState::IdleKill);
        assert_eq!(c.connections(), 0);
    }

    #[test]
    fn work_claim_before_the_retirement_claim_means_the_claim_fails_and_the_connection_is_served() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
        assert!(!r.claim());
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve);
    }

    #[test]
    fn woken_lock_holder_releases_the_lock_then_exits() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::LockAcquired);
        assert!(r.claim());
        assert_eq!(r.step(&mut c, E::Woken), A::ReleaseLock);
        assert_eq!(r.step(&mut c, E::LockReleased), A::Exit(ExitReason::Retired));
        assert_eq!(c.exited(), Some(ExitReason::Retired));
    }

    #[test]
    fn claimed_while_waiting_for_the_lock_releases_it_at_once_when_it_gets_it() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        assert!(r.claim());
        assert_eq!(r.step(&mut c, E::LockAcquired), A::ReleaseLock);
        assert_eq!(r.step(&mut c, E::LockReleased), A::Exit(ExitReason::Retired));
    }

    #[test]
    fn interrupted_lock_wait_checks_directives_and_otherwise_retries() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        assert_eq!(r.step(&mut c, E::LockInterrupted), A::AcquireLock);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::LockInterrupted), A::Exit(ExitReason::Graceful), "no lock held: no release");
    }

    #[test]
    fn spurious_wakeup_goes_back_to_waiting() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        assert_eq!(r.step(&mut c, E::Woken), A::Wait);
        assert_eq!(r.step(&mut c, E::Readable(&[])), A::Wait, "nothing readable");
        assert_eq!(r.step(&mut c, E::Readable(&[7])), A::Wait, "no such listener");
    }

    #[test]
    fn graceful_mark_while_serving_finishes_the_connection_then_exits() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::Readable(&[0]));
        r.step(&mut c, E::Accepted);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.slot().set(SlotState::BusyWrite), Ok(SlotUpdate::Graceful), "the handler learns it too");
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Exit(ExitReason::Graceful));
        assert_eq!(r.state(), SlotState::Graceful);
    }

    /// SPEC.md §6.2, §7.5: in a graceful stop (the DRAINING bit), a child marked `G` releases
    /// the lock, then accepts on each listener in turn without waiting, serves what it finds, and
    /// leaves after a round in which every listener was empty.
    #[test]
    fn in_a_graceful_stop_the_child_drains_every_listener_before_it_leaves() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::LockAcquired);
        r.board.publish_draining(1);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::Woken), A::ReleaseLock, "the lock first");
        assert_eq!(r.step(&mut c, E::LockReleased), A::Accept { listener: 0 }, "then the drain, with no lock");
        assert!(c.draining() && !c.in_accept_section() && !c.holds_lock());
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve);
        assert_eq!(r.state(), SlotState::Graceful, "no work claim: the slot stays G");
        assert_eq!(r.slot().set(SlotState::BusyWrite), Ok(SlotUpdate::Graceful), "one request, Connection: close");
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 1 }, "round-robin");
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve, "listener 0 had another");
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 1 });
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Exit(ExitReason::Graceful), "both empty in a row");
        assert_eq!(c.connections(), 2);
    }

    /// SPEC.md §15.5 (G5): a gated child has one source, no lock; in a graceful stop an empty
    /// channel is not the end of its drain (a draining gate may still complete a head): it waits,
    /// and leaves only when the channel hangs up.
    #[test]
    fn a_gated_child_drains_the_gates_channel_until_it_hangs_up() {
        let r = Rig::new();
        let mut c = ChildLoop::new(3, true, 0).gated();
        assert_eq!(r.step(&mut c, E::Started), A::Wait, "no lock, whatever the listeners");
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve);
        r.board.publish_draining(1);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 0 }, "the drain");
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Wait, "empty: wait for the gate, do not leave");
        assert_eq!(r.step(&mut c, E::Woken), A::Wait);
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::Accepted), A::Serve, "a head the gate completed late");
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::SourceClosed), A::Exit(ExitReason::Graceful), "every gate is gone");
        assert_eq!(c.connections(), 2);
        // Outside a drain, a hung-up channel (the server stopped) ends a waiting child too.
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0).gated();
        r.step(&mut c, E::Started);
        r.step(&mut c, E::Readable(&[0]));
        assert_eq!(r.step(&mut c, E::SourceClosed), A::Exit(ExitReason::Graceful));
        // An ungated child knows no such event, waiting or draining.
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        assert!(c.handle(E::SourceClosed, &r.slot()).is_err());
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::Readable(&[0]));
        r.step(&mut c, E::Accepted);
        r.board.publish_draining(1);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 0 }, "the drain");
        assert!(c.handle(E::SourceClosed, &r.slot()).is_err(), "no channel to hang up in a listener's drain");
    }

    #[test]
    fn a_busy_child_drains_when_its_connection_is_done_and_an_accept_error_ends_the_drain() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::Readable(&[0]));
        r.step(&mut c, E::Accepted);
        r.board.publish_draining(1);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::ConnectionDone), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::AcceptFailed), A::Exit(ExitReason::AcceptFailed));
    }

    /// The DRAINING bit alone, or a `G` of a restart (no bit), does not drain.
    #[test]
    fn only_a_graceful_mark_in_a_stop_drains() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.board.publish_draining(1);
        assert_eq!(r.step(&mut c, E::Woken), A::Wait, "no G: the bit is nothing to this child");
        r.board.publish_draining(2);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(
            r.step(&mut c, E::Woken),
            A::Accept { listener: 0 },
            "a child of an older generation drains too: it may be the last one"
        );
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        assert_eq!(r.step(&mut c, E::Woken), A::Exit(ExitReason::Graceful), "a G without the bit: a restart");
    }

    #[test]
    fn a_child_marked_graceful_before_it_started_exits_at_once() {
        let r = Rig::new();
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        let mut c = ChildLoop::new(1, false, 0);
        assert_eq!(r.step(&mut c, E::Started), A::Exit(ExitReason::Graceful));
    }

    #[test]
    fn a_new_generation_stops_the_child_before_it_takes_more_work() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.board.publish_generation(2);
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Exit(ExitReason::Graceful));
        assert_eq!(r.state(), SlotState::Ready, "no work claimed");
        let mut c = ChildLoop::new(1, false, 0);
        let r = Rig::new();
        r.step(&mut c, E::Started);
        r.board.publish_generation(2);
        assert_eq!(r.step(&mut c, E::Woken), A::Exit(ExitReason::Graceful));
    }

    #[test]
    fn max_connections_ends_the_child_after_the_last_one() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 2);
        r.step(&mut c, E::Started);
        for n in 1..=2 {
            assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
            assert_eq!(r.step(&mut c, E::Accepted), A::Serve);
            let next = r.step(&mut c, E::ConnectionDone);
            assert_eq!(next, if n == 1 { A::Wait } else { A::Exit(ExitReason::MaxConnections) });
        }
        assert_eq!(r.state(), SlotState::BusyRead, "the slot is not shown idle on the way out");
    }

    #[test]
    fn wasted_wakeups_are_counted_and_the_slot_returns_to_ready() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::Readable(&[0]));
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Wait);
        assert_eq!((c.wasted_wakeups(), c.connections(), r.state()), (1, 0, SlotState::Ready));
        let mut c = ChildLoop::new(2, true, 0);
        let r = Rig::new();
        r.step(&mut c, E::Started);
        r.step(&mut c, E::LockAcquired);
        r.step(&mut c, E::Readable(&[0]));
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::ReleaseLock);
        assert_eq!(r.step(&mut c, E::LockReleased), A::AcquireLock);
        assert_eq!(r.state(), SlotState::Ready);
    }

    #[test]
    fn failures_exit_sick_and_release_a_held_lock_first() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        assert_eq!(r.step(&mut c, E::LockFailed), A::Exit(ExitReason::LockFailed));
        assert_eq!(ExitReason::LockFailed.exit_code(), crate::exit::code::CHILDSICK);
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::LockAcquired);
        r.step(&mut c, E::Readable(&[0]));
        assert_eq!(r.step(&mut c, E::AcceptFailed), A::ReleaseLock);
        assert_eq!(r.step(&mut c, E::LockReleased), A::Exit(ExitReason::AcceptFailed));
        let r = Rig::new();
        let mut c = ChildLoop::new(2, true, 0);
        r.step(&mut c, E::Started);
        r.step(&mut c, E::LockAcquired);
        assert_eq!(r.step(&mut c, E::WaitFailed), A::ReleaseLock);
        assert_eq!(r.step(&mut c, E::LockReleased), A::Exit(ExitReason::WaitFailed));
    }

    #[test]
    fn listeners_are_served_round_robin() {
        let r = Rig::new();
        let mut c = ChildLoop::new(3, false, 0);
        r.step(&mut c, E::Started);
        let mut chosen = vec![];
        for ready in [&[0, 1, 2][..], &[0, 1, 2], &[0, 1, 2], &[0, 1, 2], &[0, 2], &[0, 2], &[0, 2], &[2], &[0, 1]] {
            match r.step(&mut c, E::Readable(ready)) {
                A::Accept { listener } => chosen.push(listener),
                other => panic!("{other:?}"),
            }
            r.step(&mut c, E::Accepted);
            r.step(&mut c, E::ConnectionDone);
        }
        assert_eq!(chosen, [0, 1, 2, 0, 2, 0, 2, 2, 0]);
    }

    #[test]
    fn listeners_out_of_range_are_ignored_and_wasted_wake_ups_counted() {
        let r = Rig::new();
        let mut c = ChildLoop::new(2, false, 0);
        r.step(&mut c, E::Started);
        assert_eq!(c.wasted_wakeups(), 0);
        assert_eq!(r.step(&mut c, E::Readable(&[2, 7])), A::Wait, "no such listener: wait again");
        assert_eq!(r.state(), SlotState::Ready, "no work claimed");
        assert_eq!(r.step(&mut c, E::Readable(&[2, 1])), A::Accept { listener: 1 });
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Wait, "another child took it");
        assert_eq!(r.step(&mut c, E::Readable(&[0])), A::Accept { listener: 0 });
        assert_eq!(r.step(&mut c, E::AcceptEmpty), A::Wait);
        assert_eq!((c.wasted_wakeups(), c.connections()), (2, 0));
    }

    #[test]
    fn unexpected_events_are_errors_not_panics() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        let e = c.handle(E::Accepted, &r.slot()).unwrap_err();
        assert_eq!(e, UnexpectedEvent { phase: ChildPhase::New, event: "Accepted" });
        r.step(&mut c, E::Started);
        assert!(c.handle(E::LockAcquired, &r.slot()).is_err(), "no lock in use");
        assert!(c.handle(E::ConnectionDone, &r.slot()).is_err());
        assert_eq!(c.phase(), ChildPhase::Waiting, "an error changes nothing");
        let mut done = ChildLoop::new(1, false, 0);
        r.board.slot(0).unwrap().mark_graceful().unwrap();
        r.step(&mut done, E::Started);
        assert!(done.handle(E::Started, &r.slot()).is_err(), "an exited loop takes no events");
    }

    #[test]
    fn a_reused_slot_is_lost_to_the_old_child() {
        let r = Rig::new();
        let mut c = ChildLoop::new(1, false, 0);
        r.step(&mut c, E::Started);
        r.board.slot(0).unwrap().release(r.born.with_state(SlotState::Dead));
        r.board.slot(0).unwrap().spawn(1).unwrap();
        assert_eq!(r.step(&mut c, E::Woken), A::Exit(ExitReason::SlotLost));
    }
}
