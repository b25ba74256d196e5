//! The stall watchdog (SPEC.md §7.8) on the deterministic simulation: who is killed, when, and
//! who never is.

mod common;

use common::*;
use prefork_core::child::{ChildAction, ChildEvent};
use prefork_core::config::RawPoolConfig;
use prefork_core::exit::{ExitCause, KillReason, Stall};
use prefork_core::parent::{KillSignal, ParentLog, Pid, QueueDepth};
use prefork_core::scoreboard::ChildSlot;
use prefork_core::slot::SlotState;
use prefork_core::time::Time;
use std::time::Duration;

const WAITING: QueueDepth = QueueDepth { waiting: 1, exact: true };

/// A pool of 3 children on `listeners` listeners, with `request_deadline` seconds (0: off) and
/// the default accept-lock watchdog (2 s).
fn sim(listeners: usize, request_deadline: u64) -> Sim {
    let listen = ["127.0.0.1:1", "127.0.0.1:2"][..listeners].iter().map(|s| s.to_string()).collect();
    let mut cfg = config(RawPoolConfig {
        listen: Some(listen),
        start_servers: Some(3),
        min_spare_servers: Some(1),
        max_spare_servers: Some(3),
        server_limit: Some(4),
        request_deadline: Some(request_deadline as i64),
        // The watchdog's world: children appear only by the ticks (no demand looks between them,
        // which would also fork for the connections these tests leave waiting).
        spawn_mode: Some("ramp".into()),
        ..Default::default()
    });
    cfg.maintenance_interval = Duration::from_secs(1);
    let mut sim = Sim::new(cfg);
    sim.settle();
    sim
}

fn kills(sim: &Sim) -> Vec<(Time, Pid)> {
    sim.signals.iter().filter(|(_, _, s)| *s == KillSignal::Kill).map(|(t, p, _)| (*t, *p)).collect()
}

/// Child `pid` (asking for the lock) gets it and waits for connections.
fn take_lock(sim: &mut Sim, pid: Pid) {
    assert_eq!(sim.step(pid, ChildEvent::LockAcquired), ChildAction::Wait);
}

/// Child `pid` (holding the lock, waiting) accepts one connection, serves it and asks for the
/// lock again: what a healthy holder does.
fn accept_one_and_come_back(sim: &mut Sim, pid: Pid) {
    assert!(matches!(sim.step(pid, ChildEvent::Readable(&[0])), ChildAction::Accept { .. }));
    assert_eq!(sim.step(pid, ChildEvent::Accepted), ChildAction::ReleaseLock);
    assert_eq!(sim.step(pid, ChildEvent::LockReleased), ChildAction::Serve);
    assert_eq!(sim.step(pid, ChildEvent::ConnectionDone), ChildAction::AcquireLock);
}

#[test]
fn a_stalled_lock_holder_is_killed_once_connections_wait_for_the_limit() {
    let mut sim = sim(2, 0);
    let holder = sim.waiting().first().copied().unwrap_or_else(|| *sim.procs.keys().next().unwrap());
    take_lock(&mut sim, holder);
    // Nobody waits: a holder waiting for connections is doing its job, for as long as it takes.
    sim.advance(Duration::from_secs(10));
    assert!(kills(&sim).is_empty(), "never kill a holder while every queue is empty");
    // A connection waits, the holder does not move: the first look starts the clock, the kill
    // comes exactly accept_lock_timeout later (the parent schedules a look for that moment).
    sim.queues = vec![WAITING, QueueDepth::default()];
    let first_look = sim.next_timeout().unwrap();
    assert_eq!(sim.parent().poll_timeout(), Some(first_look + Duration::from_secs(1)));
    sim.advance(Duration::from_millis(1999));
    assert!(kills(&sim).is_empty(), "not before the limit");
    let at = sim.next_timeout().unwrap();
    assert_eq!(at, first_look + Duration::from_secs(2));
    assert_eq!(kills(&sim), [(at, holder)]);
    assert_eq!(
        sim.logged(|l| matches!(l, ParentLog::Stalled { pid, stall: Stall::AcceptLock { .. }, .. } if *pid == holder)),
        1
    );
    sim.reap();
    let cause = sim.logs.iter().find_map(|(_, l)| match l {
        ParentLog::ChildExited { pid, cause, .. } if *pid == holder => Some(*cause),
        _ => None,
    });
    assert_eq!(cause, Some(ExitCause::Killed(KillReason::Stalled(Stall::AcceptLock { held: Duration::from_secs(2) }))));
    assert_eq!(
        sim.logs.iter().find(|(_, l)| matches!(l, ParentLog::Stalled { .. })).unwrap().1.to_string(),
        format!(
            "child {holder} (slot 0) held the accept lock 2.000s without accepting while connections waited (accept_lock_timeout): killing it (SIGKILL)"
        )
    );
    sim.advance(Duration::from_secs(5));
    assert_eq!(kills(&sim).len(), 1, "killed once, and nobody else");
    let stats = sim.parent().stats();
    assert_eq!((stats.killed_accept_lock, stats.killed_request_deadline), (1, 0), "counted by reason");
    sim.check();
}

#[test]
fn a_holder_that_keeps_accepting_is_never_killed() {
    let mut sim = sim(2, 0);
    let holder = *sim.procs.keys().next().unwrap();
    take_lock(&mut sim, holder);
    sim.queues = vec![WAITING, WAITING];
    for _ in 0..20 {
        // Between two looks it accepts and takes the lock again: its count moves.
        sim.next_timeout();
        accept_one_and_come_back(&mut sim, holder);
        take_lock(&mut sim, holder);
    }
    assert!(kills(&sim).is_empty(), "a holder that makes progress is never killed: {:?}", kills(&sim));
    assert!(sim.now >= Time::from_secs(10));
}

#[test]
fn a_slow_holder_is_killed_only_if_no_look_saw_it_move_for_the_limit() {
    let mut sim = sim(2, 0);
    let holder = *sim.procs.keys().next().unwrap();
    take_lock(&mut sim, holder);
    sim.queues = vec![WAITING, QueueDepth::default()];
    // It moves once every 1.5 s of looks (less often than a tick, more often than the limit).
    for _ in 0..6 {
        sim.advance(Duration::from_millis(1500));
        accept_one_and_come_back(&mut sim, holder);
        take_lock(&mut sim, holder);
    }
    assert!(kills(&sim).is_empty(), "{:?}", kills(&sim));
}

#[test]
fn a_request_past_its_deadline_is_killed_and_keep_alive_waits_are_not_requests() {
    let mut sim = sim(1, 2);
    let waiting = sim.waiting();
    let (stuck, kept, busy) = (waiting[0], waiting[1], waiting[2]);
    for pid in [stuck, kept, busy] {
        assert_eq!(sim.take_connection(pid), ChildAction::Serve);
    }
    let slot_of = |sim: &Sim, pid: Pid| {
        let p = &sim.procs[&pid];
        (p.slot, p.born)
    };
    // `kept` waits between requests (K) for a long time; `busy` serves a new request every tick.
    let (slot, born) = slot_of(&sim, kept);
    ChildSlot::attach(&sim.board, slot, born).unwrap().set(SlotState::Keepalive).unwrap();
    for _ in 0..6 {
        sim.next_timeout();
        let (slot, born) = slot_of(&sim, busy);
        let me = ChildSlot::attach(&sim.board, slot, born).unwrap();
        me.set(SlotState::Keepalive).unwrap();
        me.set(SlotState::BusyRead).unwrap(); // the next request on the connection
    }
    let killed = kills(&sim);
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0].1, stuck);
    assert_eq!(
        sim.logged(|l| matches!(l, ParentLog::Stalled { pid, stall: Stall::Request { .. }, .. } if *pid == stuck)),
        1
    );
    assert!(kills(&sim).iter().all(|(_, p)| *p != kept && *p != busy));
    let stats = sim.parent().stats();
    assert_eq!((stats.killed_accept_lock, stats.killed_request_deadline), (0, 1), "counted by reason");
}

#[test]
fn zero_turns_each_rule_off() {
    let mut cfg = sim(2, 0).parent().config().clone();
    cfg.accept_lock_timeout = Duration::ZERO;
    let mut locked = Sim::new(cfg);
    locked.settle();
    let holder = *locked.procs.keys().next().unwrap();
    take_lock(&mut locked, holder);
    locked.queues = vec![WAITING, WAITING];
    locked.advance(Duration::from_secs(30));
    assert!(kills(&locked).is_empty(), "accept_lock_timeout = 0: never");
    // request_deadline = 0 (the default): a connection may keep a child as long as it likes.
    let mut one = sim(1, 0);
    let child = one.waiting()[0];
    assert_eq!(one.take_connection(child), ChildAction::Serve);
    one.advance(Duration::from_secs(30));
    assert!(kills(&one).is_empty(), "request_deadline = 0: never");
}

#[test]
fn only_a_queue_with_connections_waiting_counts() {
    // Two listeners, both queues read and empty: a holder waiting for connections is never
    // killed; both with connections waiting: it is.
    let mut sim = sim(2, 0);
    let holder = *sim.procs.keys().next().unwrap();
    take_lock(&mut sim, holder);
    sim.queues = vec![QueueDepth { waiting: 0, exact: true }; 2];
    sim.advance(Duration::from_secs(10));
    assert!(kills(&sim).is_empty(), "every queue read, every queue empty: {:?}", kills(&sim));
    sim.queues = vec![WAITING, WAITING];
    sim.advance(Duration::from_secs(3));
    assert_eq!(kills(&sim).iter().map(|(_, p)| *p).collect::<Vec<_>>(), [holder]);
}

#[test]
fn the_parent_wakes_for_a_limit_between_two_ticks() {
    // accept_lock_timeout 1.5 s with ticks every second: the kill comes at 1.5 s after the first
    // look, not at the next tick after it (the parent schedules a look for that moment).
    let mut cfg = sim(2, 0).parent().config().clone();
    cfg.accept_lock_timeout = Duration::from_millis(1500);
    let mut sim = Sim::new(cfg);
    sim.settle();
    let holder = *sim.procs.keys().next().unwrap();
    take_lock(&mut sim, holder);
    sim.queues = vec![WAITING, QueueDepth::default()];
    let first_look = sim.next_timeout().unwrap();
    assert_eq!(sim.parent().poll_timeout(), Some(first_look + Duration::from_secs(1)), "the next tick first");
    sim.next_timeout();
    assert_eq!(sim.parent().poll_timeout(), Some(first_look + Duration::from_millis(1500)), "then the limit");
    sim.next_timeout();
    assert_eq!(kills(&sim), [(first_look + Duration::from_millis(1500), holder)]);
}

#[test]
fn a_graceful_mark_starts_the_request_deadline_afresh() {
    // A child stuck in a request for 1.5 s of its 2 s is marked G by a graceful restart: it gets
    // the whole deadline again from the mark (its request in hand may be finished, or it leaves),
    // not the half second left.
    let mut sim = sim(1, 2);
    let child = sim.waiting()[0];
    assert_eq!(sim.take_connection(child), ChildAction::Serve);
    let first_look = sim.next_timeout().unwrap();
    sim.advance(Duration::from_millis(1500));
    let same = Box::new(sim.parent().config().clone());
    sim.command(prefork_core::parent::Command::GracefulRestart(same));
    sim.advance(Duration::from_millis(1000));
    assert!(
        kills(&sim).iter().all(|(_, p)| *p != child),
        "killed at {:?}, 2 s after the first look at {first_look:?}: the mark did not restart the deadline",
        kills(&sim)
    );
    sim.advance(Duration::from_secs(3));
    assert!(kills(&sim).iter().any(|(_, p)| *p == child), "a marked child stuck past the deadline is killed");
}

#[test]
fn a_new_child_in_a_watched_slot_is_watched_afresh() {
    // A is watched in a request; a graceful restart lets it finish and leave, and the slot is
    // refilled at once (the restart's one-for-one refill) with B, which starts a request of its
    // own before the parent looks again. B's clock starts at that look, not at A's.
    let mut sim = sim(1, 2);
    let a = sim.waiting()[0];
    let slot = sim.procs[&a].slot;
    assert_eq!(sim.take_connection(a), ChildAction::Serve);
    let first_look = sim.next_timeout().unwrap();
    let same = Box::new(sim.parent().config().clone());
    sim.command(prefork_core::parent::Command::GracefulRestart(same));
    assert!(matches!(sim.finish_connection(a), ChildAction::Exit(_)), "A leaves after its request");
    sim.reap();
    let b = sim.pid_in(slot);
    assert_ne!(b, a, "the slot was refilled at once");
    sim.start_children();
    assert_eq!(sim.take_connection(b), ChildAction::Serve);
    sim.advance(Duration::from_millis(2500));
    assert!(
        kills(&sim).iter().all(|(_, p)| *p != b),
        "B was killed at {:?}, on A's clock (A first seen at {first_look:?})",
        kills(&sim)
    );
    sim.advance(Duration::from_secs(2));
    assert!(kills(&sim).iter().any(|(_, p)| *p == b), "B stuck past its own deadline is killed");
}
