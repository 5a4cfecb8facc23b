//! `cargo fuzz run pipeline`: see `shunt::fuzzing::pipeline` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt::fuzzing::pipeline(data));
