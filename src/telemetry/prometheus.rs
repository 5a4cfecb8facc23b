//! Prometheus text exposition (prometheus-client's encoder) on an optional
//! HTTP address, served by its own thread from the shared counters.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::{endpoint_str, Shared};

struct ShuntCollector(Arc<Shared>, Arc<LatencyShare>);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `[telemetry] prometheus` is not an address and port.
    #[error("Prometheus address `{addr}`")]
    Address {
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// The address is taken, or not ours.
    #[error("binding the Prometheus listener on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The listener's poll could not be set up.
    #[error("polling the Prometheus listener on {addr}")]
    Poll {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The OS refused the metrics thread.
    #[error("spawning the metrics thread")]
    Spawn(#[source] std::io::Error),
}

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
        let mut be: [Vec<(Labels, u64)>; 4] = Default::default();
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
                be[3].push((l.clone(), b.traffic.tx_failed));
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
        counter(
            &mut e,
            "shunt_backend_tx_failed",
            "packets toward the backend that failed to leave (no next-hop MAC, link down, TX ring full, over the MTU)",
            &be[3],
        )?;

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
///
/// One thread, non-blocking sockets on one mio poll: at most
/// `MAX_SCRAPERS` connections, each with a deadline, no thread per
/// connection. When the limit is reached the rest wait in the listen
/// backlog; when accept fails (EMFILE and the like) the failure is logged
/// and accepting resumes on the next pass.
pub fn spawn_with(
    addr: &str,
    shared: Arc<Shared>,
    latency: Arc<LatencyShare>,
    stop: Arc<AtomicBool>,
    register: impl FnOnce(&mut Registry),
) -> Result<std::thread::JoinHandle<()>, MetricsError> {
    let sockaddr: std::net::SocketAddr =
        addr.parse().map_err(|source| MetricsError::Address { addr: addr.to_string(), source })?;
    let listener = mio::net::TcpListener::bind(sockaddr)
        .map_err(|source| MetricsError::Bind { addr: addr.to_string(), source })?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ShuntCollector(shared, latency)));
    register(&mut registry);
    let mut server = http::Server::new(listener)
        .map_err(|source| MetricsError::Poll { addr: addr.to_string(), source })?;
    let handle = std::thread::Builder::new().name("shunt-metrics".into()).spawn(move || {
        // Bound already: serving needs no privilege.
        let _ = crate::sys::drop_capabilities(&[]);
        while !stop.load(Ordering::Relaxed) {
            server.serve(Duration::from_millis(200), |method, path| respond(&registry, method, path));
        }
    });
    handle.map_err(MetricsError::Spawn)
}

/// The reply to one request: status line, extra headers, body.
fn respond(registry: &Registry, method: &str, path: &str) -> http::Reply {
    let path = path.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return http::Reply::new("404 Not Found", "", "not found: try /metrics\n".into());
    }
    if method != "GET" && method != "HEAD" {
        return http::Reply::new(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => {
            let mut r = http::Reply::new(
                "200 OK",
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n",
                body,
            );
            r.head_only = method == "HEAD";
            r
        }
        Err(_) => http::Reply::new("500 Internal Server Error", "", "encoding failed\n".into()),
    }
}

/// A minimal HTTP/1.x server for scrapes: one request per connection,
/// `Connection: close`.
mod http {
    use std::io::{ErrorKind, Read};
    use std::time::{Duration, Instant};

    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};

    use crate::sys::nonblock::{self, Answer, Connection, DrainLimits, Next};

    /// Scrapers connected at once; more wait in the listen backlog.
    pub const MAX_SCRAPERS: usize = 64;
    /// Time a connection has to send its request head, and to take the reply.
    const DEADLINE: Duration = Duration::from_secs(5);
    /// Longest request head read; a longer one gets 431.
    const MAX_HEAD: usize = 8 * 1024;
    /// Whatever a client sends after its request is discarded, 64 KiB per
    /// pass (one request per connection) until it closes or its deadline.
    const DRAIN: DrainLimits = DrainLimits { per_pass: 64 * 1024, total: usize::MAX };
    const LISTENER: Token = Token(usize::MAX);

    pub struct Reply {
        status: &'static str,
        headers: &'static str,
        body: String,
        pub head_only: bool,
    }

    impl Reply {
        pub fn new(status: &'static str, headers: &'static str, body: String) -> Reply {
            Reply { status, headers, body, head_only: false }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = format!(
                "HTTP/1.1 {}\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.status,
                self.headers,
                self.body.len()
            )
            .into_bytes();
            if !self.head_only {
                out.extend_from_slice(self.body.as_bytes());
            }
            out
        }
    }

    enum Phase {
        Head,
        /// Sending the reply, then draining what the client still sends.
        Answering(Answer),
    }

    struct Conn {
        stream: TcpStream,
        phase: Phase,
        head: Vec<u8>,
        deadline: Instant,
    }

    impl Connection for Conn {
        type Stream = TcpStream;

        fn socket_and_deadline(&mut self) -> (&mut TcpStream, Instant) {
            (&mut self.stream, self.deadline)
        }
    }

    pub struct Server {
        poll: Poll,
        events: Events,
        listener: TcpListener,
        conns: Vec<Option<Conn>>,
        accept_errors: u64,
        last_log: Option<Instant>,
    }

    impl Server {
        pub fn new(mut listener: TcpListener) -> std::io::Result<Server> {
            let poll = Poll::new()?;
            poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
            Ok(Server {
                poll,
                events: Events::with_capacity(256),
                listener,
                conns: (0..MAX_SCRAPERS).map(|_| None).collect(),
                accept_errors: 0,
                last_log: None,
            })
        }

        /// Waits up to `timeout`, serves what is ready, closes connections
        /// past their deadline.
        pub fn serve(&mut self, timeout: Duration, mut respond: impl FnMut(&str, &str) -> Reply) {
            if self.poll.poll(&mut self.events, Some(timeout)).is_err() {
                return;
            }
            let mut ready: Vec<usize> =
                self.events.iter().map(|e| e.token().0).filter(|t| *t != LISTENER.0).collect();
            // Accept on every pass: after EMFILE or a full table the
            // listener raises no new edge for connections already queued.
            ready.extend(self.accept());
            for i in ready {
                self.progress(i, &mut respond);
            }
            nonblock::expire(&mut self.conns, self.poll.registry(), Instant::now(), |_| {});
        }

        /// Accepts while there is room; returns the new slots.
        fn accept(&mut self) -> Vec<usize> {
            let mut new = Vec::new();
            while let Some(slot) = self.conns.iter().position(Option::is_none) {
                let mut stream = match self.listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.accept_errors += 1;
                        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            tracing::warn!(
                                error = %e,
                                failures = self.accept_errors,
                                "Prometheus listener cannot accept; retrying"
                            );
                            self.last_log = Some(Instant::now());
                            self.accept_errors = 0;
                        }
                        break;
                    }
                };
                if self
                    .poll
                    .registry()
                    .register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    continue;
                }
                self.conns[slot] = Some(Conn {
                    stream,
                    phase: Phase::Head,
                    head: Vec::new(),
                    deadline: Instant::now() + DEADLINE,
                });
                new.push(slot);
            }
            new
        }

        fn progress(&mut self, i: usize, respond: &mut impl FnMut(&str, &str) -> Reply) {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
            let mut buf = [0u8; 4096];
            if matches!(c.phase, Phase::Head) {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => return self.close(i),
                        Ok(n) => {
                            c.head.extend_from_slice(&buf[..n]);
                            if c.head.windows(4).any(|w| w == b"\r\n\r\n")
                                || c.head.windows(2).any(|w| w == b"\n\n")
                            {
                                let head = String::from_utf8_lossy(&c.head);
                                let mut words = head.split_whitespace();
                                let reply = match (words.next(), words.next()) {
                                    (Some(method), Some(path)) => respond(method, path),
                                    _ => Reply::new("400 Bad Request", "", "bad request\n".into()),
                                };
                                c.phase = Phase::Answering(Answer::new(reply.bytes()));
                                c.deadline = Instant::now() + DEADLINE;
                                break;
                            }
                            if c.head.len() > MAX_HEAD {
                                let reply =
                                    Reply::new("431 Request Header Fields Too Large", "", String::new());
                                c.phase = Phase::Answering(Answer::new(reply.bytes()));
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return self.close(i),
                    }
                }
            }
            if let Phase::Answering(answer) = &mut c.phase {
                // A spent budget waits for the next event or the deadline.
                if answer.progress(&mut c.stream, DRAIN) == Next::Close {
                    self.close(i);
                }
            }
        }

        fn close(&mut self, i: usize) {
            nonblock::close(&mut self.conns, i, self.poll.registry());
        }
    }
}
