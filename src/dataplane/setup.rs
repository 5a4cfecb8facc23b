//! Building each worker (UMEM, sockets, pipelines, tables), on the worker's
//! own thread.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::handoff::{self, PeerUmem};
use super::worker::Worker;
use super::DataplaneError;
use crate::config::Config;
use crate::pipeline::build::{self, PortInfo};
use crate::pipeline::classify::Classifier;
use crate::pipeline::mtu::LinkMtus;
use crate::pipeline::services::Services;
use crate::pipeline::{Batch, Ctx, UmemView, SPARE_FRAMES};
use crate::telemetry::counters::{WorkerCounters, WorkerStats};
use crate::telemetry::latency::Recorder;
use crate::xsk::{PortIo, QueueSpec, WorkerXsk};

/// What a worker reports as soon as its sockets are bound and their fill
/// rings primed: they can be registered in the XSKMAP then, and what they
/// receive waits in their RX rings until the worker loop starts.
pub struct Bound {
    pub worker: usize,
    /// (interface index, queue, socket fd, zero-copy)
    pub sockets: Vec<(usize, u32, i32, bool)>,
    pub hugepages: bool,
}

/// What a worker reports once it is built (its flows restored).
pub struct Ready {
    pub worker: usize,
    /// Moved into the mesh once every worker is ready.
    pub umem: Option<PeerUmem>,
}

/// What a worker thread is given to build itself.
pub struct WorkerInit {
    pub counters: Arc<WorkerCounters>,
    pub stats: Arc<WorkerStats>,
    pub services: Arc<ArcSwap<Services>>,
    pub mesh: Arc<handoff::Mesh>,
    pub recorder: Recorder,
    pub conns: crate::telemetry::conns::Tap,
    /// Every interface's MTU, refreshed by the control thread.
    pub mtus: Arc<LinkMtus>,
}

/// Builds worker `wi`, calling `bound` once its sockets are bound and
/// primed, before its flows are restored.
pub fn build_worker(
    config: &Config,
    wi: usize,
    init: WorkerInit,
    bound: impl FnOnce(Bound),
) -> Result<(Worker, Ready), DataplaneError> {
    let w = &config.workers[wi];
    let specs: Vec<QueueSpec<'_>> = w
        .queues
        .iter()
        .map(|q| QueueSpec {
            interface: &config.interfaces[q.interface].name,
            interface_idx: q.interface,
            queue: q.queue,
        })
        .collect();
    // The flow context (state file, restore, SNAT pools) needs no socket:
    // it is built beside the UMEM and the binds, which are the worker's
    // own (its core, its memory). Its thread starts before the worker pins
    // itself, so it runs on any core at normal priority rather than
    // competing with the binds on the worker's core: in a planned restart
    // the binds end the gap, and the restore only delays the first
    // packets, which wait in the RX rings meanwhile.
    let (xsk, ctx) = std::thread::scope(|s| {
        let ctx = std::thread::Builder::new()
            .name(format!("shunt-w{wi}-state"))
            .spawn_scoped(s, || flow_context(config, wi, &init.stats, &init.services))
            .map_err(DataplaneError::Spawn)?;
        crate::sys::pin_to_core(w.core).map_err(|source| DataplaneError::Pin {
            worker: wi,
            core: w.core,
            source,
        })?;
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
        let xsk = WorkerXsk::new(&config.dataplane, &specs)
            .map_err(|source| DataplaneError::Xsk { worker: wi, source })
            .map(|mut xsk| {
                xsk.prime(fill_target(config, xsk.ports.len()));
                bound(Bound {
                    worker: wi,
                    sockets: xsk
                        .ports
                        .iter()
                        .map(|p| (p.interface_idx, p.queue, p.fd(), p.zero_copy))
                        .collect(),
                    hugepages: xsk.hugepages(),
                });
                xsk
            });
        crate::state::gap::mark(&format!("worker {wi}: UMEM mapped, sockets bound and primed"));
        let ctx = ctx.join().map_err(|_| DataplaneError::WorkerExited)?;
        Ok::<_, DataplaneError>((xsk?, ctx))
    })?;
    let ports: Vec<PortInfo> =
        xsk.ports.iter().map(|p| PortInfo { interface: p.interface_idx, mac: p.mac, mtu: p.mtu }).collect();
    let ready = Ready { worker: wi, umem: Some(PeerUmem::new(umem_view(config, &xsk), xsk.area())) };
    let worker = assemble_with(config, wi, init, xsk, &ports, ctx)?;
    Ok((worker, ready))
}

/// Frames each of a worker's `nports` fill rings is kept topped up to:
/// half the frames are left for batches and TX rings in flight.
pub fn fill_target(config: &Config, nports: usize) -> u32 {
    let nports = nports.max(1) as u32;
    (config.dataplane.frames_per_worker / 2 / nports).min(config.dataplane.ring_size)
}

/// A view of the worker's UMEM for batches.
pub fn umem_view<P: PortIo>(config: &Config, xsk: &WorkerXsk<P>) -> UmemView {
    let (base, len) = xsk.umem_base();
    // SAFETY: the mapping is shared (`Arc<UmemArea>`) by the worker's
    // `WorkerXsk` and, through the mesh's `PeerUmem`s, by every worker that
    // may hold its frames; no view is used after its worker is dropped, so
    // the memory outlives every use. A frame is touched only by the holder
    // of its descriptor (a move-only `Frame` or the batch slot it became).
    unsafe { UmemView::new(base, len) }.with_frame_size(config.dataplane.frame_size as usize)
}

/// The worker around its ports: pipelines, tables, batches.
#[cfg(test)]
pub fn assemble<P: PortIo>(
    config: &Config,
    wi: usize,
    init: WorkerInit,
    xsk: WorkerXsk<P>,
    ports: &[PortInfo],
) -> Result<Worker<P>, DataplaneError> {
    let ctx = flow_context(config, wi, &init.stats, &init.services);
    assemble_with(config, wi, init, xsk, ports, ctx)
}

/// Worker `wi`'s flow context: its conntrack table (over its state file,
/// the flows there restored, when the config keeps state), SNAT pools,
/// limiter and fragment table.
fn flow_context(config: &Config, wi: usize, stats: &Arc<WorkerStats>, services: &ArcSwap<Services>) -> Ctx {
    let now = crate::pipeline::conntrack::tick_from_ns(crate::sys::monotonic_ns());
    let conntrack = match &config.state_dir {
        Some(dir) => crate::state::StateDir::new(dir).conntrack(config, wi, now),
        None => build::conntrack(config),
    };
    crate::state::gap::mark(&format!("worker {wi}: conntrack state mapped"));
    let mut ctx =
        Ctx::new(conntrack, services.load_full(), stats.clone(), wi as u16, config.workers.len() as u16);
    ctx.limiter = build::limiter(config);
    ctx.errors = build::error_limiter(config);
    ctx.frag = build::frag_table(config);
    if ctx.conntrack.is_mapped() {
        ctx.now = now;
        let r = crate::state::restore(&mut ctx);
        if r.kept + r.dropped > 0 {
            tracing::info!(
                worker = wi,
                flows = r.kept,
                dropped = r.dropped,
                snat_ports = r.ports,
                "state: flows carried over (dropped: service, backend or pool gone)"
            );
        }
    }
    crate::state::gap::mark(&format!("worker {wi}: flows restored"));
    ctx
}

fn assemble_with<P: PortIo>(
    config: &Config,
    wi: usize,
    init: WorkerInit,
    xsk: WorkerXsk<P>,
    ports: &[PortInfo],
    ctx: Ctx,
) -> Result<Worker<P>, DataplaneError> {
    let WorkerInit { counters, stats: _, services, mesh, recorder, conns, mtus } = init;
    let pipelines = build::pipelines_with(config, ports, &mtus)
        .map_err(|e| DataplaneError::Pipelines { worker: wi, source: Box::new(e) })?;
    let umem = umem_view(config, &xsk);
    let mut port_of_interface = vec![u8::MAX; config.interfaces.len()];
    for (i, p) in xsk.ports.iter().enumerate() {
        port_of_interface[p.interface_idx()] = i as u8;
    }
    let nports = xsk.ports.len().max(1) as u32;
    let fill_target = fill_target(config, xsk.ports.len());
    Ok(Worker {
        xsk,
        pipelines,
        classifier: Classifier::with_shortcut(&config.routes, config.single_owning_pipeline()),
        counters,
        // Only SIIT fragments packets into extra frames.
        batch: Batch::new(umem).with_spare_target(if config.xlat.siit.is_some() { SPARE_FRAMES } else { 0 }),
        batch_size: config.dataplane.batch_size,
        poll: config.dataplane.poll,
        fill_target,
        ctx,
        services,
        id: wi,
        mesh,
        handed: Vec::new(),
        returned: Batch::new(umem),
        in_flight: Vec::new(),
        port_of_interface,
        recorder,
        conns,
        mtus,
        parked: super::handoff::Parked::new(0),
        rx_skip: vec![false; nports as usize],
    })
}
