//! Fuzz target `soup_stream`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/soup_stream/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::soup_stream(data));
