//! Fuzz target `itch_message`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/itch_message/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::itch_message(data));
