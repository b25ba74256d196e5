//! The gate (SPEC.md §15): one light process holds every connection that has nothing for a child
//! to do yet — a request head still arriving, a kept-alive connection between requests — and
//! hands a child only complete request heads. Apache's `AcceptFilter http httpready` (FreeBSD's
//! `accf_http` buffers a whole request head in the kernel) done in user space, with the event
//! MPM's parking of idle kept-alive connections.
//!
//! ```text
//!                 accept (only while there is room)
//!   listeners ───────────────────────────────> Fresh ──first bytes──> Head ──head complete──┐
//!                                                │                      │                    │
//!   a child gives back a kept-alive connection ─> Idle ──bytes──────────┘                    v
//!                                                │                                   Complete (queue)
//!        deadline (`timeout`, `keep_alive_timeout`, `request_read_timeout` → 408)     │ HandOver
//!        or shed under pressure (the table is full and connections wait):           v
//!        the longest idle first, then the slowest head; never a complete head,      a child serves it
//!        never a head that keeps `request_read_min_rate`, never in the first second
//! ```
//!
//! The machine is sans-IO: the shell (`prefork_server::gate`) accepts, reads, closes and passes
//! descriptors; it tells the machine what happened (`handle_*`) and carries out what the machine
//! asks (`poll_action`). The machine never sees a byte: the shell tells it how far a head has got
//! ([`HeadProgress`], decided by the service's own parser).
//!
//! Properties (SPEC.md §15.3, checked by `core/tests/gate_model.rs` with a negative for each):
//! * G1 a connection whose head is complete is handed to a child, never closed by the gate;
//! * G2 nothing is shed while the table has room, and only while connections wait;
//! * G3 the victim is the first in the shedding order, and a protected connection (in its first
//!   second, or a head arriving at `request_read_min_rate` or faster) is never shed;
//! * G4 the table never holds more than `capacity` connections.

use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod broken;
use std::fmt;
use std::time::Duration;

/// A connection as the shell names it (any value, unique among the connections held).
pub type ConnId = u64;

/// How long every connection is safe from shedding after it arrives (or is given back): a real
/// client's request head arrives in one flight, within a round trip of the handshake.
pub const SHED_GRACE: Duration = Duration::from_secs(1);

/// How a gate is told to stop (SPEC.md §15.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateStop {
    /// Another gate takes the listeners (a graceful restart, a hand-over): stop accepting at
    /// once, pass every connection not complete on to it, hand over the complete ones, exit
    /// (`SIGUSR1`).
    Retire,
    /// A graceful stop: take what the listen queues still hold, finish what is held, exit
    /// (`SIGWINCH`).
    Drain,
    /// A hand-over to another server (an upgrade, or sockets a service manager keeps): stop
    /// accepting at once (the other server takes the queues), finish what is held, exit
    /// (`SIGHUP`).
    Finish,
    /// Exit now (`SIGTERM`): what is not complete is closed, as a child's connection in a hard
    /// stop.
    Now,
}

/// The gate's settings (SPEC.md §15.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GateConfig {
    /// Connections held at once (`accept_filter_connections`); at least 1.
    pub capacity: usize,
    /// How long a new connection may stay silent (`timeout`, Apache's `Timeout`).
    pub first_byte_timeout: Duration,
    /// How long a request head may take from its first byte (`request_read_timeout`); then 408.
    pub request_read_timeout: Duration,
    /// How long a kept-alive connection may stay silent between requests (`keep_alive_timeout`).
    pub keep_alive_timeout: Duration,
    /// Bytes per second at which a head still arriving is safe from shedding
    /// (`request_read_min_rate`, mod_reqtimeout's `MinRate`); 0: every head is safe.
    pub min_rate: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            capacity: 4096,
            first_byte_timeout: Duration::from_secs(60),
            request_read_timeout: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(5),
            min_rate: 500,
        }
    }
}

/// How far a connection's request head has got, as the service's parser judges the bytes held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadProgress {
    /// More bytes are needed.
    Partial,
    /// A child has something to do: the head is complete, or malformed, or too large (the child
    /// answers those with their error status).
    Complete,
}

/// Why the gate closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A new connection sent nothing within `timeout`.
    FirstByteTimeout,
    /// A kept-alive connection sent nothing within `keep_alive_timeout`.
    KeepAliveTimeout,
    /// A request head did not complete within `request_read_timeout` (answered 408).
    HeadTimeout,
    /// Shed under pressure: an idle connection (nothing sent yet, or kept alive between requests).
    ShedIdle,
    /// Shed under pressure: a head arriving slower than `request_read_min_rate` (answered 408).
    ShedSlowHead,
    /// The server stops: a connection with nothing in progress is closed.
    Stopping,
}

impl CloseReason {
    /// Does the client get a `408 Request Timeout` before the close (a head had begun)?
    pub fn answers_408(self) -> bool {
        matches!(self, CloseReason::HeadTimeout | CloseReason::ShedSlowHead)
    }

    /// Was it shed under pressure (as opposed to a timeout or a stop)?
    pub fn is_shed(self) -> bool {
        matches!(self, CloseReason::ShedIdle | CloseReason::ShedSlowHead)
    }

    /// The name used in logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::FirstByteTimeout => "first-byte-timeout",
            CloseReason::KeepAliveTimeout => "keep-alive-timeout",
            CloseReason::HeadTimeout => "head-timeout",
            CloseReason::ShedIdle => "shed-idle",
            CloseReason::ShedSlowHead => "shed-slow-head",
            CloseReason::Stopping => "stopping",
        }
    }
}

/// What the gate asks the shell to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateAction {
    /// Pass the connection (descriptor and the bytes read) to a child; answer
    /// [`Gate::handle_handed`] or [`Gate::handle_handoff_full`].
    HandOver(ConnId),
    /// Close the connection (after a 408 if [`CloseReason::answers_408`]); the gate has already
    /// forgotten it.
    Close(ConnId, CloseReason),
    /// Pass the connection (and the bytes read) on to the next gate: this one retires. The gate
    /// has already forgotten it; if the shell cannot pass it, it closes it.
    PassOn(ConnId),
    /// The gate is stopped and holds nothing: exit.
    Exit,
}

/// A shell's report that makes no sense for the connection it names (a shell bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The connection is not held (never registered, or already handed over or closed).
    #[error("connection {0} is not held by the gate")]
    Unknown(ConnId),
    /// The shell registered a connection under a name already in use.
    #[error("connection {0} is already held by the gate")]
    Duplicate(ConnId),
    /// The shell accepted although the table was full or the gate had stopped accepting.
    #[error("connection {0} was accepted while the gate was not accepting")]
    NotAccepting(ConnId),
    /// The shell reported bytes of a connection that is not being read (complete, queued).
    #[error("connection {0} is not being read")]
    NotReading(ConnId),
}

/// Connections closed by the gate, per reason (shown in `?auto`, `?json` and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GateCounters {
    /// Connections taken (accepted or given back).
    pub taken: u64,
    /// Complete heads handed to children.
    pub handed: u64,
    /// Closed: nothing sent within `timeout`.
    pub first_byte_timeouts: u64,
    /// Closed: kept-alive and silent for `keep_alive_timeout`.
    pub keep_alive_timeouts: u64,
    /// 408: the head took longer than `request_read_timeout`.
    pub head_timeouts: u64,
    /// Shed under pressure: idle connections.
    pub shed_idle: u64,
    /// Shed under pressure: heads slower than `request_read_min_rate` (408).
    pub shed_slow_heads: u64,
    /// Closed because the server stopped.
    pub stopping: u64,
    /// Passed on to the next gate (this one retired).
    pub passed_on: u64,
}

impl GateCounters {
    fn count(&mut self, reason: CloseReason) {
        let n = match reason {
            CloseReason::FirstByteTimeout => &mut self.first_byte_timeouts,
            CloseReason::KeepAliveTimeout => &mut self.keep_alive_timeouts,
            CloseReason::HeadTimeout => &mut self.head_timeouts,
            CloseReason::ShedIdle => &mut self.shed_idle,
            CloseReason::ShedSlowHead => &mut self.shed_slow_heads,
            CloseReason::Stopping => &mut self.stopping,
        };
        *n = n.saturating_add(1);
    }
}

/// What a held connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Held {
    /// Accepted; no byte yet.
    Fresh { since: Time },
    /// Given back by a child after a response; no byte of the next request yet.
    Idle { since: Time },
    /// Part of a head has arrived: `bytes` since `since`.
    Head { since: Time, bytes: u64 },
    /// Complete: queued for a child.
    Complete,
}

impl Held {
    fn deadline(self, cfg: &GateConfig) -> Option<Time> {
        match self {
            Held::Fresh { since } => Some(since + cfg.first_byte_timeout),
            Held::Idle { since } => Some(since + cfg.keep_alive_timeout),
            Held::Head { since, .. } => Some(since + cfg.request_read_timeout),
            Held::Complete => None,
        }
    }

    fn expired(self) -> CloseReason {
        match self {
            Held::Fresh { .. } => CloseReason::FirstByteTimeout,
            Held::Idle { .. } => CloseReason::KeepAliveTimeout,
            Held::Head { .. } | Held::Complete => CloseReason::HeadTimeout,
        }
    }
}

/// Where the gate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stage {
    /// Taking connections.
    Open,
    /// A graceful stop: taking what the listen queues still hold, then closing idle connections
    /// and finishing heads in progress.
    Draining {
        /// The shell found every listener empty: no more accepts.
        listeners_empty: bool,
    },
    /// Retired: another gate takes the listeners and what this one passes on.
    Retiring,
    /// Stopped: `Exit` was asked for.
    Exited,
}

/// The shedding order's key (smaller goes first): idle connections before heads, the longest idle
/// first, then the slowest head first. `None`: protected (`protect` false only in the seeded bug
/// `ShedProtected`).
fn shed_key(held: Held, now: Time, min_rate: u64, protect: bool) -> Option<(u8, u64, Time)> {
    match held {
        Held::Fresh { since } | Held::Idle { since } => {
            (!protect || now.since(since) >= SHED_GRACE).then_some((0, 0, since))
        }
        Held::Head { since, bytes } => {
            let elapsed = now.since(since);
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
            let rate = bytes.saturating_mul(1000) / ms; // bytes per second
            let protected = elapsed < SHED_GRACE || rate >= min_rate;
            (!protect || !protected).then_some((1, rate, since))
        }
        Held::Complete => None,
    }
}

/// The gate's state machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gate {
    cfg: GateConfig,
    held: BTreeMap<ConnId, Held>,
    /// (deadline, connection) for every connection that has one.
    deadlines: BTreeSet<(Time, ConnId)>,
    /// Complete heads waiting for a child, oldest first.
    queue: VecDeque<ConnId>,
    /// The head asked to be handed over and not yet answered for (one at a time).
    in_flight: Option<ConnId>,
    /// The shell found the hand-off channel full: no `HandOver` until it says it has room.
    channel_full: bool,
    actions: VecDeque<GateAction>,
    counters: GateCounters,
    stage: Stage,
    /// In a drain: silent (fresh) connections wait no longer than this.
    silent_until: Option<Time>,
    bugs: crate::seeded::BugSwitch,
}

impl Gate {
    /// An open gate with `cfg` (a capacity of 0 is taken as 1).
    pub fn new(mut cfg: GateConfig) -> Gate {
        cfg.capacity = cfg.capacity.max(1);
        Gate {
            cfg,
            held: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            queue: VecDeque::new(),
            in_flight: None,
            channel_full: false,
            actions: VecDeque::new(),
            counters: GateCounters::default(),
            stage: Stage::Open,
            silent_until: None,
            bugs: crate::seeded::BugSwitch::default(),
        }
    }

    /// Selects a deliberately broken variant (negative tests of the checkers only).
    #[cfg(feature = "seeded-bugs")]
    pub fn seed_bug(&mut self, bug: crate::seeded::SeededBug) {
        self.bugs.set(bug);
    }

    /// The settings.
    pub fn config(&self) -> &GateConfig {
        &self.cfg
    }

    /// Connections held (being read, idle, or queued for a child).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Complete heads waiting for a child.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// What the gate has closed and handed over so far.
    pub fn counters(&self) -> GateCounters {
        self.counters
    }

    /// Should the shell accept a connection now (there is room, and the gate takes connections)?
    pub fn accepting(&self) -> bool {
        let open = match self.stage {
            Stage::Open => true,
            Stage::Draining { listeners_empty } => !listeners_empty,
            Stage::Retiring | Stage::Exited => false,
        };
        open && self.seam_has_room(self.held.len() < self.cfg.capacity)
    }

    /// Should the shell tell the gate when connections wait in the listen queues
    /// ([`Gate::handle_pressure`])? True when the table is full and a connection could be shed.
    pub fn wants_pressure(&self, now: Time) -> bool {
        matches!(self.stage, Stage::Open | Stage::Draining { listeners_empty: false })
            && self.held.len() >= self.cfg.capacity
            && self.victim(now).is_some()
    }

    /// The earliest deadline of a held connection (the shell calls [`Gate::handle_tick`] then).
    pub fn next_deadline(&self) -> Option<Time> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Is the connection held and still being read (not queued for a child)?
    pub fn reading(&self, id: ConnId) -> bool {
        self.held.get(&id).is_some_and(|h| !matches!(h, Held::Complete))
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<GateAction> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.in_flight.is_none()
            && !self.channel_full
            && let Some(&id) = self.queue.front()
        {
            // The connection stays in the table and at the front of the queue until the shell
            // says it is handed over, or that the channel was full.
            self.in_flight = Some(id);
            return Some(GateAction::HandOver(id));
        }
        if matches!(self.stage, Stage::Draining { listeners_empty: true } | Stage::Retiring) && self.held.is_empty() {
            self.stage = Stage::Exited;
            return Some(GateAction::Exit);
        }
        None
    }

    /// The shell accepted connection `id` (only when [`Gate::accepting`]).
    pub fn handle_accepted(&mut self, now: Time, id: ConnId) -> Result<(), GateError> {
        if !self.accepting() {
            return Err(GateError::NotAccepting(id));
        }
        self.insert(id, Held::Fresh { since: now })
    }

    /// A child gave back a kept-alive connection, with `bytes` of a next request already read
    /// (0: none). Taken even when the table is full: it was held before, by a child.
    pub fn handle_returned(
        &mut self,
        now: Time,
        id: ConnId,
        bytes: u64,
        progress: HeadProgress,
    ) -> Result<(), GateError> {
        if self.stage == Stage::Exited {
            return Err(GateError::NotAccepting(id));
        }
        let held = match (bytes, progress) {
            (_, HeadProgress::Complete) => Held::Complete,
            (0, HeadProgress::Partial) => Held::Idle { since: now },
            (bytes, HeadProgress::Partial) => Held::Head { since: now, bytes },
        };
        self.insert(id, held)?;
        if self.stage == Stage::Retiring && held != Held::Complete {
            self.pass_on(id);
        }
        Ok(())
    }

    /// The connection's bytes so far total `bytes`, and its head is `progress`.
    pub fn handle_read(&mut self, now: Time, id: ConnId, bytes: u64, progress: HeadProgress) -> Result<(), GateError> {
        let held = *self.held.get(&id).ok_or(GateError::Unknown(id))?;
        let next = match (held, progress) {
            (Held::Complete, _) => return Err(GateError::NotReading(id)),
            (_, HeadProgress::Complete) => Held::Complete,
            (Held::Head { since, .. }, HeadProgress::Partial) => Held::Head { since, bytes },
            (Held::Fresh { .. } | Held::Idle { .. }, HeadProgress::Partial) if bytes == 0 => held,
            (Held::Fresh { .. } | Held::Idle { .. }, HeadProgress::Partial) => Held::Head { since: now, bytes },
        };
        self.replace(id, held, next);
        Ok(())
    }

    /// The connection's peer closed it, or reading failed: the shell closes it; the gate forgets
    /// it. A complete head is not read any more, so it cannot get here.
    pub fn handle_gone(&mut self, id: ConnId) -> Result<(), GateError> {
        let held = self.held.get(&id).copied().ok_or(GateError::Unknown(id))?;
        if held == Held::Complete {
            return Err(GateError::NotReading(id));
        }
        self.remove(id, held);
        Ok(())
    }

    /// The shell passed `id` to a child: it is no longer the gate's.
    pub fn handle_handed(&mut self, id: ConnId) -> Result<(), GateError> {
        if self.in_flight != Some(id) {
            return Err(GateError::Unknown(id));
        }
        self.queue.pop_front();
        self.in_flight = None;
        if let Some(held) = self.held.get(&id).copied() {
            self.remove(id, held);
        }
        self.counters.handed = self.counters.handed.saturating_add(1);
        Ok(())
    }

    /// The hand-off channel was full: `id` waits at the front of the queue until
    /// [`Gate::handle_handoff_ready`].
    pub fn handle_handoff_full(&mut self, id: ConnId) -> Result<(), GateError> {
        if self.in_flight != Some(id) {
            return Err(GateError::Unknown(id));
        }
        self.in_flight = None;
        self.channel_full = true;
        Ok(())
    }

    /// The hand-off channel has room again.
    pub fn handle_handoff_ready(&mut self) {
        self.channel_full = false;
    }

    /// Connections wait in the listen queues and the table is full: shed one connection, the first
    /// in the shedding order, if any may be shed.
    pub fn handle_pressure(&mut self, now: Time) {
        if !self.seam_sheds(self.held.len() >= self.cfg.capacity) {
            return;
        }
        if let Some((id, reason)) = self.victim(now) {
            self.close(id, reason);
        }
    }

    /// Time passed: close what is past its deadline.
    pub fn handle_tick(&mut self, now: Time) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            let reason = self.held.get(&id).map_or(CloseReason::HeadTimeout, |h| h.expired());
            self.close(id, reason);
        }
    }

    /// The gate is told to stop, `how` (SPEC.md §15.5):
    /// * `Retire` (a graceful restart, a hand-over: another gate takes the listeners): no more
    ///   accepts; every connection not complete is passed on to the next gate (`PassOn`), every
    ///   complete head handed over, then `Exit`;
    /// * `Drain` (a graceful stop): take what the listen queues still hold (until
    ///   [`Gate::handle_listeners_empty`]), keep every connection until its head completes (handed
    ///   over) or its deadline passes, a silent one for at most `keep_alive_timeout` from now;
    ///   then `Exit`;
    /// * `Finish` (a hand-over to another server): as `Drain`, without taking anything more;
    /// * `Now`: close everything not complete, `Exit` once the queue is handed over.
    pub fn handle_stop(&mut self, now: Time, how: GateStop) {
        if self.stage == Stage::Exited {
            return;
        }
        self.stage = match how {
            GateStop::Drain => Stage::Draining { listeners_empty: false },
            GateStop::Finish => Stage::Draining { listeners_empty: true },
            GateStop::Retire => Stage::Retiring,
            GateStop::Now => Stage::Draining { listeners_empty: true },
        };
        let ids: Vec<(ConnId, Held)> = self.held.iter().map(|(&id, &h)| (id, h)).collect();
        let mut fresh = vec![];
        for (id, held) in ids {
            match (how, held) {
                (_, Held::Complete) => {}
                (GateStop::Retire, _) => self.pass_on(id),
                (GateStop::Now, _) => self.close(id, CloseReason::Stopping),
                (GateStop::Drain | GateStop::Finish, Held::Fresh { .. }) => {
                    // Re-indexed under the cap set below.
                    if let Some(t) = self.deadline_of(held) {
                        self.deadlines.remove(&(t, id));
                    }
                    fresh.push(id);
                }
                (GateStop::Drain | GateStop::Finish, _) => {}
            }
        }
        if matches!(how, GateStop::Drain | GateStop::Finish) {
            // A silent connection waits at most keep_alive_timeout from now, not `timeout`.
            self.silent_until = Some(now + self.cfg.keep_alive_timeout);
            for id in fresh {
                if let Some(t) = self.held.get(&id).and_then(|&h| self.deadline_of(h)) {
                    self.deadlines.insert((t, id));
                }
            }
        }
    }

    /// A held connection's deadline (a silent one's is cut short in a drain).
    fn deadline_of(&self, held: Held) -> Option<Time> {
        let t = held.deadline(&self.cfg)?;
        Some(match (held, self.silent_until) {
            (Held::Fresh { .. }, Some(cap)) => t.min(cap),
            _ => t,
        })
    }

    /// In a graceful stop, every listen queue was found empty: no more accepts.
    pub fn handle_listeners_empty(&mut self) {
        if let Stage::Draining { listeners_empty } = &mut self.stage {
            *listeners_empty = true;
        }
    }

    /// The connection to shed now, if any, and why.
    fn victim(&self, now: Time) -> Option<(ConnId, CloseReason)> {
        self.held
            .iter()
            .filter_map(|(&id, &h)| self.seam_shed_key(h, now).map(|k| (k, id, h)))
            .min_by_key(|&(k, id, _)| (k, id))
            .map(|(_, id, h)| {
                let reason =
                    if matches!(h, Held::Head { .. }) { CloseReason::ShedSlowHead } else { CloseReason::ShedIdle };
                (id, reason)
            })
    }

    fn insert(&mut self, id: ConnId, held: Held) -> Result<(), GateError> {
        if self.held.contains_key(&id) {
            return Err(GateError::Duplicate(id));
        }
        self.held.insert(id, held);
        if let Some(t) = self.deadline_of(held) {
            self.deadlines.insert((t, id));
        }
        if held == Held::Complete {
            self.queue.push_back(id);
        }
        self.counters.taken = self.counters.taken.saturating_add(1);
        Ok(())
    }

    fn replace(&mut self, id: ConnId, old: Held, new: Held) {
        if old == new {
            return;
        }
        if let Some(t) = self.deadline_of(old) {
            self.deadlines.remove(&(t, id));
        }
        if let Some(t) = self.deadline_of(new) {
            self.deadlines.insert((t, id));
        }
        self.held.insert(id, new);
        if new == Held::Complete {
            self.queue.push_back(id);
        }
    }

    fn remove(&mut self, id: ConnId, held: Held) {
        if let Some(t) = self.deadline_of(held) {
            self.deadlines.remove(&(t, id));
        }
        self.held.remove(&id);
    }

    fn pass_on(&mut self, id: ConnId) {
        let Some(held) = self.held.get(&id).copied() else { return };
        if held == Held::Complete {
            return; // G1: a complete head goes to a child
        }
        self.remove(id, held);
        self.counters.passed_on = self.counters.passed_on.saturating_add(1);
        self.actions.push_back(GateAction::PassOn(id));
    }

    fn close(&mut self, id: ConnId, reason: CloseReason) {
        let Some(held) = self.held.get(&id).copied() else { return };
        if held == Held::Complete && !self.seam_closes_complete() {
            return; // G1: a complete head goes to a child
        }
        if held == Held::Complete {
            self.queue.retain(|&q| q != id);
            if self.in_flight == Some(id) {
                self.in_flight = None;
            }
        }
        self.remove(id, held);
        self.counters.count(reason);
        self.actions.push_back(GateAction::Close(id, reason));
    }
}

impl fmt::Display for GateCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "taken {} handed {} first-byte-timeouts {} keep-alive-timeouts {} head-timeouts {} shed-idle {} shed-slow-heads {} stopping {} passed-on {}",
            self.taken,
            self.handed,
            self.first_byte_timeouts,
            self.keep_alive_timeouts,
            self.head_timeouts,
            self.shed_idle,
            self.shed_slow_heads,
            self.stopping,
            self.passed_on
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(capacity: usize) -> GateConfig {
        GateConfig { capacity, ..GateConfig::default() }
    }

    fn drain(g: &mut Gate) -> Vec<GateAction> {
        std::iter::from_fn(|| g.poll_action()).collect()
    }

    #[test]
    fn a_complete_head_is_handed_over_once_and_then_forgotten() {
        let mut g = Gate::new(cfg(4));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_read(Time::from_millis(5), 1, 40, HeadProgress::Complete).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(1)));
        assert_eq!(g.poll_action(), None, "one hand-over in flight at a time");
        g.handle_handed(1).unwrap();
        assert_eq!((g.held(), g.counters().handed), (0, 1));
        assert_eq!(g.handle_handed(1), Err(GateError::Unknown(1)));
    }

    #[test]
    fn a_full_channel_keeps_the_head_at_the_front_until_there_is_room() {
        let mut g = Gate::new(cfg(4));
        for id in [1, 2] {
            g.handle_accepted(Time::ZERO, id).unwrap();
            g.handle_read(Time::ZERO, id, 10, HeadProgress::Complete).unwrap();
        }
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(1)));
        g.handle_handoff_full(1).unwrap();
        assert_eq!(g.poll_action(), None);
        g.handle_handoff_ready();
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(1)));
        g.handle_handed(1).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(2)));
    }

    #[test]
    fn deadlines_close_with_their_reasons() {
        let mut g = Gate::new(cfg(8));
        let t0 = Time::ZERO;
        g.handle_accepted(t0, 1).unwrap(); // silent
        g.handle_accepted(t0, 2).unwrap();
        g.handle_read(t0, 2, 10, HeadProgress::Partial).unwrap(); // a head that never completes
        g.handle_returned(t0, 3, 0, HeadProgress::Partial).unwrap(); // kept alive
        assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(5)));
        g.handle_tick(Time::from_secs(5));
        assert_eq!(drain(&mut g), vec![GateAction::Close(3, CloseReason::KeepAliveTimeout)]);
        g.handle_tick(Time::from_secs(20));
        assert_eq!(drain(&mut g), vec![GateAction::Close(2, CloseReason::HeadTimeout)]);
        g.handle_tick(Time::from_secs(60));
        assert_eq!(drain(&mut g), vec![GateAction::Close(1, CloseReason::FirstByteTimeout)]);
        let c = g.counters();
        assert_eq!((c.keep_alive_timeouts, c.head_timeouts, c.first_byte_timeouts), (1, 1, 1));
        assert!(CloseReason::HeadTimeout.answers_408() && !CloseReason::KeepAliveTimeout.answers_408());
    }

    #[test]
    fn the_head_deadline_runs_from_the_first_byte_not_from_the_accept() {
        let mut g = Gate::new(cfg(8));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_read(Time::from_secs(30), 1, 10, HeadProgress::Partial).unwrap();
        g.handle_tick(Time::from_secs(49));
        assert_eq!(g.poll_action(), None);
        g.handle_tick(Time::from_secs(50));
        assert_eq!(g.poll_action(), Some(GateAction::Close(1, CloseReason::HeadTimeout)));
    }

    #[test]
    fn nothing_is_accepted_past_capacity_and_nothing_is_shed_with_room() {
        let mut g = Gate::new(cfg(2));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_pressure(Time::from_secs(10));
        assert_eq!(g.poll_action(), None, "room: nothing shed");
        g.handle_accepted(Time::ZERO, 2).unwrap();
        assert!(!g.accepting());
        assert_eq!(g.handle_accepted(Time::ZERO, 3), Err(GateError::NotAccepting(3)));
    }

    #[test]
    fn shedding_takes_the_longest_idle_then_the_slowest_head_and_spares_the_rest() {
        let mut g = Gate::new(GateConfig { capacity: 5, ..GateConfig::default() });
        let t0 = Time::ZERO;
        g.handle_accepted(t0, 1).unwrap(); // head at 10 B/s: slow
        g.handle_accepted(t0, 2).unwrap(); // head at 2 kB/s: keeps its place
        g.handle_accepted(t0, 3).unwrap(); // complete: never shed
        g.handle_accepted(Time::from_secs(1), 4).unwrap(); // fresh, silent since 1 s
        g.handle_read(t0, 1, 1, HeadProgress::Partial).unwrap();
        g.handle_read(t0, 2, 1, HeadProgress::Partial).unwrap();
        g.handle_read(t0, 3, 30, HeadProgress::Complete).unwrap();
        let now = Time::from_secs(3);
        g.handle_read(now, 1, 30, HeadProgress::Partial).unwrap();
        g.handle_read(now, 2, 6000, HeadProgress::Partial).unwrap();
        g.handle_returned(Time::from_millis(2500), 5, 0, HeadProgress::Partial).unwrap(); // idle, 0.5 s
        assert!(g.wants_pressure(now));
        g.handle_pressure(now);
        assert_eq!(drain(&mut g), vec![GateAction::Close(4, CloseReason::ShedIdle), GateAction::HandOver(3)]);
        g.handle_handed(3).unwrap();
        g.handle_accepted(now, 6).unwrap();
        g.handle_accepted(now, 7).unwrap();
        g.handle_pressure(now);
        assert_eq!(drain(&mut g), vec![GateAction::Close(1, CloseReason::ShedSlowHead)]);
        g.handle_accepted(now, 8).unwrap();
        // Left: 2 (fast head), 5 (idle for 0.5 s), 6, 7, 8 (new): all protected.
        assert!(!g.wants_pressure(now));
        g.handle_pressure(now);
        assert_eq!(g.poll_action(), None);
        let c = g.counters();
        assert_eq!((c.shed_idle, c.shed_slow_heads), (1, 1));
    }

    /// The first second protects a slow head up to, not including, `SHED_GRACE`.
    #[test]
    fn a_slow_head_is_protected_until_the_grace_ends_and_sheddable_from_then() {
        let mut g = Gate::new(cfg(2));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_read(Time::ZERO, 1, 1, HeadProgress::Partial).unwrap(); // 1 B/s: slow
        g.handle_accepted(Time::ZERO, 2).unwrap();
        g.handle_read(Time::ZERO, 2, 40, HeadProgress::Complete).unwrap(); // never shed
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(2)));
        g.handle_handoff_full(2).unwrap();
        assert_eq!(g.queued(), 1, "a complete head waits for a child");
        g.handle_pressure(Time::ZERO + (SHED_GRACE - Duration::from_millis(1)));
        assert_eq!(g.poll_action(), None, "still in its first second");
        g.handle_pressure(Time::ZERO + SHED_GRACE);
        assert_eq!(g.poll_action(), Some(GateAction::Close(1, CloseReason::ShedSlowHead)));
    }

    #[test]
    fn the_gate_keeps_its_settings_and_counts_its_queue() {
        let c = GateConfig { capacity: 7, ..GateConfig::default() };
        let mut g = Gate::new(c);
        assert_eq!(g.config(), &c);
        assert_eq!(g.queued(), 0);
        for id in [1, 2] {
            g.handle_accepted(Time::ZERO, id).unwrap();
            g.handle_read(Time::ZERO, id, 10, HeadProgress::Complete).unwrap();
        }
        assert_eq!(g.queued(), 2);
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(1)));
        g.handle_handed(1).unwrap();
        assert_eq!(g.queued(), 1);
    }

    /// A read that brought no byte (a wake-up, an empty read) is not a head's first byte: the
    /// connection keeps its first-byte deadline and stays being read; a complete head is not.
    #[test]
    fn an_empty_read_starts_no_head_and_only_an_incomplete_connection_is_being_read() {
        let mut g = Gate::new(cfg(4));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        assert!(g.reading(1));
        g.handle_read(Time::from_secs(10), 1, 0, HeadProgress::Partial).unwrap();
        assert_eq!(g.next_deadline(), Some(Time::from_secs(60)), "still the first byte's deadline, from the accept");
        assert!(g.reading(1));
        g.handle_read(Time::from_secs(11), 1, 30, HeadProgress::Complete).unwrap();
        assert!(!g.reading(1), "complete: queued for a child");
        assert!(!g.reading(2), "not held");
    }

    /// The names logs and counters use (SPEC.md §15.6): one per reason, never two alike.
    #[test]
    fn every_close_reason_has_its_own_name() {
        let all = [
            CloseReason::FirstByteTimeout,
            CloseReason::KeepAliveTimeout,
            CloseReason::HeadTimeout,
            CloseReason::ShedIdle,
            CloseReason::ShedSlowHead,
            CloseReason::Stopping,
        ];
        let names: BTreeSet<&str> = all.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(CloseReason::ShedSlowHead.name(), "shed-slow-head");
        assert_eq!(CloseReason::FirstByteTimeout.name(), "first-byte-timeout");
    }

    #[test]
    fn a_graceful_stop_takes_the_queues_finishes_heads_bounds_silence_and_exits_when_empty() {
        let mut g = Gate::new(cfg(8));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_read(Time::ZERO, 1, 5, HeadProgress::Partial).unwrap();
        g.handle_returned(Time::ZERO, 2, 0, HeadProgress::Partial).unwrap();
        g.handle_stop(Time::ZERO, GateStop::Drain);
        assert_eq!(drain(&mut g), vec![], "nothing is closed: a request may be on its way");
        assert!(g.accepting(), "the listen queues are drained first");
        g.handle_accepted(Time::ZERO, 3).unwrap();
        assert_eq!(g.next_deadline(), Some(Time::from_secs(5)), "a silent one waits keep_alive_timeout, not timeout");
        g.handle_listeners_empty();
        g.handle_accepted(Time::ZERO, 5).unwrap_err();
        assert!(!g.accepting());
        g.handle_returned(Time::ZERO, 4, 0, HeadProgress::Partial).unwrap();
        g.handle_tick(Time::from_secs(5));
        assert_eq!(
            drain(&mut g),
            vec![
                GateAction::Close(2, CloseReason::KeepAliveTimeout),
                GateAction::Close(3, CloseReason::FirstByteTimeout),
                GateAction::Close(4, CloseReason::KeepAliveTimeout)
            ]
        );
        g.handle_read(Time::from_secs(5), 1, 50, HeadProgress::Complete).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::HandOver(1)), "the head begun before the stop is finished");
        g.handle_handed(1).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::Exit));
        assert!(!g.accepting());
    }

    #[test]
    fn a_hard_stop_keeps_only_complete_heads() {
        let mut g = Gate::new(cfg(8));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_accepted(Time::ZERO, 2).unwrap();
        g.handle_read(Time::ZERO, 2, 5, HeadProgress::Complete).unwrap();
        g.handle_stop(Time::ZERO, GateStop::Now);
        assert_eq!(drain(&mut g), vec![GateAction::Close(1, CloseReason::Stopping), GateAction::HandOver(2)]);
        g.handle_handed(2).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::Exit));
    }

    #[test]
    fn a_retiring_gate_passes_on_what_is_not_complete_and_hands_over_what_is() {
        let mut g = Gate::new(cfg(8));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        g.handle_read(Time::ZERO, 1, 5, HeadProgress::Partial).unwrap();
        g.handle_returned(Time::ZERO, 2, 0, HeadProgress::Partial).unwrap();
        g.handle_accepted(Time::ZERO, 3).unwrap();
        g.handle_read(Time::ZERO, 3, 5, HeadProgress::Complete).unwrap();
        g.handle_stop(Time::ZERO, GateStop::Retire);
        assert!(!g.accepting());
        assert_eq!(drain(&mut g), vec![GateAction::PassOn(1), GateAction::PassOn(2), GateAction::HandOver(3)]);
        g.handle_returned(Time::ZERO, 4, 0, HeadProgress::Partial).unwrap();
        assert_eq!(drain(&mut g), vec![GateAction::PassOn(4)], "a late give-back goes on too");
        g.handle_handed(3).unwrap();
        assert_eq!(g.poll_action(), Some(GateAction::Exit));
        assert_eq!(g.counters().passed_on, 3);
    }

    #[test]
    fn reports_about_connections_the_gate_does_not_hold_are_errors() {
        let mut g = Gate::new(cfg(8));
        assert_eq!(g.handle_read(Time::ZERO, 9, 1, HeadProgress::Partial), Err(GateError::Unknown(9)));
        assert_eq!(g.handle_gone(9), Err(GateError::Unknown(9)));
        g.handle_accepted(Time::ZERO, 1).unwrap();
        assert_eq!(g.handle_accepted(Time::ZERO, 1), Err(GateError::Duplicate(1)));
        g.handle_read(Time::ZERO, 1, 1, HeadProgress::Complete).unwrap();
        assert_eq!(g.handle_read(Time::ZERO, 1, 2, HeadProgress::Partial), Err(GateError::NotReading(1)));
        assert_eq!(g.handle_gone(1), Err(GateError::NotReading(1)));
    }
}
