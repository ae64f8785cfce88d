#![no_main]
//! See `backstop::fuzz::sdp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::sdp(data));
