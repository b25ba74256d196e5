//! The whole system under shuttle's random and PCT schedulers (SPEC.md §11), with crash injection,
//! restarts and stops at random points; and the seeded bug shuttle must catch.
//!
//! A failing execution prints `failing schedule: "..."`. Replay it with
//! `PREFORK_SHUTTLE_REPLAY='<schedule>' PREFORK_SHUTTLE_SCENARIO=<name> cargo test -p prefork-model --test shuttle replay -- --nocapture`
//! (see docs/contributing.md). `PREFORK_SHUTTLE_ITERATIONS` raises the number of executions per scheduler.
//!
//! Every run is seeded: by default with a fixed seed (printed), so CI explores the same schedules
//! each time and a failure repeats; `PREFORK_SHUTTLE_SEED=<n>` picks another, and
//! `PREFORK_SHUTTLE_SEED=random` a fresh one per run (printed too).

use prefork_core::seeded::SeededBug;
use prefork_model::shuttle_system::{Scenario, run};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

fn scenario(name: &str) -> Scenario {
    match name {
        // start_servers above max_spare_servers: the first ticks retire children while clients,
        // crashes and restarts race them.
        "two-listeners" => Scenario {
            pool: prefork_model::pool(2, 4, 1, 2, 4),
            connections: 6,
            deaths: 2,
            stalls: 0,
            restarts: 2,
            restart_pool: None,
            bug: None,
            wake_interrupts_lock: true,
            drain_before_stop: false,
            scribbles: 0,
            decoy_before_stop: false,
        },
        // max_request_workers 4 below server_limit 5, and restarts that lower it to 3: children
        // above the new limit drain and count against it (I7).
        "one-listener" => Scenario {
            pool: prefork_model::pool_with_limits(1, 4, 2, 3, 4, 5),
            connections: 8,
            deaths: 2,
            stalls: 0,
            restarts: 2,
            restart_pool: Some(prefork_model::pool_with_limits(1, 3, 2, 3, 3, 5)),
            bug: None,
            wake_interrupts_lock: true,
            drain_before_stop: false,
            scribbles: 0,
            decoy_before_stop: false,
        },
        "refill-past-limit" => {
            Scenario { bug: Some(SeededBug::RefillPastLimit), connections: 2, deaths: 0, ..scenario("one-listener") }
        }
        "no-lock-bug" => Scenario {
            pool: prefork_model::pool(2, 3, 2, 3, 4),
            connections: 4,
            deaths: 0,
            stalls: 0,
            restarts: 0,
            restart_pool: None,
            bug: Some(SeededBug::NoAcceptLock),
            wake_interrupts_lock: true,
            drain_before_stop: false,
            scribbles: 0,
            decoy_before_stop: false,
        },
        "lock-wait-not-interrupted" => Scenario {
            pool: prefork_model::pool(2, 4, 1, 2, 4),
            connections: 4,
            deaths: 0,
            stalls: 0,
            restarts: 2,
            restart_pool: None,
            bug: None,
            wake_interrupts_lock: false,
            drain_before_stop: false,
            scribbles: 0,
            decoy_before_stop: false,
        },
        // Children stall at random steps (also holding the lock or a connection) besides dying;
        // the watchdog (default accept_lock_timeout, 2 s; request_deadline 3 s) must keep every
        // queued connection's wait under MAX_QUEUE_WAIT.
        "stalls" => Scenario {
            pool: watchdog(prefork_model::pool(2, 4, 1, 2, 4), true),
            connections: 10,
            deaths: 1,
            stalls: 2,
            restarts: 1,
            restart_pool: None,
            bug: None,
            wake_interrupts_lock: true,
            drain_before_stop: true,
            scribbles: 0,
            decoy_before_stop: false,
        },
        "stalls-no-watchdog" => Scenario {
            pool: watchdog(prefork_model::pool(2, 4, 1, 2, 4), false),
            connections: 10,
            deaths: 0,
            stalls: 2,
            restarts: 0,
            restart_pool: None,
            bug: None,
            wake_interrupts_lock: true,
            drain_before_stop: true,
            scribbles: 0,
            decoy_before_stop: false,
        },
        // A scribbler writes random values into random words of the shared memory (slot,
        // activity, pid and generation words) at random moments, among clients and a restart.
        "scribbles" => Scenario {
            pool: prefork_model::pool(1, 3, 2, 3, 4),
            connections: 6,
            deaths: 0,
            stalls: 0,
            restarts: 1,
            restart_pool: None,
            bug: None,
            wake_interrupts_lock: true,
            drain_before_stop: false,
            scribbles: 6,
            decoy_before_stop: true,
        },
        "scribbles-no-republish" => Scenario { bug: Some(SeededBug::NoRepublish), ..scenario("scribbles") },
        "scribbles-pid-from-board" => Scenario { bug: Some(SeededBug::SignalPidFromBoard), ..scenario("scribbles") },
        "ready-early" => Scenario { bug: Some(SeededBug::ReadyEarly), ..scenario("one-listener") },
        // Children that leave a graceful stop at once: what is queued then is reset (I32).
        "no-drain" => Scenario {
            bug: Some(SeededBug::NoDrain),
            deaths: 0,
            restarts: 0,
            restart_pool: None,
            ..scenario("one-listener")
        },
        "scribbles-index-from-board" => Scenario { bug: Some(SeededBug::IndexFromBoard), ..scenario("scribbles") },
        other => panic!("unknown scenario {other}"),
    }
}

/// The pool with the watchdog on (and a 3 s request deadline) or entirely off. A stalled child
/// never finishes by itself, so a graceful stop gives up on it after `graceful_shutdown_timeout`
/// (5 s here; 0, the default, would wait for ever, as Apache does).
fn watchdog(mut pool: prefork_core::PoolConfig, on: bool) -> prefork_core::PoolConfig {
    pool.graceful_shutdown_timeout = std::time::Duration::from_secs(5);
    if on {
        pool.request_deadline = std::time::Duration::from_secs(3);
    } else {
        pool.accept_lock_timeout = std::time::Duration::ZERO;
    }
    pool
}

fn iterations(default: usize) -> usize {
    std::env::var("PREFORK_SHUTTLE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The seed of this run (see the module documentation).
fn seed() -> u64 {
    const FIXED: u64 = 0x005e_ed0f_2026_1202;
    match std::env::var("PREFORK_SHUTTLE_SEED").as_deref() {
        Err(_) => FIXED,
        Ok("random") => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        Ok(n) => n.parse().unwrap_or_else(|_| panic!("PREFORK_SHUTTLE_SEED={n:?}: a number or \"random\"")),
    }
}

fn random(name: &'static str, seed: u64, iterations: usize) {
    shuttle::check_random_with_seed(move || run(&scenario(name)), seed, iterations);
}

fn pct(name: &'static str, seed: u64, iterations: usize) {
    let scheduler = shuttle::scheduler::PctScheduler::new_from_seed(seed, 3, iterations);
    shuttle::Runner::new(scheduler, shuttle::Config::default()).run(move || run(&scenario(name)));
}

fn check(name: &'static str, random_runs: usize, pct_runs: usize) {
    let started = Instant::now();
    let seed = seed();
    eprintln!("shuttle {name}: seed {seed} (PREFORK_SHUTTLE_SEED={seed} repeats this run)");
    random(name, seed, random_runs);
    pct(name, seed, pct_runs);
    eprintln!("shuttle {name}: {random_runs} random + {pct_runs} PCT(depth 3) executions in {:.1?}", started.elapsed());
    eprintln!("  totals: {:?}", prefork_model::shuttle_system::take_totals());
}

#[test]
fn two_listeners_with_the_lock_crashes_and_restarts() {
    check("two-listeners", iterations(3000), iterations(3000));
}

#[test]
fn one_listener_without_the_lock_crashes_and_restarts() {
    check("one-listener", iterations(3000), iterations(3000));
}

#[test]
fn stalled_children_are_killed_and_no_connection_waits_long() {
    check("stalls", iterations(2000), iterations(2000));
}

/// The scribble fault (SPEC.md §14): I29 (only its own children are signalled, also with a decoy
/// pid in every pid word at the stop), I30 (no panic), L5 (the pool is back within
/// `RECOVERY_BOUND` of the last write).
#[test]
fn scribbles_never_misdirect_a_signal_or_keep_the_pool_down() {
    check("scribbles", iterations(1500), iterations(1500));
}

/// Runs `scenario` under the random scheduler; shuttle must find a failing execution whose panic
/// message contains `expected`.
fn expect_failure(name: &'static str, expected: &str) {
    let seed = seed();
    eprintln!("shuttle {name}: seed {seed}");
    let result = catch_unwind(AssertUnwindSafe(|| random(name, seed, 2000)));
    let err = result.expect_err("shuttle must find a failing execution");
    let msg = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
    let msg = msg.unwrap_or_default();
    eprintln!("shuttle {name}: caught as expected: {}", msg.lines().next().unwrap_or_default());
    assert!(msg.contains(expected), "{name}: caught the wrong failure: {msg}");
    let _ = prefork_model::shuttle_system::take_totals();
}

#[test]
fn negative_no_accept_lock_puts_two_children_in_the_wait_section() {
    expect_failure("no-lock-bug", "two children in the wait+accept section");
}

#[test]
fn negative_a_refill_past_a_lowered_max_request_workers_is_caught() {
    expect_failure("refill-past-limit", "I7: a spawn makes");
}

#[test]
fn negative_a_wake_up_that_does_not_interrupt_the_lock_wait_leaks_old_children() {
    expect_failure("lock-wait-not-interrupted", "did not finish");
}

#[test]
fn negative_without_the_watchdog_a_stalled_lock_holder_wedges_the_listeners() {
    expect_failure("stalls-no-watchdog", "waited");
}

#[test]
fn negative_ready_announced_while_a_hard_restart_reclaims_is_caught() {
    expect_failure("ready-early", "I31");
}

#[test]
fn negative_a_graceful_stop_that_does_not_drain_resets_queued_connections() {
    expect_failure("no-drain", "I32");
}

/// Replays a schedule printed by a failing run (does nothing unless PREFORK_SHUTTLE_REPLAY is set).
#[test]
fn replay() {
    let (Ok(schedule), Ok(name)) = (std::env::var("PREFORK_SHUTTLE_REPLAY"), std::env::var("PREFORK_SHUTTLE_SCENARIO"))
    else {
        return;
    };
    shuttle::replay(move || run(&scenario(&name)), &schedule);
}

#[test]
fn negative_a_parent_that_does_not_republish_the_generation_never_recovers() {
    expect_failure("scribbles-no-republish", "L5: the pool is not back");
}

#[test]
fn negative_a_stop_that_signals_the_pids_on_the_board_signals_a_stranger() {
    expect_failure("scribbles-pid-from-board", "is not a child the parent has");
}

#[test]
fn negative_a_parent_that_indexes_by_a_board_value_panics() {
    expect_failure("scribbles-index-from-board", "index out of bounds");
}
