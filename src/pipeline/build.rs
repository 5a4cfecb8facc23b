//! Building a worker's pipelines from the config, given the worker's ports.
//! Shared by the dataplane and by tests and benches that run pipelines over
//! plain memory.

use anyhow::{anyhow, Result};

use super::conntrack::ConnTable;
use super::l2::L2Stage;
use super::l2fwd::L2Fwd;
use super::lb::{ConntrackStage, MaglevStage};
use super::nat::NatStage;
use super::xlat::{EgressMtu, SiitStage};
use super::{Pipeline, Stage};
use crate::config::{Config, StageConfig};

/// A worker port as pipelines see it.
#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    /// Index into `Config::interfaces`.
    pub interface: usize,
    pub mac: [u8; 6],
    /// L3 MTU: translation that grows a packet past it answers with an ICMP error.
    pub mtu: u16,
}

/// A worker's conntrack table as the config sizes it; NAT64 sessions age by
/// the table's second timeout set.
pub fn conntrack(config: &Config) -> ConnTable {
    let ct = &config.conntrack;
    let mut table = ConnTable::new(ct.entries_per_worker as usize, ct.timeouts, ct.full);
    if let Some(n) = &config.xlat.nat64 {
        table.set_alt_timeouts(n.timeouts);
    }
    table
}

pub fn pipelines(config: &Config, ports: &[PortInfo]) -> Result<Vec<Pipeline>> {
    let port_of = |iface: usize| -> Result<(u8, [u8; 6])> {
        ports
            .iter()
            .position(|p| p.interface == iface)
            .map(|i| (i as u8, ports[i].mac))
            .ok_or_else(|| anyhow!("worker has no socket on {}", config.interfaces[iface].name))
    };
    let mtu_of = |iface: usize| ports.iter().find(|p| p.interface == iface).map_or(1500, |p| p.mtu);
    let mut out = Vec::new();
    for p in &config.pipelines {
        // Translated packets leave by the pipeline's L2 egress (towards
        // backends / the IPv6 side for SIIT) or its return egress.
        let mtus = p
            .stages
            .iter()
            .find_map(|s| match s {
                StageConfig::L2(l2) => {
                    Some(EgressMtu { egress: mtu_of(l2.egress), ret: mtu_of(l2.return_egress) })
                }
                _ => None,
            })
            .unwrap_or_default();
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        for s in &p.stages {
            stages.push(match s {
                StageConfig::L2Fwd { egress, next_hop_mac } => {
                    let (port, mac) = port_of(*egress)?;
                    Box::new(L2Fwd::new(port, mac, *next_hop_mac))
                }
                StageConfig::Conntrack => Box::new(ConntrackStage),
                StageConfig::Maglev | StageConfig::Nat64 => Box::new(MaglevStage),
                StageConfig::Siit => Box::new(SiitStage::new(mtus)),
                StageConfig::Nat => Box::new(NatStage::new(mtus)),
                StageConfig::L2(l2) => Box::new(L2Stage::new(
                    port_of(l2.egress)?,
                    l2.next_hop_mac,
                    port_of(l2.return_egress)?,
                    l2.return_next_hop_mac,
                    ports.iter().map(|p| p.mac).collect(),
                )),
            });
        }
        out.push(Pipeline { name: p.name.clone(), stages });
    }
    Ok(out)
}
