//! Counters the workers write and everyone else reads.

pub mod conns;
pub mod counters;
pub mod latency;
pub mod log;
pub mod prometheus;
pub mod report;
pub mod stats;
