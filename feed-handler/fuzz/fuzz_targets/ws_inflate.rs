//! Fuzz target `ws_inflate`: its body is `gateway::deflate::fuzz`; seeds in `fuzz/seeds/ws_inflate/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::deflate::fuzz(data));
