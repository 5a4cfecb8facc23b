//! Pipelines over plain memory instead of AF_XDP rings: what golden packet
//! tests, allocation tests, benchmarks and fuzz targets drive. Same
//! classification, stages and housekeeping as a worker; no sockets.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use etherparse::{Ethernet2Header, PacketBuilder, PacketBuilderStep};

use shunt::config::{Config, MAX_BATCH};
use shunt::nat46;
use shunt::pipeline::build::{self, PortInfo};
use shunt::pipeline::classify::Classifier;
use shunt::pipeline::services::{IdRegistry, Services};
use shunt::pipeline::{self as pipeline, Batch, Ctx, Pipeline, UmemView, Verdict, SPARE_FRAMES};
use shunt::telemetry::counters::WorkerStats;

/// Frame stride in the harness's memory, like a UMEM chunk.
pub const FRAME: usize = 4096;
/// Where a packet starts inside its frame: the kernel's XDP headroom.
pub const HEADROOM: usize = 256;

/// Zeroed memory for UMEM frames of FRAME bytes, starting on a page
/// boundary. A real UMEM is page-aligned (the kernel requires it), so a
/// packet HEADROOM into its frame starts on a cache line. A plain
/// allocation starts wherever malloc puts it (16 bytes past a page when
/// mmapped, anywhere after a large free), which would move every header
/// across line boundaries by run history; so one frame of slack, and the
/// frames start at its first page boundary.
pub struct FrameMemory {
    mem: Box<[u8]>,
    start: usize,
    len: usize,
}

impl FrameMemory {
    pub fn new(frames: usize) -> FrameMemory {
        let len = FRAME * frames;
        let mem = vec![0u8; len + FRAME].into_boxed_slice();
        let start = mem.as_ptr().align_offset(FRAME);
        assert!(start + len <= mem.len(), "FRAME bytes of slack hold any alignment offset");
        FrameMemory { mem, start, len }
    }

    /// The frames as a batch's UMEM.
    ///
    /// # Safety
    /// `self` must outlive the view (moving it is fine: the frames stay
    /// where they are), and the frames must not be reached except through
    /// the view while it is in use.
    pub unsafe fn view(&mut self) -> UmemView {
        let frames = &mut self.mem[self.start..self.start + self.len];
        // SAFETY: the caller's promise, passed on.
        unsafe { UmemView::of_slice(frames) }
    }
}

pub struct Harness {
    // The batch's frames live in `_mem`, reached only through the batch.
    _mem: FrameMemory,
    batch: Batch,
    pipelines: Vec<Pipeline>,
    classifier: Classifier,
    pub ctx: Ctx,
    ids: IdRegistry,
    port_macs: Vec<[u8; 6]>,
    /// Frames after the batch's own, free for the batch's spares (a
    /// worker's frame pool in miniature); capacity fixed at SPARE_FRAMES.
    free_spares: Vec<u64>,
}

/// The harness's port for config interface `i`: MAC 02:00:00:00:ff:0N
/// ([`crate::addrs::PORT0_MAC`], …).
fn default_port(i: usize, mtu: u16) -> PortInfo {
    PortInfo { interface: i, mac: [2, 0, 0, 0, 0xff, i as u8], mtu }
}

impl Harness {
    /// Ports: one per config interface, in order, with MAC 02:00:00:00:ff:0N
    /// unless given. Backend MACs come from the config only.
    pub fn new(config: &Config, ports: Option<&[PortInfo]>) -> Result<Harness> {
        let default_ports: Vec<PortInfo> =
            (0..config.interfaces.len()).map(|i| default_port(i, 1500)).collect();
        let ports = ports.unwrap_or(&default_ports);
        let pipelines = build::pipelines(config, ports)?;
        let mut ids = IdRegistry::default();
        let services = Arc::new(Services::build(config, 1, &mut ids, |_| None)?);
        let conntrack = build::conntrack(config);
        let mut ctx = Ctx::new(conntrack, services, Arc::new(WorkerStats::default()), 0, 1);
        ctx.errors = build::error_limiter(config);
        let mut mem = FrameMemory::new(MAX_BATCH as usize + SPARE_FRAMES);
        // SAFETY: `mem` moves into the Harness with the batch and is never
        // touched except through the batch's view.
        let batch = Batch::new(unsafe { mem.view() }).with_spare_target(SPARE_FRAMES);
        let free_spares = (0..SPARE_FRAMES).map(|i| ((MAX_BATCH as usize + i) * FRAME) as u64).collect();
        Ok(Harness {
            _mem: mem,
            batch,
            pipelines,
            classifier: Classifier::with_shortcut(&config.routes, config.single_owning_pipeline()),
            ctx,
            ids,
            port_macs: ports.iter().map(|p| p.mac).collect(),
            free_spares,
        })
    }

    /// [`Harness::new`] with the default ports at MTUs `mtus` (in interface
    /// order).
    pub fn with_mtus(config: &Config, mtus: &[u16]) -> Result<Harness> {
        let ports: Vec<PortInfo> = mtus.iter().enumerate().map(|(i, &mtu)| default_port(i, mtu)).collect();
        Harness::new(config, Some(&ports))
    }

    pub fn from_toml(text: &str) -> Result<Harness> {
        Harness::new(&Config::parse(Path::new("harness.toml"), text)?, None)
    }

    /// Publishes a new snapshot built from `config`, as a reload would.
    pub fn install(&mut self, config: &Config, generation: u64) -> Result<()> {
        self.ctx.install(Arc::new(Services::build(config, generation, &mut self.ids, |_| None)?));
        Ok(())
    }

    /// Runs up to 64 frames as one batch; `out(i, verdict, bytes)` sees each
    /// frame after processing. Frames longer than a UMEM frame allows are
    /// truncated, as the kernel would never deliver them. Each frame arrives
    /// on the port whose MAC it is addressed to (port 0 for any other), as
    /// on a wire where each port has its own segment.
    pub fn run<F: AsRef<[u8]>>(&mut self, frames: &[F], mut out: impl FnMut(usize, Verdict, &[u8])) {
        self.batch.clear();
        for (i, f) in frames.iter().take(MAX_BATCH as usize).enumerate() {
            let f = f.as_ref();
            let len = f.len().min(FRAME - HEADROOM);
            self.batch.push_copy((i * FRAME + HEADROOM) as u64, &f[..len], self.ingress_of(f));
        }
        let spares = &mut self.free_spares;
        self.batch.top_up_spares(|| spares.pop());
        pipeline::housekeeping(&mut self.ctx, pipeline::EXPIRE_MIN);
        pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
        for (i, m) in self.batch.metas().iter().enumerate() {
            out(i, m.verdict, self.batch.packet(i).unwrap_or(&[]));
            // Packets stages emitted into spare frames: the frame is free again.
            if m.addr() >= (MAX_BATCH as usize * FRAME) as u64 {
                self.free_spares.push(m.addr() & !(FRAME as u64 - 1));
            }
        }
        // Fragments held for their first one go out after it, as a worker
        // replays them: reported after the batch's own frames.
        let mut next = frames.len().min(MAX_BATCH as usize);
        loop {
            let mut slot = 0;
            let alloc = || {
                slot += 1;
                Some(((slot - 1) * FRAME + HEADROOM) as u64)
            };
            if pipeline::frag::reinject(&mut self.ctx, &mut self.batch, alloc) == 0 {
                break;
            }
            pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
            for (i, m) in self.batch.metas().iter().enumerate() {
                out(next + i, m.verdict, self.batch.packet(i).unwrap_or(&[]));
            }
            next += self.batch.len();
        }
    }

    /// Runs one frame; returns every packet that came of it (several when a
    /// stage split it), in batch order.
    pub fn run_all(&mut self, frame: &[u8]) -> Vec<(Verdict, Vec<u8>)> {
        let mut r = Vec::new();
        self.run(&[frame], |_, v, b| r.push((v, b.to_vec())));
        r
    }

    fn ingress_of(&self, frame: &[u8]) -> u8 {
        let dst = frame.get(..6);
        self.port_macs.iter().position(|m| Some(&m[..]) == dst).map_or(0, |i| i as u8)
    }

    /// Runs one frame received as a chain of buffers (multi-buffer AF_XDP),
    /// `pieces` in order: the first in frame 0, each later one in the next
    /// frame, as many as a chain may have (a longer chain is dropped as
    /// `chain_too_long`, like the worker's RX does). Each piece is cut to
    /// what a UMEM frame holds.
    pub fn run_chain(&mut self, pieces: &[&[u8]]) -> ChainRun {
        self.batch.clear();
        let Some((first, rest)) = pieces.split_first() else {
            return ChainRun {
                verdict: Verdict::Continue,
                bytes: Vec::new(),
                more: 0,
                tail: Vec::new(),
                pushed: Vec::new(),
            };
        };
        let first = &first[..first.len().min(FRAME - HEADROOM)];
        let ingress = self.ingress_of(first);
        self.batch.push_copy(HEADROOM as u64, first, ingress);
        let mut pushed = Vec::new();
        for (k, piece) in rest.iter().enumerate().take(MAX_BATCH as usize - 1) {
            let piece = &piece[..piece.len().min(FRAME - HEADROOM)];
            if !self.batch.push_tail_copy(((k + 1) * FRAME + HEADROOM) as u64, piece) {
                break;
            }
            pushed.push(piece.len() as u32);
        }
        let spares = &mut self.free_spares;
        self.batch.top_up_spares(|| spares.pop());
        pipeline::housekeeping(&mut self.ctx, pipeline::EXPIRE_MIN);
        pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
        let m = self.batch.metas()[0];
        let mut run = ChainRun {
            verdict: m.verdict,
            bytes: self.batch.packet(0).unwrap_or(&[]).to_vec(),
            more: self.batch.more[0],
            tail: Vec::new(),
            pushed,
        };
        for &t in self.batch.tail(0) {
            run.tail.push((t.1, self.batch.tail_bytes(t).unwrap_or(&[]).to_vec()));
        }
        for m in self.batch.metas() {
            if m.addr() >= (MAX_BATCH as usize * FRAME) as u64 {
                self.free_spares.push(m.addr() & !(FRAME as u64 - 1));
            }
        }
        // As a worker does once the batch is sent: the later buffers are
        // the harness's own frames, nothing to return them to.
        self.batch.release_tail(0);
        run
    }

    /// Runs one frame; returns its verdict and bytes.
    pub fn run_one(&mut self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut r = (Verdict::Continue, Vec::new());
        self.run(&[frame], |_, v, b| r = (v, b.to_vec()));
        r
    }

    /// The worker's drop-detail counter `name` (`reason/detail`, as
    /// `shunt stats` names it); panics, listing them all, if there is none.
    pub fn detail(&self, name: &str) -> u64 {
        let all = self.ctx.stats.details();
        all.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no counter {name}: {all:?}")).1
    }
}

/// `frame` behind [`HEADROOM`] bytes of headroom, as a worker's frame
/// holds it: room for the headers a translation or an ICMP error adds.
pub fn with_headroom(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    buf
}

/// etherparse's builder started on the Ethernet header of a frame handed
/// to [`translate`] (which keeps it): 02:00:00:00:00:01 → :02.
pub fn xlat_in() -> PacketBuilderStep<Ethernet2Header> {
    PacketBuilder::ethernet2(XLAT_MACS.0, XLAT_MACS.1)
}

/// The same for an ICMP error the translator answers such a frame with:
/// the addresses swapped.
pub fn xlat_back() -> PacketBuilderStep<Ethernet2Header> {
    PacketBuilder::ethernet2(XLAT_MACS.1, XLAT_MACS.0)
}

const XLAT_MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);

/// The RFC 7915 translator alone (no pipeline) on a copy of `frame`:
/// IPv4 → IPv6 when `to_v6`, else IPv6 → IPv4. The translated frame, or
/// the rule that refused it.
pub fn translate(frame: &[u8], to_v6: bool, cfg: &nat46::Config) -> Result<Vec<u8>, nat46::Drop> {
    let mut buf = with_headroom(frame);
    let (s, l) = if to_v6 {
        nat46::translate_4to6(&mut buf, HEADROOM, frame.len(), cfg)?
    } else {
        nat46::translate_6to4(&mut buf, HEADROOM, frame.len(), cfg)?
    };
    Ok(buf[s..s + l].to_vec())
}

/// What [`Harness::run_chain`] saw of its chain after the pipelines.
#[derive(Debug)]
pub struct ChainRun {
    pub verdict: Verdict,
    /// The first buffer as the stages left it.
    pub bytes: Vec<u8>,
    /// The packet's bytes after its first buffer (0: a stage replaced it,
    /// or it had one buffer).
    pub more: u32,
    /// The later buffers the batch still holds (length, bytes), in order:
    /// each is freed or sent with its packet, never lost.
    pub tail: Vec<(u32, Vec<u8>)>,
    /// Lengths of the later buffers the batch took.
    pub pushed: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrs::{CLIENT, VIP};
    use crate::fixtures::Fixture;
    use crate::frames::Frame;
    use std::net::Ipv4Addr;

    /// Packets sit HEADROOM into a page-aligned frame, as in a UMEM,
    /// whatever the allocator did before: the benches' numbers depend on
    /// which cache lines a packet's headers fall in.
    #[test]
    fn packets_start_headroom_into_a_page_aligned_frame() {
        let frame = Frame::new(Ipv4Addr::from(CLIENT), Ipv4Addr::from(VIP)).build();
        let mut kept = Vec::new();
        for history in 0..8usize {
            // Large blocks freed and kept shift where malloc puts the next
            // one (and raise its mmap threshold).
            drop(vec![0u8; (history + 1) << 20]);
            kept.push(vec![0u8; 48 * history + 16]);
            let mut h = Fixture::small_lb().harness();
            let mut seen = Vec::new();
            h.run(&[&frame[..], &frame[..]], |_, _, bytes| seen.push(bytes.as_ptr() as usize % FRAME));
            assert_eq!(seen, [HEADROOM, HEADROOM], "allocation history {history}");
        }
    }
}
