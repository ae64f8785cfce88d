#![no_main]
//! See `backstop::fuzz::rtp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::rtp(data));
