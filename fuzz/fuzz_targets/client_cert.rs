#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fapigate::fuzzing::client_cert(data));
