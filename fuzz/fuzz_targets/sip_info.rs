#![no_main]
//! See `backstop::fuzz::sip_info`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::sip_info(data));
