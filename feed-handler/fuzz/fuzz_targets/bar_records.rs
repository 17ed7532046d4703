//! Fuzz target `bar_records`: its body is `gateway::redis::mirror::fuzz`; seeds in `fuzz/seeds/bar_records/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::redis::mirror::fuzz(data));
