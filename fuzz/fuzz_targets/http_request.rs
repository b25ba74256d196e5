#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefork_server::fuzzing::http_request(data));
