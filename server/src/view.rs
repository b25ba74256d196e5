//! The pool as a service (or a status tool) may see it: read-only snapshots of the shared
//! scoreboard and the listeners' accept queues. Counting follows the core's derived view
//! (`ScoreboardView`, mod_status's `WorkerCounts`); this module only reads the shared memory.

use crate::listeners::{ListenQueue, Listener};
use crate::shm::{Scoreboard, SlotInfo};
use prefork_core::config::ListenAddr;
use prefork_core::parent::QueueDepth;
use prefork_core::scoreboard::{ScoreboardView, WorkerCounts};
use std::sync::atomic::Ordering;

/// A read-only handle on the pool: what status pages need, nothing a service could break.
#[derive(Clone, Copy, Debug)]
pub struct PoolView<'a> {
    board: &'a Scoreboard,
    listeners: &'a [Listener],
}

/// One listener as a status page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The address it is bound to (the real port when port 0 was asked for).
    pub address: ListenAddr,
    /// Connections waiting in its accept queue (exact for TCP; for a unix-domain listener only
    /// "none" or "at least one"), as the parent's watchdog sees it.
    pub depth: QueueDepth,
    /// The backlog it listens with, where the kernel reports it (TCP).
    pub backlog: Option<u32>,
}

impl<'a> PoolView<'a> {
    /// A view of `board` and `listeners` (the whole pool, read-only).
    pub fn new(board: &'a Scoreboard, listeners: &'a [Listener]) -> Self {
        PoolView { board, listeners }
    }

    /// Reads the scoreboard once.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot::take(self.board)
    }

    /// Does any child wait for work now (its slot shows `Ready`)? Read word by word, without a
    /// snapshot; advisory (any child can write the board).
    pub fn any_idle(&self) -> bool {
        use prefork_core::scoreboard::SlotTable;
        (0..self.board.slot_count()).any(|i| {
            self.board
                .slot(i)
                .ok()
                .and_then(|s| s.read().ok())
                .is_some_and(|w| w.state == prefork_core::slot::SlotState::Ready)
        })
    }

    /// Every listener, in the configuration's order, with its accept queue now.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners
            .iter()
            .map(|l| ListenerInfo {
                address: l.local.clone(),
                depth: l.depth(),
                backlog: l.queue().map(|q: ListenQueue| q.backlog),
            })
            .collect()
    }
}

/// Everything a status page shows, read once from the shared memory.
#[derive(Clone, Debug)]
pub struct PoolSnapshot {
    /// Now (unix ms).
    pub now_ms: u64,
    /// Parent start (unix ms).
    pub started_ms: u64,
    /// Last start or hard restart (unix ms).
    pub restarted_ms: u64,
    /// The spare-server policy's spawn rate.
    pub spawn_rate: u64,
    /// Children forked so far.
    pub spawned_total: u64,
    /// Children reaped so far.
    pub exited_total: u64,
    /// Children retired (too many idle) so far.
    pub retired_total: u64,
    /// Children the watchdog killed: for holding the accept lock, for a request past its deadline.
    pub watchdog_kills: WatchdogKills,
    /// Slot words the parent wrote back because they did not match its records.
    pub slots_repaired: u64,
    /// Children the parent killed because their slot was damaged again after a repair.
    pub killed_slot_damaged: u64,
    /// What the gate reports (`accept_filter = "httpready"`, SPEC.md §15.6); `None` when no gate
    /// has run.
    pub gate: Option<GateSnapshot>,
    /// Header values out of range (any process of the pool can write this memory; the parent
    /// writes the header whole again after its next step): their names.
    pub out_of_range: Vec<&'static str>,
    /// Per slot, the values out of range (`generation` of a future generation, times in the
    /// future, an unknown kill code): their names. A status page shows them as invalid.
    pub slots_out_of_range: Vec<Vec<&'static str>>,
    /// The core's view of the slot words: states, letters, counts.
    pub view: ScoreboardView,
    /// Every slot, with its counters and texts.
    pub slots: Vec<SlotInfo>,
}

/// What the gate reports (SPEC.md §15.6): written by the gate, so only shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateSnapshot {
    /// The running gate's pid (0: none now).
    pub pid: u64,
    /// Connections it holds.
    pub held: u64,
    /// Complete heads waiting for a child.
    pub queued: u64,
    /// What the gates took, handed over and closed, per reason, since the parent started.
    pub counts: prefork_core::gate::GateCounters,
}

/// Children the watchdog killed, by reason (SPEC.md §7.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchdogKills {
    /// For holding the accept lock without accepting while connections waited.
    pub accept_lock: u64,
    /// For a request past `request_deadline`.
    pub request_deadline: u64,
}

/// Sums of the per-slot counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `Total Accesses` (requests).
    pub accesses: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Wake-ups that found nothing to accept.
    pub wasted_wakeups: u64,
    /// Time spent on requests (µs): `Total Duration`.
    pub duration_us: u64,
}

impl PoolSnapshot {
    /// Reads `board` (each slot once; the view is built from the same words).
    pub fn take(board: &Scoreboard) -> PoolSnapshot {
        let h = board.header();
        let slots = board.infos();
        let view = ScoreboardView {
            generation: h.generation.load(Ordering::Acquire) as u32,
            slots: slots.iter().map(|i| i.word).collect(),
        };
        let now_ms = crate::unix_ms();
        let (started_ms, restarted_ms) = (h.started_ms.load(Ordering::Relaxed), h.restarted_ms.load(Ordering::Relaxed));
        let spawn_rate = h.spawn_rate.load(Ordering::Relaxed);
        // A clock step can put a time a little ahead; a minute is out of range.
        let future = |ms: u64| ms > now_ms.saturating_add(60_000);
        let mut out_of_range = vec![];
        if future(started_ms) {
            out_of_range.push("started_ms");
        }
        if future(restarted_ms) || restarted_ms < started_ms {
            out_of_range.push("restarted_ms");
        }
        if !(spawn_rate.is_power_of_two() && spawn_rate <= 32) {
            out_of_range.push("spawn_rate");
        }
        let slots_out_of_range = slots
            .iter()
            .map(|info| {
                let mut bad = vec![];
                if info.word.is_ok_and(|w| w.generation > view.generation) {
                    bad.push("generation");
                }
                if future(info.started_ms) {
                    bad.push("started_ms");
                }
                if future(info.last_used_ms) {
                    bad.push("last_used_ms");
                }
                if future(info.killed_ms) {
                    bad.push("killed_ms");
                }
                if info.killed_code != 0 && info.killed_for.is_none() {
                    bad.push("killed_for");
                }
                bad
            })
            .collect();
        PoolSnapshot {
            now_ms,
            started_ms,
            restarted_ms,
            spawn_rate,
            spawned_total: h.spawned_total.load(Ordering::Relaxed),
            exited_total: h.exited_total.load(Ordering::Relaxed),
            retired_total: h.retired_total.load(Ordering::Relaxed),
            watchdog_kills: WatchdogKills {
                accept_lock: h.killed_accept_lock.load(Ordering::Relaxed),
                request_deadline: h.killed_request_deadline.load(Ordering::Relaxed),
            },
            slots_repaired: h.slots_repaired.load(Ordering::Relaxed),
            killed_slot_damaged: h.killed_slot_damaged.load(Ordering::Relaxed),
            gate: {
                let g = &h.gate;
                let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let snap = GateSnapshot {
                    pid: l(&g.pid),
                    held: l(&g.held),
                    queued: l(&g.queued),
                    counts: prefork_core::gate::GateCounters {
                        taken: l(&g.taken),
                        handed: l(&g.handed),
                        first_byte_timeouts: l(&g.first_byte_timeouts),
                        keep_alive_timeouts: l(&g.keep_alive_timeouts),
                        head_timeouts: l(&g.head_timeouts),
                        shed_idle: l(&g.shed_idle),
                        shed_slow_heads: l(&g.shed_slow_heads),
                        stopping: l(&g.stopping),
                        passed_on: l(&g.passed_on),
                    },
                };
                (snap != GateSnapshot::default()).then_some(snap)
            },
            out_of_range,
            slots_out_of_range,
            view,
            slots,
        }
    }

    /// The running generation.
    pub fn generation(&self) -> u32 {
        self.view.generation
    }

    /// mod_status's busy, idle and graceful workers (the core's rule).
    pub fn workers(&self) -> WorkerCounts {
        self.view.worker_counts()
    }

    /// One mod_status letter per slot (`?` for a damaged slot).
    pub fn letters(&self) -> String {
        self.view.letters()
    }

    /// The counters summed over every slot. Saturating: the counters live in memory any process
    /// of the user can write.
    pub fn totals(&self) -> Totals {
        self.slots.iter().fold(Totals::default(), |t, i| Totals {
            accesses: t.accesses.saturating_add(i.requests),
            bytes: t.bytes.saturating_add(i.bytes),
            connections: t.connections.saturating_add(i.connections),
            wasted_wakeups: t.wasted_wakeups.saturating_add(i.wasted_wakeups),
            duration_us: t.duration_us.saturating_add(i.duration_us),
        })
    }

    /// Whole seconds since the parent started.
    pub fn uptime_s(&self) -> u64 {
        self.now_ms.saturating_sub(self.started_ms) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_core::scoreboard::SlotTable;
    use prefork_core::slot::{SlotState, SlotWord};

    #[test]
    fn a_snapshot_is_the_cores_view_of_the_same_words_and_sums_saturate() {
        let board = Scoreboard::create(4, 1, 0).unwrap();
        board.publish_generation(3);
        let put = |i: usize, state, generation| {
            let word = SlotWord { state, incarnation: 1, generation };
            board.record(i).word.store(word.encode(), Ordering::Release);
        };
        put(0, SlotState::Ready, 3);
        put(1, SlotState::Ready, 2); // an old generation: busy for mod_status
        put(2, SlotState::Keepalive, 3);
        board.record(3).word.store(0xee, Ordering::Release); // damaged
        board.record(0).requests.store(u64::MAX - 1, Ordering::Relaxed);
        board.record(2).requests.store(5, Ordering::Relaxed);
        board.record(2).connections.store(2, Ordering::Relaxed);
        let snap = PoolSnapshot::take(&board);
        assert_eq!(snap.letters(), "__K?");
        assert_eq!(snap.generation(), 3);
        assert_eq!(snap.workers(), WorkerCounts { busy: 2, idle: 1, graceful: 0 });
        assert_eq!(snap.workers(), ScoreboardView::capture(&board).worker_counts(), "the core's count");
        assert_eq!((snap.totals().accesses, snap.totals().connections), (u64::MAX, 2), "sums saturate");
    }
}
