//! The gap of a planned restart, timed phase by phase: from the moment the
//! old image tells its workers to stop (no packet of ours is forwarded from
//! then on) to the new image's link update. The old image takes the time
//! and hands it to the next one in [`SINCE_ENV`] (CLOCK_MONOTONIC, the same
//! clock on both sides of `execve`); each phase logs one line,
//! `planned restart: +12.3 ms <phase>`, and the new image ends with the
//! whole gap. A start that is not a planned restart logs nothing.

use std::sync::OnceLock;

/// The environment variable carrying the gap's start to the next image:
/// CLOCK_MONOTONIC nanoseconds.
pub const SINCE_ENV: &str = "SHUNT_HANDOVER_SINCE";

static SINCE: OnceLock<u64> = OnceLock::new();

/// Starts the gap now (the old image, as its workers are told to stop).
pub fn start() {
    let _ = SINCE.set(crate::sys::monotonic_ns());
    mark("workers told to stop");
}

/// Reads the gap's start a previous image handed over and removes it from
/// the environment (the image after this one gets its own). Call before
/// any thread exists.
pub fn from_env() {
    if let Some(t) = std::env::var(SINCE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        if t <= crate::sys::monotonic_ns() {
            let _ = SINCE.set(t);
        }
    }
    std::env::remove_var(SINCE_ENV);
}

/// The gap's start, for the next image's environment.
pub fn env_value() -> Option<String> {
    SINCE.get().map(u64::to_string)
}

/// Milliseconds since the gap started, when one is being timed.
pub fn elapsed_ms() -> Option<f64> {
    SINCE.get().map(|&t| crate::sys::monotonic_ns().saturating_sub(t) as f64 / 1e6)
}

/// Logs that `phase` ended, with the time since the gap started.
pub fn mark(phase: &str) {
    if let Some(ms) = elapsed_ms() {
        tracing::info!("planned restart: +{ms:.1} ms {phase}");
    }
}
