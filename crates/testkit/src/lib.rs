//! What Shunt's tests, benches and fuzz targets share, kept out of the
//! product crate:
//!
//! * [`harness`]: pipelines over plain memory, the same stages a worker runs;
//! * [`fixtures`]: configs loaded from `pipelines/*.toml` and edited in code;
//! * [`addrs`]: the addresses and MACs of those configs, for frame builders;
//! * [`frames`]: frame edits and an independent RFC 1071 checksum oracle;
//! * [`fuzz`]: the fuzz entry points (cargo-fuzz targets in `fuzz/` and the
//!   corpus replay in `tests/fuzz_corpus.rs`);
//! * [`lab`]: the lab lock and the root check of namespace tests.

pub mod addrs;
pub mod fixtures;
pub mod frames;
pub mod fuzz;
pub mod harness;
pub mod lab;

pub use fixtures::Fixture;
pub use harness::Harness;
