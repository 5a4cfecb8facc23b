//! `shunt-gen`: a TX-only AF_XDP traffic generator for the lab comparison.
//!
//! One socket on one (interface, queue), bound like a worker's (zero-copy
//! where the driver can, copy mode otherwise, `need_wakeup` on) on a UMEM of
//! [`FRAMES`] frames. Every frame gets the same Ethernet/IPv4/UDP template
//! once at start; per packet the loop takes a free frame, stamps the next
//! flow's source address and port and the two checksums into it
//! ([`frame::Template::stamp`]: four small writes and a few additions), and
//! puts it on the TX ring. Completed frames come back through the completion
//! ring. No allocation and at most [`MAX_KICKS`] syscalls per batch of 64.
//!
//! Flows: `--flows N` distinct 5-tuples (UDP, src addr, src port, dst addr,
//! dst port); the source port walks `--src-ports` ports from `--src-port`,
//! then the source address moves to the next one ([`frame::Flows`]).
//! Packets go round-robin over the flows in that fixed order.
//!
//! A TX-only socket needs no XDP program: nothing is redirected to it, and
//! whatever the interface receives goes on to the kernel as before (unless
//! another program on the interface says otherwise).

pub mod frame;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use xdpilone::xdp::XdpDesc;

use frame::{Flows, Header, Template, MIN_FRAME};
use shunt::config::{Dataplane, HugepageMode, PollMode, ZeroCopyMode};
use shunt::xsk::{QueueSpec, SocketStats, WorkerXsk};

/// UMEM frames: the TX ring (2048) plus as many in completion.
pub const FRAMES: u32 = 4096;
/// TX and completion ring size.
pub const RING: u32 = 2048;
/// Descriptors put on the TX ring per loop iteration.
pub const BATCH: u32 = 64;
/// Copy-mode sendto() kicks per batch: one where the kernel took a larger
/// TX budget (Linux 6.17+); with its default of 32 frames per call, 4
/// cover two batches.
pub const MAX_KICKS: u32 = 4;
/// Most flows `--flows` accepts.
pub const MAX_FLOWS: u32 = 1_000_000;
/// How long the end of a run waits for the last completions.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a bind that finds the queue busy is retried.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Options of `shunt-gen` (clap derive; validated by [`Plan::new`]).
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Interface to transmit on (in the current network namespace).
    #[arg(long)]
    pub iface: String,
    /// Queue of the interface to bind to.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Source MAC [default: the interface's own].
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<String>,
    /// Destination MAC, i.e. the next hop's [default: the neighbour-table
    /// entry of --dst-ip on --iface; with a router in between, pass the
    /// router's MAC here].
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<String>,
    /// Source address of the first flow; later flows count up from it.
    #[arg(long, value_name = "IPV4")]
    pub src_ip: Ipv4Addr,
    #[arg(long, value_name = "IPV4")]
    pub dst_ip: Ipv4Addr,
    #[arg(long, default_value_t = 9)]
    pub dst_port: u16,
    /// Source port of the first flow.
    #[arg(long, default_value_t = 1024)]
    pub src_port: u16,
    /// Source ports per source address before the next address is used
    /// [default: all from --src-port to 65535].
    #[arg(long, value_name = "N")]
    pub src_ports: Option<u32>,
    /// Distinct 5-tuples, 1..=1000000.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Frame size in bytes without FCS (Ethernet + IPv4 + UDP + payload),
    /// 60..=MTU+14.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many packets. Without --duration or --count: until SIGINT/SIGTERM.
    #[arg(long, value_name = "PACKETS")]
    pub count: Option<u64>,
    /// Average packets per second [default: as fast as the socket takes them].
    #[arg(long, value_name = "PPS")]
    pub rate: Option<f64>,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Print the final summary as one JSON line on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Why `shunt-gen` refuses its options.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GenError {
    #[error("--flows must be 1..={MAX_FLOWS}, got {0}")]
    Flows(u32),
    #[error("--size {size} is out of range: frames are {MIN_FRAME}..={max} bytes without FCS ({why})")]
    Size { size: usize, max: usize, why: String },
    #[error("--src-ports must be 1..=65536, got {0}")]
    SrcPorts(u32),
    #[error(
        "--flows {flows} from {src_ip} port {src_port} with {ports} port(s) per address would run past \
         port 65535 or address 255.255.255.255; lower --src-port or --src-ports"
    )]
    Wraps { flows: u32, src_ip: Ipv4Addr, src_port: u16, ports: u32 },
    #[error("--{option} {value:?} is not a MAC address (want six hex pairs: 02:00:00:00:00:01)")]
    Mac { option: &'static str, value: String },
    #[error("--duration must be a positive number of seconds, got {0}")]
    Duration(f64),
    #[error("--count must be at least 1")]
    Count,
    #[error("--rate must be a positive number of packets per second, got {0}")]
    Rate(f64),
    #[error("--cpu {cpu} does not exist: this host has {online} CPU(s)")]
    Cpu { cpu: usize, online: usize },
    #[error("interface {0} not found in this network namespace")]
    NoInterface(String),
    #[error("{iface} has {count} queue(s): --queue {queue} does not exist")]
    Queue { iface: String, queue: u32, count: u32 },
    #[error(
        "no neighbour entry for {ip} on {iface}: pass --dst-mac (the next hop's MAC), or add one: \
         ip neigh replace {ip} lladdr MAC dev {iface}"
    )]
    NoNeighbour { ip: Ipv4Addr, iface: String },
}

/// Validated options: everything the loop needs, nothing left to check.
#[derive(Debug, Clone)]
pub struct Plan {
    pub iface: String,
    pub queue: u32,
    pub header: Header,
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
    pub src_ports: u32,
    pub flows: u32,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub rate: Option<f64>,
    pub cpu: Option<usize>,
    pub json: bool,
    /// UMEM chunk: 2048, or 4096 for frames that do not fit.
    pub frame_size: u32,
}

impl Plan {
    /// Checks the options alone, then the host (interface, MTU, queue,
    /// CPU, neighbour); no privileges needed.
    pub fn new(a: &GenArgs) -> Result<Plan, GenError> {
        if a.flows == 0 || a.flows > MAX_FLOWS {
            return Err(GenError::Flows(a.flows));
        }
        let src_ports = a.src_ports.unwrap_or(65536 - u32::from(a.src_port));
        if src_ports == 0 || src_ports > 65536 {
            return Err(GenError::SrcPorts(src_ports));
        }
        if Flows::last(a.src_ip, a.src_port, src_ports, a.flows).is_none() {
            return Err(GenError::Wraps {
                flows: a.flows,
                src_ip: a.src_ip,
                src_port: a.src_port,
                ports: src_ports,
            });
        }
        let mac = |option: &'static str, v: &Option<String>| -> Result<Option<[u8; 6]>, GenError> {
            v.as_deref()
                .map(|s| shunt::config::parse_mac(s).ok_or(GenError::Mac { option, value: s.to_string() }))
                .transpose()
        };
        let src_mac = mac("src-mac", &a.src_mac)?;
        let dst_mac = mac("dst-mac", &a.dst_mac)?;
        if let Some(d) = a.duration {
            if !(d.is_finite() && d > 0.0) {
                return Err(GenError::Duration(d));
            }
        }
        if a.count == Some(0) {
            return Err(GenError::Count);
        }
        if let Some(r) = a.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(GenError::Rate(r));
            }
        }
        // Frames never span two UMEM chunks (no multi-buffer).
        const MAX_CHUNK: usize = 4096;
        if a.size < MIN_FRAME || a.size > MAX_CHUNK {
            return Err(GenError::Size {
                size: a.size,
                max: MAX_CHUNK,
                why: "one UMEM frame of at most 4096 bytes".into(),
            });
        }
        if let Some(cpu) = a.cpu {
            let online = shunt::sys::online_cpus();
            if cpu >= online {
                return Err(GenError::Cpu { cpu, online });
            }
        }

        // The host.
        let ifindex = shunt::sys::ifindex(&a.iface).ok_or_else(|| GenError::NoInterface(a.iface.clone()))?;
        if let Some(mtu) = shunt::sys::mtu(&a.iface).map(usize::from) {
            if a.size > mtu + 14 {
                return Err(GenError::Size {
                    size: a.size,
                    max: mtu + 14,
                    why: format!("MTU {mtu} of {} + 14 bytes of Ethernet header", a.iface),
                });
            }
        }
        let queues = shunt::sys::rx_queue_count(&a.iface);
        if a.queue >= queues {
            return Err(GenError::Queue { iface: a.iface.clone(), queue: a.queue, count: queues });
        }
        let src_mac = src_mac.or_else(|| shunt::sys::mac_address(&a.iface)).unwrap_or([0; 6]);
        let dst_mac = match dst_mac {
            Some(m) => m,
            None => neighbour(a.dst_ip, &a.iface, ifindex)?,
        };
        Ok(Plan {
            iface: a.iface.clone(),
            queue: a.queue,
            header: Header { src_mac, dst_mac, dst_ip: a.dst_ip, dst_port: a.dst_port, size: a.size },
            src_ip: a.src_ip,
            src_port: a.src_port,
            src_ports,
            flows: a.flows,
            duration: a.duration.map(Duration::from_secs_f64),
            count: a.count,
            rate: a.rate,
            cpu: a.cpu,
            json: a.json,
            frame_size: if a.size <= 2048 { 2048 } else { 4096 },
        })
    }
}

/// The MAC of `ip` on `iface` from the neighbour table; if the kernel has
/// none yet, solicits it and waits up to a second.
fn neighbour(ip: Ipv4Addr, iface: &str, ifindex: u32) -> Result<[u8; 6], GenError> {
    let lookup = || shunt::sys::neigh::lookup(ip.into(), Some(ifindex)).ok().flatten();
    if let Some(m) = lookup() {
        return Ok(m);
    }
    if shunt::sys::neigh::solicit(ip.into(), iface).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(m) = lookup() {
                return Ok(m);
            }
        }
    }
    Err(GenError::NoNeighbour { ip, iface: iface.to_string() })
}

/// What a run did; `--json` prints it as one line.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub iface: String,
    pub queue: u32,
    pub zero_copy: bool,
    pub flows: u32,
    pub size: usize,
    /// Packets the kernel took from the TX ring and completed (sent, or
    /// dropped by the driver after it took them).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Put on the TX ring; equals `tx_packets` unless completions were
    /// still missing when the drain timed out.
    pub submitted: u64,
    /// From the first submit to the last completion.
    pub seconds: f64,
    pub mpps: f64,
    /// Frame bytes only (no preamble, FCS or gap).
    pub gbps: f64,
    /// The kernel's count of TX descriptors it refused (should be 0).
    pub tx_invalid_descs: u64,
    /// sendto() calls made to transmit (copy mode) or wake the driver.
    pub kicks: u64,
    /// Most frames one copy-mode sendto() sends (32 unless the kernel took more).
    pub tx_budget: u32,
}

/// Runs the generator until its limit or `stop`; prints progress each
/// second and the summary.
pub fn run(plan: &Plan, stop: &AtomicBool) -> Result<Summary> {
    if let Some(cpu) = plan.cpu {
        shunt::sys::pin_to_core(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    let dp = Dataplane {
        frame_size: plan.frame_size,
        max_frame_size: plan.frame_size - shunt::config::RX_HEADROOM,
        frames_per_worker: FRAMES,
        ring_size: RING,
        batch_size: BATCH,
        hugepages: HugepageMode::Auto,
        poll: PollMode::Busy,
        zero_copy: ZeroCopyMode::Auto,
        realtime_priority: 0,
        busy_poll_budget: 0,
        // The generator answers nothing.
        errors: shunt::config::RateLimit::default(),
        errors_per_destination: shunt::config::RateLimit::default(),
    };
    let queues = [QueueSpec { interface: &plan.iface, interface_idx: 0, queue: plan.queue }];
    // A socket closed just before (the previous run) keeps the queue until
    // the kernel's deferred release has run: retry for a moment.
    let busy_until = Instant::now() + BUSY_RETRY;
    let mut xsk = loop {
        match WorkerXsk::new(&dp, &queues) {
            Ok(x) => break x,
            Err(e) if Instant::now() < busy_until && e.is_queue_busy() => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("setting up the AF_XDP socket")),
        }
    };
    let (base, len) = xsk.umem_base();
    let fsize = plan.frame_size as usize;
    let frames = len / fsize;
    // Every frame gets the template now, before any is on a ring.
    let mut template = None;
    for i in 0..frames {
        // SAFETY: frame `i` lies inside the UMEM mapping (`i * fsize + fsize
        // <= len`), which `xsk` keeps alive; no ring holds any frame yet, so
        // the kernel does not read it, and no other reference to it exists.
        let f = unsafe { std::slice::from_raw_parts_mut(base.add(i * fsize), fsize) };
        template = Template::new(plan.header, f);
    }
    let template =
        template.ok_or_else(|| anyhow!("frame size {} does not fit a UMEM frame", plan.header.size))?;
    let zero_copy = xsk.ports[0].zero_copy;
    let fd = xsk.ports[0].fd();
    tracing::info!(
        iface = %plan.iface,
        queue = plan.queue,
        mode = if zero_copy { "zero-copy" } else { "copy" },
        hugepages = xsk.hugepages(),
        flows = plan.flows,
        size = plan.header.size,
        "shunt-gen: sending"
    );

    let mut flows = Flows::new(plan.src_ip, plan.src_port, plan.src_ports, plan.flows);
    let len = plan.header.size as u32;
    let mut submitted: u64 = 0;
    let mut completed: u64 = 0;
    let mut kicks: u64 = 0;
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let mut last_done = start;
    let mut report_at = start + Duration::from_secs(1);
    let mut reported: u64 = 0;
    let mut reported_at = start;
    let mut draining_since: Option<Instant> = None;
    let mut progress = Progress { json: plan.json };

    loop {
        // Reap completions.
        let n = xsk.reclaim(0);
        if n > 0 {
            completed += u64::from(n);
            last_done = Instant::now();
        }
        let port = &mut xsk.ports[0];
        let now = Instant::now();
        if now >= report_at {
            let secs = now.duration_since(start).as_secs_f64();
            let dt = now.duration_since(reported_at).as_secs_f64().max(1e-9);
            progress.line(format_args!(
                "gen: {secs:6.1} s  tx {completed:>12}  {:.3} Mpps",
                (completed - reported) as f64 / dt / 1e6
            ));
            reported = completed;
            reported_at = now;
            report_at += Duration::from_secs(1);
        }

        let finished = stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| now >= d)
            || plan.count.is_some_and(|c| submitted >= c);
        if finished {
            let since = *draining_since.get_or_insert(now);
            if port.tx_outstanding == 0 || now.duration_since(since) > DRAIN_TIMEOUT {
                break;
            }
        } else {
            // How many to put on the ring now.
            let mut want = u64::from(BATCH).min(xsk.pool.available() as u64);
            if let Some(c) = plan.count {
                want = want.min(c - submitted);
            }
            if let Some(rate) = plan.rate {
                // Packets due by now; +1 so the first goes at once.
                let due = (now.duration_since(start).as_secs_f64() * rate) as u64 + 1;
                want = want.min(due.saturating_sub(submitted));
                if want == 0 {
                    let next = Duration::from_secs_f64(submitted as f64 / rate);
                    let wait = next.saturating_sub(now.duration_since(start));
                    if wait > Duration::from_micros(200) {
                        std::thread::sleep(wait.min(Duration::from_millis(1)));
                    }
                }
            }
            if want > 0 {
                // One submit time per burst (payload bytes 0..8, see frame.rs).
                let sent_at = shunt::sys::monotonic_ns();
                let mut tx = port.tx.transmit(want as u32);
                let room = tx.capacity();
                let mut put = 0;
                while put < room {
                    let Some(frame) = xsk.pool.alloc() else { break };
                    let addr = frame.into_desc();
                    // SAFETY: `addr` is a frame base from the pool, so it is
                    // inside the UMEM mapping with `fsize` bytes, and it is in
                    // no ring: the kernel does not touch it until we put it
                    // on the TX ring below, and no other reference exists.
                    let f = unsafe { std::slice::from_raw_parts_mut(base.add(addr as usize), fsize) };
                    let (src, sport) = flows.next_flow();
                    template.stamp(f, src, sport, sent_at);
                    tx.insert_once(XdpDesc { addr, len, options: 0 });
                    put += 1;
                }
                tx.commit();
                port.tx_outstanding += put;
                submitted += u64::from(put);
            }
        }
        // Make the kernel send what is on the ring.
        if zero_copy {
            if port.tx.needs_wakeup() {
                kick(fd).with_context(|| format!("waking TX on {}", plan.iface))?;
                kicks += 1;
            }
        } else {
            for _ in 0..MAX_KICKS {
                if port.tx.pending() == 0 {
                    break;
                }
                kick(fd).with_context(|| format!("sendto on {} (is it up?)", plan.iface))?;
                kicks += 1;
            }
        }
    }

    let seconds = last_done.duration_since(start).as_secs_f64().max(1e-9);
    let unconfirmed = submitted - completed;
    if unconfirmed > 0 {
        tracing::warn!(unconfirmed, "shunt-gen: TX completions still missing after {:?}", DRAIN_TIMEOUT);
    }
    let tx_bytes = completed * u64::from(len);
    let stats = SocketStats::read(fd).unwrap_or_default();
    Ok(Summary {
        iface: plan.iface.clone(),
        queue: plan.queue,
        zero_copy,
        flows: plan.flows,
        size: plan.header.size,
        tx_packets: completed,
        tx_bytes,
        submitted,
        seconds,
        mpps: completed as f64 / seconds / 1e6,
        gbps: tx_bytes as f64 * 8.0 / seconds / 1e9,
        tx_invalid_descs: stats.tx_invalid_descs,
        kicks,
        tx_budget: xsk.ports[0].tx_budget,
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "shunt-gen: sent {} packets ({} bytes) in {:.3} s: {:.3} Mpps, {:.3} Gbit/s; {} flow(s), {} B frames, \
             {} {} queue {}{}",
            self.tx_packets,
            self.tx_bytes,
            self.seconds,
            self.mpps,
            self.gbps,
            self.flows,
            self.size,
            if self.zero_copy { "zero-copy" } else { "copy mode" },
            self.iface,
            self.queue,
            if self.submitted == self.tx_packets {
                String::new()
            } else {
                format!("; {} submitted, not all completed", self.submitted)
            }
        )
    }
}

/// Progress lines: stdout, or stderr when stdout carries the JSON summary.
struct Progress {
    json: bool,
}

impl Progress {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        // A closed pipe must not stop the generator.
        let _ = if self.json {
            writeln!(std::io::stderr(), "{args}")
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{args}").and_then(|()| out.flush())
        };
    }
}

/// Tells the kernel to process the TX ring. "Busy" answers (the device
/// queue is full or stopped) are not errors: the next kick retries.
fn kick(fd: i32) -> std::io::Result<()> {
    // SAFETY: sendto with no buffer (null, length 0) and no address on our
    // own AF_XDP socket: the kernel reads no user memory, it only processes
    // the TX ring.
    let rc = unsafe { libc::sendto(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
    if rc >= 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(()),
        _ => Err(e),
    }
}

/// `shunt-gen` end to end: validate, check privileges, run, print.
pub fn main(args: &GenArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let plan = Plan::new(args)?;
    shunt::sys::check_socket_privileges().map_err(anyhow::Error::msg)?;
    let summary = run(&plan, &stop)?;
    if plan.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}
