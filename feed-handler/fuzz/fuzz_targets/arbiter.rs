//! Fuzz target `arbiter`: its body is `feed_handler::fuzzing::arbiter`; seeds in `fuzz/seeds/arbiter/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::arbiter(data));
