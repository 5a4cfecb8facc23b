//! Building the services snapshot the workers run on: validated config plus
//! next-hop MACs from the kernel's neighbour table. Built off the fast path,
//! then published whole (workers swap it at a batch boundary).

use std::time::{Duration, Instant};

use super::health::{BackendKey, HealthPlane};
use crate::config::Config;
use crate::pipeline::services::{Admission, IdRegistry, Services, ServicesError};

/// Builds the load balancer snapshot. Backend MACs the config does not give
/// come from the kernel's neighbour table; unknown ones are solicited on the
/// backend-side interfaces and waited for briefly. `health` decides which
/// backends the Maglev tables hold (an unresolved next hop counts as down).
pub fn build_services(
    config: &Config,
    generation: u64,
    ids: &mut IdRegistry,
    health: &mut HealthPlane,
) -> Result<Services, ServicesError> {
    let macs = resolve_backends(config);
    let admissions = health.admissions(config, |ip| macs.contains_key(&ip));
    let services = Services::build_with(
        config,
        generation,
        ids,
        |ip| macs.get(&ip).copied(),
        |s, b| {
            let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
            admissions.get(&key).copied().unwrap_or(Admission::In)
        },
    )?;
    for b in services.unresolved() {
        tracing::warn!(
            backend = %b,
            "no MAC for backend (config has none, neighbour table has none): it counts as down"
        );
    }
    Ok(services)
}

fn resolve_backends(config: &Config) -> std::collections::HashMap<std::net::IpAddr, [u8; 6]> {
    use crate::sys::neigh;
    let wanted: Vec<std::net::IpAddr> = config
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.mac.is_none())
        .map(|b| b.addr)
        .collect();
    let mut found = std::collections::HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let egresses: Vec<&str> = config
        .pipelines
        .iter()
        .flat_map(|p| &p.stages)
        .filter_map(|s| match s {
            crate::config::StageConfig::L2(l2) => Some(config.interfaces[l2.egress].name.as_str()),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut solicited = false;
    loop {
        if let Ok(table) = neigh::dump() {
            for n in table {
                if wanted.contains(&n.addr) {
                    found.insert(n.addr, n.mac);
                }
            }
        }
        if found.len() == wanted.len() || Instant::now() > deadline {
            return found;
        }
        if !solicited {
            for ip in wanted.iter().filter(|ip| !found.contains_key(ip)) {
                for ifname in &egresses {
                    if let Err(e) = neigh::solicit(*ip, ifname) {
                        tracing::debug!(backend = %ip, interface = ifname, error = %e, "neighbour solicit failed");
                    }
                }
            }
            solicited = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
