//! The housekeeping thread's answers to control requests and reloads. Every
//! change becomes new config text and goes through `Config::parse`: the
//! control socket, SIGHUP and the file share one validation path. Each
//! change and reload is logged once, saying what changed and who asked.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::plane::Running;
use super::snapshot::build_services;
use super::socket::Peer;
use super::{edit, Request, Response};
use crate::config::{Config, ConfigError};
use crate::telemetry::stats::endpoint;

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
                Ok(changes) => Response::ok(serde_json::json!({
                    "generation": self.generation,
                    "changes": changes,
                })),
                Err(e) => Response::err(e),
            },
            change => {
                let what = describe(&change);
                let verb = verb(&change);
                let result = edit::apply(self.config.text(), &change)
                    .map_err(anyhow::Error::msg)
                    .and_then(|text| Config::parse(&self.config.path, &text).map_err(|e| in_request(verb, e)))
                    .and_then(|new| self.apply(new));
                match result {
                    Ok(()) => {
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
    /// and counts it for Prometheus. Returns what changed.
    pub(crate) fn reload(&mut self, caller: Caller) -> Result<Vec<String>, String> {
        self.notify.reloading();
        let old = self.config.clone();
        let result =
            Config::load(&self.config.path).map_err(anyhow::Error::from).and_then(|new| self.apply(new));
        self.notify.ready();
        let (uid, pid, via) = match caller {
            Caller::Signal => (0, 0, "SIGHUP"),
            Caller::Socket(p) => (p.uid, p.pid, "control socket"),
        };
        let path = self.config.path.display().to_string();
        match result {
            Ok(()) => {
                crate::telemetry::prometheus::count_reload(true);
                let changes = diff(&old, &self.config);
                let summary = if changes.is_empty() { "no change".to_string() } else { changes.join("; ") };
                tracing::info!(
                    uid,
                    pid,
                    via,
                    path,
                    generation = self.generation,
                    "config reloaded: {summary}"
                );
                Ok(changes)
            }
            Err(e) => {
                crate::telemetry::prometheus::count_reload(false);
                let e = super::chain(&e);
                tracing::error!(uid, pid, via, path, "config reload failed, running config kept: {e}");
                Err(e)
            }
        }
    }

    /// Applies what can change live (services, backends, weights, SNAT
    /// pools); refuses changes to interfaces, workers, pipelines, routes or
    /// `[dataplane]`, which need a restart.
    fn apply(&mut self, new: Config) -> Result<()> {
        if new.restart_fields() != self.config.restart_fields() {
            bail!("interfaces, workers, pipelines, routes or [dataplane] changed: restart Shunt to apply");
        }
        if new.conntrack != self.config.conntrack || new.telemetry != self.config.telemetry {
            tracing::warn!("[conntrack] and [telemetry] changes apply at the next restart");
        }
        let generation = self.generation + 1;
        let snapshot = build_services(&new, generation, &mut self.ids)?;
        // Redirect new VIPs and pools before workers know them; stop
        // redirecting old ones after. Either order only ever passes packets
        // to the kernel, never misroutes them.
        self.dp.sync_maps(&new, false)?;
        self.services.store(Arc::new(snapshot));
        self.dp.sync_maps(&new, true)?;
        self.generation = generation;
        self.config = new;
        Ok(())
    }
}

/// A config error in text built from a request: its line numbers are of
/// that text, not of any file, so name the request and the key instead.
fn in_request(verb: &str, e: ConfigError) -> anyhow::Error {
    match e {
        ConfigError::At(l) => match l.key {
            Some(key) => anyhow::anyhow!("{verb} request: key `{key}`: {}", l.message),
            None => anyhow::anyhow!("{verb} request: {}", l.message),
        },
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
            format!("service {service}: backend {} draining (weight 0)", ep(addr, *port))
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
}
