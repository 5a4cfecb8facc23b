//! Building each worker (UMEM, sockets, pipelines, tables), on the worker's
//! own thread.

use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;

use super::handoff;
use super::worker::Worker;
use crate::config::Config;
use crate::pipeline::build::{self, PortInfo};
use crate::pipeline::classify::Classifier;
use crate::pipeline::services::Services;
use crate::pipeline::{Batch, Ctx, UmemView};
use crate::telemetry::counters::{WorkerCounters, WorkerStats};
use crate::telemetry::latency::Recorder;
use crate::xsk::{QueueSpec, WorkerXsk};

/// What a worker reports once its sockets are bound.
pub struct Ready {
    pub worker: usize,
    /// (interface index, queue, socket fd, zero-copy)
    pub sockets: Vec<(usize, u32, i32, bool)>,
    pub hugepages: bool,
    pub umem: UmemView,
}

/// What a worker thread is given to build itself.
pub struct WorkerInit {
    pub counters: Arc<WorkerCounters>,
    pub stats: Arc<WorkerStats>,
    pub services: Arc<ArcSwap<Services>>,
    pub mesh: Arc<handoff::Mesh>,
    pub recorder: Recorder,
    pub conns: crate::telemetry::conns::Tap,
}

pub fn build_worker(config: &Config, wi: usize, init: WorkerInit) -> Result<(Worker, Ready)> {
    let WorkerInit { counters, stats, services, mesh, recorder, conns } = init;
    let w = &config.workers[wi];
    crate::sys::pin_to_core(w.core).with_context(|| format!("pinning worker {wi} to core {}", w.core))?;
    let prio = config.dataplane.realtime_priority;
    if prio > 0 {
        // A busy-polling worker at normal priority shares its core with
        // ksoftirqd, and each slice it loses lets its RX ring overflow.
        // Without CAP_SYS_NICE (or an RT limit) it still runs, at normal priority.
        match crate::sys::set_realtime(prio) {
            Ok(()) => tracing::info!(worker = wi, priority = prio, "worker runs SCHED_FIFO"),
            Err(e) => tracing::warn!(worker = wi, "realtime_priority = {prio} not applied: {e}"),
        }
    }
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
        xsk.ports.iter().map(|p| PortInfo { interface: p.interface_idx, mac: p.mac, mtu: p.mtu }).collect();
    let pipelines = build::pipelines(config, &ports).with_context(|| format!("worker {wi}"))?;
    let (base, len) = xsk.umem_base();
    // SAFETY: the mapping lives in `xsk`, which the Worker owns alongside the
    // batch, and outlives every use: workers are joined before any UMEM is
    // dropped. A frame is touched only by the holder of its descriptor.
    let umem = unsafe { UmemView::new(base, len) }.with_frame_size(config.dataplane.frame_size as usize);
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
    let conntrack = build::conntrack(config);
    let ctx = Ctx::new(conntrack, services.load_full(), stats, wi as u16, config.workers.len() as u16);
    let worker = Worker {
        xsk,
        pipelines,
        classifier: Classifier::with_shortcut(&config.routes, config.single_owning_pipeline()),
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
        recorder,
        conns,
    };
    Ok((worker, ready))
}
