//! Jumbo frames through the full-NAT VIP with real stacks: every lab link at
//! MTU 9000, iperf3 TCP (9000-byte frames) and a UDP echo of the largest
//! datagrams that fit the links unfragmented, IPv4 and IPv6; and, with the
//! backend side at MTU 1500, path MTU discovery for jumbo frames that
//! cannot leave whole. Shunt carries
//! frames up to `max_frame_size` as chains of 4096-byte UMEM chunks
//! (multi-buffer AF_XDP; see docs/DECISIONS.md, "Jumbo frames").

mod common;

use common::*;
use shunt::pipeline::DropReason;

const ECHO_PORT: u16 = 9101;
const IPERF_PORT: u16 = 5201;
const MTU: u32 = 9000;
/// iperf3's pace: below what the lab carries on this 2-core machine at
/// either MTU (about 5 Gbit/s unpaced at 9000 while others build), so a
/// loss is a fault and not TCP probing a saturated copy-mode path.
const RATE: &str = "400M";

/// config.toml with jumbo frames and TCP (iperf3) and UDP (echo) services
/// on both VIPs.
fn config() -> std::path::PathBuf {
    let base = default_config();
    let base = base.replace("# max_frame_size = 9216 ", "max_frame_size = 9216   ");
    assert!(base.contains("\nmax_frame_size = 9216"), "config.toml's max_frame_size line moved");
    let services = [
        service("echo4", "10.0.100.1", ECHO_PORT, "udp", "10.0.3.0/28", &BACKENDS4),
        service("echo6", "fd00:100::1", ECHO_PORT, "udp", "fd00:3::/124", &BACKENDS6),
        // One backend: iperf3's control and data connections are separate
        // flows, and both must reach the same server.
        service("iperf4", "10.0.100.1", IPERF_PORT, "tcp", "10.0.3.0/28", &BACKENDS4[..1]),
        service("iperf6", "fd00:100::1", IPERF_PORT, "tcp", "fd00:3::/124", &BACKENDS6[..1]),
    ];
    config_with_services(&base, &services, "jumbo")
}

fn echo_servers() -> Peers {
    let script = repo().join("tests/lab/udp_echo.py").display().to_string();
    Peers::start(|i| {
        ["python3", &script, "server", BACKENDS4[i], BACKENDS6[i], &ECHO_PORT.to_string()]
            .map(String::from)
            .to_vec()
    })
}

/// `count` random `size`-byte datagrams to `vip`, each echoed byte for byte.
fn echo(vip: &str, size: usize, count: usize) -> Result<(), String> {
    let script = repo().join("tests/lab/udp_echo.py").display().to_string();
    let out = ns_exec(
        "shunt-client",
        &["python3", &script, "client", vip, &ECHO_PORT.to_string(), &size.to_string(), &count.to_string()],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{vip} echo of {size} bytes: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Every drop reason of worker 0 and the kernel's AF_XDP drop counters
/// that are not zero, by name (`tx_ring_empty_descs` counts TX kicks that
/// found the ring already drained: not a loss).
fn drops(summary: &str) -> Vec<String> {
    let mut bad: Vec<String> = DropReason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|n| counter(summary, "worker 0", n) != 0)
        .map(|n| format!("{n}={}", counter(summary, "worker 0", n)))
        .collect();
    for line in summary.lines().filter(|l| l.trim_start().starts_with("xsk ")) {
        let lost =
            |kv: &&str| kv.contains('=') && !kv.ends_with("=0") && !kv.starts_with("tx_ring_empty_descs=");
        for kv in line.split_whitespace().filter(lost) {
            bad.push(format!("{}: {kv}", line.split(':').next().unwrap_or("").trim()));
        }
    }
    bad
}

fn assert_links_at(mtu: u32) {
    for ns in ["shunt", "shunt-be1", "shunt-client"] {
        let out = ns_exec(ns, &["bash", "-c", "cat /sys/class/net/[!l]*/mtu | sort -n | uniq"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), mtu.to_string(), "{ns}: links at MTU {mtu}");
    }
}

/// A JSON number after `"key":` following the first `after` in `json`.
/// The client namespace's tail loss probes that recovered no loss (Linux's
/// `TCPLossProbes` − `TCPLossProbeRecovery`, from /proc/net/netstat).
fn spurious_loss_probes() -> i64 {
    let out = ns_exec("shunt-client", &["cat", "/proc/net/netstat"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().expect("TcpExt names"), lines.next().expect("TcpExt values"));
    let field = |name: &str| -> i64 {
        let at = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
        values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("a TcpExt value")
    };
    field("TCPLossProbes") - field("TCPLossProbeRecovery")
}

fn json_number(json: &str, after: &str, key: &str) -> Option<f64> {
    json.split(after)
        .nth(1)?
        .split(&format!("\"{key}\":"))
        .nth(1)?
        .split([',', '}'])
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The lab with every link at MTU 9000 (checked), Shunt running on it.
/// Shunt is the second of the pair: stopped before the lab goes down.
fn jumbo_lab() -> Option<(LabGuard, Shunt)> {
    let lab = lab_at_mtu(MTU)?;
    assert_links_at(MTU);
    Some((lab, Shunt::start(&config())))
}

#[test]
fn udp_echo_of_jumbo_datagrams_is_byte_exact_v4_and_v6() {
    let Some((_lab, shunt)) = jumbo_lab() else { return };
    let _servers = echo_servers();
    let mut failures = Vec::new();
    // 8972 + 8 (UDP) + 20 (IPv4) = 9000; IPv6's 40-byte header leaves 8952.
    for (vip, size) in
        [("10.0.100.1", 8972), ("fd00:100::1", 8952), ("10.0.100.1", 1472), ("fd00:100::1", 100)]
    {
        if let Err(e) = echo(vip, size, 20) {
            failures.push(e);
        }
    }
    let summary = shunt.stop();
    assert!(failures.is_empty(), "{failures:#?}\n{summary}");
    assert!(counter(&summary, "worker 0", "tx_packets") >= 160, "{summary}");
    let drops = drops(&summary);
    assert!(drops.is_empty(), "drops: {drops:?}\n{summary}");
}

/// One paced iperf3 run of `secs` to each VIP, v4 then v6: (VIP, whether
/// iperf3 succeeded, its JSON report).
fn iperf_v4_and_v6(secs: u32) -> Vec<(&'static str, bool, String)> {
    let mut results = Vec::new();
    for vip in ["10.0.100.1", "fd00:100::1"] {
        let _servers = Peers::start(|_| {
            ["iperf3", "-s", "-1", "-p", &IPERF_PORT.to_string()].map(String::from).to_vec()
        });
        let out = ns_exec(
            "shunt-client",
            &["iperf3", "-c", vip, "-p", &IPERF_PORT.to_string(), "-b", RATE, "-t", &secs.to_string(), "-J"],
        );
        results.push((vip, out.status.success(), String::from_utf8_lossy(&out.stdout).to_string()));
    }
    results
}

/// iperf3 over jumbo segments through the full-NAT VIP loses nothing: no
/// drop in Shunt or its sockets, and no retransmission but spurious loss
/// probes.
#[test]
fn iperf3_tcp_at_mtu_9000_through_full_nat_loses_nothing_v4_and_v6() {
    let Some((_lab, shunt)) = jumbo_lab() else { return };
    let probes_before = spurious_loss_probes();
    let results = iperf_v4_and_v6(3);
    let spurious = spurious_loss_probes() - probes_before;
    let summary = shunt.stop();
    let mut retransmits = 0.0;
    for (vip, ok, json) in &results {
        assert!(ok, "iperf3 to {vip} failed: {json}\n{summary}");
        let mss = json_number(json, "\"start\"", "tcp_mss_default").expect("tcp_mss_default");
        // 9000 - 20 (IPv4) or 40 (IPv6) - 20 (TCP) - 12 (timestamps).
        assert!(mss >= 8900.0, "{vip}: MSS {mss}: the connection did not use jumbo segments");
        let received = json_number(json, "\"sum_received\"", "bytes").expect("sum_received.bytes");
        assert!(received > 100e6, "{vip}: iperf3 moved only {received} bytes\n{summary}");
        retransmits += json_number(json, "\"sum_sent\"", "retransmits").expect("sum_sent.retransmits");
    }
    // Every retransmission must be a tail loss probe that found nothing
    // lost: a host stall of a few milliseconds fires one (RFC 8985 §7),
    // a lost or corrupted segment never is one.
    assert!(
        retransmits <= spurious as f64,
        "{retransmits} retransmissions, {spurious} of them spurious loss probes\n{summary}\n{}",
        links()
    );
    let drops = drops(&summary);
    assert!(drops.is_empty(), "drops: {drops:?}\n{summary}");
}

/// The jumbo config (multi-buffer sockets) on links at MTU 1500: every
/// frame fits one chunk, and the echo and TCP still pass untouched.
#[test]
fn jumbo_config_at_mtu_1500_still_passes_v4_and_v6() {
    let Some(_lab) = lab_at_mtu(1500) else { return };
    assert_links_at(1500);
    let shunt = Shunt::start(&config());
    let _servers = echo_servers();
    let mut failures = Vec::new();
    for (vip, size) in [("10.0.100.1", 1472), ("fd00:100::1", 1452), ("10.0.100.1", 100)] {
        if let Err(e) = echo(vip, size, 20) {
            failures.push(e);
        }
    }
    let results = iperf_v4_and_v6(2);
    let summary = shunt.stop();
    assert!(failures.is_empty(), "{failures:#?}\n{summary}");
    for (vip, ok, json) in &results {
        assert!(ok, "iperf3 to {vip} failed: {json}\n{summary}");
        let received = json_number(json, "\"sum_received\"", "bytes")
            .unwrap_or_else(|| panic!("{vip}: no sum_received.bytes in {json}\n{summary}"));
        assert!(received > 1e6, "{vip}: iperf3 moved only {received} bytes\n{summary}");
    }
    let drops = drops(&summary);
    assert!(drops.is_empty(), "drops: {drops:?}\n{summary}");
}

/// Lowers the backend side of the lab (Shunt's `sh-be`, the switch, the
/// backends) to MTU `mtu`, and makes the backends advertise the MSS of a
/// 9000-byte path, so the client's TCP sends jumbo segments that only
/// Shunt's Fragmentation Needed / Packet Too Big can shrink.
fn backend_side_at(mtu: u32) {
    let set = |ns: &str, script: String| {
        let out = ns_exec(ns, &["bash", "-c", &script]);
        assert!(out.status.success(), "{ns}: {script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    set("shunt", format!("ip link set sh-be mtu {mtu}"));
    set(
        "shunt-switch",
        format!(
            "for d in $(ip -o link show type veth | awk -F'[ :@]+' '{{print $2}}'); do \
             ip link set $d mtu {mtu}; done; ip link set br0 mtu {mtu}"
        ),
    );
    for b in 1..=3 {
        set(
            &format!("shunt-be{b}"),
            format!(
                "ip link set be0 mtu {mtu} && ip route replace default via 10.0.2.1 advmss 8960 && \
                 ip -6 route replace default via fd00:2::1 advmss 8940"
            ),
        );
    }
}

/// The client's path MTU to `vip` as its kernel holds it (`ip route get`),
/// or an empty string when it has none cached.
fn client_pmtu(vip: &str) -> String {
    let out = ns_exec("shunt-client", &["ip", "route", "get", vip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().skip_while(|w| *w != "mtu").nth(1).unwrap_or("").to_string()
}

/// MTU 9000 on the client side, 1500 towards the backends: Shunt receives
/// frames up to 9000 bytes as chains of UMEM chunks that cannot leave
/// whole. With DF set (Linux TCP, a UDP socket with IP_PMTUDISC_DO; IPv6
/// always) each is answered with Fragmentation Needed / Packet Too Big
/// carrying MTU 1500, built over the chain's first buffer, and the
/// client's real stack lowers its path MTU: iperf3 through the VIP then
/// moves data in 1500-byte packets, and a UDP socket's next 8000-byte send
/// fails with EMSGSIZE and reports MTU 1500. Before, the chains were
/// dropped as `frame_too_large` with no error, TCP stalled in
/// retransmissions of jumbo segments and UDP never learned the path.
#[test]
fn jumbo_client_to_a_1500_backend_side_learns_the_path_mtu_v4_and_v6() {
    let Some(_lab) = lab_at_mtu(MTU) else { return };
    backend_side_at(1500);
    let shunt = Shunt::start(&config());
    let results = iperf_v4_and_v6(2);
    let learned: Vec<_> = ["10.0.100.1", "fd00:100::1"].iter().map(|vip| (*vip, client_pmtu(vip))).collect();
    let flush = ns_exec("shunt-client", &["bash", "-c", "ip route flush cache; ip -6 route flush cache"]);
    assert!(flush.status.success());
    let script = repo().join("tests/lab/udp_echo.py").display().to_string();
    let probes: Vec<_> = ["10.0.100.1", "fd00:100::1"]
        .iter()
        .map(|vip| {
            let out =
                ns_exec("shunt-client", &["python3", &script, "probe", vip, &ECHO_PORT.to_string(), "8000"]);
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (*vip, out.status.success(), text.trim().to_string(), client_pmtu(vip))
        })
        .collect();
    let summary = shunt.stop();
    for (vip, ok, json) in &results {
        assert!(ok, "iperf3 to {vip} failed: {json}\n{summary}");
        let received = json_number(json, "\"sum_received\"", "bytes")
            .unwrap_or_else(|| panic!("{vip}: no sum_received.bytes in {json}\n{summary}"));
        assert!(received > 1e6, "{vip}: iperf3 moved only {received} bytes\n{summary}");
    }
    for (vip, mtu) in &learned {
        assert_eq!(mtu, "1500", "{vip}: after TCP the client holds path MTU `{mtu}`\n{summary}");
    }
    for (vip, ok, text, mtu) in &probes {
        assert!(*ok && text.starts_with("mtu 1500"), "{vip}: UDP probe: {text}\n{summary}");
        assert_eq!(mtu, "1500", "{vip}: after UDP the client holds path MTU `{mtu}`\n{summary}");
    }
    for reason in ["frame_too_large", "chain_unsupported", "chain_too_long"] {
        assert_eq!(counter(&summary, "worker 0", reason), 0, "{reason}: errors, not drops\n{summary}");
    }
}

/// Every lab link's kernel drop counters that are not zero (losses outside
/// Shunt: a veth ring, a bridge port, a peer's socket).
fn links() -> String {
    let mut out = String::new();
    for ns in ["shunt", "shunt-client", "shunt-switch", "shunt-be1", "shunt-be2", "shunt-be3"] {
        let o = ns_exec(ns, &["ip", "-s", "-o", "link"]);
        out += &format!("{ns}:\n{}\n", String::from_utf8_lossy(&o.stdout));
    }
    out
}
