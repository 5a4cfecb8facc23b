//! `cargo fuzz run config`: see `shunt::fuzzing::config` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt::fuzzing::config(data));
