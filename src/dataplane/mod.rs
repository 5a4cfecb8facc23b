//! Bringing the dataplane up and down: attach XDP, start pinned workers,
//! register their sockets, run until a signal, drain, detach, summarise.

pub mod handoff;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::pipeline::build::{self, PortInfo};
use crate::pipeline::classify::Classifier;
use crate::pipeline::conntrack::ConnTable;
use crate::pipeline::services::Services;
use crate::pipeline::{Batch, Ctx, UmemView};
use crate::telemetry::counters::WorkerCounters;
use crate::xdp::maps::XdpCounter;
use crate::xdp::Attached;
use crate::xsk::{QueueSpec, WorkerXsk};
use worker::Worker;

/// What a worker reports once its sockets are bound.
struct Ready {
    worker: usize,
    /// (interface index, queue, socket fd, zero-copy)
    sockets: Vec<(usize, u32, i32, bool)>,
    hugepages: bool,
    umem: UmemView,
}

struct RunningWorker {
    core: usize,
    counters: Arc<WorkerCounters>,
    handle: JoinHandle<()>,
}

/// Runs the dataplane until `stop` is set; `reload` (SIGHUP) re-reads the
/// config file and publishes its services to the workers.
pub fn run(config: &Config, stop: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<Summary> {
    let services = Arc::new(ArcSwap::from_pointee(build_services(config, 1)?));
    // Sockets before XDP: a redirect to an empty XSKMAP slot would fall
    // back to XDP_PASS anyway, but binding first means no window at all.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready>>();
    let go = Arc::new(AtomicBool::new(false));
    let mesh = Arc::new(handoff::Mesh::new(config.workers.len()));
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (wi, w) in config.workers.iter().enumerate() {
        let counters = Arc::new(WorkerCounters::default());
        let cfg = config.clone();
        let (ready_tx, go, stop, counters2) = (ready_tx.clone(), go.clone(), stop.clone(), counters.clone());
        let services = services.clone();
        let mesh = mesh.clone();
        let finished = finished.clone();
        let nworkers = config.workers.len();
        let core = w.core;
        let handle = std::thread::Builder::new()
            .name(format!("shunt-w{wi}"))
            .spawn(move || {
                let mut worker = match build_worker(&cfg, wi, counters2, services, mesh) {
                    Ok((worker, ready)) => {
                        let _ = ready_tx.send(Ok(ready));
                        worker
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !go.load(Ordering::Acquire) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                worker.run(&stop);
                // Others may still be touching frames we handed them: keep
                // our UMEM mapped until every worker has left its loop.
                finished.fetch_add(1, Ordering::AcqRel);
                let deadline = Instant::now() + Duration::from_secs(2);
                while finished.load(Ordering::Acquire) < nworkers && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .context("spawning worker thread")?;
        workers.push(RunningWorker { core, counters, handle });
    }
    drop(ready_tx);

    let mut readies = Vec::new();
    for _ in &config.workers {
        match ready_rx.recv() {
            Ok(Ok(r)) => readies.push(r),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => bail!("a worker exited during setup"),
        }
    }
    readies.sort_by_key(|r| r.worker);
    let _ = mesh.umems.set(readies.iter().map(|r| r.umem).collect());

    let mut attached = Vec::new();
    for iface in &config.interfaces {
        let a = Attached::load(&iface.name, iface.xdp_mode, config)
            .with_context(|| format!("attaching the XDP program to {}", iface.name));
        match a {
            Ok(a) => {
                tracing::info!(interface = %iface.name, mode = ?a.mode, "XDP program attached (bpf_link)");
                attached.push(a);
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    for r in &readies {
        for &(iface, queue, fd, zc) in &r.sockets {
            attached[iface].register_socket(queue, fd)?;
            tracing::info!(
                worker = r.worker,
                core = config.workers[r.worker].core,
                interface = %config.interfaces[iface].name,
                queue,
                mode = if zc { "zero-copy" } else { "copy" },
                umem_pages = if r.hugepages { "2MiB" } else { "4KiB" },
                "AF_XDP socket bound"
            );
        }
    }
    go.store(true, Ordering::Release);
    eprintln!(
        "shunt: running {} worker(s) on {} interface(s); Ctrl-C to stop",
        workers.len(),
        attached.len()
    );

    let started = Instant::now();
    let mut last_summary = Instant::now();
    let mut current = config.clone();
    let mut generation = 1;
    while !stop.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            match reload_config(&current, &services, &mut attached, generation + 1) {
                Ok(new) => {
                    generation += 1;
                    tracing::info!(
                        path = %new.path.display(),
                        services = new.services.len(),
                        generation,
                        "config reloaded"
                    );
                    current = new;
                }
                Err(e) => tracing::error!("config reload failed, keeping the running config: {e:#}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        if workers.iter().any(|w| w.handle.is_finished()) && !stop.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            tracing::error!("a worker thread exited unexpectedly; shutting down");
        }
        if config.summary_interval > 0
            && last_summary.elapsed() >= Duration::from_secs(config.summary_interval)
        {
            last_summary = Instant::now();
            let (rx, tx, drops) = workers.iter().fold((0, 0, 0), |(a, b, c), w| {
                (
                    a + w.counters.rx_packets.get(),
                    b + w.counters.tx_packets.get(),
                    c + w.counters.total_drops(),
                )
            });
            eprintln!("shunt: rx {rx} tx {tx} drops {drops}");
        }
    }

    let mut worker_counters = Vec::new();
    for w in workers {
        let core = w.core;
        if w.handle.join().is_err() {
            tracing::error!(core, "worker panicked");
        }
        worker_counters.push((core, w.counters));
    }
    let xdp = attached.iter().map(|a| (a.interface.clone(), a.counters().unwrap_or_default())).collect();
    // Dropping `attached` closes the bpf_links: the programs detach.
    drop(attached);
    Ok(Summary { workers: worker_counters, xdp, elapsed: started.elapsed() })
}

/// Re-reads the config file. Only what can change live is applied
/// (services, backends, weights, SNAT pools); a change to interfaces,
/// workers, pipelines or the dataplane needs a restart and is refused.
fn reload_config(
    running: &Config,
    services: &ArcSwap<Services>,
    attached: &mut [Attached],
    generation: u64,
) -> Result<Config> {
    let new = Config::load(&running.path)?;
    let fixed = |c: &Config| {
        format!("{:?}{:?}{:?}{:?}{:?}", c.dataplane, c.interfaces, c.workers, c.pipelines, c.routes)
    };
    if fixed(&new) != fixed(running) {
        bail!("interfaces, workers, pipelines, routes or [dataplane] changed: restart Shunt to apply");
    }
    if new.conntrack != running.conntrack {
        tracing::warn!("[conntrack] changes apply at the next restart");
    }
    let snapshot = build_services(&new, generation)?;
    // Redirect new VIPs/pools before workers know them; stop redirecting old
    // ones after. Either order only ever passes packets to the kernel.
    for a in attached.iter_mut() {
        a.sync_maps(&new, false)?;
    }
    services.store(Arc::new(snapshot));
    for a in attached.iter_mut() {
        a.sync_maps(&new, true)?;
    }
    Ok(new)
}

/// Builds the load balancer snapshot. Backend MACs the config does not give
/// come from the kernel's neighbour table; unknown ones are solicited on the
/// backend-side interfaces and waited for briefly.
pub fn build_services(config: &Config, generation: u64) -> Result<Services> {
    let macs = resolve_backends(config);
    let services = Services::build(config, generation, |ip| macs.get(&ip).copied())?;
    for b in services.unresolved() {
        tracing::warn!(
            backend = %b,
            "no MAC for backend (config has none, neighbour table has none): its packets count as next_hop_unresolved"
        );
    }
    Ok(services)
}

fn resolve_backends(config: &Config) -> std::collections::HashMap<std::net::IpAddr, [u8; 6]> {
    use crate::sys::neigh;
    let wanted: Vec<std::net::IpAddr> = config
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.mac.is_none())
        .map(|b| b.addr)
        .collect();
    let mut found = std::collections::HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let egresses: Vec<&str> = config
        .pipelines
        .iter()
        .flat_map(|p| &p.stages)
        .filter_map(|s| match s {
            crate::config::StageConfig::L2(l2) => Some(config.interfaces[l2.egress].name.as_str()),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut solicited = false;
    loop {
        if let Ok(table) = neigh::dump() {
            for n in table {
                if wanted.contains(&n.addr) {
                    found.insert(n.addr, n.mac);
                }
            }
        }
        if found.len() == wanted.len() || Instant::now() > deadline {
            return found;
        }
        if !solicited {
            for ip in wanted.iter().filter(|ip| !found.contains_key(ip)) {
                for ifname in &egresses {
                    if let Err(e) = neigh::solicit(*ip, ifname) {
                        tracing::debug!(backend = %ip, interface = ifname, error = %e, "neighbour solicit failed");
                    }
                }
            }
            solicited = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn build_worker(
    config: &Config,
    wi: usize,
    counters: Arc<WorkerCounters>,
    services: Arc<ArcSwap<Services>>,
    mesh: Arc<handoff::Mesh>,
) -> Result<(Worker, Ready)> {
    let w = &config.workers[wi];
    crate::sys::pin_to_core(w.core).with_context(|| format!("pinning worker {wi} to core {}", w.core))?;
    let specs: Vec<QueueSpec<'_>> = w
        .queues
        .iter()
        .map(|q| QueueSpec {
            interface: &config.interfaces[q.interface].name,
            interface_idx: q.interface,
            queue: q.queue,
        })
        .collect();
    let mut xsk = WorkerXsk::new(&config.dataplane, &specs)?;
    let ports: Vec<PortInfo> =
        xsk.ports.iter().map(|p| PortInfo { interface: p.interface_idx, mac: p.mac }).collect();
    let pipelines = build::pipelines(config, &ports).with_context(|| format!("worker {wi}"))?;
    let (base, len) = xsk.umem_base();
    // SAFETY: the mapping lives in `xsk`, which the Worker owns alongside the
    // batch, and outlives every use: workers are joined before any UMEM is
    // dropped. A frame is touched only by the holder of its descriptor.
    let umem = unsafe { UmemView::new(base, len) };
    let ready = Ready {
        worker: wi,
        sockets: xsk.ports.iter().map(|p| (p.interface_idx, p.queue, p.fd(), p.zero_copy)).collect(),
        hugepages: xsk.hugepages(),
        umem,
    };
    let mut port_of_interface = vec![u8::MAX; config.interfaces.len()];
    for (i, p) in xsk.ports.iter().enumerate() {
        port_of_interface[p.interface_idx] = i as u8;
    }
    let nports = xsk.ports.len() as u32;
    // Leave half the frames for batches and TX rings in flight.
    let fill_target = (config.dataplane.frames_per_worker / 2 / nports).min(config.dataplane.ring_size);
    let ct = &config.conntrack;
    let conntrack = ConnTable::new(ct.entries_per_worker as usize, ct.timeouts, ct.full);
    let ctx = Ctx::new(conntrack, services.load_full(), wi as u16, config.workers.len() as u16);
    let worker = Worker {
        xsk,
        pipelines,
        classifier: Classifier::new(&config.routes),
        counters,
        batch: Batch::new(umem),
        batch_size: config.dataplane.batch_size,
        poll: config.dataplane.poll,
        fill_target,
        ctx,
        services,
        id: wi,
        mesh,
        handed: Vec::new(),
        returned: Batch::new(umem),
        port_of_interface,
    };
    Ok((worker, ready))
}

/// Final counters, printed on shutdown.
pub struct Summary {
    pub workers: Vec<(usize, Arc<WorkerCounters>)>,
    pub xdp: Vec<(String, [u64; 4])>,
    pub elapsed: Duration,
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
        Ok(())
    }
}
