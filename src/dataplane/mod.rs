//! Bringing the dataplane up and down: start pinned workers, attach XDP,
//! register their sockets; later drain, detach, summarise and write the
//! latency report. The control plane (`crate::control`) owns a `Dataplane`
//! and drives it from the housekeeping thread.

#[allow(unsafe_code)] // eventfd wakeups between workers
pub mod handoff;
#[allow(unsafe_code)] // the UMEM view of each worker
mod setup;
#[allow(unsafe_code)] // vDSO clock and poll(2) while idle
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::pipeline::mtu::LinkMtus;
use crate::pipeline::registry::BuildError;
use crate::pipeline::services::Services;
use crate::telemetry::counters::{WorkerCounters, WorkerStats};
use crate::telemetry::latency::{self, Collector, Hists};
use crate::telemetry::report::{Report, WorkerHistograms};
use crate::telemetry::stats::{Shared, SocketSnap, WorkerShared};
use crate::xdp::maps::XdpCounter;
use crate::xdp::{Attached, Inherited, XdpError};
use crate::xsk::XskError;
use setup::{Bound, Ready, WorkerInit};

/// Why the dataplane could not start or update.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A worker thread could not be pinned to its core.
    #[error("pinning worker {worker} to core {core}")]
    Pin {
        worker: usize,
        core: usize,
        #[source]
        source: std::io::Error,
    },
    /// A worker's UMEM or sockets could not be set up.
    #[error("worker {worker}")]
    Xsk {
        worker: usize,
        #[source]
        source: XskError,
    },
    /// A worker's pipelines could not be built from the config (boxed:
    /// a config error with its file, line and key is large).
    #[error("worker {worker}: building its pipelines")]
    Pipelines {
        worker: usize,
        #[source]
        source: Box<BuildError>,
    },
    /// The OS refused a new thread.
    #[error("spawning worker thread")]
    Spawn(#[source] std::io::Error),
    /// A worker thread ended before reporting (it panicked).
    #[error("a worker exited during setup")]
    WorkerExited,
    /// The XDP program could not be attached, or a socket registered.
    #[error("interface {interface}")]
    Xdp {
        interface: String,
        #[source]
        source: Box<XdpError>,
    },
}

/// What a worker thread reports while it builds itself.
enum Setup {
    Bound(Bound),
    Ready(Ready),
}

/// Attaches `a` (its sockets registered) and says how.
fn attach(a: &mut Attached) -> Result<(), XdpError> {
    let how = match a.attach()? {
        crate::xdp::Attach::New => "XDP program attached (bpf_link)",
        crate::xdp::Attach::Replaced => "XDP program replaced on the inherited bpf_link",
        crate::xdp::Attach::Kept => {
            "XDP program kept on the inherited bpf_link (same build of it; its maps adopted)"
        }
    };
    tracing::info!(interface = %a.interface, mode = ?a.mode, "{how}");
    Ok(())
}

struct RunningWorker {
    core: usize,
    counters: Arc<WorkerCounters>,
    handle: JoinHandle<Option<Box<Hists>>>,
}

/// The running workers, their sockets and the attached XDP programs.
pub struct Dataplane {
    config: Config,
    attached: Vec<Attached>,
    workers: Vec<RunningWorker>,
    collectors: Vec<Collector>,
    /// Per worker: connection listings (`shunt conn list`).
    pub conns: Vec<crate::telemetry::conns::Dumper>,
    cores: Vec<usize>,
    /// (worker, interface, queue, fd) of every AF_XDP socket.
    sockets: Vec<(usize, String, u32, i32)>,
    /// Every interface's MTU as workers read it.
    mtus: Arc<LinkMtus>,
    pub shared: Arc<Shared>,
    started: Instant,
}

impl Dataplane {
    /// Starts one pinned worker per `[[worker]]` on `services`, binds their
    /// sockets, then attaches XDP, taking over the `inherited` links of a
    /// planned restart. On error every started worker is told to stop
    /// through `stop`.
    pub fn start(
        config: &Config,
        services: Arc<ArcSwap<Services>>,
        stop: Arc<AtomicBool>,
        mut inherited: Vec<Inherited>,
    ) -> Result<Dataplane, DataplaneError> {
        // Per interface: programs, then every socket in the XSKMAP, then
        // attach; so a new link never passes our packets to the kernel, and
        // an inherited link goes from the old program (which drops them
        // meanwhile) straight to a full one. A socket is registered as soon
        // as it is bound, its fill ring primed, before its worker has
        // restored its flows: what it receives meanwhile waits in its RX
        // ring, and the worker loop, which starts after the restore,
        // processes it against the restored state.
        let (setup_tx, setup_rx) = mpsc::channel::<Result<Setup, DataplaneError>>();
        let go = Arc::new(AtomicBool::new(false));
        let mesh = Arc::new(handoff::Mesh::new(config.workers.len()));
        let mut workers = Vec::new();
        let mut collectors = Vec::new();
        let mut conns = Vec::new();
        let mut shared_workers = Vec::new();
        let mtus = LinkMtus::new(
            config
                .interfaces
                .iter()
                .map(|i| crate::sys::mtu(&i.name).unwrap_or(crate::pipeline::mtu::DEFAULT_MTU)),
        );
        for (wi, w) in config.workers.iter().enumerate() {
            let counters = Arc::new(WorkerCounters::default());
            let stats = Arc::new(WorkerStats::default());
            let (recorder, collector) = latency::pair();
            collectors.push(collector);
            let (tap, dumper) = crate::telemetry::conns::pair();
            conns.push(dumper);
            shared_workers.push(WorkerShared {
                core: w.core,
                counters: counters.clone(),
                stats: stats.clone(),
            });
            let init = WorkerInit {
                counters: counters.clone(),
                stats,
                services: services.clone(),
                mesh: mesh.clone(),
                recorder,
                conns: tap,
                mtus: mtus.clone(),
            };
            let cfg = config.clone();
            let (setup_tx, go, stop) = (setup_tx.clone(), go.clone(), stop.clone());
            let membership = handoff::Membership::new(mesh.clone(), wi);
            let handle = std::thread::Builder::new()
                .name(format!("shunt-w{wi}"))
                .spawn(move || {
                    let _membership = membership;
                    let built = setup::build_worker(&cfg, wi, init, |bound| {
                        let _ = setup_tx.send(Ok(Setup::Bound(bound)));
                    });
                    let mut worker = match built {
                        Ok((worker, ready)) => {
                            // Sockets are bound and memory is mapped: a worker
                            // needs no privilege from here on.
                            if let Err(e) = crate::sys::drop_capabilities(&[]) {
                                tracing::warn!(worker = wi, error = %e, "could not drop capabilities");
                            }
                            let _ = setup_tx.send(Ok(Setup::Ready(ready)));
                            worker
                        }
                        Err(e) => {
                            let _ = setup_tx.send(Err(e));
                            return None;
                        }
                    };
                    while !go.load(Ordering::Acquire) {
                        if stop.load(Ordering::Relaxed) {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    worker.run(&stop);
                    crate::state::gap::mark(&format!("worker {wi}: loop left, RX drained"));
                    // Answer what peers handed us and take back what we
                    // handed them. Our UMEM stays mapped after we close our
                    // sockets for as long as any peer holds the mesh.
                    worker.settle_handoffs();
                    worker.close_sockets();
                    crate::state::gap::mark(&format!("worker {wi}: sockets closed"));
                    let rest = worker.finish();
                    crate::state::gap::mark(&format!("worker {wi}: tables and UMEM released"));
                    Some(rest)
                })
                .map_err(DataplaneError::Spawn)?;
            workers.push(RunningWorker { core: w.core, counters, handle });
        }
        drop(setup_tx);

        // Programs load (verifier included) while the workers build.
        let mut attached: Vec<Attached> = Vec::new();
        for iface in &config.interfaces {
            let ifindex = crate::sys::ifindex(&iface.name);
            let mine =
                inherited.iter().position(|i| Some(i.ifindex) == ifindex).map(|p| inherited.swap_remove(p));
            match Attached::load(&iface.name, iface.xdp_mode, config, mine)
                .map_err(|e| DataplaneError::Xdp { interface: iface.name.clone(), source: Box::new(e) })
            {
                Ok(a) => attached.push(a),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        crate::state::gap::mark("XDP programs loaded (or kept) and their maps filled");
        for gone in inherited {
            tracing::info!(ifindex = gone.ifindex, "interface left the config: its XDP link is closed");
        }
        let fail = |stop: &AtomicBool, interface: &str, e: XdpError| {
            stop.store(true, Ordering::Relaxed);
            DataplaneError::Xdp { interface: interface.to_string(), source: Box::new(e) }
        };
        // Sockets each interface waits for before it attaches.
        let mut missing: Vec<usize> = (0..config.interfaces.len())
            .map(|i| config.workers.iter().flat_map(|w| &w.queues).filter(|q| q.interface == i).count())
            .collect();
        for (i, a) in attached.iter_mut().enumerate() {
            if missing[i] == 0 {
                attach(a).map_err(|e| fail(&stop, &config.interfaces[i].name, e))?;
            }
        }
        let mut sockets = Vec::new();
        let mut readies = Vec::new();
        while readies.len() < config.workers.len() {
            let bound = match setup_rx.recv() {
                Ok(Ok(Setup::Bound(b))) => b,
                Ok(Ok(Setup::Ready(r))) => {
                    readies.push(r);
                    continue;
                }
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(_) => return Err(DataplaneError::WorkerExited),
            };
            for &(iface, queue, fd, zc) in &bound.sockets {
                let name = &config.interfaces[iface].name;
                attached[iface].register_socket(queue, fd).map_err(|e| fail(&stop, name, e))?;
                tracing::info!(
                    worker = bound.worker,
                    core = config.workers[bound.worker].core,
                    interface = %name,
                    queue,
                    mode = if zc { "zero-copy" } else { "copy" },
                    umem_pages = if bound.hugepages { "2MiB" } else { "4KiB" },
                    "AF_XDP socket bound"
                );
                sockets.push((bound.worker, name.clone(), queue, fd));
                missing[iface] -= 1;
                if missing[iface] == 0 {
                    attach(&mut attached[iface]).map_err(|e| fail(&stop, name, e))?;
                    crate::state::gap::mark(&format!("{name}: every socket registered, attached"));
                    if missing.iter().all(|&m| m == 0) {
                        if let Some(ms) = crate::state::gap::elapsed_ms() {
                            tracing::info!("planned restart: owned packets were dropped for {ms:.1} ms (old workers told to stop to every new socket registered; from then on they wait in the RX rings until the workers run)");
                        }
                    }
                }
            }
        }
        crate::xsk::umem::release_unused();
        readies.sort_by_key(|r| r.worker);
        sockets.sort_by_key(|s| s.0);
        let umems = readies.iter_mut().filter_map(|r| r.umem.take()).collect();
        let _ = mesh.umems.set(umems);
        crate::state::gap::mark("every worker ready");
        go.store(true, Ordering::Release);
        if crate::state::gap::elapsed_ms().is_some() {
            // What did not fit in an RX ring (or found no frame) while the
            // flows were restored.
            let lost: u64 = sockets
                .iter()
                .filter_map(|s| crate::xsk::SocketStats::read(s.3))
                .map(|s| s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs)
                .sum();
            crate::state::gap::mark(&format!(
                "workers run ({lost} packets dropped by the kernel meanwhile: RX ring full or no frame)"
            ));
        }
        let shared = Arc::new(Shared {
            workers: shared_workers,
            services: services.clone(),
            xdp: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
        });
        let mut running = Dataplane {
            config: config.clone(),
            attached,
            workers,
            collectors,
            conns,
            cores: config.workers.iter().map(|w| w.core).collect(),
            sockets,
            mtus,
            shared,
            started: Instant::now(),
        };
        running.refresh_xdp();
        Ok(running)
    }

    /// Re-reads every interface's MTU and link state from the kernel;
    /// workers use a changed value from their next batch on (no restart).
    pub fn refresh_mtus(&self) {
        for (i, iface) in self.config.interfaces.iter().enumerate() {
            let up = crate::sys::carrier(&iface.name);
            if self.mtus.set_up(i, up) {
                if up {
                    tracing::info!(interface = %iface.name, "link up: transmitting again");
                } else {
                    tracing::warn!(interface = %iface.name, "link down (down, no carrier, or gone): frames for it are dropped and counted as link_down");
                }
            }
            let Some(mtu) = crate::sys::mtu(&iface.name) else { continue };
            if let Some(old) = self.mtus.set(i, mtu) {
                tracing::info!(interface = %iface.name, old, mtu, "interface MTU changed");
            }
        }
    }

    /// Worker count and attached interface count.
    pub fn size(&self) -> (usize, usize) {
        (self.workers.len(), self.attached.len())
    }

    /// Whether a worker thread has left its loop (it should not before stop).
    pub fn worker_exited(&self) -> bool {
        self.workers.iter().any(|w| w.handle.is_finished())
    }

    pub fn total_drops(&self) -> u64 {
        self.workers.iter().map(|w| w.counters.total_drops()).sum()
    }

    /// Moves the workers' latency histograms to the collectors.
    pub fn collect_histograms(&mut self) {
        for c in &mut self.collectors {
            c.collect();
        }
    }

    /// Histogram pairs each worker handed over so far (its heartbeat).
    pub fn progress(&self) -> Vec<u64> {
        self.collectors.iter().map(|c| c.handovers).collect()
    }

    /// Points every XDP program's match maps at `config`: with `remove`
    /// false only adds entries, with `remove` true also removes stale ones.
    pub fn sync_maps(&mut self, config: &Config, remove: bool) -> Result<(), DataplaneError> {
        for a in self.attached.iter_mut() {
            a.sync_maps(config, remove)
                .map_err(|e| DataplaneError::Xdp { interface: a.interface.clone(), source: Box::new(e) })?;
        }
        Ok(())
    }

    /// Re-reads the XDP and AF_XDP socket counters into `shared`, and each
    /// interface's MTU (once a second, from the control thread).
    pub fn refresh_xdp(&mut self) {
        self.refresh_mtus();
        let x: Vec<(String, [u64; 4])> =
            self.attached.iter().map(|a| (a.interface.clone(), a.counters().unwrap_or_default())).collect();
        if let Ok(mut cache) = self.shared.xdp.lock() {
            *cache = x;
        }
        let socks: Vec<SocketSnap> = self
            .sockets
            .iter()
            .filter_map(|(w, iface, q, fd)| {
                let s = crate::xsk::SocketStats::read(*fd)?;
                Some(SocketSnap {
                    worker: *w,
                    interface: iface.clone(),
                    queue: *q,
                    counters: crate::xsk::SocketStats::NAMES
                        .iter()
                        .map(|n| n.to_string())
                        .zip(s.values())
                        .collect(),
                })
            })
            .collect();
        // Sockets close as workers exit: keep the last values then.
        if let Ok(mut cache) = self.shared.sockets.lock() {
            if !socks.is_empty() {
                *cache = socks;
            }
        }
    }

    /// The latency report as of now (workers' current pairs not included
    /// until their next rotation, within one tick).
    pub fn report(&self) -> Report {
        Report {
            workers: self
                .collectors
                .iter()
                .zip(&self.cores)
                .enumerate()
                .map(|(i, (c, &core))| WorkerHistograms { worker: i, core, hists: c.total.clone() })
                .collect(),
        }
    }

    /// Makes every program drop, rather than pass to the kernel, the
    /// packets of ours that find no socket: from now until the next image
    /// of a planned restart takes the links over.
    pub fn prepare_handover(&mut self) -> Result<(), DataplaneError> {
        for a in self.attached.iter_mut() {
            a.set_no_socket_drop(true)
                .map_err(|e| DataplaneError::Xdp { interface: a.interface.clone(), source: Box::new(e) })?;
        }
        Ok(())
    }

    /// Stops as [`Dataplane::shutdown`] does, but keeps the XDP links
    /// attached and returns them for the next image.
    pub fn hand_over(self) -> (Summary, Vec<Inherited>) {
        self.finish(true)
    }

    pub fn shutdown(self) -> Summary {
        self.finish(false).0
    }

    fn finish(mut self, keep_links: bool) -> (Summary, Vec<Inherited>) {
        // Socket counters while the sockets still exist (a worker closes
        // them when it leaves its loop).
        self.refresh_xdp();
        let mut worker_counters = Vec::new();
        let workers = std::mem::take(&mut self.workers);
        for (i, w) in workers.into_iter().enumerate() {
            let core = w.core;
            match w.handle.join() {
                Ok(Some(rest)) => {
                    if let Some(c) = self.collectors.get_mut(i) {
                        c.collect();
                        c.total.add(&rest);
                    }
                }
                Ok(None) => {}
                Err(_) => tracing::error!(core, "worker panicked"),
            }
            worker_counters.push((core, w.counters));
        }
        crate::state::gap::mark("old workers joined");
        let sockets = self.shared.sockets.lock().map(|s| s.clone()).unwrap_or_default();
        let xdp =
            self.attached.iter().map(|a| (a.interface.clone(), a.counters().unwrap_or_default())).collect();
        // Dropping `attached` closes the bpf_links: the programs detach,
        // unless they are kept for the next image.
        let links = if keep_links {
            self.attached.drain(..).filter_map(Attached::into_inherited).collect()
        } else {
            self.attached.clear();
            Vec::new()
        };
        let report = self.report();
        let mut written = Vec::new();
        if let Some(dir) = &self.config.telemetry.histogram_dir {
            match report.write_run(dir) {
                Ok(paths) => written = paths,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not write the latency report")
                }
            }
        }
        let summary = Summary {
            workers: worker_counters,
            xdp,
            elapsed: self.started.elapsed(),
            latency: report.table(),
            written,
            sockets,
        };
        (summary, links)
    }
}

/// Final counters, printed on shutdown.
pub struct Summary {
    pub workers: Vec<(usize, Arc<WorkerCounters>)>,
    pub xdp: Vec<(String, [u64; 4])>,
    pub elapsed: Duration,
    /// The kernel's AF_XDP socket counters, last read before exit.
    pub sockets: Vec<SocketSnap>,
    /// The latency table, and the report files written.
    pub latency: String,
    pub written: Vec<std::path::PathBuf>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "shunt: final counters after {:.1}s", self.elapsed.as_secs_f64())?;
        for (i, (core, c)) in self.workers.iter().enumerate() {
            write!(f, "  worker {i} (core {core}):")?;
            for (name, v) in c.snapshot() {
                if v != 0 || matches!(name, "rx_packets" | "tx_packets") {
                    write!(f, " {name}={v}")?;
                }
            }
            writeln!(f)?;
        }
        for (iface, c) in &self.xdp {
            write!(f, "  xdp {iface}:")?;
            for k in XdpCounter::ALL {
                write!(f, " {}={}", k.name(), c[k as usize])?;
            }
            writeln!(f)?;
        }
        for s in &self.sockets {
            write!(f, "  xsk w{} {}:{}:", s.worker, s.interface, s.queue)?;
            for (k, v) in &s.counters {
                write!(f, " {k}={v}")?;
            }
            writeln!(f)?;
        }
        write!(f, "{}", self.latency)?;
        for p in &self.written {
            writeln!(f, "  report: {}", p.display())?;
        }
        Ok(())
    }
}
