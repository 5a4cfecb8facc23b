//! Counters the workers write and everyone else reads.

pub mod counters;
pub mod latency;
pub mod prometheus;
pub mod report;
pub mod stats;
