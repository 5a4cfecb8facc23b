//! `cargo fuzz run xlat`: see `shunt_testkit::fuzz::xlat` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt_testkit::fuzz::xlat(data));
