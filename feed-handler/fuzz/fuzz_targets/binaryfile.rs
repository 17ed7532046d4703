//! Fuzz target `binaryfile`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/binaryfile/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::binaryfile(data));
