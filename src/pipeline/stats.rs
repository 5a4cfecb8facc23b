//! Per-worker traffic counters of services and backends. Each worker is the
//! only writer of its own block, so an increment is a relaxed load and
//! store (a plain `mov` on x86), never a locked read-modify-write; readers
//! (telemetry, on the control thread) may see a value one batch old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::detail::{Cause, Malformed, Martian, Untranslatable};
use super::flow::{BackendId, ServiceId};
use super::{DropReason, Verdict};
use crate::wire::parse::{parse, ParsedPacket};

/// The general parser's view of `data`; when it has none, the packet is a
/// `malformed` drop counted with its detail (the wire error, or not IP).
pub fn parse_or_drop(data: &[u8], stats: &WorkerStats, verdict: &mut Verdict) -> Option<ParsedPacket> {
    let m = match parse(data) {
        Ok(Some(pp)) => return Some(pp),
        Ok(None) => Malformed::NotIp,
        Err(e) => Malformed::Wire(e),
    };
    stats.cause(Cause::Malformed(m));
    *verdict = Verdict::Drop(DropReason::Malformed);
    None
}

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// For gauges the owner overwrites. A gauge goes down by adding a
    /// negative delta (`delta as u64`, wrapping; read with `get_signed`).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get_signed(&self) -> i64 {
        self.0.load(Relaxed) as i64
    }
}

/// Services and backends a process can know over its lifetime: their
/// stable ids index the per-worker stats below, preallocated at start.
pub const MAX_SERVICES: usize = 256;
pub const MAX_BACKENDS: usize = 4096;
// Powers of two: a masked id indexes the stats without a bounds check.
const _: () = assert!(MAX_SERVICES.is_power_of_two() && MAX_BACKENDS.is_power_of_two());

/// Traffic of one service or backend, as seen by one worker.
#[derive(Default, Debug)]
pub struct FlowStats {
    pub packets: Counter,
    pub bytes: Counter,
    pub new_flows: Counter,
    /// Gauge: flows created minus flows expired.
    pub active_flows: Counter,
    /// Gauge: of those, flows in a closing TCP state (ipvsadm's InActConn).
    pub closing_flows: Counter,
    /// Packets toward the backend that could not be sent: no next-hop MAC,
    /// egress link down, TX ring full, longer than the egress MTU.
    pub tx_failed: Counter,
}

/// One worker's per-service and per-backend stats, indexed by stable id.
#[derive(Debug)]
pub struct WorkerStats {
    pub services: Box<[FlowStats; MAX_SERVICES]>,
    pub backends: Box<[FlowStats; MAX_BACKENDS]>,
    /// Malformed drops by detail ([`Malformed::index`]).
    pub malformed: [Counter; Malformed::COUNT],
    /// Untranslatable drops by detail ([`Untranslatable::index`]).
    pub untranslatable: [Counter; Untranslatable::COUNT],
    /// Martian drops by detail ([`Martian::index`]).
    pub martian: [Counter; Martian::COUNT],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            services: zeroed(),
            backends: zeroed(),
            malformed: Default::default(),
            untranslatable: Default::default(),
            martian: Default::default(),
        }
    }
}

/// `N` zeroed stats on the heap (built there: 4096 of them are 192 KiB).
fn zeroed<const N: usize>() -> Box<[FlowStats; N]> {
    let all: Box<[FlowStats]> = (0..N).map(|_| FlowStats::default()).collect();
    match all.try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("{N} made, {N} taken"),
    }
}

impl WorkerStats {
    /// Drop details as `reason/detail` counter names and values, every
    /// detail in index order (zeros included), for stats and Prometheus.
    pub fn details(&self) -> Vec<(String, u64)> {
        let malformed = self
            .malformed
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("malformed/{}", Malformed::name_of(i)), c.get()));
        let untranslatable = self
            .untranslatable
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("untranslatable/{}", Untranslatable::name_of(i)), c.get()));
        let martian =
            Martian::ALL.iter().map(|m| (format!("martian/{}", m.name()), self.martian[m.index()].get()));
        malformed.chain(untranslatable).chain(martian).collect()
    }

    /// Counts a drop's detail (the reason itself is counted where the
    /// verdict is acted on).
    #[inline]
    pub fn cause(&self, c: Cause) {
        let counter = match c {
            Cause::Malformed(m) => self.malformed.get(m.index()),
            Cause::Untranslatable(u) => self.untranslatable.get(u.index()),
            Cause::Martian(m) => self.martian.get(m.index()),
        };
        if let Some(n) = counter {
            n.add(1);
        }
    }

    /// Runs `f` on the stats of `service` and of `backend`, those that are
    /// given. Two plain branches, not an iterator over both: this is on
    /// every forwarded packet, and the iterator cost it a dozen
    /// instructions. Ids are below the maxima (`services::IdRegistry`
    /// hands out no more); masked, they index without a bounds check.
    #[inline(always)]
    fn each(&self, service: Option<ServiceId>, backend: Option<BackendId>, f: impl Fn(&FlowStats)) {
        if let Some(s) = service {
            debug_assert!(s.index() < MAX_SERVICES);
            f(&self.services[s.index() & (MAX_SERVICES - 1)]);
        }
        if let Some(b) = backend {
            debug_assert!(b.index() < MAX_BACKENDS);
            f(&self.backends[b.index() & (MAX_BACKENDS - 1)]);
        }
    }

    #[inline]
    pub fn packet(&self, service: Option<ServiceId>, backend: Option<BackendId>, bytes: u32) {
        self.each(service, backend, |s| {
            s.packets.add(1);
            s.bytes.add(u64::from(bytes));
        });
    }

    /// A packet toward `backend` (of `service`) failed to leave.
    #[inline]
    pub fn tx_failed(&self, service: Option<ServiceId>, backend: Option<BackendId>) {
        self.each(service, backend, |s| {
            s.tx_failed.add(1);
        });
    }

    /// A new flow, and [`Self::packet`] for the packet that opened it:
    /// one look-up of each counter set for both.
    #[inline]
    pub fn flow_started_by(&self, service: Option<ServiceId>, backend: Option<BackendId>, bytes: u32) {
        self.each(service, backend, |s| {
            s.new_flows.add(1);
            s.active_flows.add(1);
            s.packets.add(1);
            s.bytes.add(u64::from(bytes));
        });
    }

    /// A flow carried over from the previous process: active again, but
    /// not new.
    pub fn flow_restored(&self, service: Option<ServiceId>, backend: Option<BackendId>, closing: bool) {
        self.flows_by(service, backend, closing, 1);
    }

    #[inline]
    pub fn flow_ended(&self, service: Option<ServiceId>, backend: Option<BackendId>, closing: bool) {
        self.flows_by(service, backend, closing, -1);
    }

    /// Moves the active flow gauges by `delta`, and with `closing` the
    /// closing ones too.
    #[inline]
    fn flows_by(&self, service: Option<ServiceId>, backend: Option<BackendId>, closing: bool, delta: i64) {
        self.each(service, backend, |s| {
            s.active_flows.add(delta as u64);
            if closing {
                s.closing_flows.add(delta as u64);
            }
        });
    }

    /// A flow entered (+1) or left (-1) the closing states; called on
    /// state transitions only, never per packet.
    #[inline]
    pub fn flow_closing(&self, service: Option<ServiceId>, backend: Option<BackendId>, delta: i64) {
        self.each(service, backend, |s| {
            s.closing_flows.add(delta as u64);
        });
    }
}
