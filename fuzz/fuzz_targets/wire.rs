//! `cargo fuzz run wire`: see `shunt::fuzzing::wire` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt::fuzzing::wire(data));
