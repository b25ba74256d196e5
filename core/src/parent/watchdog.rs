//! The stall watchdog (SPEC.md §7.8): a child that is alive but makes no progress is killed, so no
//! single stuck child can wedge the pool.
//!
//! Two rules, each off when its limit is zero, both decided from what the parent can see at each
//! look (every timeout: maintenance ticks, and the moments a watched child would go over its
//! limit):
//!
//! * **accept lock** (`accept_lock_timeout`): the child holds the accept lock (its activity word
//!   says so, or the kernel does: [`Observation::lock_holder`]), its acquisition count has not
//!   moved, and some listener has connections waiting, at every look for `accept_lock_timeout`. A holder that accepts (and so releases and takes the lock
//!   again) moves its count; a holder waiting with every queue empty is not watched at all.
//! * **request deadline** (`request_deadline`): the slot shows `R W L C`, or `G` (a child told to
//!   leave, which may be in a request: the mark hides it), and the child's count of requests
//!   started has not moved, at every look for `request_deadline`. `K` (waiting between requests)
//!   is not a request.
//!
//! A watched child over its limit gets SIGKILL (every accept lock offered is released by the
//! kernel when its holder dies; SIGTERM would not reach a stopped process) and a log line with the
//! slot, the pid and how long; when it is reaped, its exit is `ExitCause::Killed`. Its slot is
//! refilled by the spare-server policy as for any other death.

use super::{ChildRecord, Parent, ParentLog, Pid};
use crate::exit::{KillReason, Stall};
use crate::scoreboard::SlotTable;
use crate::slot::SlotState;
use crate::time::Time;

/// What the driver saw in one listener's accept queue at a look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueueDepth {
    /// Connections waiting to be accepted (a lower bound when not `exact`).
    pub waiting: u32,
    /// `waiting` is the kernel's count (TCP); otherwise only "empty" (0) or "not empty" (1) is
    /// known (a unix-domain listener polled for readiness).
    pub exact: bool,
}

/// What the driver saw at a look: the watchdog's evidence from outside the scoreboard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Observation {
    /// Each listener's accept queue, in the configuration's order (empty once the listeners are
    /// closed, or when the driver cannot tell).
    pub queues: Vec<QueueDepth>,
    /// The process the kernel says holds the accept lock, where the mechanism can tell (the
    /// owner of an fcntl or flock lock, of a robust pthread mutex, the last `semop` of a SysV
    /// semaphore at zero). It covers what a child's activity word cannot: the moment between the
    /// kernel granting the lock and the child's next step, and a semaphore the kernel hands to a
    /// waiter that is stopped.
    pub lock_holder: Option<Pid>,
}

impl Observation {
    /// Connections waiting in all the accept queues (a lower bound where not exact).
    pub fn waiting(&self) -> usize {
        self.queues.iter().map(|q| q.waiting as usize).sum()
    }
}

/// When the parent first saw a piece of evidence that has not changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Unchanged {
    /// What has not changed: the lock acquisitions; or the requests started, and whether the
    /// slot showed `G` (the mark starts the request deadline afresh).
    count: u64,
    /// The first look that saw it so.
    since: Time,
}

/// The watchdog's memory of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct SlotWatch {
    incarnation: u32,
    lock: Option<Unchanged>,
    request: Option<Unchanged>,
}

/// Keeps `unchanged` if the counter has not moved, else starts afresh at `now`.
fn still(unchanged: Option<Unchanged>, count: u64, now: Time) -> Unchanged {
    unchanged.filter(|s| s.count == count).unwrap_or(Unchanged { count, since: now })
}

/// A request is under way in these states (`K`, between requests, is not one).
/// Does the request deadline run for a child in `state`? A request (`R W L C`; `K`, waiting between
/// requests, is not one), or a child told to leave (`G`): the mark hides whether it is still in a
/// request, and it must be gone within the deadline anyway (its request in hand, or none).
fn in_request(state: SlotState) -> bool {
    matches!(
        state,
        SlotState::BusyRead | SlotState::BusyWrite | SlotState::Logging | SlotState::Closing | SlotState::Graceful
    )
}

impl Parent {
    /// One look at every live child (SPEC.md §7.8); kills the ones over a limit.
    pub(super) fn watch<T: SlotTable + ?Sized>(&mut self, now: Time, board: &T, observed: &Observation) {
        let lock_limit = self.config.accept_lock_timeout;
        let request_limit = self.config.request_deadline;
        let connections_waiting = self.seam_connections_waiting(observed.queues.iter().any(|q| q.waiting > 0));
        for slot in 0..self.slots(board) {
            let Some(ChildRecord { pid: Some(pid), born, killed: None, .. }) = self.children[slot] else {
                self.watches[slot] = SlotWatch::default();
                continue;
            };
            let Ok(cell) = board.slot(slot) else { continue };
            let activity = cell.activity();
            let state = cell.read().ok().filter(|w| w.incarnation == born.incarnation).map(|w| w.state);
            let w = &mut self.watches[slot];
            if w.incarnation != born.incarnation {
                *w = SlotWatch { incarnation: born.incarnation, ..SlotWatch::default() };
            }
            let holds_lock = activity.holds_lock || observed.lock_holder == Some(pid);
            w.lock = (!lock_limit.is_zero() && holds_lock && connections_waiting)
                .then(|| still(w.lock, u64::from(activity.lock_acquisitions), now));
            w.request = (!request_limit.is_zero() && state.is_some_and(in_request)).then(|| {
                let marked = state == Some(SlotState::Graceful);
                still(w.request, u64::from(activity.requests) | u64::from(marked) << 32, now)
            });
            let stall = match (w.lock, w.request) {
                (Some(l), _) if now.since(l.since) >= lock_limit => {
                    Some(Stall::AcceptLock { held: now.since(l.since) })
                }
                (_, Some(r)) if now.since(r.since) >= request_limit => {
                    Some(Stall::Request { busy: now.since(r.since) })
                }
                _ => None,
            };
            if let Some(stall) = self.seam_stall(stall) {
                self.watches[slot] = SlotWatch::default();
                self.log(ParentLog::Stalled { pid, slot, stall });
                self.kill(slot, pid, KillReason::Stalled(stall));
            }
        }
    }

    /// The earliest moment a watched child would go over its limit, if any is watched.
    pub(super) fn watch_deadline(&self) -> Option<Time> {
        let (lock, request) = (self.config.accept_lock_timeout, self.config.request_deadline);
        self.watches
            .iter()
            .flat_map(|w| [w.lock.map(|s| s.since + lock), w.request.map(|s| s.since + request)])
            .flatten()
            .min()
    }
}
