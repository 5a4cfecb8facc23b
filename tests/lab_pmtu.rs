//! Path MTU discovery through the full-NAT VIP, and IPv6 extension headers,
//! with real stacks in the lab: nginx on the backends, curl and Python
//! sockets on the clients, Linux as the router that sends the ICMP errors.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn sh(ns: &str, script: &str) -> Output {
    let out = ns_exec(ns, &["bash", "-c", script]);
    assert!(out.status.success(), "{ns}: {script}\n{}", String::from_utf8_lossy(&out.stderr));
    out
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

fn wait_for(shunt: &Shunt, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shunt.output().contains(text) {
        assert!(Instant::now() < deadline, "no `{text}` in:\n{}", shunt.output());
        std::thread::sleep(Duration::from_millis(50));
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
    wait_for(&shunt, "interface MTU changed");
    sh(
        "shunt-client",
        "ip route replace 10.0.100.1/32 via 10.0.1.1 dev cli0 advmss 1460 && \
         ip -6 route replace fd00:100::1/128 via fd00:1::1 dev cli0 advmss 1440",
    );
    let expect = big_file();
    for (url, v6) in [("http://10.0.100.1/big.bin", false), ("http://[fd00:100::1]/big.bin", true)] {
        let got = download("shunt-client", url);
        assert!(got == expect, "{url}: got {} of {} bytes\n{}", got.len(), expect.len(), shunt.output());
        let cache = learned_mtus(v6);
        assert!(cache.contains("mtu 1400"), "{url}: no backend learned MTU 1400:\n{cache}");
    }
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
    let host = |script: &str| {
        let out = std::process::Command::new("bash").args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    host("ip netns add shunt-far");
    host("ip link add cf0 netns shunt-client mtu 1280 type veth peer name far0 netns shunt-far mtu 1280");
    sh(
        "shunt-client",
        "ip addr add 10.0.9.1/24 dev cf0 && ip -6 addr add fd00:9::1/64 dev cf0 nodad && \
         ip link set cf0 up && ethtool -K cf0 tx off tso off gso off gro off >/dev/null && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
    );
    sh(
        "shunt-far",
        "ip link set lo up && ip addr add 10.0.9.2/24 dev far0 && \
         ip -6 addr add fd00:9::2/64 dev far0 nodad && ip link set far0 up && \
         ethtool -K far0 tx off tso off gso off gro off >/dev/null && \
         ip route add default via 10.0.9.1 advmss 1460 && \
         ip -6 route add default via fd00:9::1 advmss 1440",
    );
    let shunt = Shunt::start(&repo().join("config.toml"));
    let expect = big_file();
    for (url, v6) in [("http://10.0.100.1/big.bin", false), ("http://[fd00:100::1]/big.bin", true)] {
        let got = download("shunt-far", url);
        assert!(got == expect, "{url}: got {} of {} bytes\n{}", got.len(), expect.len(), shunt.output());
        let cache = learned_mtus(v6);
        assert!(cache.contains("mtu 1280"), "{url}: no backend learned MTU 1280:\n{cache}");
    }
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
