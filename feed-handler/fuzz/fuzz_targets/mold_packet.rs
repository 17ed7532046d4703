//! Fuzz target `mold_packet`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/mold_packet/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::mold_packet(data));
