//! loom: the core's slot protocol and accept-lock protocol on loom atomics, every interleaving and
//! weak-memory outcome up to a preemption bound (SPEC.md §11). One small property per model, each
//! run on the core's real `Parent` and `ChildLoop`, with threads standing in for processes.
//!
//! Bound: `LOOM_MAX_PREEMPTIONS` (default here: 3). Run time is printed per model.

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;
use prefork_core::child::{ChildAction, ChildEvent, ChildLoop};
use prefork_core::config::PoolConfig;
use prefork_core::driver::{ParentDriver, Recorder};
use prefork_core::exit::ExitReason;
use prefork_core::parent::{Command, Parent, ParentAction, ParentLog, Pid, Spawn};
use prefork_core::scoreboard::{ChildSlot, MemoryBoard, ScoreboardView, SlotTable, SlotUpdate};
use prefork_core::seeded::SeededBug;
use prefork_core::slot::{SlotState, SlotWord};
use prefork_core::time::Time;
use prefork_model::words::{LoomWord, loom_board};
use std::time::Instant;

type Board = MemoryBoard<LoomWord>;

/// Runs `f` under loom, printing how many executions were explored and how long it took.
fn explore(name: &str, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let started = Instant::now();
    let bound = builder.preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom {name}: {} executions (preemption bound {bound:?}) in {:.1?}",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
}

/// Negative tests: runs `f` under loom in a child process (this test binary, re-run on the test
/// `test_name` only) and returns that process's output; the caller asserts what loom reported.
/// A separate process because unwinding out of a loom execution that failed (a deadlock above
/// all) can abort the process.
fn expect_failure(test_name: &str, f: impl Fn() + Send + Sync + 'static) -> String {
    if std::env::var_os("PREFORK_LOOM_NEGATIVE").is_some() {
        explore(test_name, f);
        return String::new(); // not reached when loom finds the counterexample
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
        .env("PREFORK_LOOM_NEGATIVE", "1")
        .output()
        .expect("re-run the test binary");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loom must find a counterexample in {test_name}; it found none:\n{text}");
    let caught: Vec<&str> =
        text.lines().filter(|l| l.contains("panicked at") || l.contains("deadlock")).take(3).collect();
    eprintln!("loom {test_name}: caught as expected: {caught:?}");
    text
}

struct Kid {
    slot: usize,
    born: SlotWord,
    pid: Pid,
    child: ChildLoop,
    next: ChildAction,
}

/// A started parent whose children have all run `Started` (sequentially, before any thread).
fn pool(cfg: &PoolConfig, bug: Option<SeededBug>) -> (Arc<Board>, Driven, Vec<Kid>) {
    let board = Arc::new(loom_board(cfg.server_limit as usize));
    let mut parent = Parent::new(cfg.clone());
    if let Some(bug) = bug.filter(|b| b.in_parent()) {
        parent.seed_bug(bug);
    }
    let mut effects = Recorder::new(100);
    let driver = ParentDriver::start(parent, Time::ZERO, &*board, &mut effects);
    let mut parent = Driven { driver, effects };
    let mut kids = vec![];
    for action in parent.effects.take() {
        if let ParentAction::Spawn(Spawn { slot, born, child }) = action {
            let pid = 100 + slot as Pid;
            let mut child = child.child_loop();
            if let Some(bug) = bug.filter(|b| !b.in_parent()) {
                child.seed_bug(bug);
            }
            let next = child.handle(ChildEvent::Started, &ChildSlot::attach(&*board, slot, born).unwrap()).unwrap();
            kids.push(Kid { slot, born, pid, child, next });
        }
    }
    (board, parent, kids)
}

/// The parent with the driver contract, its effects recorded (the recorder's pids are 100, 101 …
/// in spawn order, which here is slot order).
struct Driven {
    driver: ParentDriver,
    effects: Recorder,
}

fn drain(parent: &mut Driven) -> Vec<ParentAction> {
    parent.effects.take()
}

/// The parent's maintenance tick (which wants to retire one of three idle children) races the
/// highest child's work claim. Returns the parent's actions, the child's action, and the board.
fn retirement_race(bug: Option<SeededBug>) -> (Vec<ParentAction>, ChildAction, Kid, Arc<Board>) {
    let cfg = prefork_model::pool(1, 3, 1, 2, 3);
    let (board, mut parent, mut kids) = pool(&cfg, bug);
    let mut kid = kids.pop().unwrap();
    assert_eq!(kid.slot, 2);
    let b = board.clone();
    let parent_thread = thread::spawn(move || {
        parent.driver.handle_timeout(Time::from_secs(1), &*b, &mut parent.effects);
        drain(&mut parent)
    });
    let b = board.clone();
    let child_thread = thread::spawn(move || {
        let slot = ChildSlot::attach(&*b, kid.slot, kid.born).unwrap();
        let action = kid.child.handle(ChildEvent::Readable(&[0]), &slot).unwrap();
        (action, kid)
    });
    let actions = parent_thread.join().unwrap();
    let (action, kid) = child_thread.join().unwrap();
    (actions, action, kid, board)
}

#[test]
fn retirement_claim_and_work_claim_never_both_win() {
    explore("retirement claim vs work claim", || {
        let (actions, child, _, board) = retirement_race(None);
        let view = ScoreboardView::capture(&*board);
        let claimed: Vec<usize> = (0..3).filter(|&i| view.state(i) == Some(SlotState::IdleKill)).collect();
        // If the work claim came before the parent's snapshot, only 2 children are idle (not more
        // than max_spare = 2) and nobody is retired; otherwise exactly one is.
        assert!(claimed.len() <= 1, "at most one idle child is retired: {view}");
        if claimed.is_empty() {
            assert!(matches!(child, ChildAction::Accept { .. }), "the parent saw three idle children but retired none");
        }
        let woken: Vec<usize> = actions
            .iter()
            .filter_map(|a| if let ParentAction::Wake { slot, .. } = a { Some(*slot) } else { None })
            .collect();
        assert_eq!(woken, claimed, "the retired child, and only it, is woken");
        assert!(!actions.iter().any(|a| matches!(a, ParentAction::Signal { .. })), "retirement never signals");
        match child {
            ChildAction::Accept { .. } => {
                assert!(!claimed.contains(&2), "a child that claimed work was retired");
                assert_eq!(view.state(2), Some(SlotState::BusyRead));
            }
            ChildAction::Exit(ExitReason::Retired) => assert_eq!(claimed[0], 2),
            other => panic!("unexpected child action {other:?}"),
        }
    });
}

#[test]
fn negative_retiring_by_pid_without_the_claim_kills_a_busy_child() {
    let msg = expect_failure("negative_retiring_by_pid_without_the_claim_kills_a_busy_child", || {
        let (actions, child, kid, _) = retirement_race(Some(SeededBug::RetireWithoutClaim));
        let signalled = actions.iter().any(|a| matches!(a, ParentAction::Signal(s) if s.pid == kid.pid));
        let busy = matches!(child, ChildAction::Accept { .. });
        assert!(!(signalled && busy), "a busy child was killed");
    });
    assert!(msg.contains("a busy child was killed"), "{msg}");
}

#[test]
fn snapshots_taken_while_a_child_serves_are_never_torn() {
    explore("parent snapshots vs a serving child", || snapshots_vs_a_serving_child(None));
}

#[test]
fn negative_a_torn_work_claim_is_seen_by_a_snapshot() {
    let msg = expect_failure("negative_a_torn_work_claim_is_seen_by_a_snapshot", || {
        snapshots_vs_a_serving_child(Some(SeededBug::TornClaim))
    });
    assert!(msg.contains("the word belongs to the child"), "{msg}");
}

/// I20: the parent's snapshots, taken while the child claims work and serves, only ever show a
/// word the child wrote whole.
fn snapshots_vs_a_serving_child(bug: Option<SeededBug>) {
    {
        let cfg = prefork_model::pool(1, 1, 1, 3, 2);
        let (board, mut parent, mut kids) = pool(&cfg, bug);
        let mut kid = kids.pop().unwrap();
        let b = board.clone();
        let child_thread = thread::spawn(move || {
            let slot = ChildSlot::attach(&*b, kid.slot, kid.born).unwrap();
            let mut step = |e| kid.child.handle(e, &slot).unwrap();
            assert!(matches!(step(ChildEvent::Readable(&[0])), ChildAction::Accept { .. }));
            assert_eq!(step(ChildEvent::Accepted), ChildAction::Serve);
            for state in [SlotState::BusyWrite, SlotState::Logging, SlotState::Keepalive, SlotState::Closing] {
                assert_eq!(slot.set(state), Ok(SlotUpdate::Applied));
            }
            assert_eq!(step(ChildEvent::ConnectionDone), ChildAction::Wait);
        });
        let b = board.clone();
        let parent_thread = thread::spawn(move || {
            for t in 1..=2 {
                let view = ScoreboardView::capture(&*b);
                let w = view.slots[0].expect("a decodable word");
                assert_eq!((w.incarnation, w.generation), (1, 0), "the word belongs to the child");
                assert!(w.state == SlotState::Ready || w.state.is_busy(), "impossible state {}", w.state);
                parent.driver.handle_timeout(Time::from_secs(t), &*b, &mut parent.effects);
            }
            drain(&mut parent)
        });
        child_thread.join().unwrap();
        let actions = parent_thread.join().unwrap();
        assert!(
            !actions.iter().any(|a| matches!(a, ParentAction::Log(ParentLog::SlotRepaired { .. }))),
            "the parent found an inconsistent slot: {actions:?}"
        );
        assert_eq!(ScoreboardView::capture(&*board).state(0), Some(SlotState::Ready));
    }
}

#[test]
fn a_child_that_sees_its_graceful_mark_also_sees_the_new_generation() {
    explore("graceful restart vs a waiting child", || {
        let cfg = prefork_model::pool(1, 1, 1, 3, 2);
        let (board, mut parent, mut kids) = pool(&cfg, None);
        let mut kid = kids.pop().unwrap();
        let b = board.clone();
        let next = cfg.clone();
        let parent_thread = thread::spawn(move || {
            parent.driver.handle_command(
                Time::from_secs(1),
                Command::GracefulRestart(Box::new(next.clone())),
                &*b,
                &mut parent.effects,
            );
            parent.driver.handle_command(
                Time::from_secs(2),
                Command::GracefulRestart(Box::new(next)),
                &*b,
                &mut parent.effects,
            );
            drain(&mut parent)
        });
        let b = board.clone();
        let child_thread = thread::spawn(move || {
            let slot = ChildSlot::attach(&*b, kid.slot, kid.born).unwrap();
            let g1 = b.running_generation();
            let mark = slot.check().unwrap();
            let moved = slot.generation_changed();
            let g2 = b.running_generation();
            assert!(g2 >= g1, "generations are seen in order: {g1} then {g2}");
            if mark == SlotUpdate::Graceful {
                assert!(moved, "saw G but not the generation published before it");
            }
            let action = kid.child.handle(ChildEvent::Readable(&[0]), &slot).unwrap();
            (action, kid)
        });
        let actions = parent_thread.join().unwrap();
        let (action, mut kid) = child_thread.join().unwrap();
        assert!(actions.iter().any(|a| matches!(a, ParentAction::Wake { slot: 0, .. })), "the child is woken");
        let slot = ChildSlot::attach(&*board, kid.slot, kid.born).unwrap();
        match action {
            // It claimed work before the mark: it serves that connection, then goes.
            ChildAction::Accept { .. } => {
                assert_eq!(kid.child.handle(ChildEvent::Accepted, &slot).unwrap(), ChildAction::Serve);
                let end = kid.child.handle(ChildEvent::ConnectionDone, &slot).unwrap();
                assert_eq!(end, ChildAction::Exit(ExitReason::Graceful));
            }
            ChildAction::Exit(ExitReason::Graceful) => {}
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two children (threads) run one cycle each over the accept lock (a loom `Mutex` standing in for
/// fcntl/flock/robust pthread). Child A dies after `die_after` steps; if `robust`, the kernel
/// releases a dead holder's lock (its guard is dropped), otherwise the lock stays held forever
/// (the guard is forgotten).
fn lock_cycle(die_after: usize, robust: bool) {
    let cfg = prefork_model::pool(2, 2, 1, 3, 2);
    let (board, _parent, kids) = pool(&cfg, None);
    let lock = Arc::new(Mutex::new(()));
    let queue = Arc::new(AtomicUsize::new(1)); // one connection waiting
    let in_section = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let mut handles = vec![];
    for (i, mut kid) in kids.into_iter().enumerate() {
        let (board, lock, queue, in_section, served, lost) =
            (board.clone(), lock.clone(), queue.clone(), in_section.clone(), served.clone(), lost.clone());
        let die_at = (i == 0).then_some(die_after);
        handles.push(thread::spawn(move || {
            let slot = ChildSlot::attach(&*board, kid.slot, kid.born).unwrap();
            let mut guard = None;
            let mut holding = false;
            for step in 0.. {
                if die_at == Some(step) {
                    if holding {
                        lost.fetch_add(1, SeqCst); // the connection dies with the process
                    }
                    if kid.child.in_accept_section() {
                        in_section.fetch_sub(1, SeqCst);
                    }
                    match guard.take() {
                        Some(g) if !robust => std::mem::forget(g),
                        g => drop(g),
                    }
                    return;
                }
                let event = match kid.next {
                    ChildAction::AcquireLock => {
                        guard = Some(lock.lock().unwrap());
                        ChildEvent::LockAcquired
                    }
                    ChildAction::Wait => ChildEvent::Readable(&[0]),
                    ChildAction::Accept { .. } => {
                        let took = queue.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
                        holding = took;
                        if took { ChildEvent::Accepted } else { ChildEvent::AcceptEmpty }
                    }
                    ChildAction::ReleaseLock => {
                        guard = None;
                        ChildEvent::LockReleased
                    }
                    ChildAction::Serve => {
                        served.fetch_add(1, SeqCst);
                        return; // one cycle is enough
                    }
                    ChildAction::Exit(_) => return,
                };
                let was_in = kid.child.in_accept_section();
                kid.next = kid.child.handle(event, &slot).unwrap();
                match (was_in, kid.child.in_accept_section()) {
                    (false, true) => {
                        assert_eq!(in_section.fetch_add(1, SeqCst), 0, "two children in the wait+accept section")
                    }
                    (true, false) => {
                        in_section.fetch_sub(1, SeqCst);
                    }
                    _ => {}
                }
                if kid.next == ChildAction::AcquireLock && step > 0 {
                    return; // back at the top after an empty accept: the cycle is over
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let (left, served, lost) = (queue.load(SeqCst), served.load(SeqCst), lost.load(SeqCst));
    assert_eq!(left + served + lost, 1, "the connection is served, queued, or lost with the child that took it");
    assert!(lost == 0 || die_after < usize::MAX);
    if die_after == usize::MAX {
        assert_eq!(served, 1, "with nobody dying the connection is served");
    }
}

#[test]
fn accept_lock_excludes_and_survives_its_holder_dying_at_any_step() {
    for die_after in [0, 1, 2, 3, 4, usize::MAX] {
        explore(&format!("accept lock, child A dies after step {die_after}"), move || lock_cycle(die_after, true));
    }
}

#[test]
fn negative_a_non_robust_lock_whose_holder_dies_deadlocks() {
    // Step 1: child A has just taken the lock (AcquireLock -> LockAcquired) and dies holding it.
    let msg = expect_failure("negative_a_non_robust_lock_whose_holder_dies_deadlocks", || lock_cycle(1, false));
    assert!(msg.contains("deadlock; threads"), "loom must report a deadlock, got: {msg}");
}
