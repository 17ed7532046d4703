//! Fuzz target `book_messages`: its body is `book::books::fuzz`; seeds in `fuzz/seeds/book_messages/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| book::books::fuzz(data));
