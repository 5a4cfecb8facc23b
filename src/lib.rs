//! Shunt: an AF_XDP userspace fast-path dataplane.
//!
//! Data flow: `xdp` redirects owned flows into `xsk` sockets; `dataplane`
//! workers poll them and run `pipeline` stages over `wire` views of the
//! frames; `telemetry` counts what happened. `config` describes all of it.
//!
//! Unsafe code is denied here and allowed only in the modules below that
//! need it: those that talk to the kernel (xsk, xdp, sys, the dataplane's
//! worker parts) and those that reach UMEM frames through raw views. Every
//! unsafe block states its invariant in a `// SAFETY:` comment (clippy's
//! `undocumented_unsafe_blocks` is denied in Cargo.toml).

#![deny(unsafe_code)]

/// The build's name in logs and `shunt node status`: one string, so an
/// upgrade test can tell two builds apart by patching it.
pub const BUILD: &str = concat!("shunt-build ", env!("CARGO_PKG_VERSION"));

pub mod config;
#[allow(unsafe_code)] // control socket: umask, chown, group lookup
pub mod control;
pub mod dataplane;
pub mod lab;
pub mod nat46;
#[allow(unsafe_code)] // UMEM frames through raw views; prefetch
pub mod pipeline;
#[allow(unsafe_code)] // the shared mapping of a state file
pub mod state;
#[allow(unsafe_code)] // syscalls: capabilities, scheduling, netlink
pub mod sys;
pub mod telemetry;
pub mod wire;
#[allow(unsafe_code)] // plain-data map keys and values (aya Pod)
pub mod xdp;
#[allow(unsafe_code)] // UMEM mapping, AF_XDP rings and socket options
pub mod xsk;
