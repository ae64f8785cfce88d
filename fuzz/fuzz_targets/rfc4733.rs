#![no_main]
//! See `backstop::fuzz::rfc4733`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::rfc4733(data));
