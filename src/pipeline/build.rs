//! Building a worker's pipelines from the config, given the worker's ports.
//! Shared by the dataplane and by tests and benches that run pipelines over
//! plain memory.

use std::sync::Arc;

use super::conntrack::ConnTable;
use super::frag::{FragLimits, FragTable};
use super::mtu::LinkMtus;
use super::ratelimit::{ErrorLimiter, FlowLimiter};
use super::registry::{self, BuildEnv, BuildError};
use super::rewrite::xlat::EgressMtu;
use super::{Pipeline, Stage};
use crate::config::{Config, StageConfig};

/// A worker port as pipelines see it.
#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    /// Index into `Config::interfaces`.
    pub interface: usize,
    pub mac: [u8; 6],
    /// L3 MTU at start (live values come from [`LinkMtus`]).
    pub mtu: u16,
}

/// A worker's conntrack table as the config sizes it; NAT64 sessions age by
/// the table's second timeout set.
pub fn conntrack(config: &Config) -> ConnTable {
    let ct = &config.conntrack;
    let mut table = ConnTable::new(ct.entries_per_worker as usize, ct.timeouts, ct.full);
    configure_conntrack(&mut table, config);
    table
}

/// A worker's fragment table, sized as `[fragments]` says.
pub fn frag_table(config: &Config) -> FragTable {
    let f = &config.fragments;
    FragTable::new(FragLimits {
        entries: f.entries_per_worker as usize,
        held: f.held_per_worker as usize,
        timeout: f.timeout,
    })
}

/// The config's settings of a table beyond its size and timeouts.
pub fn configure_conntrack(table: &mut ConnTable, config: &Config) {
    table.set_pressure_timeout(config.conntrack.pressure_timeout);
    if let Some(n) = &config.xlat.nat64 {
        table.set_alt_timeouts(n.timeouts);
    }
}

/// A fresh secret for a limiter's per-address hash, so no sender can aim
/// at another's bucket.
fn secret_key() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// A worker's limit on the errors and RSTs it sends, as the config sets it.
pub fn error_limiter(config: &Config) -> ErrorLimiter {
    let d = &config.dataplane;
    ErrorLimiter::with_destinations(d.errors, d.errors_per_destination, secret_key())
}

/// A worker's new-flow limiter as the config sets it.
pub fn limiter(config: &Config) -> FlowLimiter {
    FlowLimiter::new(config.conntrack.new_flows, config.conntrack.source_flows, secret_key())
        .with_syn_check(config.conntrack.syn_check_rate)
}

/// Every pipeline of the config, built through the stage registry; an
/// order the registry refuses is an error here too.
pub fn pipelines(config: &Config, ports: &[PortInfo]) -> Result<Vec<Pipeline>, BuildError> {
    pipelines_with(config, ports, &link_mtus(config, ports))
}

/// Each configured interface's MTU as `ports` give it (1500 for others).
pub fn link_mtus(config: &Config, ports: &[PortInfo]) -> Arc<LinkMtus> {
    LinkMtus::new((0..config.interfaces.len()).map(|i| {
        ports.iter().find(|p| p.interface == i).map_or(crate::pipeline::mtu::DEFAULT_MTU, |p| p.mtu)
    }))
}

/// [`pipelines`] reading MTUs from `links`, which the control thread keeps
/// up to date.
pub fn pipelines_with(
    config: &Config,
    ports: &[PortInfo],
    links: &Arc<LinkMtus>,
) -> Result<Vec<Pipeline>, BuildError> {
    registry::check(config)?;
    let port_of = |iface: usize| -> Result<(u8, [u8; 6]), BuildError> {
        ports
            .iter()
            .position(|p| p.interface == iface)
            .map(|i| (i as u8, ports[i].mac))
            .ok_or_else(|| BuildError::NoSocket { interface: config.interfaces[iface].name.clone() })
    };
    let mut out = Vec::new();
    for p in &config.pipelines {
        // Translated packets leave by the pipeline's L2 egress (towards
        // backends / the IPv6 side for SIIT) or its return egress.
        let mtus = p
            .stages
            .iter()
            .find_map(|s| match s {
                StageConfig::L2(l2) => Some(EgressMtu::new(links.clone(), l2.egress, l2.return_egress)),
                _ => None,
            })
            .unwrap_or_default();
        let port_macs: Vec<[u8; 6]> = ports.iter().map(|p| p.mac).collect();
        let backend_port = p.stages.iter().find_map(|s| match s {
            StageConfig::L2(l2) => port_of(l2.egress).ok().map(|(port, _)| port),
            _ => None,
        });
        let mut env = BuildEnv { port_of: &port_of, port_macs: &port_macs, mtus, backend_port, first: true };
        let mut stages: Vec<Box<dyn Stage>> = Vec::with_capacity(p.stages.len());
        for s in &p.stages {
            stages.push(registry::build(s, &env)?);
            env.first = false;
        }
        let chains = p.stages.iter().all(registry::chains);
        out.push(Pipeline { name: p.name.clone(), stages, chains });
    }
    Ok(out)
}
