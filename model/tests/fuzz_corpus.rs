//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, and the crashes found once fixed,
//! `fuzz/artifacts/<target>/` kept as `fuzz/regressions/<target>/`) through the fuzz bodies, on
//! stable, plus a few thousand inputs from a fixed pseudo-random sequence, so the bodies run in
//! every CI run even where nightly and cargo-fuzz are not installed.

use prefork_model::fuzzing;
use prefork_model::fuzzing::replay::{catches, replay};

#[test]
fn system_walk_corpus() {
    replay("system_walk", fuzzing::system_walk, 300, 400);
}

#[test]
fn parent_events_corpus() {
    replay("parent_events", fuzzing::parent_events, 3000, 600);
}

#[test]
fn board_bytes_corpus() {
    replay("board_bytes", fuzzing::board_bytes, 3000, 600);
}

#[test]
fn negative_board_bytes_catches_a_parent_that_does_not_republish_the_generation() {
    catches(
        "board_bytes",
        |d| fuzzing::board_bytes_with(d, Some(prefork_core::seeded::SeededBug::NoRepublish)),
        3000,
        600,
        "L5: the generation word is the parent's",
    );
}

#[test]
fn negative_board_bytes_catches_a_restart_that_signals_the_pids_on_the_board() {
    catches(
        "board_bytes",
        |d| fuzzing::board_bytes_with(d, Some(prefork_core::seeded::SeededBug::SignalPidFromBoard)),
        3000,
        600,
        "I29:",
    );
}

#[test]
fn negative_board_bytes_catches_a_parent_that_indexes_by_a_board_value() {
    catches(
        "board_bytes",
        |d| fuzzing::board_bytes_with(d, Some(prefork_core::seeded::SeededBug::IndexFromBoard)),
        3000,
        600,
        "index out of bounds",
    );
}

#[test]
fn child_events_corpus() {
    replay("child_events", fuzzing::child_events, 3000, 400);
}

// Negative tests: with a seeded bug, the same bodies on the same pseudo-random inputs must fail.
#[test]
fn negative_parent_events_catches_ignoring_the_generation_on_reap() {
    catches(
        "parent_events",
        |d| fuzzing::parent_events_with(d, Some(prefork_core::seeded::SeededBug::IgnoreGenerationOnReap)),
        3000,
        600,
        "I13: a child born in generation",
    );
}

#[test]
fn negative_child_events_catches_a_child_that_skips_the_accept_lock() {
    catches(
        "child_events",
        |d| fuzzing::child_events_with(d, Some(prefork_core::seeded::SeededBug::NoAcceptLock)),
        3000,
        400,
        "I10",
    );
}

#[test]
fn negative_system_walk_catches_a_child_that_skips_the_accept_lock() {
    catches(
        "system_walk",
        |d| fuzzing::system_walk_with(d, Some(prefork_core::seeded::SeededBug::NoAcceptLock)),
        300,
        400,
        "I10: with the lock in use, at most one child waits and accepts",
    );
}

#[test]
fn negative_parent_events_catches_a_refill_past_a_lowered_limit() {
    catches(
        "parent_events",
        |d| fuzzing::parent_events_with(d, Some(prefork_core::seeded::SeededBug::RefillPastLimit)),
        3000,
        600,
        "I7:",
    );
}

#[test]
fn negative_system_walk_catches_a_parent_that_never_respawns() {
    catches(
        "system_walk",
        |d| fuzzing::system_walk_with(d, Some(prefork_core::seeded::SeededBug::NoRespawn)),
        300,
        400,
        "L2: after a crash",
    );
}

#[test]
fn negative_child_events_catches_a_child_without_round_robin() {
    catches(
        "child_events",
        |d| fuzzing::child_events_with(d, Some(prefork_core::seeded::SeededBug::NoRoundRobin)),
        3000,
        400,
        "I12: listener",
    );
}
