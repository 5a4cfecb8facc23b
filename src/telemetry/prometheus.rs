//! Prometheus text exposition (prometheus-client's encoder) on an optional
//! HTTP address, served by its own thread from the shared counters.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::{endpoint_str, Shared};

struct ShuntCollector(Arc<Shared>, Arc<LatencyShare>);

/// Reloads (SIGHUP or `shunt reload`) that succeeded and failed, for
/// `shunt_config_reloads_total{result}`; one control plane per process.
static RELOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

pub fn count_reload(ok: bool) {
    RELOADS[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// Upper bounds of the latency histogram buckets, in seconds (1 µs … 1 s).
const LATENCY_BOUNDS: [f64; 19] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5,
    1.0,
];

/// The merged RX→TX latency, bucketed by the housekeeping thread (which
/// owns the histograms) for the metrics thread.
#[derive(Default)]
pub struct LatencyShare(Mutex<Option<Bucketed>>);

#[derive(Clone)]
struct Bucketed {
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl LatencyShare {
    /// Buckets `h` (nanoseconds) and publishes it.
    pub fn publish(&self, h: &hdrhistogram::Histogram<u64>) {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().map(|b| (*b, 0)).collect();
        buckets.push((f64::MAX, 0));
        let mut sum = 0.0;
        for v in h.iter_recorded() {
            let secs = v.value_iterated_to() as f64 / 1e9;
            let n = v.count_at_value();
            sum += secs * n as f64;
            let i = LATENCY_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BOUNDS.len());
            buckets[i].1 += n;
        }
        if let Ok(mut g) = self.0.lock() {
            *g = Some(Bucketed { sum, count: h.len(), buckets });
        }
    }
}

impl fmt::Debug for ShuntCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShuntCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, u64)]) -> fmt::Result {
    let mut d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, i64)]) -> fmt::Result {
    let mut d = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ShuntCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = self.0.snapshot();
        {
            let mut d = e.encode_descriptor(
                "shunt_build",
                "version, git commit and build date",
                None,
                MetricType::Info,
            )?;
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("SHUNT_GIT_COMMIT")),
                ("build_date", env!("SHUNT_BUILD_DATE")),
            ];
            d.encode_info(&labels)?;
        }
        let reloads = [
            (vec![("result", "success".to_string())], RELOADS[0].load(Ordering::Relaxed)),
            (vec![("result", "failure".to_string())], RELOADS[1].load(Ordering::Relaxed)),
        ];
        counter(
            &mut e,
            "shunt_config_reloads",
            "config reloads (SIGHUP or shunt reload), by result",
            &reloads,
        )?;
        if let Some(h) = self.1 .0.lock().ok().and_then(|g| g.clone()) {
            let mut d = e.encode_descriptor(
                "shunt_latency_seconds",
                "RX to TX-submit time per forwarded packet, all workers",
                None,
                MetricType::Histogram,
            )?;
            d.encode_histogram::<()>(h.sum, h.count, &h.buckets, None)?;
        }
        // Worker counters: one family per counter name; drop reasons share one.
        let names: Vec<String> = snap
            .workers
            .first()
            .map(|w| w.counters.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        let reasons: Vec<&str> = crate::pipeline::DropReason::ALL.iter().map(|r| r.name()).collect();
        let is_detail = |n: &str| n.contains('/');
        for name in names.iter().filter(|n| !reasons.contains(&n.as_str()) && !is_detail(n)) {
            let rows: Vec<(Labels, u64)> = snap
                .workers
                .iter()
                .map(|w| {
                    let v = w.counters.iter().find(|(k, _)| k == name).map_or(0, |x| x.1);
                    (vec![("worker", w.worker.to_string())], v)
                })
                .collect();
            counter(&mut e, &format!("shunt_worker_{name}"), "per-worker dataplane counter", &rows)?;
        }
        for (i, name) in super::counters::FILL.iter().enumerate() {
            let rows: Vec<(Labels, i64)> = snap
                .workers
                .iter()
                .map(|w| (vec![("worker", w.worker.to_string())], w.gauges.get(i).map_or(0, |g| g.1 as i64)))
                .collect();
            gauge(&mut e, &format!("shunt_worker_{name}"), "table fill, per worker", &rows)?;
        }
        let mut drops = Vec::new();
        for w in &snap.workers {
            for (k, v) in w.counters.iter().filter(|(k, _)| reasons.contains(&k.as_str())) {
                drops.push((vec![("worker", w.worker.to_string()), ("reason", k.clone())], *v));
            }
        }
        counter(&mut e, "shunt_worker_drops", "packets dropped, by reason", &drops)?;
        let mut detail = Vec::new();
        for w in &snap.workers {
            for (k, v) in &w.counters {
                if let Some((reason, d)) = k.split_once('/') {
                    let labels = vec![
                        ("worker", w.worker.to_string()),
                        ("reason", reason.to_string()),
                        ("detail", d.to_string()),
                    ];
                    detail.push((labels, *v));
                }
            }
        }
        counter(
            &mut e,
            "shunt_worker_drop_detail",
            "malformed and untranslatable drops, by the header check or translator rule that refused them",
            &detail,
        )?;

        let mut svc: [Vec<(Labels, u64)>; 3] = Default::default();
        let mut svc_active = Vec::new();
        let mut be: [Vec<(Labels, u64)>; 3] = Default::default();
        let mut be_active = Vec::new();
        for s in &snap.services {
            let l = vec![("service", s.name.clone())];
            svc[0].push((l.clone(), s.traffic.packets));
            svc[1].push((l.clone(), s.traffic.bytes));
            svc[2].push((l.clone(), s.traffic.new_flows));
            svc_active.push((l, s.traffic.active_flows));
            for b in &s.backends {
                let l = vec![("service", s.name.clone()), ("backend", endpoint_str(&b.addr, b.port))];
                be[0].push((l.clone(), b.traffic.packets));
                be[1].push((l.clone(), b.traffic.bytes));
                be[2].push((l.clone(), b.traffic.new_flows));
                be_active.push((l, b.traffic.active_flows));
            }
        }
        counter(&mut e, "shunt_service_packets", "packets of the service's flows", &svc[0])?;
        counter(&mut e, "shunt_service_bytes", "bytes of the service's flows", &svc[1])?;
        counter(&mut e, "shunt_service_new_flows", "flows created", &svc[2])?;
        gauge(&mut e, "shunt_service_active_flows", "flows alive in conntrack", &svc_active)?;
        counter(&mut e, "shunt_backend_packets", "packets of the backend's flows", &be[0])?;
        counter(&mut e, "shunt_backend_bytes", "bytes of the backend's flows", &be[1])?;
        counter(&mut e, "shunt_backend_new_flows", "flows created", &be[2])?;
        gauge(&mut e, "shunt_backend_active_flows", "flows alive in conntrack", &be_active)?;

        let xdp: Vec<(Labels, u64)> = snap
            .xdp
            .iter()
            .flat_map(|x| {
                x.counters
                    .iter()
                    .map(|(k, v)| (vec![("interface", x.interface.clone()), ("result", k.clone())], *v))
            })
            .collect();
        counter(&mut e, "shunt_xdp_packets", "XDP program verdicts, per interface", &xdp)?;
        let xsk: Vec<(Labels, u64)> = snap
            .sockets
            .iter()
            .flat_map(|s| {
                // An empty TX ring is the normal idle state, not a drop.
                s.counters.iter().filter(|(k, _)| k != "tx_ring_empty_descs").map(|(k, v)| {
                    let labels = vec![
                        ("worker", s.worker.to_string()),
                        ("interface", s.interface.clone()),
                        ("queue", s.queue.to_string()),
                        ("counter", k.clone()),
                    ];
                    (labels, *v)
                })
            })
            .collect();
        counter(
            &mut e,
            "shunt_xsk_drops",
            "AF_XDP socket drop counters from the kernel (XDP_STATISTICS)",
            &xsk,
        )?;
        let empty: Vec<(Labels, u64)> = snap
            .sockets
            .iter()
            .flat_map(|s| {
                s.counters.iter().filter(|(k, _)| k == "tx_ring_empty_descs").map(|(_, v)| {
                    let labels = vec![
                        ("worker", s.worker.to_string()),
                        ("interface", s.interface.clone()),
                        ("queue", s.queue.to_string()),
                    ];
                    (labels, *v)
                })
            })
            .collect();
        counter(
            &mut e,
            "shunt_xsk_tx_ring_empty",
            "times the kernel found a socket's TX ring empty (idle, not a drop)",
            &empty,
        )?;
        Ok(())
    }
}

/// Serves GET /metrics on `addr` until `stop` is set; other paths get 404,
/// other methods on /metrics 405. `register` adds metrics of other modules
/// (health).
pub fn spawn_with(
    addr: &str,
    shared: Arc<Shared>,
    latency: Arc<LatencyShare>,
    stop: Arc<AtomicBool>,
    register: impl FnOnce(&mut Registry),
) -> Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("binding the Prometheus listener on {addr}"))?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ShuntCollector(shared, latency)));
    register(&mut registry);
    let handle = std::thread::Builder::new().name("shunt-metrics".into()).spawn(move || {
        // Bound already: serving needs no privilege.
        let _ = crate::sys::drop_capabilities(&[]);
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
            let path = req.url().split('?').next().unwrap_or("");
            if path != "/metrics" {
                let _ = req.respond(
                    tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404),
                );
                continue;
            }
            if !matches!(req.method(), tiny_http::Method::Get | tiny_http::Method::Head) {
                let allow = tiny_http::Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..])
                    .expect("static header is valid");
                let _ = req.respond(
                    tiny_http::Response::from_string("method not allowed\n")
                        .with_status_code(405)
                        .with_header(allow),
                );
                continue;
            }
            let mut body = String::new();
            let resp = match prometheus_client::encoding::text::encode(&mut body, &registry) {
                Ok(()) => tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                    )
                    .expect("static header is valid"),
                ),
                Err(_) => tiny_http::Response::from_string("encoding failed").with_status_code(500),
            };
            let _ = req.respond(resp);
        }
    })?;
    Ok(handle)
}
