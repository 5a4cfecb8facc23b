//! Health metrics for Prometheus: families the housekeeping thread updates
//! and the metrics thread encodes (prometheus-client metrics are atomics
//! behind shared handles).

use std::collections::HashMap;
use std::net::SocketAddr;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{Admin, Admission, BackendKey, BackendState, Health};
use crate::config::Config;

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … 1 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 13))
}

#[derive(Clone)]
pub struct HealthMetrics {
    up: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    in_table: Family<Labels, Gauge>,
    latency: Histograms,
    transitions: Family<Labels, Counter>,
}

impl Default for HealthMetrics {
    fn default() -> Self {
        HealthMetrics {
            up: Family::default(),
            state: Family::default(),
            in_table: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            transitions: Family::default(),
        }
    }
}

fn labels(key: &BackendKey) -> Labels {
    vec![
        ("service".into(), key.service.clone()),
        ("backend".into(), SocketAddr::new(key.addr, key.port).to_string()),
    ]
}

impl HealthMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("shunt_backend_up", "1 when the backend's health checks pass", self.up.clone());
        r.register(
            "shunt_backend_state",
            "1 for the backend's admin state (enabled, draining, disabled)",
            self.state.clone(),
        );
        r.register(
            "shunt_backend_in_table",
            "1 when the backend is in its service's Maglev table",
            self.in_table.clone(),
        );
        r.register(
            "shunt_backend_probe_latency_seconds",
            "health probe latency, passes and failures",
            self.latency.clone(),
        );
        r.register("shunt_backend_transitions", "health and admin state changes", self.transitions.clone());
    }

    pub fn probe(&self, key: &BackendKey, latency: std::time::Duration, _pass: bool) {
        self.latency.get_or_create(&labels(key)).observe(latency.as_secs_f64());
    }

    pub fn transition(&self, key: &BackendKey) {
        self.transitions.get_or_create(&labels(key)).inc();
    }

    /// Rewrites the gauges from the current state; series of removed
    /// backends go.
    pub fn update(
        &self,
        config: &Config,
        states: &HashMap<BackendKey, BackendState>,
        admissions: &HashMap<BackendKey, Admission>,
    ) {
        self.up.clear();
        self.state.clear();
        self.in_table.clear();
        for s in &config.services {
            for b in &s.backends {
                let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
                let Some(st) = states.get(&key) else { continue };
                let l = labels(&key);
                self.up.get_or_create(&l).set(i64::from(st.checker.health == Health::Up));
                for a in [Admin::Enabled, Admin::Draining, Admin::Disabled] {
                    let mut l = l.clone();
                    l.push(("state".into(), a.name().into()));
                    self.state.get_or_create(&l).set(i64::from(st.admin == a));
                }
                let inn = admissions.get(&key) == Some(&Admission::In);
                self.in_table.get_or_create(&l).set(i64::from(inn));
            }
        }
    }
}
