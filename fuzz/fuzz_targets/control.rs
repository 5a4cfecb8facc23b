//! `cargo fuzz run control`: see `shunt::fuzzing::control` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt::fuzzing::control(data));
