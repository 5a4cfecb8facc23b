//! The control plane, on the housekeeping (main) thread: the running state
//! and its loop (`plane`), requests and reloads that change it (`requests`),
//! the immutable services snapshots it builds for the workers (`snapshot`),
//! and the control socket (`socket`, `protocol`, `edit`). It drives the
//! `dataplane`; the dataplane never calls back into it.

pub mod announce;
mod conns;
pub mod edit;
pub mod health;
pub mod notify;
mod plane;
pub mod protocol;
mod requests;
pub mod snapshot;
mod socket;

pub use plane::{run, Ended};
pub use protocol::{Request, Response};
pub use snapshot::build_services;
pub use socket::{request, Server};

/// An error and its causes on one line, skipping a cause whose text the
/// message before it already carries (`cannot read x: No such file`
/// followed by `No such file` again).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
