//! AF_XDP: one UMEM per worker, shared by that worker's sockets on every
//! interface, so a frame received on one interface can be transmitted on
//! another without a copy. Each (interface, queue) socket has its own
//! fill/completion rings, as the kernel requires for shared UMEM.

pub mod busy_poll;
#[cfg(test)]
pub mod fake;
mod io;
pub mod pool;
pub mod umem;

use std::ffi::CString;
use std::io::Error as IoError;
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::{DeviceQueue, Errno, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use crate::config::{Dataplane, ZeroCopyMode};
pub use busy_poll::BusyPoll;
pub use io::{PortIo, TxNext, XDP_PKT_CONTD};
pub use pool::{Frame, FramePool};
use umem::UmemArea;

/// Why AF_XDP setup failed.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// `hugepages = "require"` and the hugepage mapping failed.
    #[error(
        "hugepages = \"require\" but a {mib} MiB hugepage mapping failed; reserve pages with \
         `echo N > /proc/sys/vm/nr_hugepages`"
    )]
    HugepagesUnavailable {
        mib: usize,
        #[source]
        source: IoError,
    },
    /// Mapping the UMEM on ordinary pages failed.
    #[error("mapping {len} bytes of UMEM")]
    Map {
        len: usize,
        #[source]
        source: IoError,
    },
    /// The kernel refused to register the UMEM.
    #[error("registering UMEM ({mib} MiB)")]
    Register {
        mib: usize,
        #[source]
        source: IoError,
    },
    /// The interface name cannot be passed to the kernel.
    #[error("interface name {0:?} contains a NUL byte")]
    InterfaceName(String),
    /// No interface of that name.
    #[error("interface {interface} not found")]
    NoInterface {
        interface: String,
        #[source]
        source: IoError,
    },
    /// socket(AF_XDP) failed.
    #[error("socket(AF_XDP) (needs CAP_NET_RAW)")]
    Socket(#[source] IoError),
    /// Creating or mapping one of the socket's rings failed.
    #[error("creating the {ring} ring")]
    Ring {
        ring: &'static str,
        #[source]
        source: IoError,
    },
    /// `zero_copy = "require"` on a driver without AF_XDP zero-copy.
    #[error("zero_copy = \"require\" but the driver of {interface} has no AF_XDP zero-copy support")]
    ZeroCopyUnsupported { interface: String },
    /// `zero_copy = "require"`, and a socket sharing the UMEM got copy mode.
    #[error("zero_copy = \"require\" but {interface} bound in copy mode")]
    CopyModeBound { interface: String },
    /// Another AF_XDP socket holds the queue.
    #[error(transparent)]
    QueueBusy(#[from] QueueBusy),
    /// bind(2) failed for another reason.
    #[error("bind")]
    Bind(#[source] IoError),
    /// Reading back the bound mode (XDP_OPTIONS) failed.
    #[error("getsockopt(XDP_OPTIONS)")]
    Options(#[source] IoError),
    /// A step above failed on this (interface, queue).
    #[error("AF_XDP socket on {interface} queue {queue}")]
    Port {
        interface: String,
        queue: u32,
        #[source]
        source: Box<XskError>,
    },
}

impl XskError {
    /// Whether the queue was still held by another socket (which the kernel
    /// releases asynchronously after the previous owner exits).
    pub fn is_queue_busy(&self) -> bool {
        match self {
            XskError::QueueBusy(_) => true,
            XskError::Port { source, .. } => source.is_queue_busy(),
            _ => false,
        }
    }
}

fn os(e: Errno) -> IoError {
    IoError::from_raw_os_error(e.get_raw().abs())
}

/// One bound AF_XDP socket: an (interface, queue) this worker serves.
pub struct Port {
    pub interface: String,
    /// Index into `Config::interfaces`.
    pub interface_idx: usize,
    pub queue: u32,
    pub zero_copy: bool,
    pub mac: [u8; 6],
    /// The interface's L3 MTU (1500 when sysfs does not say).
    pub mtu: u16,
    pub fq_cq: DeviceQueue,
    pub rx: RingRx,
    pub tx: RingTx,
    /// Frames handed to TX and not yet completed.
    pub tx_outstanding: u32,
    /// The fill ring has been given frames at least once.
    pub primed: bool,
    /// Whether an empty RX poll runs the queue's NAPI through recvfrom().
    pub busy_poll: BusyPoll,
    /// Most frames one copy-mode sendto() sends.
    pub tx_budget: u32,
    /// Descriptors the TX ring holds.
    pub tx_size: u32,
    _user: User,
}

impl Port {
    pub fn fd(&self) -> i32 {
        self.rx.as_raw_fd()
    }
}

/// A worker's UMEM with its ports (AF_XDP sockets, or in tests in-memory
/// rings). Field order is drop order: sockets close before the UMEM
/// registration; the memory goes when its last holder drops it.
pub struct WorkerXsk<P = Port> {
    pub ports: Vec<P>,
    pub pool: FramePool,
    umem: Option<Umem>,
    area: Arc<UmemArea>,
}

pub struct QueueSpec<'a> {
    pub interface: &'a str,
    pub interface_idx: usize,
    pub queue: u32,
}

const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Bind flag: the socket takes multi-buffer packets (`linux/if_xdp.h`).
const XDP_USE_SG: u16 = 1 << 4;
/// Frames a copy-mode sendto() sends by default (the kernel's TX_BATCH_SIZE).
pub const KERNEL_TX_BATCH: u32 = 32;

impl WorkerXsk<Port> {
    pub fn new(dp: &Dataplane, queues: &[QueueSpec<'_>]) -> Result<WorkerXsk, XskError> {
        let len = dp.frames_per_worker as usize * dp.frame_size as usize;
        let area = Arc::new(UmemArea::new(len, dp.hugepages)?);
        crate::state::gap::mark(&format!("UMEM mapped ({} MiB)", len >> 20));
        let mem = NonNull::new(std::ptr::slice_from_raw_parts_mut(area.base(), len))
            .ok_or_else(|| XskError::Map { len, source: IoError::other("mmap returned null") })?;
        let config = UmemConfig {
            fill_size: dp.ring_size,
            complete_size: dp.ring_size,
            frame_size: dp.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `mem` is a fresh page-aligned mapping of `len` bytes owned
        // by `area`; WorkerXsk holds the area and drops the registration
        // (and every socket) before its own reference to it.
        let umem = unsafe { Umem::new(config, mem) }
            .map_err(|e| XskError::Register { mib: len >> 20, source: os(e) })?;
        crate::state::gap::mark("UMEM registered");

        let mut ports = Vec::with_capacity(queues.len());
        for (i, q) in queues.iter().enumerate() {
            let first = i == 0;
            ports.push(bind_port(&umem, dp, q, first).map_err(|e| XskError::Port {
                interface: q.interface.to_string(),
                queue: q.queue,
                source: Box::new(e),
            })?);
        }
        let pool = FramePool::new(dp.frames_per_worker, dp.frame_size);
        Ok(WorkerXsk { ports, pool, umem: Some(umem), area })
    }
}

impl WorkerXsk<Port> {
    /// Closes every socket side by side: each close waits for the kernel to
    /// stop using the socket (an RCU grace period), and a planned restart's
    /// gap waits for the closes. The first socket's descriptor is also the
    /// UMEM registration's, so it closes only when both the port and the
    /// registration are dropped: the registration goes beside the ports,
    /// not after them. The memory stays mapped for holders of its frames.
    pub fn close_sockets(&mut self) {
        let ports = std::mem::take(&mut self.ports);
        let umem = self.umem.take();
        std::thread::scope(|s| {
            for p in ports {
                s.spawn(move || drop(p));
            }
            drop(umem);
        });
    }
}

impl<P: PortIo> WorkerXsk<P> {
    /// Ports over memory the caller maps (no kernel UMEM registration):
    /// `frames` frames of `frame_size` bytes in `area`.
    pub fn in_memory(ports: Vec<P>, area: Arc<UmemArea>, frames: u32, frame_size: u32) -> WorkerXsk<P> {
        debug_assert!(frames as usize * frame_size as usize <= area.len());
        WorkerXsk { ports, pool: FramePool::new(frames, frame_size), umem: None, area }
    }

    /// The UMEM mapping: base and length.
    pub fn umem_base(&self) -> (*mut u8, usize) {
        (self.area.base(), self.area.len())
    }

    /// A shared handle on the UMEM memory, for holders of its frames.
    pub fn area(&self) -> Arc<UmemArea> {
        self.area.clone()
    }

    pub fn hugepages(&self) -> bool {
        self.area.hugepages
    }

    /// Returns the frames the kernel has finished transmitting on `port` to
    /// the pool; how many.
    pub fn reclaim(&mut self, port: usize) -> u32 {
        let p = &mut self.ports[port];
        let outstanding = *p.tx_outstanding();
        if outstanding == 0 {
            return 0;
        }
        let pool = &mut self.pool;
        let n = p.complete(outstanding, |f| pool.free(f));
        *p.tx_outstanding() -= n;
        n
    }

    pub fn frames(&self) -> u32 {
        self.umem.as_ref().map_or(self.pool.total(), Umem::len_frames)
    }

    /// Tops every port's fill ring up to `target` frames from the pool, so
    /// the kernel can deliver to a socket before its worker loop runs:
    /// what arrives then waits in the RX ring (up to the ring's size; the
    /// kernel counts the rest as `rx_ring_full` or
    /// `rx_fill_ring_empty_descs`). Returns the frames given.
    pub fn prime(&mut self, target: u32) -> u32 {
        let mut given = 0;
        for p in &mut self.ports {
            let want = target.saturating_sub(p.fill_pending());
            let pool = &mut self.pool;
            let n = p.fill(want, || pool.alloc());
            *p.primed() |= n > 0;
            if n > 0 {
                p.kick_fill();
            }
            given += n;
        }
        given
    }
}

/// How long a bind waits for a queue still held by a socket being released.
const QUEUE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn bind_port(umem: &Umem, dp: &Dataplane, q: &QueueSpec<'_>, first: bool) -> Result<Port, XskError> {
    let name = CString::new(q.interface).map_err(|_| XskError::InterfaceName(q.interface.to_string()))?;
    let mut info = IfInfo::invalid();
    info.from_name(&name)
        .map_err(|e| XskError::NoInterface { interface: q.interface.to_string(), source: os(e) })?;
    info.set_queue(q.queue);

    // The first socket owns the UMEM fd; later ones share it. The kernel
    // rejects mode flags on shared binds: they inherit the first one's.
    let sock = if first { Socket::with_shared(&info, umem) } else { Socket::new(&info) }
        .map_err(|e| XskError::Socket(os(e)))?;
    let fq_cq = umem.fq_cq(&sock).map_err(|e| XskError::Ring { ring: "fill/completion", source: os(e) })?;
    // Frames above one chunk arrive and leave as chains of chunks
    // (multi-buffer AF_XDP, Linux 6.6+). Only the first socket says so;
    // sockets sharing its UMEM inherit it (the kernel refuses the flag there).
    let sg = if dp.max_frame_size > dp.frame_size - crate::config::RX_HEADROOM { XDP_USE_SG } else { 0 };
    let bind_flags = if first {
        SocketConfig::XDP_BIND_NEED_WAKEUP
            | sg
            | match dp.zero_copy {
                ZeroCopyMode::Auto => 0,
                ZeroCopyMode::Require => SocketConfig::XDP_BIND_ZEROCOPY,
                ZeroCopyMode::Off => SocketConfig::XDP_BIND_COPY,
            }
    } else {
        0
    };
    let ring = NonZeroU32::new(dp.ring_size);
    let user = umem
        .rx_tx(&sock, &SocketConfig { rx_size: ring, tx_size: ring, bind_flags })
        .map_err(|e| XskError::Ring { ring: "RX/TX", source: os(e) })?;
    // The socket of a process that just died (kill -9, a crash) leaves its
    // queue a moment after the process: a start right behind it waits for
    // that rather than failing.
    // A planned restart waits here too, for the old image's sockets: the
    // retry interval is short because every millisecond of it is gap.
    let t0 = std::time::Instant::now();
    let busy_until = t0 + QUEUE_RELEASE_WAIT;
    let mut busy = 0u32;
    let bound = loop {
        match umem.bind(&user) {
            Err(e) if e.get_raw().abs() == libc::EBUSY && std::time::Instant::now() < busy_until => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => break r,
        }
    };
    crate::state::gap::mark(&format!(
        "{} queue {} bound ({busy} busy retries, {:.1} ms)",
        q.interface,
        q.queue,
        t0.elapsed().as_secs_f64() * 1000.0
    ));
    bound.map_err(|e| match e.get_raw().abs() {
        libc::EOPNOTSUPP if dp.zero_copy == ZeroCopyMode::Require => {
            XskError::ZeroCopyUnsupported { interface: q.interface.to_string() }
        }
        libc::EBUSY => QueueBusy { interface: q.interface.to_string(), queue: q.queue }.into(),
        _ => XskError::Bind(os(e)),
    })?;
    let rx = user.map_rx().map_err(|e| XskError::Ring { ring: "RX (mapping)", source: os(e) })?;
    let tx = user.map_tx().map_err(|e| XskError::Ring { ring: "TX (mapping)", source: os(e) })?;
    let zero_copy = bound_zero_copy(rx.as_raw_fd())?;
    let busy_poll = BusyPoll::request(rx.as_raw_fd(), dp.busy_poll_budget, q.interface);
    // Zero-copy drivers pull TX descriptors themselves; the budget is copy mode's.
    let tx_budget = if zero_copy { dp.ring_size } else { raise_tx_budget(rx.as_raw_fd(), dp.ring_size) };
    let mac = crate::sys::mac_address(q.interface).unwrap_or([0; 6]);
    let mtu = crate::sys::mtu(q.interface).unwrap_or(1500);
    if !first && dp.zero_copy == ZeroCopyMode::Require && !zero_copy {
        return Err(XskError::CopyModeBound { interface: q.interface.to_string() });
    }
    Ok(Port {
        interface: q.interface.to_string(),
        interface_idx: q.interface_idx,
        queue: q.queue,
        zero_copy,
        mac,
        mtu,
        fq_cq,
        rx,
        tx,
        tx_outstanding: 0,
        primed: false,
        busy_poll,
        tx_budget,
        tx_size: dp.ring_size,
        _user: user,
    })
}

/// Binding failed because another AF_XDP socket holds the queue. The
/// kernel releases a closed socket's hold asynchronously, so this also
/// happens briefly after the previous owner exited.
#[derive(Debug, thiserror::Error)]
#[error("{interface} queue {queue} is already bound by another AF_XDP socket")]
pub struct QueueBusy {
    pub interface: String,
    pub queue: u32,
}

/// Asks the kernel which mode a bound socket got (XDP_OPTIONS, Linux 5.3+).
fn bound_zero_copy(fd: i32) -> Result<bool, XskError> {
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `flags`/`len` are valid out-pointers sized for struct xdp_options.
    let rc = unsafe { libc::getsockopt(fd, SOL_XDP, XDP_OPTIONS, (&mut flags as *mut u32).cast(), &mut len) };
    if rc != 0 {
        return Err(XskError::Options(IoError::last_os_error()));
    }
    Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

/// Lets one copy-mode sendto() send up to a whole TX ring instead of the
/// kernel's default 32 frames (XDP_MAX_TX_SKB_BUDGET, Linux 6.17+), so one
/// kick per batch suffices. Returns the budget in force: older kernels
/// refuse the option and the worker kicks more than once.
fn raise_tx_budget(fd: i32, ring_size: u32) -> u32 {
    match crate::sys::setsockopt(fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &ring_size) {
        Ok(()) => ring_size,
        Err(e) => {
            tracing::debug!("XDP_MAX_TX_SKB_BUDGET not set: {e}");
            KERNEL_TX_BATCH
        }
    }
}

/// The kernel's per-socket drop counters (`struct xdp_statistics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Packets dropped because our RX ring was full (we did not keep up).
    pub rx_ring_full: u64,
    /// Packets dropped because the fill ring had no frame for them.
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl SocketStats {
    pub const NAMES: [&'static str; 6] = [
        "rx_dropped",
        "rx_invalid_descs",
        "tx_invalid_descs",
        "rx_ring_full",
        "rx_fill_ring_empty_descs",
        "tx_ring_empty_descs",
    ];

    pub fn values(&self) -> [u64; 6] {
        [
            self.rx_dropped,
            self.rx_invalid_descs,
            self.tx_invalid_descs,
            self.rx_ring_full,
            self.rx_fill_ring_empty_descs,
            self.tx_ring_empty_descs,
        ]
    }

    /// Reads XDP_STATISTICS of an AF_XDP socket (any thread may ask).
    pub fn read(fd: i32) -> Option<SocketStats> {
        const XDP_STATISTICS: libc::c_int = 7;
        let mut v = [0u64; 6];
        let mut len = std::mem::size_of_val(&v) as libc::socklen_t;
        // SAFETY: `v` is a writable buffer of `len` bytes for struct xdp_statistics.
        let rc = unsafe { libc::getsockopt(fd, SOL_XDP, XDP_STATISTICS, v.as_mut_ptr().cast(), &mut len) };
        (rc == 0).then_some(SocketStats {
            rx_dropped: v[0],
            rx_invalid_descs: v[1],
            tx_invalid_descs: v[2],
            rx_ring_full: v[3],
            rx_fill_ring_empty_descs: v[4],
            tx_ring_empty_descs: v[5],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakePort;
    use super::*;
    use crate::config::HugepageMode;

    fn two_ports(frames: u32, ring: usize) -> WorkerXsk<FakePort> {
        let area = Arc::new(UmemArea::new(frames as usize * 4096, HugepageMode::Off).unwrap());
        let ports =
            vec![FakePort::new(0, area.clone(), 4096, ring), FakePort::new(1, area.clone(), 4096, ring)];
        WorkerXsk::in_memory(ports, area, frames, 4096)
    }

    /// Before any worker loop runs, priming gives each fill ring its
    /// target from the pool, and a second call gives nothing more.
    #[test]
    fn prime_fills_every_port_to_its_target_once() {
        let mut xsk = two_ports(256, 64);
        assert_eq!(xsk.prime(48), 96);
        for p in &mut xsk.ports {
            assert_eq!(p.fill_pending(), 48);
            assert!(*p.primed());
        }
        assert_eq!(xsk.pool.available(), 256 - 96);
        assert_eq!(xsk.prime(48), 0, "already at the target");
    }

    /// A target above the ring stops at the ring; a pool that runs dry
    /// leaves the later ports short rather than losing frames.
    #[test]
    fn prime_stops_at_the_ring_and_at_the_pool() {
        let mut xsk = two_ports(256, 64);
        assert_eq!(xsk.prime(1000), 128);
        let mut xsk = two_ports(80, 64);
        assert_eq!(xsk.prime(64), 80);
        assert_eq!((xsk.ports[0].fill_pending(), xsk.ports[1].fill_pending()), (64, 16));
        assert_eq!(xsk.pool.available(), 0);
    }
}
