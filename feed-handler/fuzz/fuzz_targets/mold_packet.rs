#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::mold_packet(data));
