//! The control plane, on the housekeeping (main) thread: the running state
//! and its loop (`plane`), requests and reloads that change it (`requests`),
//! the immutable services snapshots it builds for the workers (`snapshot`),
//! and the control socket (`socket`, `protocol`, `edit`). It drives the
//! `dataplane`; the dataplane never calls back into it.

pub mod edit;
pub mod health;
mod plane;
pub mod protocol;
mod requests;
pub mod snapshot;
mod socket;

pub use plane::run;
pub use protocol::{Request, Response};
pub use snapshot::build_services;
pub use socket::{request, Server};
