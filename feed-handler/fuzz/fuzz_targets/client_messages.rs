//! Fuzz target `client_messages`: its body is `gateway::session::fuzz`; seeds in `fuzz/seeds/client_messages/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::session::fuzz(data));
