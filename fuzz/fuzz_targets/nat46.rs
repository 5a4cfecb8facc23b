//! `cargo fuzz run nat46`: see `shunt::fuzzing::nat46` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt::fuzzing::nat46(data));
