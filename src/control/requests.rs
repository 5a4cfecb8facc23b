//! The housekeeping thread's answers to control requests and reloads. Every
//! change becomes new config text and goes through `Config::parse`: the
//! control socket, SIGHUP and the file share one validation path.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::health::{Admin, Admission, BackendKey, Health, ReloadReport};
use super::plane::Running;
use super::snapshot::build_services;
use super::{edit, Request, Response};
use crate::config::Config;

impl Running {
    pub(crate) fn handle(&mut self, req: Request) -> Response {
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
            Request::Reload {} => match self.reload_from_file() {
                Ok(report) => Response::ok(serde_json::json!({
                    "generation": self.generation,
                    "kept": report.kept,
                    "changed": report.changed,
                })),
                Err(e) => Response::err(format!("{e:#}")),
            },
            Request::BackendDrain { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Draining)
            }
            Request::BackendDisable { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Disabled)
            }
            Request::BackendEnable { service, addr, port } => {
                self.set_admin(service, &addr, port, Admin::Enabled)
            }
            Request::BackendList { service } => self.backend_list(service.as_deref()),
            Request::ServiceList {} => self.service_list(),
            change => {
                let result = edit::apply(self.config.text(), &change)
                    .map_err(anyhow::Error::msg)
                    .and_then(|text| Ok(Config::parse(&self.config.path, &text)?))
                    .and_then(|new| self.apply(new));
                match result {
                    Ok(_) => {
                        tracing::info!(change = ?change, generation = self.generation, "control change applied");
                        Response::ok(serde_json::json!({ "generation": self.generation }))
                    }
                    Err(e) => Response::err(format!("change rejected, running config kept: {e:#}")),
                }
            }
        }
    }

    /// SIGHUP: re-read the file; log, never fail the process.
    pub(crate) fn reload_file(&mut self) {
        match self.reload_from_file() {
            Ok(report) => tracing::info!(
                path = %self.config.path.display(),
                services = self.config.services.len(),
                generation = self.generation,
                kept = ?report.kept,
                changed = ?report.changed,
                "config reloaded"
            ),
            Err(e) => tracing::error!("config reload failed, keeping the running config: {e:#}"),
        }
    }

    fn reload_from_file(&mut self) -> Result<ReloadReport> {
        let new = Config::load(&self.config.path)?;
        self.apply(new)
    }

    /// Applies what can change live (services, backends, weights, SNAT
    /// pools); refuses changes to interfaces, workers, pipelines, routes or
    /// `[dataplane]`, which need a restart.
    fn apply(&mut self, new: Config) -> Result<ReloadReport> {
        if new.restart_fields() != self.config.restart_fields() {
            bail!("interfaces, workers, pipelines, routes or [dataplane] changed: restart Shunt to apply");
        }
        if new.conntrack != self.config.conntrack || new.telemetry != self.config.telemetry {
            tracing::warn!("[conntrack] and [telemetry] changes apply at the next restart");
        }
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
            Err(e) => tracing::error!("rebuilding the services snapshot failed, keeping the old one: {e:#}"),
        }
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
