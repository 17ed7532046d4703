//! Fuzz target `pcap_file`: its body is `feed_handler::fuzzing`; seeds in `fuzz/seeds/pcap_file/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| feed_handler::fuzzing::pcap_file(data));
