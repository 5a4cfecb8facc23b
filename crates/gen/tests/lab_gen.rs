//! `shunt-gen` on a real veth pair: what leaves the generator arrives, is
//! counted right, carries valid checksums (checked here with etherparse,
//! and by the receiving kernel's own UDP stack), and makes exactly the
//! requested number of distinct 5-tuples.
//!
//! Own namespaces (gen-t0 ─ veth ─ gen-t1), not the shunt-* lab; removed on
//! drop. Needs root; skipped with a line saying so otherwise.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use shunt_testkit::lab::{in_netns, lab_lock, ns_exec};

const SHUNT_GEN: &str = env!("CARGO_BIN_EXE_shunt-gen");
const NS_GEN: &str = "gen-t0";
const NS_PEER: &str = "gen-t1";
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const DST_PORT: u16 = 7777;

/// The veth pair in its two namespaces; deleted on drop (deleting a
/// namespace deletes its veth end, and with it the pair).
struct Pair;

impl Pair {
    fn up() -> Pair {
        Pair::down();
        let sh = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh(&["netns", "add", NS_GEN]);
        sh(&["netns", "add", NS_PEER]);
        sh(&["link", "add", "gt0", "netns", NS_GEN, "type", "veth", "peer", "name", "gt1", "netns", NS_PEER]);
        sh(&["-n", NS_GEN, "addr", "add", "10.77.0.1/24", "dev", "gt0"]);
        sh(&["-n", NS_PEER, "addr", "add", "10.77.0.2/24", "dev", "gt1"]);
        for (ns, dev) in [(NS_GEN, "gt0"), (NS_GEN, "lo"), (NS_PEER, "gt1"), (NS_PEER, "lo")] {
            sh(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The generator finds the destination MAC in its neighbour table.
        let mac = read_sys(NS_PEER, "gt1", "address");
        sh(&[
            "-n",
            NS_GEN,
            "neigh",
            "replace",
            "10.77.0.2",
            "lladdr",
            &mac,
            "dev",
            "gt0",
            "nud",
            "permanent",
        ]);
        Pair
    }

    fn down() {
        for ns in [NS_GEN, NS_PEER] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        Pair::down();
    }
}

/// /sys/class/net/IF/FILE as seen inside `ns`.
fn read_sys(ns: &str, dev: &str, file: &str) -> String {
    let out = ns_exec(ns, &["cat", &format!("/sys/class/net/{dev}/{file}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn read_counter(ns: &str, dev: &str, name: &str) -> u64 {
    read_sys(ns, dev, &format!("statistics/{name}")).parse().unwrap()
}

/// One counter of the `Udp:` lines of /proc/net/snmp of this thread's namespace.
fn snmp_udp(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// An AF_PACKET socket on `ifindex` that sees every frame, with a big buffer.
fn packet_socket(ifindex: u32) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, i32::from(proto)) };
    assert!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind(AF_PACKET): {}", std::io::Error::last_os_error());
    force_rcvbuf(fd.as_raw_fd());
    fd
}

fn force_rcvbuf(fd: i32) {
    let size: libc::c_int = 64 << 20;
    // SAFETY: `size` is a valid c_int option value of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Frames the packet socket dropped for lack of buffer (PACKET_STATISTICS).
fn packet_drops(fd: i32) -> u64 {
    let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st`/`len` are valid out-pointers for struct tpacket_stats.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    u64::from(st.tp_drops)
}

#[derive(Default)]
struct Seen {
    /// Generator frames (IPv4 UDP to PEER_IP:DST_PORT) per (src, sport).
    flows: HashMap<(Ipv4Addr, u16), u64>,
    frames: u64,
    /// Frames of that shape with a wrong IPv4 or UDP checksum, or whose
    /// length is not the requested size.
    bad_ip_csum: u64,
    bad_udp_csum: u64,
    bad_len: u64,
    /// Datagrams the peer's UDP socket received: the kernel accepted them.
    udp_received: u64,
    capture_drops: u64,
    udp_csum_errors: u64,
    udp_rcvbuf_errors: u64,
    /// Earliest and latest submit time in the payloads (CLOCK_MONOTONIC ns).
    stamps: Option<(u64, u64)>,
}

/// Captures in NS_PEER until `stop` and 300 ms of quiet.
fn capture(size: usize, stop: Arc<AtomicBool>, ready: mpsc::Sender<()>) -> std::thread::JoinHandle<Seen> {
    let ifindex: u32 = read_sys(NS_PEER, "gt1", "ifindex").parse().unwrap();
    in_netns(NS_PEER, move || {
        let pkt = packet_socket(ifindex);
        let udp = UdpSocket::bind((PEER_IP, DST_PORT)).unwrap();
        udp.set_nonblocking(true).unwrap();
        force_rcvbuf(udp.as_raw_fd());
        let csum0 = snmp_udp("InCsumErrors");
        let rcvbuf0 = snmp_udp("RcvbufErrors");
        ready.send(()).unwrap();
        let mut seen = Seen::default();
        let mut buf = [0u8; 4096];
        let mut quiet_since = Instant::now();
        loop {
            let mut any = false;
            loop {
                // SAFETY: `buf` is writable for its full length.
                let n = unsafe { libc::recv(pkt.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    break;
                }
                any = true;
                check_frame(&buf[..n as usize], size, &mut seen);
            }
            while udp.recv(&mut buf).is_ok() {
                any = true;
                seen.udp_received += 1;
            }
            if any {
                quiet_since = Instant::now();
            } else if stop.load(Ordering::Relaxed) && quiet_since.elapsed() > Duration::from_millis(300) {
                break;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        seen.capture_drops = packet_drops(pkt.as_raw_fd());
        seen.udp_csum_errors = snmp_udp("InCsumErrors") - csum0;
        seen.udp_rcvbuf_errors = snmp_udp("RcvbufErrors") - rcvbuf0;
        seen
    })
}

/// Counts a frame if it is one of the generator's, checking its checksums
/// with etherparse (independent of Shunt's wire code).
fn check_frame(frame: &[u8], size: usize, seen: &mut Seen) {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else { return };
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport) else { return };
    let h = ip.header();
    if h.destination_addr() != PEER_IP || udp.destination_port() != DST_PORT {
        return;
    }
    seen.frames += 1;
    *seen.flows.entry((h.source_addr(), udp.source_port())).or_default() += 1;
    let header = h.to_header();
    if header.calc_header_checksum() != h.header_checksum() {
        seen.bad_ip_csum += 1;
    }
    if udp.to_header().calc_checksum_ipv4(&header, udp.payload()).ok() != Some(udp.checksum()) {
        seen.bad_udp_csum += 1;
    }
    if frame.len() != size {
        seen.bad_len += 1;
    }
    if let Some(t) = udp.payload().get(..8).map(|b| u64::from_be_bytes(b.try_into().unwrap())) {
        let (lo, hi) = seen.stamps.unwrap_or((t, t));
        seen.stamps = Some((lo.min(t), hi.max(t)));
    }
}

struct GenRun {
    json: serde_json::Value,
    stdout: String,
    stderr: String,
}

fn gen(args: &[&str]) -> GenRun {
    let out = Command::new("ip")
        .args(["netns", "exec", NS_GEN, SHUNT_GEN, "--iface", "gt0", "--json"])
        .args(args)
        .output()
        .expect("run shunt-gen");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "shunt-gen failed:\n{stderr}\n{stdout}");
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{stdout}"));
    GenRun { json, stdout, stderr }
}

#[test]
fn gen_sends_exactly_the_requested_flows_with_valid_checksums() {
    let Some(_lock) = lab_lock() else { return };
    let _pair = Pair::up();
    const COUNT: u64 = 20_000;
    const FLOWS: usize = 1000;
    const SIZE: usize = 100;

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let cap = capture(SIZE, stop.clone(), ready_tx);
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("capture ready");
    let tx_dropped0 = read_counter(NS_GEN, "gt0", "tx_dropped");

    // 250 source ports per address: the 1000 flows spill over 4 source
    // addresses. The rate keeps the receiving veth's backlog (1000 frames)
    // from overflowing, so all 20000 should arrive; any loss must still be
    // accounted for by a kernel counter.
    let before = shunt::sys::monotonic_ns();
    let run = gen(&[
        "--src-ip",
        "10.77.0.101",
        "--dst-ip",
        "10.77.0.2",
        "--dst-port",
        "7777",
        "--src-port",
        "20000",
        "--src-ports",
        "250",
        "--flows",
        &FLOWS.to_string(),
        "--count",
        &COUNT.to_string(),
        "--size",
        &SIZE.to_string(),
        "--rate",
        "40000",
    ]);
    let after = shunt::sys::monotonic_ns();
    stop.store(true, Ordering::Relaxed);
    let seen = cap.join().expect("capture thread");
    let tx_dropped = read_counter(NS_GEN, "gt0", "tx_dropped") - tx_dropped0;
    let ctx = format!(
        "{} distinct flows, {} frames, bad ip/udp csum/len {}/{}/{}, peer UDP received {} (csum errors {}, \
         rcvbuf errors {}), capture drops {}, sender tx_dropped {tx_dropped}\n{}\n{}",
        seen.flows.len(),
        seen.frames,
        seen.bad_ip_csum,
        seen.bad_udp_csum,
        seen.bad_len,
        seen.udp_received,
        seen.udp_csum_errors,
        seen.udp_rcvbuf_errors,
        seen.capture_drops,
        run.stdout,
        run.stderr
    );

    // The generator's own account: exactly COUNT put on the ring and completed.
    assert_eq!(run.json["tx_packets"], COUNT, "{ctx}");
    assert_eq!(run.json["submitted"], COUNT, "{ctx}");
    assert_eq!(run.json["tx_invalid_descs"], 0, "{ctx}");
    assert_eq!(run.json["flows"], FLOWS, "{ctx}");
    assert!(run.stderr.contains("mode=\"copy\""), "veth binds in copy mode after trying zero-copy:\n{ctx}");

    // Every frame the generator completed either arrived or was counted as
    // dropped by the kernel: by the veth (the sender's tx_dropped) or by
    // our capture socket. Nothing else, and nothing extra.
    assert_eq!(seen.frames + seen.capture_drops + tx_dropped, COUNT, "{ctx}");
    // At 40 kpps on a veth nothing should be dropped; allow 1 % for a
    // starved CPU on a shared machine.
    assert!(seen.frames >= COUNT * 99 / 100, "{ctx}");

    // Every payload carries its submit time on the monotonic clock: inside
    // the run, spread over it (20000 packets at 40 kpps take 0.5 s).
    let (first, last) = seen.stamps.expect("timestamps");
    assert!(before < first && last < after, "stamps {first}..{last} outside the run {before}..{after}");
    assert!(last - first > 300_000_000, "stamps span only {} ns", last - first);

    // Checksums: etherparse's and the receiving kernel's verdicts.
    assert_eq!((seen.bad_ip_csum, seen.bad_udp_csum, seen.bad_len), (0, 0, 0), "{ctx}");
    assert_eq!(seen.udp_csum_errors, 0, "{ctx}");
    assert_eq!(
        seen.udp_received + seen.udp_rcvbuf_errors,
        seen.frames,
        "the peer's UDP stack took every frame: {ctx}"
    );

    // Exactly FLOWS distinct 5-tuples (protocol, destination fixed above),
    // all in the requested ranges, and round-robin: equal shares.
    assert_eq!(seen.flows.len(), FLOWS, "{ctx}");
    for (&(ip, port), &n) in &seen.flows {
        let o = ip.octets();
        assert!(o[..3] == [10, 77, 0] && (101..=104).contains(&o[3]), "source {ip}");
        assert!((20000..20250).contains(&port), "source port {port}");
        if seen.frames == COUNT {
            assert_eq!(n, COUNT / FLOWS as u64, "flow {ip}:{port}");
        }
    }
    let per_addr = |last: u8| seen.flows.keys().filter(|(ip, _)| ip.octets()[3] == last).count();
    assert_eq!([per_addr(101), per_addr(102), per_addr(103), per_addr(104)], [250; 4], "{ctx}");

    // Full size (MTU + 14), one flow, by time instead of count, unthrottled:
    // the largest frame goes through and the summary adds up.
    let big =
        gen(&["--src-ip", "10.77.0.101", "--dst-ip", "10.77.0.2", "--size", "1514", "--duration", "0.5"]);
    let tx = big.json["tx_packets"].as_u64().unwrap();
    assert!(tx > 0, "{}", big.stdout);
    assert_eq!(big.json["tx_bytes"].as_u64(), Some(tx * 1514));
    let secs = big.json["seconds"].as_f64().unwrap();
    assert!((0.4..2.0).contains(&secs), "{secs}");
}

/// Kernel (major, minor) from uname.
fn kernel_version() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Copy mode sends only inside sendto(), 32 frames per call unless the
/// socket raised XDP_MAX_TX_SKB_BUDGET (Linux 6.17+). Unthrottled, the
/// generator puts 64-frame batches on the ring: with the raised budget
/// one call sends a whole batch, so calls carry more than 32 frames on
/// average; at the default they carry at most 32.
#[test]
fn gen_sends_a_whole_batch_per_sendto_with_the_raised_tx_budget() {
    let Some(_lock) = lab_lock() else { return };
    let _pair = Pair::up();
    let run =
        gen(&["--src-ip", "10.77.0.101", "--dst-ip", "10.77.0.2", "--flows", "16", "--count", "100000"]);
    let tx = run.json["tx_packets"].as_u64().unwrap();
    let kicks = run.json["kicks"].as_u64().unwrap();
    let budget = run.json["tx_budget"].as_u64().unwrap();
    assert_eq!(tx, 100_000, "{}", run.stdout);
    if kernel_version() >= (6, 17) {
        assert_eq!(budget, u64::from(shunt_gen::RING), "the kernel takes XDP_MAX_TX_SKB_BUDGET");
    }
    if budget > 32 {
        assert!(tx > kicks * 40, "{tx} frames in {kicks} sendto() calls: not whole batches");
    } else {
        assert!(tx <= kicks * 32, "{tx} frames in {kicks} calls at a 32-frame budget");
    }
}
