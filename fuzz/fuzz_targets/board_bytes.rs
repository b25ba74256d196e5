#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_model::fuzzing::board_bytes(data));
