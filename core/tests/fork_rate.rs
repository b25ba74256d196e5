//! Demand spawning under random load (proptest): the spare-server policy in its default mode,
//! `spawn_mode = "demand"`, driven through random ticks (random times, random numbers of
//! connections waiting, children taking work, finishing and dying), never forks more than
//! `fork_rate_limit` children in any one-second window (I28), and never makes more children live
//! than `max_request_workers` (I7). The negative tests seed the bugs each property must catch.

use prefork_core::config::SpawnMode;
use prefork_core::policy::{Decision, Demand, FORK_WINDOW, SpareLimits, SpareServerPolicy};
use prefork_core::scoreboard::ScoreboardView;
use prefork_core::seeded::SeededBug;
use prefork_core::slot::SlotState::{self, *};
use prefork_core::time::Time;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One tick: milliseconds since the last, connections waiting, and a byte that decides what the
/// children did meanwhile.
type Step = (u64, usize, u8);

/// Runs the steps; the first property broken, if any.
fn run(steps: &[Step], limit: u32, mrw: u32, bug: Option<SeededBug>) -> Result<(), String> {
    let mut policy = SpareServerPolicy::new();
    if let Some(b) = bug {
        policy.seed_bug(b);
    }
    let limits = SpareLimits { mode: SpawnMode::Demand, fork_rate_limit: limit, ..SpareLimits::ramp(3, 8, mrw) };
    // A few slots above max_request_workers hold old children still draining (as after a
    // restart that lowered it): they count against the limit.
    let mut states: Vec<SlotState> = vec![Dead; mrw as usize + 4];
    let draining = (mrw as usize..mrw as usize + 4).step_by(2);
    for s in draining {
        states[s] = Graceful;
    }
    let mut now = 0u64;
    let mut forks: Vec<(u64, usize)> = vec![];
    for &(dt, waiting, what) in steps {
        now += dt;
        // What the children did: starting ones became ready; some ready ones took work; some busy
        // ones finished; one may have died; a draining one may have left.
        for (i, st) in states.iter_mut().enumerate() {
            let pick = (what as usize + i * 7) % 5;
            *st = match *st {
                Starting => Ready,
                Ready if pick == 0 => BusyWrite,
                BusyWrite if pick == 1 => Ready,
                BusyWrite if pick == 2 && what % 3 == 0 => Dead,
                Graceful if what % 11 == 0 => Dead,
                other => other,
            };
        }
        let view = ScoreboardView::from_states(states.clone());
        let m = policy.maintain(limits, &view, true, Some(Demand { waiting, now: Time::from_millis(now) }));
        let mut spawned = false;
        if let Decision::Spawn { slots } = m.decision {
            for &s in &slots {
                states[s] = Starting;
            }
            spawned = !slots.is_empty();
            forks.push((now, slots.len()));
        }
        let window = FORK_WINDOW.as_millis() as u64;
        let recent: usize = forks.iter().filter(|&&(t, _)| now - t < window).map(|&(_, n)| n).sum();
        if recent > limit as usize {
            return Err(format!("I28: {recent} forks in the second up to {now} ms, fork_rate_limit {limit}"));
        }
        // Old children above a lowered limit may keep more than max_request_workers live while
        // they drain; a spawn never adds to that (SPEC.md §5.3).
        let live = states.iter().filter(|s| s.is_live()).count();
        if spawned && live > mrw as usize {
            return Err(format!("I7: a spawn made {live} children live, max_request_workers {mrw}"));
        }
    }
    Ok(())
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0u64..1500, prop_oneof![Just(0usize), 0usize..20, 100usize..2000], any::<u8>()), 1..60)
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]
    #[test]
    fn demand_spawning_stays_within_fork_rate_limit_and_max_request_workers(
        steps in steps(), limit in 1u32..40, mrw in 1u32..100,
    ) {
        run(&steps, limit, mrw, None).map_err(TestCaseError::fail)?;
    }
}

/// The property must fail for `bug`, with `expected` in the failure.
fn must_catch(bug: SeededBug, expected: &str) {
    let mut runner = TestRunner::new(Config { cases: 1024, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(steps(), 1u32..40, 1u32..100), |(steps, limit, mrw)| {
        run(&steps, limit, mrw, Some(bug)).map_err(TestCaseError::fail)
    });
    let err = result.expect_err("the seeded bug went unnoticed");
    assert!(err.to_string().contains(expected), "{bug:?} was caught, but not by {expected}: {err}");
}

#[test]
fn negative_demand_spawning_without_the_fork_rate_limit_is_caught() {
    must_catch(SeededBug::NoForkRateLimit, "I28");
}

#[test]
fn negative_demand_spawning_that_counts_only_free_slots_is_caught() {
    must_catch(SeededBug::DemandPastMaxRequestWorkers, "I7");
}
