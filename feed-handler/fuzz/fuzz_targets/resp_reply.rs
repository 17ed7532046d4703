//! Fuzz target `resp_reply`: its body is `gateway::redis::resp::fuzz`; seeds in `fuzz/seeds/resp_reply/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::redis::resp::fuzz(data));
