#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_model::fuzzing::parent_events(data));
