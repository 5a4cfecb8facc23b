//! One consistent-enough view of every counter, built off the fast path
//! from the workers' shared blocks. `shunt stats` and the Prometheus
//! endpoint both render this, so they always agree.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::counters::{FlowStats, WorkerCounters, WorkerStats};
use crate::pipeline::services::{ip_of, Services};
use crate::xdp::maps::XdpCounter;

/// What the housekeeping thread shares with exporters.
pub struct Shared {
    pub workers: Vec<WorkerShared>,
    pub services: Arc<ArcSwap<Services>>,
    /// XDP program counters per interface, refreshed by the housekeeping thread.
    pub xdp: Mutex<Vec<(String, [u64; 4])>>,
    /// The kernel's AF_XDP socket drop counters, refreshed likewise.
    pub sockets: Mutex<Vec<SocketSnap>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SocketSnap {
    pub worker: usize,
    pub interface: String,
    pub queue: u32,
    pub counters: Vec<(String, u64)>,
}

pub struct WorkerShared {
    pub core: usize,
    pub counters: Arc<WorkerCounters>,
    pub stats: Arc<WorkerStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub workers: Vec<WorkerSnap>,
    pub services: Vec<ServiceSnap>,
    pub xdp: Vec<XdpSnap>,
    #[serde(default)]
    pub sockets: Vec<SocketSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerSnap {
    pub worker: usize,
    pub core: usize,
    /// Counter name → value, in a stable order.
    pub counters: Vec<(String, u64)>,
    /// Table fill gauges (conntrack entries and capacity, SNAT ports in use and owned).
    #[serde(default)]
    pub gauges: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: i64,
    /// Of the active flows, those closing (FIN seen, TIME_WAIT, CLOSE).
    #[serde(default)]
    pub inactive_flows: i64,
    /// Packets toward the backend(s) that failed to leave (no next-hop
    /// MAC, link down, TX ring full, over the egress MTU).
    #[serde(default)]
    pub tx_failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSnap {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    #[serde(flatten)]
    pub traffic: Traffic,
    pub backends: Vec<BackendSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendSnap {
    pub addr: String,
    pub port: u16,
    pub weight: u32,
    #[serde(flatten)]
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct XdpSnap {
    pub interface: String,
    pub counters: Vec<(String, u64)>,
}

/// `addr:port`, or `[addr]:port` for IPv6, as everywhere in Shunt's output.
pub fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// [`endpoint`] of an address given as text (left as is if it is not one).
pub fn endpoint_str(addr: &str, port: u16) -> String {
    match addr.parse() {
        Ok(ip) => endpoint(ip, port),
        Err(_) => format!("{addr}:{port}"),
    }
}

fn sum<'a>(blocks: impl Iterator<Item = Option<&'a FlowStats>>) -> Traffic {
    let mut t = Traffic::default();
    for s in blocks.flatten() {
        t.packets += s.packets.get();
        t.bytes += s.bytes.get();
        t.new_flows += s.new_flows.get();
        t.active_flows += s.active_flows.get_signed();
        t.inactive_flows += s.closing_flows.get_signed();
        t.tx_failed += s.tx_failed.get();
    }
    t
}

impl Shared {
    pub fn snapshot(&self) -> Snapshot {
        let workers = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerSnap {
                worker: i,
                core: w.core,
                // Drop detail follows the drop counters, as `reason/detail`.
                counters: w
                    .counters
                    .snapshot()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .chain(w.stats.details())
                    .collect(),
                gauges: w.counters.gauges().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            })
            .collect();
        let services = self
            .services
            .load()
            .list
            .iter()
            .map(|s| ServiceSnap {
                name: s.name.clone(),
                vip: ip_of(&s.vip).to_string(),
                port: s.port,
                protocol: if s.protocol == 6 { "tcp" } else { "udp" }.into(),
                traffic: sum(self.workers.iter().map(|w| w.stats.services.get(usize::from(s.id)))),
                backends: s
                    .backends
                    .iter()
                    .map(|b| BackendSnap {
                        addr: ip_of(&b.addr).to_string(),
                        port: b.port,
                        weight: b.weight,
                        traffic: sum(self.workers.iter().map(|w| w.stats.backends.get(usize::from(b.id)))),
                    })
                    .collect(),
            })
            .collect();
        let xdp = self
            .xdp
            .lock()
            .map(|x| {
                x.iter()
                    .map(|(i, c)| XdpSnap {
                        interface: i.clone(),
                        counters: XdpCounter::ALL
                            .iter()
                            .map(|k| (k.name().to_string(), c[*k as usize]))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sockets = self.sockets.lock().map(|s| s.clone()).unwrap_or_default();
        Snapshot { workers, services, xdp, sockets }
    }
}

impl Snapshot {
    /// Per-second rates of every counter since `prev`, `secs` earlier
    /// (gauges such as active flows keep their current value).
    pub fn rates(&self, prev: &Snapshot, secs: f64) -> serde_json::Value {
        let per = |now: u64, before: u64| -> f64 {
            if secs > 0.0 {
                (now.saturating_sub(before) as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let pairs = |now: &[(String, u64)],
                     before: Option<&Vec<(String, u64)>>|
         -> serde_json::Map<String, serde_json::Value> {
            now.iter()
                .map(|(k, v)| {
                    let b = before.and_then(|b| b.iter().find(|(n, _)| n == k)).map_or(0, |x| x.1);
                    (k.clone(), per(*v, b).into())
                })
                .collect()
        };
        let traffic = |t: &Traffic, b: Option<&Traffic>| {
            let z = Traffic::default();
            let b = b.unwrap_or(&z);
            serde_json::json!({
                "packets_per_sec": per(t.packets, b.packets),
                "bytes_per_sec": per(t.bytes, b.bytes),
                "new_flows_per_sec": per(t.new_flows, b.new_flows),
                "active_flows": t.active_flows,
            })
        };
        serde_json::json!({
            "interval_secs": secs,
            "workers": self.workers.iter().map(|w| serde_json::json!({
                "worker": w.worker,
                "core": w.core,
                "per_sec": pairs(&w.counters, prev.workers.get(w.worker).map(|p| &p.counters)),
            })).collect::<Vec<_>>(),
            "services": self.services.iter().enumerate().map(|(i, s)| {
                let ps = prev.services.get(i).filter(|p| p.name == s.name);
                let mut v = traffic(&s.traffic, ps.map(|p| &p.traffic));
                v["name"] = s.name.clone().into();
                v["backends"] = s.backends.iter().map(|b| {
                    let pb = ps.and_then(|p| p.backends.iter().find(|x| x.addr == b.addr && x.port == b.port));
                    let mut o = traffic(&b.traffic, pb.map(|p| &p.traffic));
                    o["backend"] = endpoint_str(&b.addr, b.port).into();
                    o
                }).collect::<Vec<_>>().into();
                v
            }).collect::<Vec<_>>(),
        })
    }

    /// The value of a worker counter summed over workers.
    pub fn total(&self, name: &str) -> u64 {
        self.workers.iter().flat_map(|w| &w.counters).filter(|(k, _)| k == name).map(|(_, v)| v).sum()
    }

    /// Human tables; with `prev` and the seconds between, rates per second.
    pub fn table(&self, prev: Option<(&Snapshot, f64)>) -> String {
        use std::fmt::Write;
        let rate = |now: u64, name: &dyn Fn(&Snapshot) -> u64| -> String {
            match prev {
                Some((p, secs)) if secs > 0.0 => {
                    format!("{:>12.0}/s", now.saturating_sub(name(p)) as f64 / secs)
                }
                _ => format!("{now:>14}"),
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "{:<8} {:<5} {:<22} {:>14}", "worker", "core", "counter", "value");
        for w in &self.workers {
            for (k, v) in &w.counters {
                if *v == 0 && !matches!(k.as_str(), "rx_packets" | "tx_packets") {
                    continue;
                }
                let id = w.worker;
                let key = k.clone();
                let r = rate(*v, &|s: &Snapshot| {
                    s.workers
                        .get(id)
                        .and_then(|w| w.counters.iter().find(|(n, _)| *n == key))
                        .map_or(0, |x| x.1)
                });
                let _ = writeln!(out, "{:<8} {:<5} {:<22} {r}", w.worker, w.core, k);
            }
        }
        for w in &self.workers {
            let g = |n: &str| w.gauges.iter().find(|(k, _)| k == n).map_or(0, |x| x.1);
            let _ = writeln!(
                out,
                "{:<8} {:<5} conntrack {}/{}  snat ports {}/{}",
                w.worker,
                w.core,
                g("conntrack_entries"),
                g("conntrack_capacity"),
                g("snat_ports_in_use"),
                g("snat_ports")
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>14} {:>14} {:>10} {:>8} {:>10}",
            "service / backend", "weight", "packets", "bytes", "new_flows", "active", "tx_failed"
        );
        for (si, s) in self.services.iter().enumerate() {
            let pk =
                rate(s.traffic.packets, &|p: &Snapshot| p.services.get(si).map_or(0, |x| x.traffic.packets));
            let by = rate(s.traffic.bytes, &|p: &Snapshot| p.services.get(si).map_or(0, |x| x.traffic.bytes));
            let _ = writeln!(
                out,
                "{:<28} {:>7} {pk} {by} {:>10} {:>8} {:>10}",
                format!("{} {}/{}", s.name, endpoint_str(&s.vip, s.port), s.protocol),
                "",
                s.traffic.new_flows,
                s.traffic.active_flows,
                s.traffic.tx_failed
            );
            for (bi, b) in s.backends.iter().enumerate() {
                let get = |p: &Snapshot| p.services.get(si).and_then(|x| x.backends.get(bi)).cloned();
                let pk = rate(b.traffic.packets, &|p: &Snapshot| get(p).map_or(0, |x| x.traffic.packets));
                let by = rate(b.traffic.bytes, &|p: &Snapshot| get(p).map_or(0, |x| x.traffic.bytes));
                let _ = writeln!(
                    out,
                    "  {:<26} {:>7} {pk} {by} {:>10} {:>8} {:>10}",
                    endpoint_str(&b.addr, b.port),
                    b.weight,
                    b.traffic.new_flows,
                    b.traffic.active_flows,
                    b.traffic.tx_failed
                );
            }
        }
        let _ = writeln!(out);
        for s in &self.sockets {
            let _ = write!(out, "xsk w{} {}:{}", s.worker, s.interface, s.queue);
            for (k, v) in &s.counters {
                let _ = write!(out, " {k}={v}");
            }
            let _ = writeln!(out);
        }
        for x in &self.xdp {
            let _ = write!(out, "xdp {:<10}", x.interface);
            for (k, v) in &x.counters {
                let _ = write!(out, " {k}={v}");
            }
            let _ = writeln!(out);
        }
        out
    }
}
