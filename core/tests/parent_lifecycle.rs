//! The parent lifecycle on a deterministic simulation (SPEC.md §7).

mod common;

use common::*;
use prefork_core::config::RawPoolConfig;
use prefork_core::exit::{ExitCause, ExitReason, ExitStatus, code};
use prefork_core::parent::{CRASH_LOOP_MAX_PAUSE, Command, KillSignal, ParentLog, Phase, Pid, QueueDepth, SlotProblem};
use prefork_core::policy::PolicyLog;
use prefork_core::scoreboard::SlotTable;
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use std::time::Duration;

#[test]
fn cold_start_forks_start_servers_into_the_lowest_slots_and_ticks_every_second() {
    let mut sim = Sim::new(pool(3, 1, 5, 8));
    assert_eq!(sim.letters(), "SSS.....");
    assert_eq!(sim.forks, 3);
    assert_eq!(sim.parent().phase(), Phase::Running);
    assert_eq!(sim.parent().poll_timeout(), Some(Time::from_secs(1)));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::Resumed { generation: 0 })), 1);
    sim.settle();
    assert_eq!(sim.letters(), "___.....");
    sim.check();
}

#[test]
fn below_min_spare_the_pool_ramps_one_two_four_per_tick() {
    let mut sim = Sim::new(pool(1, 30, 40, 64));
    sim.settle();
    let mut forks = vec![];
    for _ in 0..5 {
        // Keep every child busy so idle stays below min_spare.
        for pid in sim.waiting() {
            sim.take_connection(pid);
        }
        let before = sim.forks;
        sim.tick();
        forks.push(sim.forks - before);
        sim.check();
    }
    assert_eq!(forks, [1, 2, 4, 8, 16]);
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::Policy(PolicyLog::SeemsBusy { spawning: 8, .. }))), 1);
}

#[test]
fn above_max_spare_exactly_one_idle_child_is_retired_per_tick_and_never_a_busy_one() {
    let mut sim = Sim::new(pool(12, 2, 4, 16));
    sim.settle();
    // The two highest children are busy: they must not be chosen.
    let busy = [sim.pid_in(11), sim.pid_in(10)];
    for pid in busy {
        sim.take_connection(pid);
    }
    let mut retired = vec![];
    for _ in 0..6 {
        let before: Vec<_> = sim.parent().children().map(|(s, _)| s).collect();
        sim.tick();
        let after: Vec<_> = sim.parent().children().map(|(s, _)| s).collect();
        let gone: Vec<_> = before.iter().filter(|s| !after.contains(s)).copied().collect();
        assert!(gone.len() <= 1, "at most one retirement per tick: {gone:?}");
        retired.extend(gone);
        sim.check();
    }
    assert_eq!(retired, [9, 8, 7, 6, 5, 4], "highest idle slot first, busy ones skipped");
    assert_eq!(sim.letters(), "____......RR....");
    for pid in busy {
        assert!(sim.procs.contains_key(&pid), "busy child {pid} survived");
    }
    let c = sim.view().counts();
    assert_eq!((c.idle(), c.busy), (4, 2), "idle settles at max_spare");
    assert!(sim.signals.is_empty(), "retirement never uses a kill signal");
    assert_eq!(sim.wakes.len(), 6, "one wake-up per retirement");
}

#[test]
fn a_child_that_claimed_work_is_skipped_and_the_next_idle_one_retired() {
    let mut sim = Sim::new(pool(6, 1, 4, 8));
    sim.settle();
    // The highest child has claimed work (Ready -> BusyRead) and is about to accept().
    let top = sim.pid_in(5);
    assert_eq!(
        sim.step(top, prefork_core::ChildEvent::Readable(&[0])),
        prefork_core::ChildAction::Accept { listener: 0 }
    );
    sim.next_timeout();
    assert_eq!(sim.letters(), "____IR..", "idle 5 > 4: the highest *Ready* slot is claimed");
    sim.settle();
    assert_eq!(sim.letters(), "____.R..");
    assert_eq!(sim.step(top, prefork_core::ChildEvent::Accepted), prefork_core::ChildAction::Serve);
}

#[test]
fn graceful_restart_marks_every_child_and_refills_with_the_new_generation() {
    let mut sim = Sim::new(pool(4, 1, 6, 8));
    sim.settle();
    let serving = sim.pid_in(0);
    sim.take_connection(serving);
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    assert_eq!(sim.parent().generation(), 1);
    assert_eq!(sim.board_generation(), 1);
    assert_eq!(sim.letters(), "GGGG....");
    assert_eq!(sim.wakes.len(), 4, "every child woken");
    assert_eq!(sim.parent().policy().hold_off(), 10);
    sim.settle();
    // The three idle children exited at once and were replaced 1-for-1 in their slots.
    assert_eq!(sim.letters(), "G___....");
    assert!(sim.parent().children().filter(|(s, _)| *s > 0).all(|(_, c)| c.born.generation == 1));
    // The busy one finishes its connection, then exits; the rest of start_servers comes at the tick.
    assert_eq!(sim.finish_connection(serving), prefork_core::ChildAction::Exit(ExitReason::Graceful));
    sim.settle();
    assert_eq!(sim.letters(), "____....");
    assert!(sim.parent().children().all(|(_, c)| c.born.generation == 1), "no old generation left");
    assert!(sim.signals.is_empty() && !sim.listeners_closed, "no signal, listeners kept");
    sim.check();
}

#[test]
fn graceful_restart_applies_new_limits_but_keeps_server_limit() {
    restart_with_a_new_server_limit(None);
}

#[test]
fn negative_a_reload_that_changes_server_limit_is_caught() {
    expect_violation("I17: server_limit", || {
        restart_with_a_new_server_limit(Some(SeededBug::ServerLimitFollowsReload))
    });
}

fn restart_with_a_new_server_limit(bug: Option<SeededBug>) {
    let mut sim = Sim::seeded(pool(2, 1, 3, 8), Behaviour::Normal, bug);
    sim.settle();
    let mut cfg = sim.parent().config().clone();
    cfg.server_limit = 64;
    cfg.max_request_workers = 20;
    cfg.start_servers = 6;
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    assert_eq!(sim.parent().config().server_limit, 8, "I17: server_limit is fixed for the life of the parent");
    assert_eq!(sim.parent().config().max_request_workers, 8);
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::ConfigAdjusted(w) if w.key == "server_limit")), 1);
    assert_eq!(sim.logged(|l| l.apache_code() == Some("AH00179")), 1);
    assert_eq!(sim.logged(|l| l.apache_code() == Some("AH00180")), 1, "max_request_workers 20 > 8");
}

#[test]
fn hard_restart_stops_every_child_then_starts_afresh() {
    let mut sim = Sim::new(pool(3, 1, 5, 8));
    sim.settle();
    let cfg = sim.parent().config().clone();
    sim.command(Command::HardRestart(Box::new(cfg)));
    assert_eq!(sim.parent().phase(), Phase::Restarting);
    assert_eq!(sim.signals.iter().filter(|s| s.2 == KillSignal::Term).count(), 3);
    sim.reap();
    assert_eq!(sim.parent().phase(), Phase::Running);
    assert_eq!(sim.parent().generation(), 1);
    assert_eq!(sim.letters(), "SSS.....");
    assert!(sim.parent().children().all(|(_, c)| c.born.generation == 1));
    assert!(!sim.listeners_closed, "a restart keeps the listeners");
    sim.check();
}

/// The lifecycle events a service manager hears across restarts and a stop, in order (I31; every
/// `Sim` input also holds the stream to `LifecycleOrder` and the parent's phase).
#[test]
fn lifecycle_events_come_in_order_across_restarts_and_stops() {
    lifecycle_across_restarts(None);
}

#[test]
fn negative_ready_announced_while_a_hard_restart_reclaims_is_caught() {
    expect_violation("I31", || lifecycle_across_restarts(Some(SeededBug::ReadyEarly)));
}

fn lifecycle_across_restarts(bug: Option<SeededBug>) {
    use prefork_core::parent::ParentEvent::*;
    let mut sim = Sim::seeded(pool(2, 1, 3, 4), Behaviour::Normal, bug);
    sim.settle();
    let cfg = Box::new(sim.parent().config().clone());
    sim.command(Command::GracefulRestart(cfg.clone()));
    sim.settle();
    sim.command(Command::HardRestart(cfg.clone()));
    let before_reap = sim.events.len();
    sim.settle();
    assert_eq!(sim.parent().phase(), Phase::Running);
    sim.command(Command::HardRestart(cfg));
    sim.command(Command::GracefulStop);
    sim.settle();
    assert_eq!(sim.exit_code, Some(code::OK));
    let events: Vec<_> = sim
        .events
        .iter()
        .map(|(_, e)| match e {
            Ready { generation, config } => {
                assert_eq!(config.max_request_workers, 4, "Ready says the configuration in force");
                Ready { generation: *generation, config: Box::default() }
            }
            other => other.clone(),
        })
        .collect();
    assert_eq!(
        events,
        [
            Ready { generation: 0, config: Box::default() },
            Reloading { generation: 1, graceful: true },
            Ready { generation: 1, config: Box::default() },
            Reloading { generation: 2, graceful: false },
            Ready { generation: 2, config: Box::default() },
            Reloading { generation: 3, graceful: false },
            Stopping { graceful: false },
        ]
    );
    assert_eq!(before_reap, 4, "a hard restart is Ready only once its old children are reaped");
}

#[test]
fn stop_escalates_term_at_3_5_7_kill_at_9_and_gives_up_at_10_seconds() {
    stop_of_unkillable_children(None);
}

#[test]
fn negative_a_hurried_kill_is_caught() {
    expect_violation("I15: the ladder", || stop_of_unkillable_children(Some(SeededBug::HurriedKill)));
}

fn stop_of_unkillable_children(bug: Option<SeededBug>) {
    let mut sim = Sim::seeded(pool(2, 1, 3, 4), Behaviour::Unkillable, bug);
    sim.settle();
    sim.now = Time::from_secs(100);
    sim.command(Command::Stop);
    assert!(sim.listeners_closed);
    while sim.exit_code.is_none() {
        sim.next_timeout().expect("a stop always has a next step");
    }
    let when: Vec<(u64, KillSignal)> = sim.signals.iter().map(|(t, _, s)| (t.as_millis() / 1000 - 100, *s)).collect();
    use KillSignal::*;
    assert_eq!(
        when,
        [(0, Term), (0, Term), (3, Term), (3, Term), (5, Term), (5, Term), (7, Term), (7, Term), (9, Kill), (9, Kill)],
        "I15: the ladder"
    );
    assert_eq!(sim.now, Time::from_secs(110));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::GaveUp { .. })), 2);
    assert_eq!(sim.exit_code, Some(0));
    assert_eq!(sim.parent().phase(), Phase::Exited);
}

#[test]
fn stop_ends_as_soon_as_the_last_child_is_reaped() {
    let mut sim = Sim::with(pool(2, 1, 3, 4), Behaviour::IgnoresTerm);
    sim.settle();
    sim.command(Command::Stop);
    sim.advance(Duration::from_secs(8));
    assert_eq!(sim.exit_code, None, "TERM is ignored");
    sim.advance(Duration::from_secs(1)); // 9 s: KILL
    sim.reap();
    assert_eq!(sim.exit_code, Some(0));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::GaveUp { .. })), 0);
}

#[test]
fn graceful_stop_closes_listeners_lets_work_finish_then_exits() {
    let mut sim = Sim::new(pool(3, 1, 5, 8));
    sim.settle();
    let busy = sim.pid_in(1);
    sim.take_connection(busy);
    sim.command(Command::GracefulStop);
    assert!(sim.listeners_draining && !sim.listeners_closed, "the listeners take nothing new, and keep their queues");
    assert_eq!(sim.parent().phase(), Phase::Draining);
    sim.settle();
    assert_eq!(sim.letters(), ".G......", "idle children drained the empty queues and left; the busy one finishes");
    assert_eq!(sim.exit_code, None);
    sim.advance(Duration::from_secs(600));
    assert_eq!(sim.exit_code, None, "graceful_shutdown_timeout 0 waits forever");
    sim.finish_connection(busy);
    sim.settle();
    assert_eq!(sim.exit_code, Some(0));
    assert!(sim.signals.is_empty());
}

/// SPEC.md §7.5, I32: what the listen queues held when a graceful stop came is served by the
/// children before they leave, also when every child was busy at that moment.
#[test]
fn graceful_stop_serves_what_is_queued_before_the_children_leave() {
    let mut sim = Sim::new(pool(2, 1, 3, 4));
    sim.settle();
    let busy: Vec<Pid> = sim.waiting();
    for &pid in &busy {
        sim.take_connection(pid);
    }
    sim.queues = vec![QueueDepth { waiting: 3, exact: true }];
    sim.command(Command::GracefulStop);
    assert_ne!(sim.board.generation_word().get() & prefork_core::scoreboard::DRAINING, 0);
    sim.settle();
    assert_eq!(sim.drained, 0, "every child is busy: nobody takes the queue yet");
    sim.finish_connection(busy[0]);
    sim.settle();
    assert_eq!(sim.drained, 3, "the first child to finish drains the whole queue");
    assert_eq!(sim.queues[0].waiting, 0);
    assert_eq!(sim.exit_code, None, "the other child is still busy");
    sim.finish_connection(busy[1]);
    sim.settle();
    assert_eq!(sim.exit_code, Some(0));
    assert!(sim.signals.is_empty(), "both left by themselves");
}

/// A hand-over (the sockets outlive the server: a service manager holds them) closes the parent's
/// copies and leaves the queues to the other holder: no DRAINING bit, the children leave at once.
#[test]
fn a_hand_over_closes_the_listeners_and_does_not_drain() {
    let mut sim = Sim::new(pool(2, 1, 3, 4));
    sim.settle();
    sim.queues = vec![QueueDepth { waiting: 2, exact: true }];
    sim.command(Command::HandOver);
    assert!(sim.listeners_closed && !sim.listeners_draining);
    assert_eq!(sim.board.generation_word().get() & prefork_core::scoreboard::DRAINING, 0);
    assert_eq!(sim.parent().phase(), Phase::Draining);
    sim.settle();
    assert_eq!(sim.drained, 0);
    assert_eq!(sim.exit_code, Some(0));
}

/// A graceful restart does not drain: the new generation takes what is queued, and an old child
/// leaves at once (it would otherwise stay as long as connections keep coming).
#[test]
fn graceful_restart_does_not_drain() {
    let mut sim = Sim::new(pool(2, 1, 3, 4));
    sim.settle();
    sim.queues = vec![QueueDepth { waiting: 2, exact: true }];
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    sim.settle();
    assert_eq!(sim.drained, 0);
    assert!(!sim.listeners_draining);
}

#[test]
fn graceful_stop_timeout_falls_back_to_the_stop_escalation() {
    let mut cfg = pool(2, 1, 3, 4);
    cfg.graceful_shutdown_timeout = Duration::from_secs(5);
    let mut sim = Sim::new(cfg);
    sim.settle();
    for pid in sim.waiting() {
        sim.take_connection(pid);
    }
    sim.command(Command::GracefulStop);
    sim.advance(Duration::from_secs(4));
    assert!(sim.signals.is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::GracefulStopTimedOut { remaining: 2 })), 1);
    assert_eq!(sim.signals.len(), 2);
    sim.reap();
    assert_eq!(sim.exit_code, Some(0));
}

#[test]
fn children_crashing_at_start_cannot_make_the_parent_fork_in_a_loop() {
    crash_loop(None);
}

#[test]
fn negative_a_parent_without_the_crash_loop_brake_is_caught() {
    expect_violation("I16: forked", || crash_loop(Some(SeededBug::NoCrashBrake)));
}

fn crash_loop(bug: Option<SeededBug>) {
    let mut sim = Sim::seeded(pool(5, 5, 10, 64), Behaviour::CrashOnStart, bug);
    for _ in 0..600 {
        sim.settle();
        sim.advance(Duration::from_secs(1));
    }
    // Ten minutes of children that die at once: Apache would fork 32 per second at worst.
    eprintln!("crash loop: {} forks in 10 minutes", sim.forks);
    assert!(sim.forks <= 40, "I16: forked {} times in 10 minutes", sim.forks);
    assert!(sim.logged(|l| matches!(l, ParentLog::CrashLoop { .. })) > 0);
    let last = sim.logs.iter().rev().find_map(|(_, l)| match l {
        ParentLog::CrashLoop { paused_for, .. } => Some(*paused_for),
        _ => None,
    });
    assert_eq!(last, Some(CRASH_LOOP_MAX_PAUSE));
}

/// Children killed from outside (SIGKILL) right after they start are replaced at the policy's
/// rate: the brake is for children that fail by themselves.
#[test]
fn children_killed_from_outside_at_start_are_replaced_without_the_brake() {
    let mut sim = Sim::with(pool(5, 5, 10, 64), Behaviour::KilledOnStart);
    for _ in 0..10 {
        sim.settle();
        sim.advance(Duration::from_secs(1));
    }
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::CrashLoop { .. })), 0);
    assert_eq!(sim.parent().brake().early_exits(), 0);
    assert!(sim.forks > 100, "replaced at the policy's rate (up to 32 a tick): {} forks in 10 s", sim.forks);
    sim.behaviour = Behaviour::Normal;
    sim.settle();
    sim.advance(Duration::from_secs(1));
    sim.settle();
    assert!(sim.view().counts().idle() >= 5, "the pool is back at once: {}", sim.letters());
    sim.check();
}

#[test]
fn the_crash_loop_brake_releases_once_children_live() {
    let mut sim = Sim::with(pool(4, 4, 8, 16), Behaviour::CrashOnStart);
    sim.settle();
    sim.advance(Duration::from_secs(1));
    sim.settle();
    assert!(sim.parent().brake().early_exits() >= 3);
    sim.behaviour = Behaviour::Normal;
    for _ in 0..120 {
        sim.advance(Duration::from_secs(1));
        sim.settle();
    }
    assert_eq!(sim.parent().brake().early_exits(), 0, "healthy children reset the count");
    assert!(sim.view().counts().idle() >= 4, "{}", sim.letters());
    sim.check();
}

#[test]
fn fork_failures_back_off_and_recover() {
    let mut sim = Sim::new(pool(1, 1, 3, 4));
    sim.settle();
    sim.take_connection(sim.pid_in(0));
    sim.fork_fails = true;
    sim.tick();
    assert_eq!(
        sim.logged(|l| matches!(l, ParentLog::ForkFailed { retry_in, .. } if *retry_in == Duration::from_secs(1))),
        1
    );
    assert_eq!(sim.state(1), SlotState::Dead, "the slot is free again");
    sim.tick(); // paused until 1 s after the failure: this tick is exactly at the deadline
    sim.tick();
    assert!(
        sim.logged(|l| matches!(l, ParentLog::ForkFailed { retry_in, .. } if *retry_in == Duration::from_secs(2))) >= 1
    );
    sim.fork_fails = false;
    for _ in 0..12 {
        sim.tick();
    }
    assert!(sim.view().counts().idle() >= 1);
    sim.check();
}

#[test]
fn a_fatal_child_of_the_current_generation_stops_the_server_one_of_an_old_generation_does_not() {
    fatal_children(None);
}

#[test]
fn negative_an_old_fatal_child_that_stops_the_server_is_caught() {
    expect_violation("I18: an old generation's fatal exit", || fatal_children(Some(SeededBug::OldFatalStops)));
}

fn fatal_children(bug: Option<SeededBug>) {
    let mut sim = Sim::seeded(pool(2, 1, 3, 4), Behaviour::Normal, bug);
    sim.settle();
    let old = sim.pid_in(0);
    sim.take_connection(old);
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    sim.procs.remove(&old);
    sim.exits.push((old, ExitStatus::Code(code::CHILDFATAL), None));
    sim.settle();
    assert_eq!(
        sim.logged(|l| matches!(l, ParentLog::IgnoringOldFatal { .. })),
        1,
        "I18: an old generation's fatal exit is ignored"
    );
    assert_eq!(sim.parent().phase(), Phase::Running, "I18: an old generation's fatal exit does not stop the server");
    let young = sim.pid_in(1);
    sim.procs.remove(&young);
    sim.exits.push((young, ExitStatus::Code(code::CHILDFATAL), None));
    sim.reap();
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::ChildFatal { .. })), 1);
    sim.reap();
    assert_eq!(sim.exit_code, Some(1));
}

#[test]
fn a_sick_child_resets_the_spawn_rate() {
    let mut sim = Sim::new(pool(1, 30, 40, 64));
    sim.settle();
    for _ in 0..3 {
        for pid in sim.waiting() {
            sim.take_connection(pid);
        }
        sim.tick();
    }
    assert_eq!(sim.parent().policy().idle_spawn_rate(), 8);
    let pid = sim.pid_in(0);
    sim.procs.remove(&pid);
    sim.exits.push((pid, ExitStatus::Code(code::CHILDSICK), Some(ExitReason::AcceptFailed)));
    sim.reap();
    assert_eq!(sim.parent().policy().idle_spawn_rate(), 1);
    assert_eq!(
        sim.logged(|l| matches!(
            l,
            ParentLog::ChildExited { cause: ExitCause::Sick(Some(ExitReason::AcceptFailed)), .. }
        )),
        1
    );
}

#[test]
fn corrupted_slots_are_repaired_never_trusted() {
    let mut sim = Sim::new(pool(2, 1, 3, 4));
    sim.settle();
    use prefork_core::atomic::{AtomicWord, Ordering};
    // Garbage over a live child's slot, a ghost in an empty slot, and a foreign word.
    sim.board.slot_word(0).store(0xdead_beef_0000_00ff, Ordering::Relaxed);
    sim.board
        .slot_word(3)
        .store(SlotWord { state: SlotState::BusyWrite, incarnation: 9, generation: 0 }.encode(), Ordering::Relaxed);
    let victim = sim.pid_in(1);
    let w = sim.board.slot(1).unwrap().read().unwrap();
    sim.board.slot_word(1).store(SlotWord { incarnation: w.incarnation + 5, ..w }.encode(), Ordering::Relaxed);
    sim.tick();
    let repaired: Vec<(usize, SlotState)> = sim
        .logs
        .iter()
        .filter_map(|(_, l)| match l {
            ParentLog::SlotRepaired { slot, wrote, .. } => Some((*slot, *wrote)),
            _ => None,
        })
        .collect();
    assert_eq!(repaired, [(0, SlotState::Graceful), (1, SlotState::Graceful), (3, SlotState::Dead)]);
    assert!(
        sim.logs.iter().any(|(_, l)| matches!(l, ParentLog::SlotRepaired { problem: SlotProblem::Corrupt(_), .. }))
    );
    // Repaired children are told to go; the pool refills.
    sim.settle();
    assert!(!sim.procs.contains_key(&victim));
    for _ in 0..3 {
        sim.tick();
    }
    sim.check();
    assert!(sim.view().counts().idle() >= 1);
}

#[test]
fn a_pid_the_parent_never_forked_is_logged_and_ignored() {
    let mut sim = Sim::new(pool(1, 1, 3, 4));
    sim.exits.push((4242, ExitStatus::Code(0), None));
    sim.reap();
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::LongLostChild { pid: 4242, .. })), 1);
    assert_eq!(sim.parent().live_children(), 1);
}

#[test]
fn commands_that_do_not_apply_are_ignored_with_a_log_line() {
    let mut sim = Sim::with(pool(1, 1, 3, 4), Behaviour::IgnoresTerm);
    sim.settle();
    sim.command(Command::Stop);
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::CommandIgnored { phase: Phase::Stopping, .. })), 1);
    assert_eq!(sim.parent().phase(), Phase::Stopping);
}

#[test]
fn a_stop_during_a_hard_restart_exits_instead_of_restarting() {
    let mut sim = Sim::with(pool(2, 1, 3, 4), Behaviour::IgnoresTerm);
    sim.settle();
    let cfg = sim.parent().config().clone();
    sim.command(Command::HardRestart(Box::new(cfg)));
    sim.command(Command::Stop);
    assert_eq!(sim.parent().phase(), Phase::Stopping);
    sim.advance(Duration::from_secs(9));
    sim.reap();
    assert_eq!(sim.exit_code, Some(0));
}

#[test]
fn max_connections_per_child_recycles_children_without_immediate_respawn() {
    let cfg = config(RawPoolConfig {
        start_servers: Some(2),
        min_spare_servers: Some(2),
        max_spare_servers: Some(4),
        max_request_workers: Some(4),
        server_limit: Some(4),
        max_connections_per_child: Some(1),
        // Only the ticks look at the queues: `sim.tick()` is then the next maintenance tick.
        demand_interval_ms: Some(1000),
        ..Default::default()
    });
    let mut sim = Sim::new(cfg);
    sim.settle();
    let pid = sim.pid_in(0);
    sim.take_connection(pid);
    assert_eq!(sim.finish_connection(pid), prefork_core::ChildAction::Exit(ExitReason::MaxConnections));
    sim.settle();
    assert_eq!(sim.letters(), "._..");
    assert_eq!(
        sim.logged(|l| matches!(
            l,
            ParentLog::ChildExited { cause: ExitCause::Voluntary(Some(ExitReason::MaxConnections)), .. }
        )),
        1
    );
    sim.tick();
    assert_eq!(sim.letters(), "__..", "the next tick respawns below min_spare");
}

#[test]
fn idle_pool_converges_into_the_spare_range_and_stays_there() {
    converging_pools(None);
}

#[test]
fn negative_a_parent_that_never_retires_does_not_converge() {
    expect_violation("L2: start", || converging_pools(Some(SeededBug::NoRetire)));
}

fn converging_pools(bug: Option<SeededBug>) {
    for (start, min, max) in [(1, 5, 10), (40, 5, 10), (8, 2, 3), (20, 20, 21)] {
        let mut sim = Sim::seeded(pool(start, min, max, 64), Behaviour::Normal, bug);
        for _ in 0..80 {
            sim.tick();
            sim.check();
        }
        let idle = sim.view().counts().idle() as i64;
        assert!((min..=max).contains(&idle), "L2: start {start} min {min} max {max}: idle {idle}");
        let forks = sim.forks;
        for _ in 0..20 {
            sim.tick();
        }
        assert_eq!(sim.forks, forks, "steady: no more forks");
    }
}

#[test]
fn children_that_survive_a_hard_restart_keep_their_slots_marked_graceful() {
    let mut sim = Sim::with(pool(2, 1, 3, 4), Behaviour::Unkillable);
    sim.settle();
    sim.behaviour = Behaviour::Normal;
    let cfg = sim.parent().config().clone();
    sim.command(Command::HardRestart(Box::new(cfg)));
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::GaveUp { .. })), 2);
    assert_eq!(sim.parent().phase(), Phase::Running);
    assert_eq!(sim.letters(), "GGSS", "stuck children keep slots 0-1 as G; the new ones go to 2-3");
    sim.check();
}

#[test]
fn children_with_a_pending_directive_are_woken_again_every_tick() {
    let mut sim = Sim::new(pool(3, 1, 2, 4));
    sim.settle();
    // Slot 2 is claimed for retirement at the first tick; its wake-up is then "lost".
    sim.next_timeout();
    assert_eq!(sim.letters(), "__I.");
    let pid = sim.pid_in(2);
    sim.procs.get_mut(&pid).unwrap().woken = false;
    let before = sim.wakes.len();
    sim.next_timeout();
    assert_eq!(&sim.wakes[before..], [(2, pid)], "the claimed child is woken again, and only it");
    sim.settle();
    assert_eq!(sim.letters(), "__..");
}

#[test]
fn crashes_are_warnings_with_apaches_code_and_stop_signals_are_not() {
    use prefork_core::parent::Level;
    let exited = |sig| ParentLog::ChildExited { pid: 1, slot: 0, generation: 0, cause: ExitCause::Signal(sig) };
    assert_eq!((exited(11).level(), exited(11).apache_code()), (Level::Warn, Some("AH00052")));
    for sig in [1, 9, 10, 15] {
        assert_eq!((exited(sig).level(), exited(sig).apache_code()), (Level::Info, None), "signal {sig}");
    }
}

/// Runs `scenario` (with a seeded bug), which must fail with a message containing `expected`: the
/// specific violation, not any panic.
fn expect_violation(expected: &str, scenario: impl FnOnce() + std::panic::UnwindSafe) {
    let err = std::panic::catch_unwind(scenario).expect_err("the seeded bug must be caught");
    let msg = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
    let msg = msg.unwrap_or_default();
    assert!(msg.contains(expected), "caught, but not as {expected:?}: {msg}");
    eprintln!("caught as expected: {}", msg.lines().next().unwrap_or_default());
}

// Edges the mutation run (docs/contributing.md, "Mutation testing") found without a test.

/// Generations count up one per restart, and a graceful restart's refills are born in the newest.
#[test]
fn generations_count_up_one_per_restart_and_refills_are_born_in_the_newest() {
    let mut sim = Sim::new(pool(2, 1, 5, 4));
    sim.settle();
    assert_eq!(sim.parent().generation(), 0);
    for generation in 1..=2 {
        let cfg = sim.parent().config().clone();
        sim.command(Command::GracefulRestart(Box::new(cfg)));
        assert_eq!(sim.parent().generation(), generation);
        assert_eq!(sim.board_generation(), generation);
        sim.settle();
        let born: Vec<u32> = sim.parent().children().map(|(_, c)| c.born.generation).collect();
        assert_eq!(born, [generation, generation], "the refills are born in generation {generation}");
    }
}

/// A graceful restart refills exactly `start_servers` slots one-for-one as old children leave,
/// however many old children there were.
#[test]
fn a_graceful_restart_refills_exactly_start_servers_one_for_one() {
    let mut sim = Sim::new(pool(4, 1, 10, 8));
    sim.settle();
    let mut cfg = sim.parent().config().clone();
    cfg.start_servers = 2;
    let forks = sim.forks;
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    sim.settle(); // the four old children leave; no tick yet
    assert_eq!(sim.forks - forks, 2, "two refills for four old children");
    assert_eq!(sim.letters(), "__......");
}

/// Refills after a restart that lowers `max_request_workers` go only into slots below it, and only
/// while fewer children than the limit live (I6, I7).
#[test]
fn refills_stay_below_a_lowered_max_request_workers() {
    let mut sim = Sim::new(pool(3, 1, 5, 3));
    sim.settle();
    let mut cfg = sim.parent().config().clone();
    cfg.max_request_workers = 2;
    cfg.start_servers = 2;
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    // The old children leave in slot order: slot 0 (two still live: no refill), slot 1 (one left:
    // refill slot 1), slot 2 (slot 2 is above the new limit: no refill).
    sim.settle();
    assert_eq!(sim.letters(), "._.");
    sim.tick(); // the rest of start_servers
    assert_eq!(sim.letters(), "__.");
    sim.check();
}

/// The crash-loop brake counts a child's crash as early if it was still starting, or within 2 s
/// of its fork; not one that got past starting and lived 2 s or more.
#[test]
fn a_crash_counts_as_early_within_two_seconds_of_the_fork_or_while_starting() {
    let mut sim = Sim::new(pool(3, 1, 5, 8));
    sim.settle();
    let crash = |sim: &mut Sim, slot: usize, at_ms: u64| {
        sim.now = Time::from_millis(at_ms);
        let pid = sim.pid_in(slot);
        sim.procs.remove(&pid);
        sim.exits.push((pid, ExitStatus::Signaled(11), None));
        sim.reap();
        sim.parent().brake().early_exits()
    };
    assert_eq!(crash(&mut sim, 0, 1_000), 1, "ready, 1 s old: early");
    assert_eq!(crash(&mut sim, 1, 2_000), 1, "ready, 2 s old: not early");
    assert_eq!(crash(&mut sim, 2, 3_000), 1, "ready, 3 s old: not early");
    let mut sim = Sim::new(pool(1, 1, 5, 8)); // never started: its slot stays `S`
    assert_eq!(crash(&mut sim, 0, 3_000), 1, "still starting, 3 s old: early");
}

/// While draining, the parent wants timeouts only for the request deadline (and the graceful
/// timeout): without either it sleeps until the last child leaves; with a deadline, a request
/// stuck past it is killed even during the drain.
#[test]
fn a_drain_keeps_ticking_and_kills_only_for_the_request_deadline() {
    let mut sim = Sim::new(pool(1, 1, 5, 4));
    sim.settle();
    let pid = sim.pid_in(0);
    sim.take_connection(pid);
    sim.command(Command::GracefulStop);
    // The ticks go on: the child's `G` is re-asserted (a scribble cannot keep it from leaving)
    // and it is woken again, but nothing is killed without a request deadline.
    assert!(sim.parent().poll_timeout().is_some(), "a draining parent still ticks");
    sim.board.slot(0).unwrap().put(sim.board.slot(0).unwrap().read().unwrap().with_state(SlotState::BusyWrite));
    sim.advance(Duration::from_secs(30));
    assert!(sim.signals.is_empty(), "{:?}", sim.signals);
    assert_eq!(sim.board.slot(0).unwrap().read().unwrap().state, SlotState::Graceful, "the directive is back");
    assert!(sim.wakes.iter().filter(|w| w.1 == pid).count() >= 2, "woken again: {:?}", sim.wakes);
    assert_eq!(sim.parent().phase(), Phase::Draining);

    let mut cfg = pool(1, 1, 5, 4);
    cfg.request_deadline = Duration::from_secs(5);
    let mut sim = Sim::new(cfg);
    sim.settle();
    let pid = sim.pid_in(0);
    sim.take_connection(pid);
    sim.command(Command::GracefulStop);
    assert!(sim.parent().poll_timeout().is_some(), "the request deadline is watched while draining");
    sim.advance(Duration::from_secs(6));
    assert_eq!(sim.signals.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [(pid, KillSignal::Kill)]);
    sim.reap();
    assert_eq!(sim.exit_code, Some(0));
}

/// A restart asked for while a hard restart is under way replaces its configuration; a restart
/// asked for while stopping is ignored and logged by name.
#[test]
fn a_restart_during_a_restart_uses_the_newest_configuration_and_one_during_a_stop_is_ignored() {
    let mut sim = Sim::with(pool(3, 1, 5, 8), Behaviour::IgnoresTerm);
    sim.settle();
    sim.command(Command::HardRestart(Box::new(pool(3, 1, 5, 8))));
    sim.command(Command::GracefulRestart(Box::new(pool(1, 1, 5, 8))));
    sim.advance(Duration::from_secs(9)); // SIGKILL at 9 s
    sim.reap();
    assert_eq!(sim.parent().phase(), Phase::Running);
    assert_eq!(sim.letters(), "S.......", "the newest configuration: start_servers 1");

    sim.settle();
    sim.command(Command::Stop);
    sim.command(Command::GracefulRestart(Box::new(pool(3, 1, 5, 8))));
    let ignored: Vec<String> = sim
        .logs
        .iter()
        .filter(|(_, l)| matches!(l, ParentLog::CommandIgnored { .. }))
        .map(|(_, l)| l.to_string())
        .collect();
    assert_eq!(ignored.len(), 1);
    assert!(ignored[0].contains("graceful restart"), "{}", ignored[0]);
}

/// A slot that holds another child's word when its child is reaped is repaired, and the log names
/// the word found there.
#[test]
fn a_reap_that_finds_a_foreign_word_logs_the_word_found() {
    let mut sim = Sim::new(pool(1, 1, 5, 4));
    sim.settle();
    let pid = sim.pid_in(0);
    let foreign = sim.board.slot(0).unwrap().read().unwrap().next_incarnation(0).with_state(SlotState::Ready);
    sim.board.slot_word(0).set(foreign.encode());
    sim.procs.remove(&pid);
    sim.exits.push((pid, ExitStatus::Signaled(9), None));
    sim.reap();
    let found: Vec<SlotWord> = sim
        .logs
        .iter()
        .filter_map(|(_, l)| match l {
            ParentLog::SlotRepaired { slot: 0, problem: SlotProblem::Foreign(w), .. } => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(found.iter().map(|w| w.incarnation).collect::<Vec<_>>(), [foreign.incarnation]);
    assert_eq!(sim.state(0), SlotState::Dead);
}

/// A graceful restart wakes each child it marks, once: not a child that already had a directive
/// (the ticks wake those again), nor an empty slot.
#[test]
fn a_graceful_restart_wakes_each_child_it_marks_once() {
    let mut sim = Sim::new(pool(4, 1, 2, 8));
    sim.settle();
    sim.next_timeout(); // four idle above max_spare 2: one is claimed for retirement (`I`), still there
    let claimed = (0..8).filter(|&s| sim.state(s) == SlotState::IdleKill).count();
    assert_eq!(claimed, 1, "{}", sim.letters());
    sim.wakes.clear();
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    assert_eq!(sim.wakes.len(), 3, "the three children marked `G` now: {:?}", sim.wakes);
}

/// The crash-loop count is reset only by a healthy child: of the running generation, 2 s old,
/// ready or busy, at a tick.
#[test]
fn only_a_healthy_child_resets_the_crash_loop_count() {
    let mut sim = Sim::new(pool(3, 1, 5, 8));
    sim.settle();
    let crash = |sim: &mut Sim, slot: usize| {
        let pid = sim.pid_in(slot);
        sim.procs.remove(&pid);
        sim.exits.push((pid, ExitStatus::Signaled(11), None));
        sim.reap();
    };
    crash(&mut sim, 0);
    crash(&mut sim, 1);
    assert_eq!(sim.parent().brake().early_exits(), 2);
    sim.next_timeout(); // 1 s: the child left is ready but only 1 s old
    assert_eq!(sim.parent().brake().early_exits(), 2, "too young to count as healthy");
    sim.next_timeout(); // 2 s: it has lived 2 s, ready
    assert_eq!(sim.parent().brake().early_exits(), 0, "a healthy child ends the crash loop");
}

/// `spawn_mode = "demand"` (the default): a step of connections is met at the next look (every
/// `demand_interval_ms`, 100 ms), all at once within `fork_rate_limit`, not at the next tick by the
/// ramp; with nothing waiting, the looks fork nothing (SPEC.md §5.1a).
#[test]
fn a_step_of_waiting_connections_gets_its_children_at_the_next_look() {
    let mut sim = Sim::new(common::demand_pool(8, 5, 20, 64));
    sim.settle();
    assert_eq!(sim.forks, 8);
    // Every child takes a connection and keeps it; 56 more wait in the queue.
    for pid in sim.waiting() {
        sim.take_connection(pid);
    }
    let start = sim.now;
    sim.world.queues = vec![prefork_core::parent::QueueDepth { waiting: 56, exact: true }];
    let t = sim.next_timeout().unwrap();
    assert!(t.since(start) <= std::time::Duration::from_millis(100), "the first look is within 100 ms");
    sim.settle();
    // 56 for the connections (the 5 idle to keep after them are beyond max_request_workers 64).
    assert_eq!(sim.forks, 64, "one look forked what the queue needs");
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::Policy(PolicyLog::SeemsBusy { spawning: 56, .. }))), 1);
    // The queue drained into the new children: further looks fork nothing.
    sim.world.queues = vec![prefork_core::parent::QueueDepth { waiting: 0, exact: true }];
    sim.advance(std::time::Duration::from_millis(900));
    assert_eq!(sim.forks, 64);
}

/// While a graceful restart still owes its `start_servers` (old children busy, nothing refilled
/// yet), looks between ticks fork nothing: the next tick starts the new generation, as Apache's
/// refill does (demand looks are for a running pool).
#[test]
fn looks_leave_a_graceful_restarts_start_to_the_next_tick() {
    let mut sim = Sim::new(common::demand_pool(8, 5, 20, 64));
    sim.settle();
    for pid in sim.waiting() {
        sim.take_connection(pid);
    }
    let cfg = sim.parent().config().clone();
    sim.command(Command::GracefulRestart(Box::new(cfg)));
    sim.settle();
    assert_eq!(sim.forks, 8, "every old child is busy: nothing is refilled yet");
    sim.world.queues = vec![prefork_core::parent::QueueDepth { waiting: 56, exact: true }];
    let tick = sim.parent().next_tick();
    let t = sim.next_timeout().unwrap();
    assert!(t < tick, "a look before the tick");
    sim.settle();
    assert_eq!(sim.forks, 8, "the look forked nothing");
    sim.advance(tick.since(t));
    sim.settle();
    assert_eq!(sim.forks, 16, "the tick started the new generation's start_servers");
}

/// The same step with `fork_rate_limit = 20`: 20 forks, then nothing more until a second has
/// passed since them, then 20 more.
#[test]
fn demand_looks_fork_no_more_than_fork_rate_limit_in_a_second() {
    let mut cfg = common::demand_pool(8, 5, 20, 64);
    cfg.fork_rate_limit = 20;
    let mut sim = Sim::new(cfg);
    sim.settle();
    for pid in sim.waiting() {
        sim.take_connection(pid);
    }
    sim.world.queues = vec![prefork_core::parent::QueueDepth { waiting: 56, exact: true }];
    sim.next_timeout();
    sim.settle();
    assert_eq!(sim.forks, 8 + 20);
    // The queue still waits (the new children are starting: they count as idle, 20 of the 56).
    sim.advance(std::time::Duration::from_millis(850));
    assert_eq!(sim.forks, 8 + 20, "no more forks within the second");
    sim.advance(std::time::Duration::from_millis(300));
    sim.settle();
    assert_eq!(sim.forks, 8 + 40, "the next second's 20");
}
