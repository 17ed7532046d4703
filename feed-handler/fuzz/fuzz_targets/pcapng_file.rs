//! Fuzz target `pcapng_file`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/pcapng_file/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::pcapng_file(data));
