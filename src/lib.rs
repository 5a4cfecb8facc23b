//! Shunt: an AF_XDP userspace fast-path dataplane.
//!
//! Data flow: `xdp` redirects owned flows into `xsk` sockets; `dataplane`
//! workers poll them and run `pipeline` stages over `wire` views of the
//! frames; `telemetry` counts what happened. `config` describes all of it.

pub mod config;
pub mod control;
pub mod dataplane;
pub mod lab;
pub mod nat46;
pub mod pipeline;
pub mod sys;
pub mod telemetry;
pub mod wire;
pub mod xdp;
pub mod xsk;
