//! Bringing the dataplane up and down: attach XDP, start pinned workers,
//! register their sockets, run until a signal, drain, detach, summarise.

mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{Config, StageConfig};
use crate::pipeline::classify::Classifier;
use crate::pipeline::l2fwd::L2Fwd;
use crate::pipeline::{Batch, Pipeline, Stage, UmemView};
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
}

struct RunningWorker {
    core: usize,
    counters: Arc<WorkerCounters>,
    handle: JoinHandle<()>,
}

/// Runs the dataplane until `stop` is set (by SIGINT/SIGTERM in `shunt run`).
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<Summary> {
    // Sockets before XDP: a redirect to an empty XSKMAP slot would fall
    // back to XDP_PASS anyway, but binding first means no window at all.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready>>();
    let go = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (wi, w) in config.workers.iter().enumerate() {
        let counters = Arc::new(WorkerCounters::default());
        let cfg = config.clone();
        let (ready_tx, go, stop, counters2) =
            (ready_tx.clone(), go.clone(), stop.clone(), counters.clone());
        let core = w.core;
        let handle = std::thread::Builder::new()
            .name(format!("shunt-w{wi}"))
            .spawn(move || {
                let mut worker = match build_worker(&cfg, wi, counters2) {
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
            })
            .context("spawning worker thread")?;
        workers.push(RunningWorker {
            core,
            counters,
            handle,
        });
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

    let mut attached = Vec::new();
    for iface in &config.interfaces {
        let a = Attached::load(&iface.name, iface.xdp_mode, config, &[])
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
    while !stop.load(Ordering::Relaxed) {
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
    let xdp = attached
        .iter()
        .map(|a| (a.interface.clone(), a.counters().unwrap_or_default()))
        .collect();
    // Dropping `attached` closes the bpf_links: the programs detach.
    drop(attached);
    Ok(Summary {
        workers: worker_counters,
        xdp,
        elapsed: started.elapsed(),
    })
}

fn build_worker(
    config: &Config,
    wi: usize,
    counters: Arc<WorkerCounters>,
) -> Result<(Worker, Ready)> {
    let w = &config.workers[wi];
    crate::sys::pin_to_core(w.core)
        .with_context(|| format!("pinning worker {wi} to core {}", w.core))?;
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
    let port_of = |iface: usize| -> Result<u8> {
        xsk.ports
            .iter()
            .position(|p| p.interface_idx == iface)
            .map(|p| p as u8)
            .ok_or_else(|| {
                anyhow!(
                    "worker {wi} has no socket on {}",
                    config.interfaces[iface].name
                )
            })
    };
    let mut pipelines = Vec::new();
    for p in &config.pipelines {
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        for s in &p.stages {
            match s {
                StageConfig::L2Fwd {
                    egress,
                    next_hop_mac,
                } => {
                    let port = port_of(*egress)?;
                    let src = xsk.ports[port as usize].mac;
                    stages.push(Box::new(L2Fwd::new(port, src, *next_hop_mac)));
                }
            }
        }
        pipelines.push(Pipeline {
            name: p.name.clone(),
            stages,
        });
    }
    let ready = Ready {
        worker: wi,
        sockets: xsk
            .ports
            .iter()
            .map(|p| (p.interface_idx, p.queue, p.fd(), p.zero_copy))
            .collect(),
        hugepages: xsk.hugepages(),
    };
    let (base, len) = xsk.umem_base();
    // SAFETY: the mapping lives in `xsk`, which the Worker owns alongside the
    // batch; only this worker thread touches frames through the view.
    let umem = unsafe { UmemView::new(base, len) };
    let ports = xsk.ports.len() as u32;
    // Leave half the frames for batches and TX rings in flight.
    let fill_target =
        (config.dataplane.frames_per_worker / 2 / ports).min(config.dataplane.ring_size);
    let worker = Worker {
        xsk,
        pipelines,
        classifier: Classifier::new(&config.routes),
        counters,
        batch: Batch::new(umem),
        batch_size: config.dataplane.batch_size,
        poll: config.dataplane.poll,
        fill_target,
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
        writeln!(
            f,
            "shunt: final counters after {:.1}s",
            self.elapsed.as_secs_f64()
        )?;
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
