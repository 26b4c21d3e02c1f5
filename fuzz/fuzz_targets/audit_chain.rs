#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fapigate::fuzzing::audit_chain(data));
