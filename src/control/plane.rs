//! The running control plane: the config in force, the services snapshot
//! the workers read, and the housekeeping loop that serves the control
//! socket, reloads, histogram collection and counter refreshes until a
//! signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::health::HealthPlane;
use super::notify::Notifier;
use super::requests::Caller;
use super::snapshot::build_services;
use super::{Request, Server, SocketError};
use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneError, Summary};
use crate::pipeline::services::{IdRegistry, Services, ServicesError};
use crate::telemetry::prometheus::MetricsError;
use crate::xdp::Inherited;

/// How often the housekeeping thread wakes: control requests, signals,
/// histogram rotation.
const TICK: Duration = Duration::from_millis(50);

/// Everything the housekeeping thread owns while the dataplane runs.
pub(super) struct Running {
    pub(super) config: Config,
    /// The snapshot workers swap in at batch boundaries.
    pub(super) services: Arc<ArcSwap<Services>>,
    /// Stable service/backend ids across snapshots (counters keep meaning).
    pub(super) ids: IdRegistry,
    pub(super) generation: u64,
    pub(super) dp: Dataplane,
    /// Backend health and admin state; survives reloads.
    pub(super) health: HealthPlane,
    pub(super) notify: Notifier,
    /// Changes made over the control socket, in order, replayed over the
    /// file's text on every reload so a reload does not undo them.
    pub(super) runtime: Vec<(Request, String)>,
    /// Drained or stopping: what the VIP announcements follow.
    pub(super) node: super::announce::NodeState,
    /// Tells this image from the next one after a planned restart (same pid).
    pub(super) instance: u64,
    /// A planned restart was asked for: hand over instead of stopping.
    pub(super) restart: bool,
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket could not be bound (or another Shunt holds it).
    #[error("control socket (set [telemetry] control_socket = \"\" to disable)")]
    Socket(#[source] SocketError),
    /// The health prober's thread or sockets could not be set up.
    #[error("starting the health prober")]
    Health(#[source] std::io::Error),
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// How [`run`] ended.
pub struct Ended {
    pub summary: Summary,
    /// On a planned restart, the XDP links for the next image (still
    /// attached, dropping our packets until it takes them over).
    pub handover: Option<Vec<Inherited>>,
}

/// Runs the dataplane until `stop` is set; `reload` (SIGHUP) re-reads the
/// config file and publishes its services to the workers. With a
/// `[node] stop_drain`, `stop` first withdraws every VIP and keeps serving
/// that long, so the router moves new flows away before the XDP program
/// goes. `inherited` are the XDP links a previous image handed over.
pub fn run(
    config: &Config,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    inherited: Vec<Inherited>,
) -> Result<Ended, ControlError> {
    let signalled = stop;
    // What the workers and the metrics thread stop on: set after the drain.
    let stop = Arc::new(AtomicBool::new(false));
    // The control socket first: a second instance with this config stops
    // here, naming the first one's pid, before touching any queue.
    let mut server = match &config.telemetry.control_socket {
        Some(path) => Some(
            Server::bind(path, config.telemetry.control_group.as_deref()).map_err(ControlError::Socket)?,
        ),
        None => None,
    };
    crate::state::gap::mark("control socket bound");
    // Ids and the snapshot generation carry over with the flows that
    // store them (`crate::state`).
    let state = config.state_dir.as_ref().map(crate::state::StateDir::new);
    let (mut ids, last_generation) = state.as_ref().map(|s| s.load_ids()).unwrap_or_default();
    let generation = last_generation + 1;
    let mut health = HealthPlane::new(config, true).map_err(ControlError::Health)?;
    let services =
        Arc::new(ArcSwap::from_pointee(build_services(config, generation, &mut ids, &mut health)?));
    if let Some(s) = &state {
        s.save_ids(&ids, generation);
    }
    crate::state::gap::mark("services built, neighbours resolved");
    let mut saved_generation = generation;
    let dp = Dataplane::start(config, services.clone(), stop.clone(), inherited)?;
    let notify = Notifier::from_env();
    let mut running = Running {
        config: config.clone(),
        services,
        ids,
        generation,
        dp,
        health,
        notify,
        runtime: Vec::new(),
        node: Default::default(),
        instance: crate::sys::monotonic_ns(),
        restart: false,
    };
    if let Some(s) = &server {
        tracing::info!(path = %s.path().display(), "control socket listening");
    }
    // Setup is done. The housekeeping thread keeps CAP_BPF for map updates
    // and counter reads on reload (bpf(2) refuses unprivileged callers when
    // kernel.unprivileged_bpf_disabled is set) and CAP_NET_RAW to solicit
    // neighbours of new backends; what a re-executed image needs to start
    // (`shunt restart`) stays permitted but not effective; the rest goes.
    match crate::sys::drop_capabilities_keeping(
        &[crate::sys::CAP_BPF_BIT, crate::sys::CAP_NET_RAW_BIT],
        &crate::sys::RESTART_CAPS,
    ) {
        Ok(()) => tracing::info!("dropped capabilities: CAP_BPF and CAP_NET_RAW effective on the housekeeping thread (the restart set permitted), none on workers"),
        Err(e) => tracing::warn!(error = %e, "could not drop capabilities"),
    }
    let latency = Arc::new(crate::telemetry::prometheus::LatencyShare::default());
    let metrics = match config.telemetry.prometheus {
        Some(addr) => {
            let health = running.health.metrics.clone();
            let h = crate::telemetry::prometheus::spawn_with(
                &addr.to_string(),
                running.dp.shared.clone(),
                latency.clone(),
                stop.clone(),
                |r| health.register(r),
            )?;
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            Some(h)
        }
        None => None,
    };
    let (workers, interfaces) = running.dp.size();
    eprintln!("shunt: running {workers} worker(s) on {interfaces} interface(s); Ctrl-C to stop");
    // XDP attached, sockets bound, workers polling: ready for systemd.
    running.notify.ready();
    let mut progress = running.dp.progress();

    let mut last_summary = Instant::now();
    let mut last_xdp = Instant::now();
    let mut drain_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if signalled.load(Ordering::Relaxed) {
            let drain = running.config.node.stop_drain;
            match drain_until {
                None if !drain.is_zero() => {
                    running.node.stopping = true;
                    drain_until = Some(Instant::now() + drain);
                    tracing::info!(
                        "stopping: every VIP withdrawn, serving for {}s before detaching",
                        drain.as_secs()
                    );
                }
                Some(until) if Instant::now() < until => {}
                _ => break,
            }
        }
        match &mut server {
            Some(s) => s.serve(TICK, |req, peer| running.handle(req, peer)),
            None => std::thread::sleep(TICK),
        }
        if running.restart {
            break;
        }
        if reload.swap(false, Ordering::Relaxed) {
            let _ = running.reload(Caller::Signal);
        }
        if running.health.poll() {
            running.republish();
        }
        if let Some(s) = state.as_ref().filter(|_| running.generation != saved_generation) {
            saved_generation = running.generation;
            s.save_ids(&running.ids, saved_generation);
        }
        running.dp.collect_histograms();
        if last_xdp.elapsed() >= Duration::from_secs(1) {
            last_xdp = Instant::now();
            running.dp.refresh_xdp();
            if metrics.is_some() {
                latency.publish(&running.dp.report().merged().hists.latency);
            }
        }
        // Every worker hands a histogram over per loop pass: one whose
        // count stopped rising is stuck, and the watchdog goes unfed.
        running.notify.watchdog(|| {
            let now = running.dp.progress();
            let moving = now.iter().zip(&progress).all(|(n, p)| n > p);
            progress = now;
            moving
        });
        if running.dp.worker_exited() && !stop.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            tracing::error!("a worker thread exited unexpectedly; shutting down");
        }
        let every = running.config.summary_interval;
        if every > 0 && last_summary.elapsed() >= Duration::from_secs(every) {
            last_summary = Instant::now();
            let s = running.dp.shared.snapshot();
            eprintln!(
                "shunt: rx {} tx {} drops {}",
                s.total("rx_packets"),
                s.total("tx_packets"),
                running.dp.total_drops()
            );
        }
    }
    if running.restart {
        // The next image's UMEMs, faulted in and zeroed while ours still
        // serve: the next image only maps them.
        let dp = &running.config.dataplane;
        crate::xsk::umem::prepare_next(
            running.config.workers.len(),
            dp.frames_per_worker as usize * dp.frame_size as usize,
            dp.hugepages,
        );
        // From here until the next image attaches, our packets are dropped,
        // not passed: the kernel would answer flows it does not know with RST.
        if let Err(e) = running.dp.prepare_handover() {
            tracing::warn!(error = %super::chain(&e), "packets of ours will reach the kernel during the restart");
        }
        running.notify.reloading();
        crate::state::gap::start();
    } else {
        running.notify.stopping();
    }
    stop.store(true, Ordering::Relaxed);
    drop(server);
    let (summary, handover) = if running.restart {
        let (summary, links) = running.dp.hand_over();
        crate::state::gap::mark("old workers stopped, latency report written");
        (summary, Some(links))
    } else {
        (running.dp.shutdown(), None)
    };
    if handover.is_some() {
        // The metrics server and the health prober end with this image at
        // execve; joining them would wait out their poll intervals (150 ms
        // and more measured) while our packets are dropped.
        drop(metrics);
        std::mem::forget(running.health);
    } else if let Some(h) = metrics {
        let _ = h.join();
    }
    Ok(Ended { summary, handover })
}
