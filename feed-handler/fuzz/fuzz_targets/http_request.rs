//! Fuzz target `http_request`: its body is `gateway::http::fuzz`; seeds in `fuzz/seeds/http_request/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::http::fuzz(data));
