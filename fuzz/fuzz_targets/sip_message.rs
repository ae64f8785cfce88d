#![no_main]
//! See `backstop::fuzz::sip_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| backstop::fuzz::sip_message(data));
