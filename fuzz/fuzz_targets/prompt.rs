#![no_main]
//! See `backstop::fuzz::prompt`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::prompt(data));
