//! Exhaustive exploration of the whole system with stateright (SPEC.md §11): every reachable state
//! of a parent, up to 3 children and 1-2 listeners, with crashes, clients and operator commands,
//! checked against the safety and liveness properties of `prefork_model::system`. Then the seeded
//! bugs, each of which must produce a counterexample.
//!
//! Two larger runs (every kind of event at once; a crash, a stall and a restart with three slots)
//! are `#[ignore]`d: about 19 million unique states each, 2–3 minutes in release builds, run them
//! with `cargo test --release -p prefork-model --test stateright -- --ignored` (docs/contributing.md has the
//! figures).

use prefork_core::seeded::SeededBug;
use prefork_model::system::{Budget, Op, Scribble, ScribbleKind, SystemModel};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;
use std::time::Instant;

const ALL_OPS: [Op; 4] = [Op::GracefulRestart, Op::HardRestart, Op::GracefulStop, Op::Stop];

/// Explores everything; every property must hold and every example must be found.
fn check<M>(name: &str, model: M, examples: &[&'static str])
where
    M: Model + Send + Sync + 'static,
    M::State: std::hash::Hash + Send + Sync + Clone + PartialEq + std::fmt::Debug + 'static,
    M::Action: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "stateright {name}: {} states ({} unique), depth {}, {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    for property in checker.model().properties() {
        let found = checker.discovery(property.name);
        if property.name.starts_with("example:") {
            if examples.contains(&property.name) {
                assert!(found.is_some(), "{name}: the model never reaches \"{}\"", property.name);
            }
        } else if let Some(path) = found {
            panic!("{name}: \"{}\" is violated by {:?}", property.name, path.into_actions());
        }
    }
}

/// Explores until `property` is violated (a safety property, or a liveness one at the end of some
/// run); stateright must find that counterexample.
fn expect_counterexample(name: &str, model: SystemModel, property: &'static str) {
    let started = Instant::now();
    let checker =
        model.checker().threads(2).finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property]))).spawn_bfs().join();
    let path = checker.discovery(property);
    eprintln!(
        "stateright {name}: {} after {} states, {:.1?}",
        if path.is_some() { "caught" } else { "NOT caught" },
        checker.state_count(),
        started.elapsed()
    );
    let path = path.unwrap_or_else(|| panic!("{name}: stateright must find a counterexample to \"{property}\""));
    eprintln!("  counterexample: {:?}", path.into_actions());
}

#[test]
fn lock_in_use_with_crashes_at_any_step() {
    let budget = Budget { grace: 2, ..Budget::new(3, 2, 1, 0) };
    check(
        "2 listeners, lock, 1 crash",
        SystemModel::new(SystemModel::small_pool(2), budget, vec![]),
        &[
            "example: a connection is served",
            "example: an idle child is retired",
            "example: a dead holder's lock is taken again",
        ],
    );
}

#[test]
fn restarts_and_stops_at_any_point() {
    let budget = Budget { grace: 2, ..Budget::new(3, 1, 0, 1) };
    check(
        "2 listeners, lock, any one command",
        SystemModel::new(SystemModel::small_pool(2), budget, ALL_OPS.to_vec()),
        &["example: a graceful restart completes", "example: the parent exits", "example: a connection is served"],
    );
}

/// A graceful stop while connections are queued and children busy: every queued connection is
/// served (I32). (`restarts_and_stops_at_any_point` checks it with a crash.)
#[test]
fn graceful_stop_with_connections_queued() {
    let budget = Budget { grace: 2, ..Budget::new(2, 2, 0, 1) };
    check(
        "1 listener, graceful stop, 2 connections",
        SystemModel::new(SystemModel::small_pool(1), budget, vec![Op::GracefulStop]),
        &["example: a graceful stop serves a connection queued before it", "example: the parent exits"],
    );
}

#[test]
fn negative_a_graceful_stop_that_does_not_drain_resets_queued_connections() {
    let mut model = SystemModel::new(SystemModel::small_pool(1), Budget::new(1, 2, 0, 1), vec![Op::GracefulStop]);
    model.bug = Some(SeededBug::NoDrain);
    expect_counterexample(
        "seeded bug NoDrain",
        model,
        "I32: a graceful stop serves every queued connection: no child leaves the listeners with work queued",
    );
}

#[test]
fn one_listener_without_lock() {
    let budget = Budget { grace: 2, ..Budget::new(2, 2, 1, 1) };
    check(
        "1 listener, no lock, 1 crash, graceful restart",
        SystemModel::new(SystemModel::small_pool(1), budget, vec![Op::GracefulRestart]),
        &["example: a connection is served", "example: a graceful restart completes"],
    );
}

/// Two listeners (the accept lock in use), one stall at any point of any child's loop, with the
/// watchdog on (the default `accept_lock_timeout`, 2 s): the wedge a stalled holder causes is
/// always broken, and only a child that held the lock for the limit is killed.
#[test]
fn a_stalled_child_never_wedges_the_pool() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    check(
        "2 listeners, lock, 1 stall, watchdog on",
        SystemModel::new(stall_pool(2, 0), budget, vec![]),
        &["example: a connection is served", "example: the watchdog kills a stalled child"],
    );
}

/// One listener, a stall anywhere (also mid-request), with `request_deadline` = 2 s: a child stuck
/// in a request is killed and replaced, and only one that was busy for the deadline.
#[test]
fn a_child_stuck_in_a_request_is_killed_at_its_deadline() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    check(
        "1 listener, 1 stall, request_deadline 2 s",
        SystemModel::new(stall_pool(1, 2), budget, vec![]),
        &["example: a connection is served", "example: the watchdog kills a stalled child"],
    );
}

/// A crash, a stall and a graceful restart in one run, with the watchdog and the request deadline
/// (a pool of two slots, to stay within CI time).
#[test]
fn crash_stall_and_restart_together() {
    let budget = Budget { stalls: 1, grace: 4, ..Budget::new(2, 1, 1, 1) };
    let mut pool = prefork_model::pool(2, 2, 1, 2, 2);
    pool.request_deadline = std::time::Duration::from_secs(2);
    check(
        "2 listeners, lock, 2 slots, 1 crash, 1 stall, graceful restart",
        SystemModel::new(pool, budget, vec![Op::GracefulRestart]),
        &[
            "example: a connection is served",
            "example: the watchdog kills a stalled child",
            "example: a graceful restart completes",
        ],
    );
}

/// The small pool with `request_deadline` (seconds; 0 is off) and the default watchdog.
fn stall_pool(listeners: usize, request_deadline: u64) -> prefork_core::PoolConfig {
    let mut pool = SystemModel::small_pool(listeners);
    pool.request_deadline = std::time::Duration::from_secs(request_deadline);
    pool
}

/// The same with three slots (the small pool): a deep run, not in CI (docs/contributing.md has its size and
/// time; two connections instead of one need more than 24 GiB).
#[test]
#[ignore = "deep run (about 3 minutes in release): cargo test --release -p prefork-model --test stateright -- --ignored"]
fn deep_crash_stall_and_restart_with_three_slots() {
    let budget = Budget { stalls: 1, grace: 4, ..Budget::new(2, 1, 1, 1) };
    check(
        "deep: 2 listeners, lock, 3 slots, 1 crash, 1 stall, graceful restart",
        SystemModel::new(stall_pool(2, 2), budget, vec![Op::GracefulRestart]),
        &["example: a connection is served", "example: the watchdog kills a stalled child"],
    );
}

/// A lock the kernel hands to a waiter (SysV semaphores): the waiter may be stalled, and then holds
/// the lock without ever taking a step. The kernel's word on the holder lets the watchdog see it.
#[test]
fn a_lock_handed_to_a_stalled_waiter_is_recovered_too() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    let mut model = SystemModel::new(stall_pool(2, 0), budget, vec![]);
    model.lock_handoff = true;
    check(
        "2 listeners, lock handed to waiters, 1 stall",
        model,
        &["example: a connection is served", "example: the watchdog kills a stalled child"],
    );
}

#[test]
fn negative_without_the_kernels_word_a_lock_handed_to_a_stalled_waiter_wedges_the_pool() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    let mut model = SystemModel::new(stall_pool(2, 0), budget, vec![]);
    model.lock_handoff = true;
    model.kernel_lock_evidence = false;
    expect_counterexample(
        "handoff to a stalled waiter, holder unseen",
        model,
        "L: every pending connection is taken while a live, non-stalled child can take it",
    );
}

#[test]
fn negative_without_the_watchdog_a_stalled_lock_holder_wedges_every_listener() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    let mut pool = stall_pool(2, 0);
    pool.accept_lock_timeout = std::time::Duration::ZERO;
    expect_counterexample(
        "stall, watchdog off",
        SystemModel::new(pool, budget, vec![]),
        "L: every pending connection is taken while a live, non-stalled child can take it",
    );
}

/// Every kind of event at once with three slots: a deep run, not in CI (docs/contributing.md).
#[test]
#[ignore = "deep run (about 2 minutes in release): cargo test --release -p prefork-model --test stateright -- --ignored"]
fn deep_everything_at_once() {
    // Grace ticks, as in the models in CI: L2 asks that the pool recover after its last fault,
    // which takes ticks after the last budgeted one (without them a crash after the last tick is
    // a counterexample about the bound, not the protocol).
    let budget = Budget { grace: 4, ..Budget::new(3, 1, 1, 1) };
    check(
        "deep: 2 listeners, lock, 1 crash, any one command",
        SystemModel::new(SystemModel::small_pool(2), budget, ALL_OPS.to_vec()),
        &["example: a connection is served", "example: a graceful restart completes", "example: the parent exits"],
    );
}

#[test]
fn negative_no_accept_lock_puts_two_children_in_the_wait_section() {
    let budget = Budget::new(1, 1, 0, 0);
    let mut model = SystemModel::new(SystemModel::small_pool(2), budget, vec![]);
    model.bug = Some(SeededBug::NoAcceptLock);
    expect_counterexample(
        "seeded bug NoAcceptLock",
        model,
        "I10: with the lock in use, at most one child waits and accepts",
    );
}

#[test]
fn negative_non_robust_lock_deadlocks_when_its_holder_dies() {
    let budget = Budget::new(1, 1, 1, 0);
    let mut model = SystemModel::new(SystemModel::small_pool(2), budget, vec![]);
    model.robust_lock = false;
    expect_counterexample("non-robust lock", model, "I10: no child waits forever on a lock whose holder died");
}

#[test]
fn negative_non_robust_lock_also_breaks_liveness() {
    let budget = Budget::new(1, 1, 1, 0);
    let mut model = SystemModel::new(SystemModel::small_pool(2), budget, vec![]);
    model.robust_lock = false;
    expect_counterexample(
        "non-robust lock, liveness",
        model,
        "L: every pending connection is taken while a live, non-stalled child can take it",
    );
}

#[test]
fn negative_ignoring_the_generation_on_reap_leaks_old_children() {
    let budget = Budget::new(2, 0, 0, 1);
    let mut model = SystemModel::new(SystemModel::small_pool(1), budget, vec![Op::GracefulRestart]);
    model.bug = Some(SeededBug::IgnoreGenerationOnReap);
    expect_counterexample(
        "seeded bug IgnoreGenerationOnReap",
        model,
        "I13: children are born in the running generation",
    );
}

#[test]
fn negative_a_wake_up_that_does_not_interrupt_the_lock_wait_leaks_old_children() {
    // Found by this checker while building it: one accept lock serves every generation, so after a
    // graceful restart an idle new child can hold the lock forever while an old child waits for it.
    let budget = Budget::new(3, 1, 0, 1);
    let mut model = SystemModel::new(SystemModel::small_pool(2), budget, vec![Op::GracefulRestart]);
    model.wake_interrupts_lock = false;
    expect_counterexample("wake-up does not interrupt the lock wait", model, "L1: an old generation disappears");
}

/// A pool that starts with `max_request_workers` = `server_limit` = 3 and two restarts (graceful
/// or hard) that lower `max_request_workers` to 2: the children above the new limit drain, count
/// against it, and no spawn ever makes more than 2 live (I7); a crash anywhere.
fn lowered_limit_model(budget: Budget) -> SystemModel {
    let mut model =
        SystemModel::new(prefork_model::pool(1, 3, 1, 2, 3), budget, vec![Op::GracefulRestart, Op::HardRestart]);
    model.restart_pool = Some(prefork_model::pool_with_limits(1, 2, 1, 2, 2, 3));
    model
}

#[test]
fn restarts_that_lower_max_request_workers_never_spawn_past_it() {
    let budget = Budget { grace: 2, ..Budget::new(2, 1, 1, 2) };
    check(
        "1 listener, max_request_workers 3 -> 2 < server_limit 3, two restarts, 1 crash",
        lowered_limit_model(budget),
        &[
            "example: live children above a lowered max_request_workers drain",
            "example: a second restart completes",
            "example: a connection is served",
        ],
    );
}

#[test]
fn negative_a_refill_past_the_lowered_limit_is_caught() {
    let mut model = lowered_limit_model(Budget::new(1, 0, 0, 1));
    model.ops = vec![Op::GracefulRestart];
    model.bug = Some(SeededBug::RefillPastLimit);
    expect_counterexample(
        "seeded bug RefillPastLimit",
        model,
        "I7: no spawn makes more children live than max_request_workers",
    );
}

/// fork() failures and children that crash right after start: the back-off after a failed fork
/// (1, 2, 4, 8, 10 s) and the crash-loop brake (the third early crash in a row pauses forks for
/// 1 s, each further one doubles it) are respected by every fork, and the pool comes back.
fn crash_loop_model() -> SystemModel {
    let budget = Budget { grace: 3, fork_failures: 1, ..Budget::new(5, 0, 4, 0) };
    SystemModel::new(prefork_model::pool(1, 1, 1, 2, 2), budget, vec![])
}

#[test]
fn fork_failures_and_crash_loops_are_braked() {
    check(
        "1 listener, 2 slots, 4 crashes, 1 fork failure",
        crash_loop_model(),
        &["example: the crash-loop brake pauses forks", "example: a fork fails and a later one succeeds"],
    );
}

#[test]
fn negative_without_the_crash_loop_brake_forks_go_on_at_the_policys_rate() {
    let mut model = crash_loop_model();
    model.budget.fork_failures = 0;
    model.bug = Some(SeededBug::NoCrashBrake);
    expect_counterexample(
        "seeded bug NoCrashBrake",
        model,
        "I16: no fork before the fork-failure back-off or the crash-loop pause is over",
    );
}

/// `max_connections_per_child` = 1: every child leaves after one connection, and the pool
/// replaces it; with the lock in use and a crash anywhere.
#[test]
fn children_recycle_after_max_connections_per_child() {
    let mut pool = SystemModel::small_pool(2);
    pool.max_connections_per_child = 1;
    let budget = Budget { grace: 2, ..Budget::new(2, 2, 1, 0) };
    check(
        "2 listeners, lock, max_connections_per_child 1, 1 crash",
        SystemModel::new(pool, budget, vec![]),
        &["example: a child recycles after max_connections_per_child", "example: a connection is served"],
    );
}

/// Children with a SIGTERM handler that does not exit: a stop or hard restart climbs the whole
/// ladder (SIGTERM at 0, 3, 5, 7 s, SIGKILL at 9 s) and ends within 10 s (I15, L3).
fn term_ignoring_model() -> SystemModel {
    let budget = Budget { grace: 6, ..Budget::new(1, 1, 0, 1) };
    let mut model =
        SystemModel::new(SystemModel::small_pool(1), budget, vec![Op::Stop, Op::HardRestart, Op::GracefulStop]);
    model.children_ignore_term = true;
    model
}

#[test]
fn children_that_ignore_sigterm_are_killed_on_the_ladder() {
    check(
        "1 listener, children ignore SIGTERM, a stop or restart",
        term_ignoring_model(),
        &["example: a stop climbs the ladder to SIGKILL", "example: the parent exits"],
    );
}

#[test]
fn negative_a_hurried_kill_is_off_the_ladder() {
    let mut model = term_ignoring_model();
    model.bug = Some(SeededBug::HurriedKill);
    expect_counterexample(
        "seeded bug HurriedKill",
        model,
        "I15: a stop sends SIGTERM at 0, 3, 5 and 7 s and SIGKILL at 9 s, nothing else",
    );
}

#[test]
fn negative_a_stop_ladder_that_stalls_never_ends() {
    let mut model = term_ignoring_model();
    model.ops = vec![Op::Stop];
    model.bug = Some(SeededBug::NoStopEscalation);
    expect_counterexample("seeded bug NoStopEscalation", model, "L3: a stop ends");
}

#[test]
fn negative_a_child_that_drops_its_connection_on_a_directive_is_caught() {
    let mut model = SystemModel::new(SystemModel::small_pool(1), Budget::new(1, 1, 0, 1), vec![Op::GracefulRestart]);
    model.bug = Some(SeededBug::DropConnectionOnDirective);
    expect_counterexample(
        "seeded bug DropConnectionOnDirective",
        model,
        "I11: every accepted connection is served, or lost only with a child that crashed or was killed",
    );
}

#[test]
fn negative_a_parent_that_never_respawns_is_caught() {
    let budget = Budget { grace: 2, ..Budget::new(0, 0, 1, 0) };
    let mut model = SystemModel::new(prefork_model::pool(1, 1, 1, 2, 2), budget, vec![]);
    model.bug = Some(SeededBug::NoRespawn);
    expect_counterexample(
        "seeded bug NoRespawn",
        model,
        "L2: after a crash, a kill or a failed fork the pool returns to min_spare_servers idle children",
    );
}

#[test]
fn negative_a_child_that_exits_holding_the_lock_is_caught() {
    let mut model = SystemModel::new(SystemModel::small_pool(2), Budget::new(1, 0, 0, 1), vec![Op::GracefulRestart]);
    model.bug = Some(SeededBug::ExitHoldingLock);
    expect_counterexample("seeded bug ExitHoldingLock", model, "I10: a child releases the lock before it exits");
}

#[test]
fn negative_a_child_that_clears_its_own_slot_is_caught() {
    // A child that leaves after its one connection (a directive would make it I3 instead).
    let mut pool = SystemModel::small_pool(1);
    pool.max_connections_per_child = 1;
    let mut model = SystemModel::new(pool, Budget::new(0, 1, 0, 0), vec![]);
    model.bug = Some(SeededBug::ChildClearsItsSlot);
    expect_counterexample(
        "seeded bug ChildClearsItsSlot",
        model,
        "I1/I2: every write a child makes is a row of its side of the transition table",
    );
}

#[test]
fn negative_a_work_claim_by_store_overwrites_the_retirement_claim() {
    // Four children at start above max_spare 2: the tick claims one, which may see a connection
    // before its wake-up.
    let mut model = SystemModel::new(prefork_model::pool(1, 4, 1, 2, 4), Budget::new(1, 1, 0, 0), vec![]);
    model.bug = Some(SeededBug::WorkClaimByStore);
    expect_counterexample("seeded bug WorkClaimByStore", model, "I3: a child never overwrites a parent directive");
}

#[test]
fn negative_a_reap_that_leaves_the_slot_is_caught() {
    let mut model = SystemModel::new(SystemModel::small_pool(1), Budget::new(0, 0, 1, 0), vec![]);
    model.bug = Some(SeededBug::ReapLeavesSlot);
    expect_counterexample("seeded bug ReapLeavesSlot", model, "I9/I14: the board agrees with the parent's records");
}

#[test]
fn negative_a_watchdog_that_ignores_the_queues_kills_an_idle_holder() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    let mut model = SystemModel::new(stall_pool(2, 0), budget, vec![]);
    model.bug = Some(SeededBug::WatchdogWithoutQueue);
    expect_counterexample(
        "seeded bug WatchdogWithoutQueue",
        model,
        "I27: the watchdog kills only a child that held the lock, or one request, for its limit",
    );
}

#[test]
fn negative_a_graceful_restart_that_wakes_no_one_leaves_old_children() {
    let budget = Budget { grace: 2, ..Budget::new(1, 0, 0, 1) };
    let mut model = SystemModel::new(SystemModel::small_pool(1), budget, vec![Op::GracefulRestart]);
    model.bug = Some(SeededBug::NoGracefulWake);
    expect_counterexample("seeded bug NoGracefulWake", model, "L1: an old generation disappears");
}

#[test]
fn negative_a_watchdog_that_never_kills_leaves_the_pool_wedged() {
    let budget = Budget { stalls: 1, grace: 3, ..Budget::new(2, 1, 0, 0) };
    let mut model = SystemModel::new(stall_pool(2, 0), budget, vec![]);
    model.bug = Some(SeededBug::WatchdogNeverKills);
    expect_counterexample(
        "seeded bug WatchdogNeverKills",
        model,
        "L: every pending connection is taken while a live, non-stalled child can take it",
    );
}

// The scribble fault (SPEC.md §14): a child writes any of the values of `Scribble` into any word
// of the shared memory, at any step. The parent must never signal a stranger, never panic, and
// have the pool back to min_spare_servers within a tick of the last scribble (the one grace tick
// after it: L5's bound).

/// One listener, one connection, one scribble of any slot word or of the generation.
fn scribble_model(kinds: &[ScribbleKind], ops: Vec<Op>, commands: u8) -> SystemModel {
    let budget = Budget { scribbles: 1, grace: 1, ..Budget::new(2, 1, 0, commands) };
    let pool = SystemModel::small_pool(1);
    let mut model = SystemModel::new(pool.clone(), budget, ops);
    model.scribbles = Scribble::all(pool.server_limit as usize, kinds);
    model
}

#[test]
fn a_scribbled_slot_or_generation_is_repaired_and_the_pool_recovers_within_a_tick() {
    check(
        "1 listener, 1 scribble of a slot word or the generation",
        scribble_model(&[ScribbleKind::SlotWords, ScribbleKind::Generation], vec![], 0),
        &["example: a connection is served", "example: a child is forked after a scribble"],
    );
}

#[test]
fn scribbled_pids_and_activity_never_misdirect_a_signal() {
    check(
        "1 listener, 1 scribble of a pid or activity word, a stop or hard restart",
        scribble_model(&[ScribbleKind::Pids, ScribbleKind::Activity], vec![Op::Stop, Op::HardRestart], 1),
        &["example: a connection is served", "example: the parent exits"],
    );
}

#[test]
fn negative_a_parent_that_does_not_republish_the_generation_never_recovers() {
    let mut model = scribble_model(&[ScribbleKind::Generation], vec![], 0);
    model.bug = Some(SeededBug::NoRepublish);
    expect_counterexample(
        "seeded bug NoRepublish",
        model,
        "L5: after the last scribble, the pool is back to min_spare_servers idle children within the grace ticks",
    );
}

#[test]
fn negative_a_stop_that_signals_the_pids_on_the_board_signals_a_stranger() {
    let mut model = scribble_model(&[ScribbleKind::Pids], vec![Op::Stop], 1);
    model.bug = Some(SeededBug::SignalPidFromBoard);
    expect_counterexample(
        "seeded bug SignalPidFromBoard",
        model,
        "I29: the parent signals only its own children, whatever the board says",
    );
}

#[test]
fn negative_a_parent_that_indexes_by_a_board_value_panics() {
    let mut model = scribble_model(&[ScribbleKind::SlotWords], vec![], 0);
    model.bug = Some(SeededBug::IndexFromBoard);
    expect_counterexample("seeded bug IndexFromBoard", model, "I30: the parent never panics, whatever the board holds");
}

#[test]
fn negative_ready_announced_while_a_hard_restart_reclaims_is_caught() {
    let mut model = term_ignoring_model();
    model.ops = vec![Op::HardRestart];
    model.bug = Some(SeededBug::ReadyEarly);
    expect_counterexample(
        "seeded bug ReadyEarly",
        model,
        "I31: the lifecycle events come in their order, and Ready only when the pool runs",
    );
}

/// SPEC.md §15.3 (G1, G5): the gate with two gated children, two connections whose heads arrive
/// in parts or at once, deadlines, and a graceful stop at any point.
#[test]
fn the_gate_and_gated_children_through_a_graceful_stop() {
    use prefork_model::gate_system::GateSystem;
    let model = GateSystem { children: 2, conns: 3, capacity: 2, bug: None };
    check("gate", model, &["example: a head completed after the stop is served"]);
}

#[test]
fn negative_a_gated_child_that_leaves_at_its_first_empty_read_is_caught() {
    use prefork_model::gate_system::GateSystem;
    let model = GateSystem { children: 2, conns: 3, capacity: 2, bug: Some(SeededBug::GatedDrainEndsWhenEmpty) };
    let property = "G5: every complete head reaches a child";
    let checker =
        model.checker().threads(2).finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property]))).spawn_bfs().join();
    let path = checker.discovery(property).expect("stateright must find the head left in the channel");
    eprintln!("stateright gate negative: caught: {:?}", path.into_actions());
}
