#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| preforkd::fuzzing::http_request(data));
