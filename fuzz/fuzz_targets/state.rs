//! `cargo fuzz run state`: see `shunt_testkit::fuzz::state` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt_testkit::fuzz::state(data));
