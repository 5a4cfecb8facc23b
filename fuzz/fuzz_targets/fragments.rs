//! `cargo fuzz run fragments`: see `shunt_testkit::fuzz::fragments` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt_testkit::fuzz::fragments(data));
