//! The parent on a board a child scribbles on (SPEC.md §3.4, §7.6, §14), in the deterministic
//! simulation: what it writes back, whom it tells to leave and whom it kills, what it counts, and
//! that the crash-loop brake never hears of the board's damage.

mod common;

use common::*;
use prefork_core::atomic::{AtomicWord, Ordering};
use prefork_core::exit::{ExitCause, ExitReason, ExitStatus, KillReason};
use prefork_core::parent::{KillSignal, ParentLog, Pid};
use prefork_core::scoreboard::SlotTable;
use prefork_core::slot::SlotState;

fn board_pid(sim: &Sim, slot: usize) -> u64 {
    sim.board.slot(slot).unwrap().board_pid()
}

#[test]
fn what_the_parent_publishes_is_written_back_at_its_next_input() {
    let mut sim = Sim::new(pool(2, 1, 3, 4));
    sim.settle();
    let first = sim.pid_in(0);
    assert_eq!(board_pid(&sim, 0), u64::from(first), "the pid is published when the fork returns");
    assert_eq!(board_pid(&sim, 2), 0, "an empty slot shows no pid");
    sim.board.generation_word().store(7, Ordering::Relaxed);
    sim.board.pid_word(0).unwrap().store(1, Ordering::Relaxed);
    // Any input writes the generation again: here a pid the parent never forked.
    sim.exits.push((4242, ExitStatus::Code(0), None));
    sim.reap();
    assert_eq!(sim.board_generation(), 0, "the generation is the parent's, at every input");
    assert_eq!(board_pid(&sim, 0), 1, "pid words wait for the tick");
    sim.tick();
    assert_eq!(board_pid(&sim, 0), u64::from(first), "a tick writes every pid word again");
    assert!(sim.parent().next_tick() > sim.now, "the next tick is ahead");
    // A reaped child's slot shows no pid.
    sim.procs.remove(&first);
    sim.exits.push((first, ExitStatus::Signaled(SIGKILL), None));
    sim.reap();
    assert_eq!(board_pid(&sim, 0), 0);
}

/// A busy child (it does not react to wake-ups) whose slot is damaged at two ticks is told to
/// leave at the first and killed, by its own pid, at the second; the pool refills, and nothing
/// but that child is signalled.
#[test]
fn a_slot_damaged_at_two_checks_gets_its_child_killed_and_the_pool_refills() {
    let mut sim = Sim::new(pool(3, 2, 4, 6));
    sim.settle();
    let victim = sim.pid_in(1);
    sim.take_connection(victim);
    sim.board.slot_word(1).store(u64::MAX, Ordering::Relaxed);
    sim.tick();
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::SlotRepaired { slot: 1, wrote: SlotState::Graceful, .. })), 1);
    assert_eq!(sim.state(1), SlotState::Graceful, "written back from the records");
    assert!(sim.wakes.contains(&(1, victim)), "told to leave");
    assert!(sim.signals.is_empty(), "the first damage kills no one");
    sim.board.slot_word(1).store(0, Ordering::Relaxed);
    sim.tick();
    let killed: Vec<(Pid, KillSignal)> = sim.signals.iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(killed, [(victim, KillSignal::Kill)]);
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::SlotDamagedAgain { pid, slot: 1, .. } if *pid == victim)), 1);
    let cause = sim.logs.iter().find_map(|(_, l)| match l {
        ParentLog::ChildExited { pid, cause, .. } if *pid == victim => Some(*cause),
        _ => None,
    });
    assert_eq!(cause, Some(ExitCause::Killed(KillReason::SlotDamaged)));
    let stats = sim.parent().stats().clone();
    assert_eq!((stats.killed_slot_damaged, stats.slots_repaired), (1, 2));
    for _ in 0..3 {
        sim.tick();
    }
    sim.check();
    assert!(sim.view().counts().idle() >= 2, "the pool refills: {}", sim.letters());
    assert_eq!(sim.parent().brake().paused_until(), None, "the brake never heard of it");
}

/// Children that die right after start with `CHILDSICK`, three kinds of them at once.
fn early_sick_exits(sim: &mut Sim, reason: Option<ExitReason>, before: impl Fn(&mut Sim, usize)) {
    for slot in 0..4 {
        let pid = sim.pid_in(slot);
        before(sim, slot);
        sim.procs.remove(&pid);
        sim.exits.push((pid, ExitStatus::Code(7), reason));
        sim.reap();
    }
}

fn brake_engaged(sim: &Sim) -> bool {
    sim.logged(|l| matches!(l, ParentLog::CrashLoop { .. })) > 0
}

#[test]
fn exits_the_board_caused_never_feed_the_crash_loop_brake() {
    // The control: four children that fail by themselves right after start engage the brake.
    let mut sim = Sim::new(pool(4, 1, 5, 8));
    early_sick_exits(&mut sim, Some(ExitReason::AcceptFailed), |_, _| {});
    assert!(brake_engaged(&sim), "a crash loop is braked");

    // Children that say their slot was lost.
    let mut sim = Sim::new(pool(4, 1, 5, 8));
    early_sick_exits(&mut sim, Some(ExitReason::SlotLost), |_, _| {});
    assert!(!brake_engaged(&sim));

    // Children whose slot is damaged when they are reaped: written back once each, excused.
    let mut sim = Sim::new(pool(4, 1, 5, 8));
    early_sick_exits(&mut sim, None, |sim, slot| sim.board.slot_word(slot).store(u64::MAX, Ordering::Relaxed));
    assert!(!brake_engaged(&sim));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::SlotRepaired { wrote: SlotState::Dead, .. })), 4);
    assert_eq!(sim.parent().stats().slots_repaired, 4);

    // Children whose slot was repaired before they left (the tick told them to): excused, and
    // their exit logs no second repair.
    let mut sim = Sim::new(pool(4, 1, 5, 8));
    for slot in 0..4 {
        sim.board.slot_word(slot).store(u64::MAX, Ordering::Relaxed);
    }
    sim.next_timeout();
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::SlotRepaired { .. })), 4);
    early_sick_exits(&mut sim, None, |sim, slot| sim.board.slot_word(slot).store(u64::MAX, Ordering::Relaxed));
    assert!(!brake_engaged(&sim));
    assert_eq!(sim.logged(|l| matches!(l, ParentLog::SlotRepaired { .. })), 4, "logged once per child");
}

#[test]
fn the_parents_counters_count_forks_exits_and_retirements() {
    let mut sim = Sim::new(pool(4, 1, 2, 4));
    sim.settle();
    sim.tick(); // four idle, at most two: one retires
    let stats = sim.parent().stats().clone();
    assert_eq!((stats.spawned, stats.exited, stats.retired), (4, 1, 1));
    // Graceful exits are exits, not retirements.
    let cfg = sim.parent().config().clone();
    sim.command(prefork_core::parent::Command::GracefulRestart(Box::new(cfg)));
    sim.settle();
    let stats = sim.parent().stats().clone();
    assert_eq!((stats.exited, stats.retired), (4, 1));
    assert_eq!(stats.spawned as usize, sim.forks);
}
