//! Foundation end to end: real UDP and TCP cross Shunt's userspace path in
//! the lab, unmatched traffic still reaches the kernel, and SIGKILL leaves
//! no XDP program behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

fn default_config() -> std::path::PathBuf {
    repo().join("pipelines/l2fwd.toml")
}

/// `count` copies of `datagram` from the client (bound to `from`) to
/// backend 1's `to`, one every `gap_us` microseconds; how many arrived
/// intact within 3 s of each other, and their bytes.
fn udp_to_backend<const N: usize>(
    from: &'static str,
    to: &'static str,
    datagram: [u8; N],
    count: u32,
    gap_us: u64,
) -> (u32, usize) {
    let s = bound_in_netns("shunt-be1", move || UdpSocket::bind(to).unwrap());
    let rx = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let (mut got, mut bytes) = (0u32, 0usize);
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.recv(&mut buf) {
            assert_eq!(&buf[..n], &datagram[..], "payload intact");
            got += 1;
            bytes += n;
            if got == count {
                break;
            }
        }
        (got, bytes)
    });
    in_netns("shunt-client", move || {
        let s = UdpSocket::bind(from).unwrap();
        for _ in 0..count {
            s.send_to(&datagram, to).unwrap();
            std::thread::sleep(Duration::from_micros(gap_us));
        }
    })
    .join()
    .unwrap();
    rx.join().unwrap()
}

#[test]
fn udp_and_tcp_cross_the_userspace_path() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&default_config());

    // UDP: 200 datagrams client → backend 1, counted at the backend.
    let (udp_got, udp_bytes) = udp_to_backend("10.0.1.2:0", "10.0.2.11:7000", [0x5a; 1000], 200, 200);
    assert!(udp_got >= 195, "backend got {udp_got}/200 UDP datagrams");

    // TCP: 4 MiB client → backend, echoed digest back; handshake and ACKs
    // need both directions through Shunt.
    const LEN: usize = 4 << 20;
    let l = bound_in_netns("shunt-be1", || TcpListener::bind("10.0.2.11:7001").unwrap());
    let tcp_rx = std::thread::spawn(move || {
        let (mut c, peer) = l.accept().unwrap();
        let mut total = 0usize;
        let mut sum = 0u64;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sum = buf[..n].iter().fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
            total += n;
        }
        c.write_all(&sum.to_be_bytes()).unwrap();
        (total, peer)
    });
    let sent_sum = in_netns("shunt-client", || {
        let addr: SocketAddr = "10.0.2.11:7001".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echo = [0u8; 8];
        s.read_exact(&mut echo).unwrap();
        let expect = data.iter().fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        (u64::from_be_bytes(echo), expect)
    })
    .join()
    .unwrap();
    let (total, peer) = tcp_rx.join().unwrap();
    assert_eq!(total, LEN, "backend received every byte");
    assert_eq!(peer.ip().to_string(), "10.0.1.2", "no NAT in l2fwd");
    assert_eq!(sent_sum.0, sent_sum.1, "byte stream intact end to end");

    let summary = shunt.stop();
    // Kernel forwarding is off in the shunt namespace, so these packets can
    // only have crossed through the workers: prove it from their counters.
    let rx = counter(&summary, "worker 0", "rx_packets");
    let tx = counter(&summary, "worker 0", "tx_packets");
    let min_tcp_segments = (LEN / 1500) as u64;
    assert!(rx >= u64::from(udp_got) + min_tcp_segments, "rx_packets={rx}\n{summary}");
    assert!(tx >= u64::from(udp_got) + min_tcp_segments, "tx_packets={tx}\n{summary}");
    assert!(counter(&summary, "xdp sh-cli", "redirected") >= u64::from(udp_got), "{summary}");
    assert!(udp_bytes >= 195 * 1000);
}

#[test]
fn unmatched_traffic_reaches_the_kernel() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&default_config());
    // The shunt namespace's own address is not a route: the kernel answers.
    let ping = ns_exec("shunt-client", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.1.1"]);
    assert!(
        ping.status.success(),
        "ping to the host itself failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = ns_exec("shunt-client", &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd00:1::1"]);
    assert!(ping6.status.success(), "ping -6 to the host itself failed");
    let summary = shunt.stop();
    assert!(counter(&summary, "xdp sh-cli", "passed") >= 6, "{summary}");
    assert_eq!(
        counter(&summary, "worker 0", "rx_packets"),
        0,
        "host traffic never reaches a worker\n{summary}"
    );
}

#[test]
fn ipv6_udp_crosses_the_userspace_path() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&default_config());
    let (got, _) = udp_to_backend("[fd00:1::2]:0", "[fd00:2::11]:7002", [0x66; 1200], 50, 500);
    let summary = shunt.stop();
    assert!(got >= 48, "backend got {got}/50 IPv6 datagrams");
    assert!(counter(&summary, "worker 0", "tx_packets") >= u64::from(got), "{summary}");
}

#[test]
fn queue_out_of_range_is_refused() {
    let Some(_lab) = lab() else { return };
    let cfg = std::fs::read_to_string(default_config())
        .unwrap()
        .replace("{ interface = \"sh-cli\", queue = 0 }", "{ interface = \"sh-cli\", queue = 3 }");
    let path = std::env::temp_dir().join(format!("shunt-q-{}.toml", rand_u32()));
    std::fs::write(&path, cfg).unwrap();
    let out = ns_exec("shunt", &[SHUNT, "check", "--config", path.to_str().unwrap()]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("queue 3 out of range: `sh-cli` has 1 RX queue(s)"), "{msg}");
}

#[test]
fn sigkill_leaves_no_xdp_program() {
    let Some(_lab) = lab() else { return };
    let mut shunt = Shunt::start(&default_config());
    assert!(xdp_attached("shunt"), "XDP attached while running");
    shunt.child.kill().unwrap(); // SIGKILL
    shunt.child.wait().unwrap();
    // The bpf_link dies with its last fd; allow the kernel a moment.
    let mut gone = false;
    for _ in 0..50 {
        if !xdp_attached("shunt") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "XDP program still attached after SIGKILL");
    // And the host forwards as before: unmatched traffic still answered.
    let ping = ns_exec("shunt-client", &["ping", "-c", "1", "-W", "2", "10.0.1.1"]);
    assert!(ping.status.success());
}

#[test]
fn prefix_routes_redirect_a_whole_network() {
    let Some(_lab) = lab() else { return };
    // The l2fwd routes as prefixes: one entry each way covers the backend
    // 10.0.2.11 and the client, while Shunt's own 10.0.2.1 and 10.0.1.1
    // stay outside (host traffic must still reach the kernel).
    let cfg = std::fs::read_to_string(default_config())
        .unwrap()
        .replace("dst = \"10.0.2.11\"", "dst = \"10.0.2.8/29\"")
        .replace("dst = \"fd00:2::11\"", "dst = \"fd00:2::10/124\"")
        .replace("dst = \"10.0.1.2\"", "dst = \"10.0.1.2/31\"")
        .replace("dst = \"fd00:1::2\"", "dst = \"fd00:1::2/127\"\nprotocol = \"udp\"");
    let path = std::env::temp_dir().join(format!("shunt-prefix-{}.toml", rand_u32()));
    std::fs::write(&path, cfg).unwrap();
    let shunt = Shunt::start(&path);
    let ping = ns_exec("shunt-client", &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.2.11"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let s = bound_in_netns("shunt-be1", || UdpSocket::bind("[fd00:2::11]:7003").unwrap());
    let rx = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], peer).unwrap();
    });
    let echoed = in_netns("shunt-client", || {
        let s = UdpSocket::bind("[fd00:1::2]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"prefix", "[fd00:2::11]:7003").unwrap();
        let mut buf = [0u8; 64];
        s.recv(&mut buf).map(|n| buf[..n].to_vec()).ok()
    })
    .join()
    .unwrap();
    rx.join().unwrap();
    assert_eq!(echoed.as_deref(), Some(&b"prefix"[..]), "UDP over IPv6 both ways through prefix routes");
    // Host traffic outside the prefixes is still the kernel's.
    let host = ns_exec("shunt-client", &["ping", "-c", "1", "-W", "2", "10.0.1.1"]);
    assert!(host.status.success());
    let summary = shunt.stop();
    // Kernel forwarding is off: 3 echo requests + 3 replies + 2 datagrams
    // crossed through the worker, redirected by the prefix entries.
    assert!(counter(&summary, "worker 0", "tx_packets") >= 8, "{summary}");
    assert!(counter(&summary, "xdp sh-cli", "redirected") >= 4, "{summary}");
}

#[test]
fn a_route_prefix_with_host_bits_is_refused() {
    let cfg = std::fs::read_to_string(default_config())
        .unwrap()
        .replace("dst = \"10.0.2.11\"", "dst = \"10.0.2.11/24\"");
    let path = std::env::temp_dir().join(format!("shunt-hostbits-{}.toml", rand_u32()));
    std::fs::write(&path, cfg).unwrap();
    let err = shunt::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("has host bits set (did you mean `10.0.2.0/24`?)"), "{err}");
}
