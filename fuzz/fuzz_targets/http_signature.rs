#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fapigate::fuzzing::http_signature(data));
