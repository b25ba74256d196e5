//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, and the crashes found once fixed,
//! `fuzz/artifacts/<target>/` kept as `fuzz/regressions/<target>/`) through the fuzz bodies, on
//! stable, plus a few thousand inputs from a fixed pseudo-random sequence, so the bodies run in
//! every CI run even where nightly and cargo-fuzz are not installed.

use prefork_server::fuzzing;
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
fn http_request_corpus() {
    replay("http_request", fuzzing::http_request, 2000, 300);
}

#[test]
fn config_corpus() {
    replay("config", fuzzing::config, 2000, 300);
}

#[test]
fn scoreboard_corpus() {
    replay("scoreboard", fuzzing::scoreboard, 500, 3000);
}
