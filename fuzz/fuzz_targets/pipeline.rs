//! `cargo fuzz run pipeline`: see `shunt_testkit::fuzz::pipeline` and docs/ROBUSTNESS.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shunt_testkit::fuzz::pipeline(data));
