//! Latency reports. Work in progress.
