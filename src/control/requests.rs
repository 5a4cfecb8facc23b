//! The housekeeping thread's answers to control requests and reloads. Every
//! change becomes new config text and goes through `Config::parse`: the
//! control socket, SIGHUP and the file share one validation path.

use std::sync::Arc;

use anyhow::{bail, Result};

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
                Ok(()) => Response::ok(serde_json::json!({ "generation": self.generation })),
                Err(e) => Response::err(format!("{e:#}")),
            },
            change => {
                let result = edit::apply(self.config.text(), &change)
                    .map_err(anyhow::Error::msg)
                    .and_then(|text| Ok(Config::parse(&self.config.path, &text)?))
                    .and_then(|new| self.apply(new));
                match result {
                    Ok(()) => {
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
            Ok(()) => tracing::info!(
                path = %self.config.path.display(),
                services = self.config.services.len(),
                generation = self.generation,
                "config reloaded"
            ),
            Err(e) => tracing::error!("config reload failed, keeping the running config: {e:#}"),
        }
    }

    fn reload_from_file(&mut self) -> Result<()> {
        let new = Config::load(&self.config.path)?;
        self.apply(new)
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
