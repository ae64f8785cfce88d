#![no_main]
//! See `backstop::fuzz::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::config(data));
