//! `cargo fuzz run nat46`: see `shunt_testkit::fuzz::nat46` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt_testkit::fuzz::nat46(data));
