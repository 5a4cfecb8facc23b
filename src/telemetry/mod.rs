//! Counters the workers write and everyone else reads.

pub mod counters;
pub mod report;
