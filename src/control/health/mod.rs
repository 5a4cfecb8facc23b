//! Backend health checks and backend state, on the control plane.
//!
//! The prober thread (`probe`) reports results; the housekeeping thread
//! feeds them through each backend's rise/fall hysteresis (`state`), logs
//! every transition, and rebuilds the services snapshot when the set of
//! backends in a Maglev table changes. Admin states (drain, disable) and
//! the health of unchanged backends live here, not in the config text, so a
//! reload or SIGHUP keeps them.

pub mod metrics;
pub mod probe;
pub mod state;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{CheckKind, Config, HealthCheck};
use probe::{Prober, Target};
pub use state::{admit, Admin, Admission, Checker, Health, Inputs};

/// What an operator's admin change names that the config does not have.
#[derive(Debug, thiserror::Error)]
pub enum UnknownBackend {
    #[error("no service `{0}`")]
    Service(String),
    #[error("service `{service}` has no backend {backend}")]
    Backend { service: String, backend: SocketAddr },
}

/// A backend's identity across reloads: service name, address, port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub service: String,
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.service, SocketAddr::new(self.addr, self.port))
    }
}

#[derive(Debug, Clone)]
pub struct LastProbe {
    pub pass: bool,
    pub latency: Duration,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct BackendState {
    pub admin: Admin,
    pub checker: Checker,
    pub check: Arc<HealthCheck>,
    pub last: Option<LastProbe>,
    /// Last change of health or admin state.
    pub since: Instant,
    pub transitions: u64,
}

impl BackendState {
    fn new(check: Arc<HealthCheck>) -> BackendState {
        let checker = if check.kind == CheckKind::None { Checker::always_up() } else { Checker::default() };
        BackendState {
            admin: Admin::Enabled,
            checker,
            check,
            last: None,
            since: Instant::now(),
            transitions: 0,
        }
    }
}

/// Health and admin state of every configured backend.
pub struct HealthPlane {
    states: HashMap<BackendKey, BackendState>,
    /// The prober's target list of the current epoch, by index.
    targets: Vec<BackendKey>,
    epoch: u64,
    prober: Option<Prober>,
    /// What Prometheus reads (the metrics thread never touches `states`).
    pub metrics: metrics::HealthMetrics,
    /// Services whose every candidate is down (panic mode), to log changes.
    panicking: Vec<String>,
    /// Admissions of the snapshot last built.
    admitted: HashMap<BackendKey, Admission>,
}

/// What a reload kept and changed, for `shunt reload` and the log.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub kept: Vec<String>,
    pub changed: Vec<String>,
}

impl HealthPlane {
    /// State for `config`'s backends; with `probe`, starts the prober.
    pub fn new(config: &Config, probe: bool) -> std::io::Result<HealthPlane> {
        let mut h = HealthPlane {
            states: HashMap::new(),
            targets: Vec::new(),
            epoch: 0,
            prober: if probe { Some(Prober::spawn()?) } else { None },
            metrics: metrics::HealthMetrics::default(),
            panicking: Vec::new(),
            admitted: HashMap::new(),
        };
        h.reconcile(None, config);
        Ok(h)
    }

    /// Carries state over to `new`: admin states always, health where the
    /// backend and its service's check are unchanged. Restarts probing.
    pub fn reconcile(&mut self, old: Option<&Config>, new: &Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut next = HashMap::new();
        for s in &new.services {
            let check = Arc::new(s.health.clone());
            for b in &s.backends {
                let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
                let st = match self.states.remove(&key) {
                    Some(mut st) => {
                        if st.admin != Admin::Enabled {
                            report.kept.push(format!("{key}: {}", st.admin.name()));
                        }
                        if *st.check != *check {
                            report
                                .changed
                                .push(format!("{key}: health check changed, health reset to unknown"));
                            st = BackendState { admin: st.admin, ..BackendState::new(check.clone()) };
                        } else if old.is_some() && st.checker.health != Health::Unknown {
                            report.kept.push(format!("{key}: {}", st.checker.health.name()));
                        }
                        let old_weight = old
                            .and_then(|o| o.services.iter().find(|x| x.name == s.name))
                            .and_then(|x| x.backends.iter().find(|x| x.addr == b.addr && x.port == b.port))
                            .map(|x| x.weight);
                        if let Some(w) = old_weight.filter(|w| *w != b.weight) {
                            report.changed.push(format!("{key}: weight {w} → {}", b.weight));
                        }
                        st
                    }
                    None => {
                        if old.is_some() {
                            report.changed.push(format!("{key}: added"));
                        }
                        BackendState::new(check.clone())
                    }
                };
                next.insert(key, st);
            }
        }
        let mut removed: Vec<&BackendKey> = self.states.keys().collect();
        removed.sort();
        report.changed.extend(removed.into_iter().map(|k| format!("{k}: removed")));
        self.states = next;
        self.restart_probes(new);
        report
    }

    fn restart_probes(&mut self, config: &Config) {
        self.epoch += 1;
        self.targets.clear();
        let mut targets = Vec::new();
        for s in &config.services {
            let check = Arc::new(s.health.clone());
            for b in &s.backends {
                let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
                // Disabled backends are not probed.
                if self.states.get(&key).is_some_and(|st| st.admin == Admin::Disabled) {
                    continue;
                }
                let port = s.health.port.unwrap_or(b.port);
                targets.push(Target { addr: SocketAddr::new(b.addr, port), check: check.clone() });
                self.targets.push(key);
            }
        }
        if let Some(p) = &self.prober {
            p.set_targets(self.epoch, targets);
        }
    }

    /// Applies the prober's results; returns whether any health changed.
    pub fn poll(&mut self) -> bool {
        let Some(p) = &self.prober else { return false };
        let outcomes: Vec<probe::Outcome> = p.results.try_iter().collect();
        let mut changed = false;
        for o in outcomes {
            if o.epoch != self.epoch {
                continue;
            }
            let Some(key) = self.targets.get(o.target) else { continue };
            changed |= self.record(&key.clone(), o.pass, o.latency, o.detail);
        }
        changed
    }

    /// Feeds one probe result to `key`'s checker; logs a transition. True
    /// when the backend's admission changed (a new snapshot is due).
    pub fn record(&mut self, key: &BackendKey, pass: bool, latency: Duration, detail: String) -> bool {
        let Some(st) = self.states.get_mut(key) else { return false };
        if st.admin == Admin::Disabled {
            return false;
        }
        let before = st.checker.health;
        let moved = st.checker.record(pass, st.check.rise, st.check.fall);
        self.metrics.probe(key, latency, pass);
        st.last = Some(LastProbe { pass, latency, detail });
        let Some(after) = moved else { return false };
        st.since = Instant::now();
        st.transitions += 1;
        let reason = st.last.as_ref().map_or("", |l| l.detail.as_str());
        let (service, backend) = (&key.service, SocketAddr::new(key.addr, key.port));
        if after == Health::Down {
            tracing::warn!(service = %service, backend = %backend, from = before.name(), to = after.name(), reason, "backend down");
        } else {
            tracing::info!(service = %service, backend = %backend, from = before.name(), to = after.name(), reason, "backend up");
        }
        self.metrics.transition(key);
        // Unknown counts as up: only a move across "down" changes which
        // backends the Maglev tables hold, and so needs a new snapshot.
        (before == Health::Down) != (after == Health::Down)
    }

    /// Sets an operator's admin state; returns the one before.
    pub fn set_admin(
        &mut self,
        config: &Config,
        key: &BackendKey,
        admin: Admin,
    ) -> Result<Admin, UnknownBackend> {
        if !config.services.iter().any(|s| s.name == key.service) {
            return Err(UnknownBackend::Service(key.service.clone()));
        }
        let st = self.states.get_mut(key).ok_or_else(|| UnknownBackend::Backend {
            service: key.service.clone(),
            backend: SocketAddr::new(key.addr, key.port),
        })?;
        let before = st.admin;
        if before != admin {
            st.admin = admin;
            st.since = Instant::now();
            st.transitions += 1;
            tracing::info!(
                service = %key.service, backend = %SocketAddr::new(key.addr, key.port),
                from = before.name(), to = admin.name(), reason = "operator", "backend admin state"
            );
            // Disabled backends leave the probe list; enabled ones rejoin it.
            if (before == Admin::Disabled) != (admin == Admin::Disabled) {
                self.restart_probes(config);
            }
        }
        Ok(before)
    }

    pub fn get(&self, key: &BackendKey) -> Option<&BackendState> {
        self.states.get(key)
    }

    /// Which backends enter the Maglev tables; `resolved(addr)` says whether
    /// a backend's next hop is known. Logs services entering or leaving
    /// panic mode.
    pub fn admissions(
        &mut self,
        config: &Config,
        resolved: impl Fn(IpAddr) -> bool,
    ) -> HashMap<BackendKey, Admission> {
        let mut out = HashMap::new();
        let mut panicking = Vec::new();
        for s in &config.services {
            let keys: Vec<BackendKey> = s
                .backends
                .iter()
                .map(|b| BackendKey { service: s.name.clone(), addr: b.addr, port: b.port })
                .collect();
            let inputs: Vec<Inputs> = s
                .backends
                .iter()
                .zip(&keys)
                .map(|(b, k)| {
                    let st = self.states.get(k);
                    Inputs {
                        admin: st.map_or(Admin::Enabled, |x| x.admin),
                        health: st.map_or(Health::Unknown, |x| x.checker.health),
                        weight: b.weight,
                        resolved: b.mac.is_some() || resolved(b.addr),
                    }
                })
                .collect();
            let (adm, panic) = admit(&s.health, &inputs);
            if panic {
                panicking.push(s.name.clone());
            }
            out.extend(keys.into_iter().zip(adm));
        }
        for s in panicking.iter().filter(|s| !self.panicking.contains(s)) {
            tracing::warn!(service = %s, "every backend is down: spreading new flows over all of them (all_down = \"panic\")");
        }
        for s in self.panicking.iter().filter(|s| !panicking.contains(s)) {
            tracing::info!(service = %s, "a backend is up again: panic mode over");
        }
        self.panicking = panicking;
        self.metrics.update(config, &self.states, &out);
        self.admitted = out.clone();
        out
    }

    /// Where `key` stands in the snapshot last built.
    pub fn admission(&self, key: &BackendKey) -> Option<Admission> {
        self.admitted.get(key).copied()
    }

    /// One `shunt backend list` row.
    pub fn row(
        &self,
        key: &BackendKey,
        service: &crate::config::Service,
        backend: &crate::config::Backend,
        traffic: &crate::telemetry::stats::Traffic,
    ) -> serde_json::Value {
        let st = self.states.get(key);
        let closing = traffic.inactive_flows.max(0);
        serde_json::json!({
            "service": service.name,
            "backend": SocketAddr::new(backend.addr, backend.port).to_string(),
            "admin": st.map_or("enabled", |s| s.admin.name()),
            "health": st.map_or("unknown", |s| s.checker.health.name()),
            "check": service.health.kind.name(),
            "weight": backend.weight,
            "in_table": self.admission(key) == Some(Admission::In),
            "last_probe": st.and_then(|s| s.last.as_ref()).map(|l| serde_json::json!({
                "pass": l.pass,
                "detail": l.detail,
                "latency_ms": l.latency.as_secs_f64() * 1000.0,
            })),
            "since_secs": st.map_or(0, |s| s.since.elapsed().as_secs()),
            "transitions": st.map_or(0, |s| s.transitions),
            "active": (traffic.active_flows - closing).max(0),
            "inactive": closing,
        })
    }

    pub fn panicking(&self, service: &str) -> bool {
        self.panicking.iter().any(|s| s == service)
    }
}
