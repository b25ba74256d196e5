//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, and the crashes found once fixed,
//! `fuzz/artifacts/<target>/` kept as `fuzz/regressions/<target>/`) through the fuzz bodies, on
//! stable, plus a few thousand inputs from a fixed pseudo-random sequence, so the bodies run in
//! every CI run even where nightly and cargo-fuzz are not installed.

use prefork_model::fuzzing::replay::replay;
use preforkd::fuzzing;

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
