//! The housekeeping thread's answers to control requests and reloads. Every
//! change becomes new config text and goes through `Config::parse`: the
//! control socket, SIGHUP and the file share one validation path. Each
//! change and reload is logged once, saying what changed and who asked.

use std::sync::Arc;

use super::edit::{self, EditError};
use super::health::{Admin, Admission, BackendKey, Health, ReloadReport};
use super::plane::Running;
use super::snapshot::build_services;
use super::socket::Peer;
use super::{Request, Response};
use crate::config::{Config, ConfigError};
use crate::dataplane::DataplaneError;
use crate::pipeline::services::ServicesError;
use crate::telemetry::stats::endpoint;

/// Why a control change or a reload was not applied (the running config
/// stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request does not fit the config text (no such service, a
    /// backend already listed, …).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The config a request produced fails validation. Its line numbers are
    /// of generated text, not of any file: the request's verb and the key
    /// say where instead.
    #[error("{verb} request: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Request { verb: &'static str, key: Option<String>, message: String },
    /// The file does not load or validate, or does not fit the host.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A change only a restart can apply.
    #[error("interfaces, workers, pipelines, routes or [dataplane] changed: restart Shunt to apply")]
    NeedsRestart,
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// The XDP maps could not be brought in line with the new services.
    #[error(transparent)]
    Maps(#[from] DataplaneError),
}

/// Why a planned restart was refused: the running process stays.
#[derive(Debug, thiserror::Error)]
pub enum RestartRefused {
    #[error("already stopping")]
    Stopping,
    /// The config file, as the next image would read it, does not load,
    /// validate or fit the host.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kept flows would be lost: each worker owns its own.
    #[error(
        "the config changes the worker count from {was} to {now}, and flows are owned per worker: \
         they would all be lost (`shunt restart --force` restarts anyway, empty)"
    )]
    WorkerCount { was: usize, now: usize },
    #[error(
        "the config changes [conntrack] entries_per_worker from {was} to {now}: the flow state \
         cannot carry over (`shunt restart --force` restarts anyway, empty)"
    )]
    TableSize { was: u32, now: u32 },
}

/// Who asked for a reload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller {
    Signal,
    Socket(Peer),
}

impl Running {
    pub(crate) fn handle(&mut self, req: Request, peer: Peer) -> Response {
        match req {
            Request::Stats {} => match serde_json::to_value(self.dp.shared.snapshot()) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err(e),
            },
            Request::Histogram { format } => {
                self.dp.collect_histograms();
                let r = self.dp.report();
                match format.as_str() {
                    "table" => Response::ok(r.table().into()),
                    "hgrm" => Response::ok(r.hgrm(None).into()),
                    "json" => Response::ok(r.json()),
                    "svg" => match r.svg() {
                        Ok(s) => Response::ok(s.into()),
                        Err(e) => Response::err(e),
                    },
                    other => Response::err(format!("unknown format `{other}` (table, hgrm, json, svg)")),
                }
            }
            Request::ConnList { service, backend, client, state, limit } => {
                let filter = super::conns::Filter { service, backend, client, state, limit };
                match super::conns::list(&mut self.dp, &self.services.load(), &filter) {
                    Ok(v) => Response::ok(v),
                    Err(e) => Response::err(e),
                }
            }
            Request::ConfigShow {} => Response::ok(serde_json::json!({
                "path": self.config.path.display().to_string(),
                "generation": self.generation,
                "toml": self.config.text(),
            })),
            Request::Reload {} => match self.reload(Caller::Socket(peer)) {
                Ok((changes, report)) => Response::ok(serde_json::json!({
                    "generation": self.generation,
                    "changes": changes,
                    "kept": report.kept,
                    "changed": report.changed,
                })),
                Err(e) => Response::err(super::chain(&e)),
            },
            Request::BackendDrain { .. } | Request::BackendDisable { .. } | Request::BackendEnable { .. } => {
                self.admin_change(req, peer)
            }
            Request::BackendList { service } => self.backend_list(service.as_deref()),
            Request::ServiceList {} => self.service_list(),
            Request::NodeStatus {} => self.node_status(),
            Request::Restart { force } => match self.restart_check(force) {
                Ok(()) => {
                    tracing::info!(uid = peer.uid, pid = peer.pid, "planned restart requested");
                    self.restart = true;
                    Response::ok(serde_json::json!({ "instance": self.instance, "pid": std::process::id() }))
                }
                Err(e) => {
                    let e = super::chain(&e);
                    tracing::warn!(uid = peer.uid, pid = peer.pid, "restart refused: {e}");
                    Response::err(format!("restart refused, still running: {e}"))
                }
            },
            Request::NodeDrain {} | Request::NodeUndrain {} => {
                let drain = matches!(req, Request::NodeDrain {});
                let before = self.node.drained;
                self.node.drained = drain;
                let what = if drain { "node drained: every VIP withdrawn" } else { "node undrained" };
                tracing::info!(uid = peer.uid, pid = peer.pid, "control change applied: {what}");
                let mut data = self.node_status().data.unwrap_or_default();
                data["before"] = (if before { "drained" } else { "serving" }).into();
                data["changes"] = serde_json::json!([what]);
                Response::ok(data)
            }
            change => {
                let what = describe(&change);
                let verb = verb(&change);
                let result = edit::apply(self.config.text(), &change)
                    .map_err(ChangeError::Edit)
                    .and_then(|text| Config::parse(&self.config.path, &text).map_err(|e| in_request(verb, e)))
                    .and_then(|new| self.apply(new));
                match result {
                    Ok(_) => {
                        self.runtime.push((change, what.clone()));
                        tracing::info!(
                            uid = peer.uid,
                            pid = peer.pid,
                            generation = self.generation,
                            "control change applied: {what}"
                        );
                        Response::ok(serde_json::json!({ "generation": self.generation, "changes": [what] }))
                    }
                    Err(e) => {
                        let e = format!("change rejected, running config kept: {}", super::chain(&e));
                        tracing::warn!(uid = peer.uid, pid = peer.pid, "control change `{what}`: {e}");
                        Response::err(e)
                    }
                }
            }
        }
    }

    /// Re-reads the file and applies it; logs the outcome once either way
    /// and counts it for Prometheus. Returns what changed in the config, and
    /// which backend states were kept or reset.
    pub(crate) fn reload(&mut self, caller: Caller) -> Result<(Vec<String>, ReloadReport), ChangeError> {
        self.notify.reloading();
        let old = self.config.clone();
        let mut replay = Vec::new();
        let mut runtime = self.runtime.clone();
        let result = Config::load(&self.config.path)
            .map_err(ChangeError::from)
            .map(|file| replay_runtime(file, &mut runtime, &mut replay))
            .and_then(|new| self.apply(new))
            .map(|mut report| {
                report.kept.extend(replay.iter().filter(|(kept, _)| *kept).map(|(_, l)| l.clone()));
                report.changed.extend(replay.iter().filter(|(kept, _)| !*kept).map(|(_, l)| l.clone()));
                report
            });
        if result.is_ok() {
            self.runtime = runtime;
        }
        self.notify.ready();
        // A signal's sender is not known: SIGHUP reloads name no uid.
        let (uid, pid, via) = match caller {
            Caller::Signal => (None, None, "SIGHUP"),
            Caller::Socket(p) => (Some(p.uid), Some(p.pid), "control socket"),
        };
        let path = self.config.path.display().to_string();
        match result {
            Ok(report) => {
                crate::telemetry::prometheus::count_reload(true);
                let changes = diff(&old, &self.config);
                let summary = if changes.is_empty() { "no change".to_string() } else { changes.join("; ") };
                tracing::info!(
                    uid,
                    pid,
                    via,
                    path,
                    generation = self.generation,
                    kept = ?report.kept,
                    changed = ?report.changed,
                    "config reloaded: {summary}"
                );
                Ok((changes, report))
            }
            Err(e) => {
                crate::telemetry::prometheus::count_reload(false);
                let text = super::chain(&e);
                tracing::error!(uid, pid, via, path, "config reload failed, running config kept: {text}");
                Err(e)
            }
        }
    }

    /// Applies what can change live (services, backends, weights, SNAT
    /// pools); refuses changes to interfaces, workers, pipelines, routes or
    /// `[dataplane]`, which need a restart.
    fn apply(&mut self, new: Config) -> Result<ReloadReport, ChangeError> {
        if new.restart_fields() != self.config.restart_fields() {
            return Err(ChangeError::NeedsRestart);
        }
        if new.conntrack != self.config.conntrack || new.telemetry != self.config.telemetry {
            tracing::warn!("[conntrack] and [telemetry] changes apply at the next restart");
        }
        // The file alone cannot say which addresses are the host's own.
        new.check_own_addresses(&new.own_addresses())?;
        let generation = self.generation + 1;
        let snapshot = build_services(&new, generation, &mut self.ids, &mut self.health)?;
        // Redirect new VIPs and pools before workers know them; stop
        // redirecting old ones after. Either order only ever passes packets
        // to the kernel, never misroutes them.
        self.dp.sync_maps(&new, false)?;
        self.services.store(Arc::new(snapshot));
        self.dp.sync_maps(&new, true)?;
        self.generation = generation;
        let report = self.health.reconcile(Some(&self.config), &new);
        self.config = new;
        // Backends whose check changed restart at unknown.
        if report.changed.iter().any(|c| c.contains("health check changed")) {
            self.republish();
        }
        Ok(report)
    }

    /// Rebuilds the snapshot of the running config after a health or admin
    /// state change: backends enter or leave the Maglev tables.
    pub(crate) fn republish(&mut self) {
        let generation = self.generation + 1;
        match build_services(&self.config, generation, &mut self.ids, &mut self.health) {
            Ok(snapshot) => {
                self.services.store(Arc::new(snapshot));
                self.generation = generation;
            }
            Err(e) => tracing::error!(
                "rebuilding the services snapshot failed, keeping the old one: {}",
                super::chain(&e)
            ),
        }
    }

    /// Drain, disable or enable: runtime admin state, logged like every
    /// control change.
    fn admin_change(&mut self, req: Request, peer: Peer) -> Response {
        let what = describe(&req);
        let r = match req {
            Request::BackendDrain { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Draining)
            }
            Request::BackendDisable { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Disabled)
            }
            Request::BackendEnable { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Enabled)
            }
            _ => return Response::err("not an admin state change"),
        };
        if !r.ok {
            let e = r.error.unwrap_or_default();
            tracing::warn!(uid = peer.uid, pid = peer.pid, "control change `{what}`: {e}");
            return Response::err(e);
        }
        tracing::info!(
            uid = peer.uid,
            pid = peer.pid,
            generation = self.generation,
            "control change applied: {what}"
        );
        let mut data = r.data.unwrap_or_default();
        data["changes"] = serde_json::json!([what]);
        Response::ok(data)
    }

    fn set_admin(&mut self, service: String, addr: &str, port: u16, admin: Admin) -> Response {
        let Ok(addr) = addr.parse() else { return Response::err(format!("invalid address `{addr}`")) };
        let key = BackendKey { service, addr, port };
        match self.health.set_admin(&self.config, &key, admin) {
            Ok(before) => {
                if before != admin {
                    self.republish();
                }
                Response::ok(serde_json::json!({
                    "generation": self.generation,
                    "before": before.name(),
                    "admin": admin.name(),
                }))
            }
            Err(e) => Response::err(e),
        }
    }

    fn backend_list(&self, only: Option<&str>) -> Response {
        if let Some(s) = only {
            if !self.config.services.iter().any(|x| x.name == s) {
                return Response::err(format!("no service `{s}`"));
            }
        }
        let stats = self.dp.shared.snapshot();
        let mut rows = Vec::new();
        for s in self.config.services.iter().filter(|s| only.is_none_or(|o| o == s.name)) {
            let svc_stats = stats.services.iter().find(|x| x.name == s.name);
            for b in &s.backends {
                let key = BackendKey { service: s.name.clone(), addr: b.addr, port: b.port };
                let traffic = svc_stats
                    .and_then(|x| {
                        x.backends.iter().find(|y| y.addr == b.addr.to_string() && y.port == b.port)
                    })
                    .map(|y| y.traffic.clone())
                    .unwrap_or_default();
                rows.push(self.health.row(&key, s, b, &traffic));
            }
        }
        Response::ok(serde_json::Value::Array(rows))
    }

    /// Whether the config file, as the next image will read it, can take
    /// over from this one: it must load and fit the host, and (unless
    /// `force`) keep the worker count and table size the flow state has.
    fn restart_check(&self, force: bool) -> Result<(), RestartRefused> {
        if self.node.stopping {
            return Err(RestartRefused::Stopping);
        }
        let next = Config::load(&self.config.path)?;
        crate::pipeline::registry::check(&next)?;
        next.check_host()?;
        if self.config.state_dir.is_some() && !force {
            let (was, now) = (self.config.workers.len(), next.workers.len());
            if was != now {
                return Err(RestartRefused::WorkerCount { was, now });
            }
            let (was, now) = (self.config.conntrack.entries_per_worker, next.conntrack.entries_per_worker);
            if was != now {
                return Err(RestartRefused::TableSize { was, now });
            }
        }
        Ok(())
    }

    fn node_status(&self) -> Response {
        let vips = super::announce::vips(&self.config, &self.health, self.node);
        Response::ok(serde_json::json!({
            "drained": self.node.drained,
            "stopping": self.node.stopping,
            "generation": self.generation,
            "instance": self.instance,
            "build": crate::BUILD,
            "vips": vips,
        }))
    }

    fn service_list(&self) -> Response {
        let rows: Vec<serde_json::Value> = self
            .config
            .services
            .iter()
            .map(|s| {
                let keys = s.backends.iter().map(|b| BackendKey {
                    service: s.name.clone(),
                    addr: b.addr,
                    port: b.port,
                });
                let up = keys
                    .clone()
                    .filter(|k| self.health.get(k).is_some_and(|x| x.checker.health == Health::Up));
                let in_table = keys.filter(|k| self.health.admission(k) == Some(Admission::In)).count();
                let up = up.count();
                serde_json::json!({
                    "name": s.name,
                    "vip": s.vip.to_string(),
                    "port": s.port,
                    "protocol": if s.protocol == 6 { "tcp" } else { "udp" },
                    "pipeline": self.config.pipelines[s.pipeline].name,
                    "check": s.health.kind.name(),
                    "backends_up": up,
                    "backends_total": s.backends.len(),
                    "backends_in_table": in_table,
                    "panic": self.health.panicking(&s.name),
                })
            })
            .collect();
        Response::ok(serde_json::Value::Array(rows))
    }
}

/// A config error in text built from a request: its line numbers are of
/// that text, not of any file, so name the request and the key instead.
pub(super) fn in_request(verb: &'static str, e: ConfigError) -> ChangeError {
    match e {
        ConfigError::At(l) => ChangeError::Request { verb, key: l.key, message: l.message },
        other => other.into(),
    }
}

fn verb(req: &Request) -> &'static str {
    match req {
        Request::BackendAdd { .. } => "backend.add",
        Request::BackendRemove { .. } => "backend.remove",
        Request::BackendDrain { .. } => "backend.drain",
        Request::BackendWeight { .. } => "backend.weight",
        Request::ServiceAdd { .. } => "service.add",
        Request::ServiceRemove { .. } => "service.remove",
        _ => "control",
    }
}

/// A change request in words, for the log and the reply.
fn describe(req: &Request) -> String {
    let ep = |addr: &str, port: u16| match addr.parse() {
        Ok(ip) => endpoint(ip, port),
        Err(_) => format!("{addr}:{port}"),
    };
    match req {
        Request::BackendAdd { service, addr, port, weight, .. } => {
            format!("service {service}: backend {} added (weight {weight})", ep(addr, *port))
        }
        Request::BackendRemove { service, addr, port } => {
            format!("service {service}: backend {} removed", ep(addr, *port))
        }
        Request::BackendDrain { service, addr, port } => {
            format!("service {service}: backend {} draining", ep(addr, *port))
        }
        Request::BackendDisable { service, addr, port } => {
            format!("service {service}: backend {} disabled", ep(addr, *port))
        }
        Request::BackendEnable { service, addr, port } => {
            format!("service {service}: backend {} enabled", ep(addr, *port))
        }
        Request::BackendWeight { service, addr, port, weight } => {
            format!("service {service}: backend {} weight {weight}", ep(addr, *port))
        }
        Request::ServiceAdd { service } => {
            format!("service {} added", service.get("name").and_then(|n| n.as_str()).unwrap_or("(unnamed)"))
        }
        Request::ServiceRemove { name } => format!("service {name} removed"),
        _ => "(no change)".into(),
    }
}

/// What differs between two configs' services, in words.
pub(crate) fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for s in &old.services {
        if !new.services.iter().any(|n| n.name == s.name) {
            out.push(format!("service {} removed", s.name));
        }
    }
    for n in &new.services {
        let Some(s) = old.services.iter().find(|s| s.name == n.name) else {
            out.push(format!("service {} added ({} backends)", n.name, n.backends.len()));
            continue;
        };
        if (s.vip, s.port, s.protocol) != (n.vip, n.port, n.protocol) {
            out.push(format!("service {}: now {}", n.name, endpoint(n.vip, n.port)));
        }
        if s.snat_pool != n.snat_pool {
            out.push(format!("service {}: snat_pool changed", n.name));
        }
        for b in &s.backends {
            if !n.backends.iter().any(|x| (x.addr, x.port) == (b.addr, b.port)) {
                out.push(format!("service {}: backend {} removed", n.name, endpoint(b.addr, b.port)));
            }
        }
        for b in &n.backends {
            match s.backends.iter().find(|x| (x.addr, x.port) == (b.addr, b.port)) {
                None => out.push(format!(
                    "service {}: backend {} added (weight {})",
                    n.name,
                    endpoint(b.addr, b.port),
                    b.weight
                )),
                Some(x) if x.weight != b.weight => out.push(format!(
                    "service {}: backend {} weight {} -> {}",
                    n.name,
                    endpoint(b.addr, b.port),
                    x.weight,
                    b.weight
                )),
                Some(x) if x.mac != b.mac => {
                    out.push(format!("service {}: backend {} mac changed", n.name, endpoint(b.addr, b.port)))
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// The file's config with the control socket's changes applied again
/// in order. A change the file now contradicts (its backend is already
/// there, its service is gone) is dropped and reported; the rest are
/// kept. `report` gets (kept, line) per change.
fn replay_runtime(
    file: Config,
    runtime: &mut Vec<(Request, String)>,
    report: &mut Vec<(bool, String)>,
) -> Config {
    let mut config = file;
    runtime.retain(|(change, what)| {
        let next = edit::apply(config.text(), change)
            .map_err(ChangeError::Edit)
            .and_then(|text| Ok(Config::parse(&config.path, &text)?));
        match next {
            Ok(c) => {
                config = c;
                report.push((true, format!("runtime change: {what}")));
                true
            }
            Err(e) => {
                report.push((false, format!("runtime change dropped ({}): {what}", super::chain(&e))));
                false
            }
        }
    });
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_service_and_backend_change() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let p = std::path::Path::new("config.toml");
        let old = Config::parse(p, &text).unwrap();
        let edited = text
            .replace(
                r#"{ addr = "10.0.2.13", port = 80, weight = 100 }"#,
                r#"{ addr = "10.0.2.13", port = 80, weight = 0 }"#,
            )
            .replace(r#"  { addr = "fd00:2::12", port = 80, weight = 100 },"#, "");
        let new = Config::parse(p, &edited).unwrap();
        let d = diff(&old, &new);
        assert!(d.iter().any(|c| c.ends_with("backend 10.0.2.13:80 weight 100 -> 0")), "{d:?}");
        assert!(d.iter().any(|c| c.ends_with("backend [fd00:2::12]:80 removed")), "{d:?}");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(diff(&old, &old).is_empty());
    }

    /// A reload re-reads the file: changes made over the control socket
    /// are applied again on top of it, unless the file now contradicts
    /// them (then they are dropped and reported), so a reload never
    /// silently undoes them.
    #[test]
    fn runtime_changes_survive_a_reload_unless_the_file_contradicts_them() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let p = std::path::Path::new("config.toml");
        let file = Config::parse(p, &text).unwrap();
        let svc = file.services[0].name.clone();
        let b = file.services[0].backends[0].clone();
        let weight = Request::BackendWeight {
            service: svc.clone(),
            addr: b.addr.to_string(),
            port: b.port,
            weight: 7,
        };
        let add =
            Request::BackendAdd { service: svc, addr: "10.0.2.99".into(), port: 80, weight: 100, mac: None };
        let mut runtime = vec![(weight, "weight".to_string()), (add.clone(), "add".to_string())];
        let mut report = Vec::new();
        let c = replay_runtime(file, &mut runtime, &mut report);
        assert_eq!(c.services[0].backends[0].weight, 7);
        assert!(c.services[0].backends.iter().any(|x| x.addr.to_string() == "10.0.2.99"));
        assert_eq!(runtime.len(), 2);
        assert!(report.iter().all(|(kept, _)| *kept), "{report:?}");

        // The operator wrote the added backend into the file: the add is
        // dropped and said so; the weight change stays.
        let edited = edit::apply(&text, &add).unwrap();
        let mut report = Vec::new();
        let c = replay_runtime(Config::parse(p, &edited).unwrap(), &mut runtime, &mut report);
        assert_eq!(runtime.len(), 1);
        assert!(
            report.iter().any(|(kept, l)| !kept && l.contains("dropped") && l.ends_with(": add")),
            "{report:?}"
        );
        assert_eq!(c.services[0].backends[0].weight, 7);
        assert_eq!(c.services[0].backends.iter().filter(|x| x.addr.to_string() == "10.0.2.99").count(), 1);
    }
}
