//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, and the crashes found once fixed,
//! `fuzz/artifacts/<target>/` kept as `fuzz/regressions/<target>/`) through the fuzz bodies, on
//! stable, plus a few thousand inputs from a fixed pseudo-random sequence, so the bodies run in
//! every CI run even where nightly and cargo-fuzz are not installed.

use prefork_model::fuzzing;
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = vec![];
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries.flatten() {
            out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

fn pseudo_random(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|i| {
            (0..(i * 7919) % len + 1)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

fn replay(target: &str, body: fn(&[u8]), random: usize, len: usize) {
    let corpus = inputs(target);
    for (name, data) in &corpus {
        if let Err(e) = std::panic::catch_unwind(|| body(data)) {
            std::panic::resume_unwind(Box::new(format!("{target}: {name}: {:?}", e.downcast_ref::<String>())));
        }
    }
    for data in pseudo_random(random, len) {
        body(&data);
    }
    eprintln!("{target}: {} corpus inputs and {random} pseudo-random inputs replayed", corpus.len());
}

#[test]
fn system_walk_corpus() {
    replay("system_walk", fuzzing::system_walk, 300, 400);
}

#[test]
fn parent_events_corpus() {
    replay("parent_events", fuzzing::parent_events, 3000, 600);
}

#[test]
fn child_events_corpus() {
    replay("child_events", fuzzing::child_events, 3000, 400);
}

/// Negative tests: with a seeded bug, the same bodies on the same pseudo-random inputs must fail.
fn catches(target: &str, body: impl Fn(&[u8]) + std::panic::RefUnwindSafe, random: usize, len: usize) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = pseudo_random(random, len).iter().position(|d| std::panic::catch_unwind(|| body(d)).is_err());
    std::panic::set_hook(hook);
    let at = caught.unwrap_or_else(|| panic!("{target}: the seeded bug went unnoticed in {random} inputs"));
    eprintln!("{target}: seeded bug caught by pseudo-random input {at}");
}

#[test]
fn negative_parent_events_catches_ignoring_the_generation_on_reap() {
    catches(
        "parent_events",
        |d| fuzzing::parent_events_with(d, Some(prefork_core::seeded::SeededBug::IgnoreGenerationOnReap)),
        3000,
        600,
    );
}

#[test]
fn negative_child_events_catches_a_child_that_skips_the_accept_lock() {
    catches(
        "child_events",
        |d| fuzzing::child_events_with(d, Some(prefork_core::seeded::SeededBug::NoAcceptLock)),
        3000,
        400,
    );
}

#[test]
fn negative_system_walk_catches_a_child_that_skips_the_accept_lock() {
    catches(
        "system_walk",
        |d| fuzzing::system_walk_with(d, Some(prefork_core::seeded::SeededBug::NoAcceptLock)),
        300,
        400,
    );
}
