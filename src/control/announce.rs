//! Which VIPs this node asks the router for. Shunt speaks no BGP: a speaker
//! beside it (ExaBGP, through `shunt bgp-feed`) polls `node.status` and
//! announces exactly the VIPs listed as announced here, withdrawing every
//! one the moment the control socket stops answering (Shunt stopped or
//! died). A VIP is announced while at least one of its services is: the
//! node is neither drained nor stopping, and the service has a backend
//! that is enabled and passing its health check.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::health::{Admin, BackendKey, Health, HealthPlane};
use crate::config::Config;

/// The node's own admin state, set by `shunt node drain` / `undrain` and
/// by a graceful stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Drained by the operator: every VIP withdrawn, flows still served.
    pub drained: bool,
    /// Stopping: VIPs withdrawn, serving until the stop drain ends.
    pub stopping: bool,
}

/// One VIP and whether it is announced, with the reason when it is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    pub vip: IpAddr,
    pub announce: bool,
    /// Services on this VIP.
    pub services: Vec<String>,
    /// Why it is withdrawn ("node drained", "no backend up", …); empty when announced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Every configured VIP, in address order.
pub fn vips(config: &Config, health: &HealthPlane, node: NodeState) -> Vec<VipStatus> {
    let mut by_vip: BTreeMap<IpAddr, VipStatus> = BTreeMap::new();
    for s in &config.services {
        let up = s.backends.iter().any(|b| {
            let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
            health.get(&key).is_some_and(|st| st.admin == Admin::Enabled && st.checker.health == Health::Up)
        });
        let v = by_vip.entry(s.vip).or_insert_with(|| VipStatus {
            vip: s.vip,
            announce: false,
            services: Vec::new(),
            reason: String::new(),
        });
        v.services.push(s.name.clone());
        v.announce |= up;
    }
    let mut out: Vec<VipStatus> = by_vip.into_values().collect();
    for v in &mut out {
        let why = if node.stopping {
            "node stopping"
        } else if node.drained {
            "node drained"
        } else if !v.announce {
            "no backend up"
        } else {
            ""
        };
        v.announce = why.is_empty();
        v.reason = why.into();
    }
    out
}

/// What a speaker must send to go from announcing `was` to announcing
/// `now`: ExaBGP API lines, withdrawals first.
pub fn exabgp_lines(was: &[IpAddr], now: &[IpAddr]) -> Vec<String> {
    let prefix = |ip: &IpAddr| if ip.is_ipv4() { format!("{ip}/32") } else { format!("{ip}/128") };
    let mut lines: Vec<String> = was
        .iter()
        .filter(|ip| !now.contains(ip))
        .map(|ip| format!("withdraw route {} next-hop self", prefix(ip)))
        .collect();
    lines.extend(
        now.iter()
            .filter(|ip| !was.contains(ip))
            .map(|ip| format!("announce route {} next-hop self", prefix(ip))),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_withdraw_first_and_only_what_changed() {
        let a: IpAddr = "10.1.100.1".parse().unwrap();
        let b: IpAddr = "10.1.100.2".parse().unwrap();
        let c: IpAddr = "fd00:100::1".parse().unwrap();
        assert_eq!(exabgp_lines(&[], &[a]), vec!["announce route 10.1.100.1/32 next-hop self"]);
        assert_eq!(
            exabgp_lines(&[a, b], &[b, c]),
            vec![
                "withdraw route 10.1.100.1/32 next-hop self",
                "announce route fd00:100::1/128 next-hop self"
            ]
        );
        assert!(exabgp_lines(&[a], &[a]).is_empty());
    }
}
