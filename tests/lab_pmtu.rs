//! Path MTU discovery through the full-NAT VIP, and IPv6 extension headers,
//! with real stacks in the lab: nginx on the backends, curl and Python
//! sockets on the clients, Linux as the router that sends the ICMP errors.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn sh(ns: &str, script: &str) -> Output {
    let out = ns_exec(ns, &["bash", "-c", script]);
    assert!(out.status.success(), "{ns}: {script}\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `script` in the host's namespace (creating namespaces and links).
fn host(script: &str) {
    let out = std::process::Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A host in namespace `ns` on `dev`, address .2 of 10.0.`net`.0/24 and
/// fd00:`net`::/64, routed through .1 (a router on a 1280-byte hop). Its
/// routes still advertise the MSS of a 1500-byte path, so its peers send
/// full-size segments and only PMTUD can shrink them.
fn far_host(ns: &str, dev: &str, net: u8) {
    sh(
        ns,
        &format!(
            "ip link set lo up && ip addr add 10.0.{net}.2/24 dev {dev} && \
             ip -6 addr add fd00:{net}::2/64 dev {dev} nodad && ip link set {dev} up && \
             ethtool -K {dev} tx off tso off gso off gro off >/dev/null && \
             ip route add default via 10.0.{net}.1 advmss 1460 && \
             ip -6 route add default via fd00:{net}::1 advmss 1440"
        ),
    );
}

fn big_file() -> Vec<u8> {
    std::fs::read("/run/shunt-lab/big.bin").unwrap()
}

/// Downloads `url` from `ns` with curl (20 s at most) and returns the body.
fn download(ns: &str, url: &str) -> Vec<u8> {
    ns_exec(ns, &["curl", "-s", "-m", "20", "--no-keepalive", url]).stdout
}

/// Path MTUs the backends learned (their route caches), one line each.
fn learned_mtus(v6: bool) -> String {
    let mut all = String::new();
    for b in 1..=3 {
        let cmd = if v6 { "ip -6 route show cache" } else { "ip route show cache" };
        let out = ns_exec(&format!("shunt-be{b}"), &["bash", "-c", cmd]);
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

/// Downloads the big file from `ns` through both VIPs: each arrives
/// intact, and after each a backend has learned path MTU `mtu`.
fn downloads_teach_the_backends(shunt: &Shunt, ns: &str, mtu: u32) {
    let expect = big_file();
    for (url, v6) in [("http://10.0.100.1/big.bin", false), ("http://[fd00:100::1]/big.bin", true)] {
        let got = download(ns, url);
        assert!(got == expect, "{url}: got {} of {} bytes\n{}", got.len(), expect.len(), shunt.output());
        let cache = learned_mtus(v6);
        assert!(cache.contains(&format!("mtu {mtu}")), "{url}: no backend learned MTU {mtu}:\n{cache}");
    }
}

/// The link between Shunt and the client drops to MTU 1400 while Shunt
/// runs. The client still advertises a 1500-byte path's MSS (a lower-MTU
/// hop it cannot see), so the backends send full-size segments: Shunt must
/// answer each with Fragmentation Needed / Packet Too Big (DF is set on
/// Linux TCP) quoting the packet as the backend sent it, and the backend's
/// stack lowers its path MTU. Before the egress MTU check the frames were
/// counted as sent, dropped by the client's interface, and the download
/// stalled.
#[test]
fn download_through_a_lower_mtu_client_link_completes() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    sh("shunt", "ip link set sh-cli mtu 1400");
    sh("shunt-client", "ip link set cli0 mtu 1400");
    // The change is picked up without a restart.
    shunt.wait_for_within("interface MTU changed", Duration::from_secs(5));
    sh(
        "shunt-client",
        "ip route replace 10.0.100.1/32 via 10.0.1.1 dev cli0 advmss 1460 && \
         ip -6 route replace fd00:100::1/128 via fd00:1::1 dev cli0 advmss 1440",
    );
    downloads_teach_the_backends(&shunt, "shunt-client", 1400);
    let out = shunt.stop();
    assert_eq!(counter(&out, "worker 0", "frame_too_large"), 0, "DF set: errors, not drops\n{out}");
}

/// Removes the far client's namespace however the test ends.
struct FarClient;

impl Drop for FarClient {
    fn drop(&mut self) {
        let _ = ns_exec("shunt-client", &["ip", "link", "del", "cf0"]);
        let _ = std::process::Command::new("ip").args(["netns", "del", "shunt-far"]).status();
    }
}

/// A host behind the client namespace, which routes for it over a 1280-byte
/// link. Full-size segments from the VIP make that router send ICMP
/// Fragmentation Needed / Packet Too Big addressed to the VIP: the XDP
/// program must hand them to Shunt, which forwards them to the backend,
/// rewritten. Before, XDP passed them to the kernel, which dropped them,
/// and the download stalled.
#[test]
fn icmp_errors_addressed_to_the_vip_reach_the_backend() {
    let Some(_lab) = lab() else { return };
    let _far = FarClient;
    host("ip netns add shunt-far");
    host("ip link add cf0 netns shunt-client mtu 1280 type veth peer name far0 netns shunt-far mtu 1280");
    sh(
        "shunt-client",
        "ip addr add 10.0.9.1/24 dev cf0 && ip -6 addr add fd00:9::1/64 dev cf0 nodad && \
         ip link set cf0 up && ethtool -K cf0 tx off tso off gso off gro off >/dev/null && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
    );
    far_host("shunt-far", "far0", 9);
    let shunt = Shunt::start(&repo().join("config.toml"));
    downloads_teach_the_backends(&shunt, "shunt-far", 1280);
    shunt.stop();
}

/// An IPv6 client whose TCP segments carry a Destination Options header
/// (a PadN option, set with IPV6_DSTOPTS on a real socket) connects to the
/// VIP and gets its page. Before, XDP matched only a TCP next header and
/// passed the SYN to the kernel, which dropped it.
#[test]
fn ipv6_client_with_destination_options_connects() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    // Proof the option is really on the wire: capture the client's SYN.
    let capture = std::process::Command::new("ip")
        .args(["netns", "exec", "shunt-client", "timeout", "15", "tcpdump", "-i", "cli0", "-c", "1", "-n"])
        .args(["ip6 and ip6[6] == 60 and dst fd00:100::1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let script = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
# Destination Options: next header (kernel fills it), length 0, PadN of 4.
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
s.settimeout(5)
s.connect(("fd00:100::1", 80))
s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
"#;
    let out = ns_exec("shunt-client", &["python3", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("shunt-be"),
        "no page through the VIP: {text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        shunt.output()
    );
    let cap = capture.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&cap.stdout);
    assert!(seen.contains("fd00:100::1"), "no segment with a Destination Options header seen: {seen}");
    shunt.stop();
}

/// Removes the backend-side router and the backend behind it however the
/// test ends.
struct FarBackend(Option<std::process::Child>);

impl Drop for FarBackend {
    fn drop(&mut self) {
        if let Some(mut server) = self.0.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in ["shunt-rtr", "shunt-farbe"] {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Reads each connection to its end and answers with the byte count and
/// SHA-256 of what arrived; a health check's GET gets a 200.
const SINK: &str = r#"
import hashlib, socket, socketserver
class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        h, n = hashlib.sha256(), 0
        while True:
            b = self.request.recv(65536)
            if not b:
                break
            if n == 0 and b.startswith(b"GET "):
                self.request.sendall(b"HTTP/1.0 200 OK\r\n\r\nok\n")
                return
            h.update(b)
            n += len(b)
        self.request.sendall(f"{n} {h.hexdigest()}\n".encode())
class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True
Server(("::", 80), Sink).serve_forever()
"#;

/// Sends 4 MiB to the VIP, half-closes, prints the sink's answer and the
/// expected one.
const UPLOAD: &str = r#"
import hashlib, socket, sys
data = open("/run/shunt-lab/big.bin", "rb").read() * 4
s = socket.create_connection((sys.argv[1], 80), timeout=20)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = s.makefile().readline().strip()
print(got)
print(f"{len(data)} {hashlib.sha256(data).hexdigest()}")
"#;

/// A backend behind a Linux router whose far link has a 1280-byte MTU; the
/// backend still advertises a 1500-byte path's MSS. A client uploads 4 MiB
/// through the full-NAT VIP: its full-size segments (DF set) reach the
/// router as SNAT pool → backend, so the router's Fragmentation Needed /
/// Packet Too Big is addressed to the pool. XDP must hand it to Shunt, which
/// sends it to the client with the quote rewritten back to client → VIP;
/// the client's stack lowers its path MTU to the VIP and the upload
/// completes intact.
#[test]
fn icmp_errors_addressed_to_the_snat_pool_reach_the_client() {
    let Some(_lab) = lab() else { return };
    let mut far = FarBackend(None);
    host("ip netns add shunt-rtr && ip netns add shunt-farbe");
    host(
        "ip link add rt0 netns shunt-rtr address 02:00:00:00:02:31 type veth peer name sw-rt netns shunt-switch && \
         ip link add rf0 netns shunt-rtr mtu 1280 type veth peer name fb0 netns shunt-farbe mtu 1280",
    );
    sh(
        "shunt-switch",
        "ip link set sw-rt master br0 up && ethtool -K sw-rt tx off tso off gso off gro off >/dev/null",
    );
    sh(
        "shunt-rtr",
        "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && \
         ip addr add 10.0.2.31/24 dev rt0 && ip -6 addr add fd00:2::31/64 dev rt0 nodad && \
         ip addr add 10.0.8.1/24 dev rf0 && ip -6 addr add fd00:8::1/64 dev rf0 nodad && \
         ip link set rt0 up && ip link set rf0 up && \
         for d in rt0 rf0; do ethtool -K $d tx off tso off gso off gro off >/dev/null; done && \
         ip route add default via 10.0.2.1 && ip -6 route add default via fd00:2::1 && \
         ip neigh replace 10.0.2.1 lladdr 02:00:00:00:02:01 dev rt0 nud permanent && \
         ip -6 neigh replace fd00:2::1 lladdr 02:00:00:00:02:01 dev rt0 nud permanent",
    );
    far_host("shunt-farbe", "fb0", 8);
    // Shunt's host stack reaches the backend through the router for health
    // checks; the dataplane sends to the router's MAC.
    sh("shunt", "ip route add 10.0.8.0/24 via 10.0.2.31 && ip -6 route add fd00:8::/64 via fd00:2::31");
    far.0 = Some(
        std::process::Command::new("ip")
            .args(["netns", "exec", "shunt-farbe", "python3", "-c", SINK])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Listening before Shunt starts, so its first health checks pass.
    sh(
        "shunt-farbe",
        "for i in $(seq 100); do ss -Hltn 'sport = :80' | grep -q . && exit 0; sleep 0.05; done; exit 1",
    );
    let mut cfg = default_config();
    for (v6, be) in [(false, "10.0.8.2"), (true, "fd00:8::2")] {
        let only = format!("{{ addr = \"{be}\", port = 80, weight = 100, mac = \"02:00:00:00:02:31\" }},\n");
        let prefix = if v6 { "fd00:2::" } else { "10.0.2." };
        for b in 11..=13 {
            let line = format!("  {{ addr = \"{prefix}{b}\", port = 80, weight = 100 }},\n");
            assert!(cfg.contains(&line), "config.toml has no `{line}`");
            cfg = cfg.replacen(&line, if b == 11 { &only } else { "" }, 1);
        }
    }
    let path = std::env::temp_dir().join(format!("shunt-pmtu-{}.toml", rand_u32()));
    std::fs::write(&path, cfg).unwrap();
    let shunt = Shunt::start(&path);
    let _ = std::fs::remove_file(&path);
    for (vip, v6) in [("10.0.100.1", false), ("fd00:100::1", true)] {
        let out = ns_exec("shunt-client", &["timeout", "30", "python3", "-c", UPLOAD, vip]);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() == 2 && lines[0] == lines[1],
            "{vip}: upload not intact (got, expected):\n{text}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            shunt.output()
        );
        let get = if v6 { "ip -6 route get fd00:100::1" } else { "ip route get 10.0.100.1" };
        let route = String::from_utf8_lossy(&sh("shunt-client", get).stdout).into_owned();
        assert!(route.contains("mtu 1280"), "{vip}: the client learned no MTU 1280:\n{route}");
    }
    let out = shunt.stop();
    assert_eq!(counter(&out, "worker 0", "frame_too_large"), 0, "{out}");
}
