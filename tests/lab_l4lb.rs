//! The L4 load balancer against real stacks: nginx backends and curl,
//! iperf3, and TCP/UDP sockets in the lab namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;

const BACKENDS: [&str; 3] = ["10.0.2.11", "10.0.2.12", "10.0.2.13"];

/// The default config plus test services on the same VIP. Their servers
/// count accepted connections, so they take no health probes.
fn test_config(weights: [u32; 3]) -> String {
    let base = default_config();
    let backends = |port: u16| {
        BACKENDS
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (a, w))| {
                format!(
                    "  {{ addr = \"{a}\", port = {port}, weight = {w}, mac = \"02:00:00:00:02:{:02x}\" }},\n",
                    11 + i
                )
            })
            .collect::<String>()
    };
    let service = |name: &str, port: u16, proto: &str, affinity: bool| {
        format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"10.0.100.1\"\nport = {port}\nprotocol = \"{proto}\"\n\
             pipeline = \"l4lb\"\nsnat_pool = \"10.0.3.0/28\"\naffinity = {affinity}\nbackends = [\n{}]\n\
             health = {{ kind = \"none\" }}\n",
            backends(port)
        )
    };
    let services = [
        service("iperf", 5201, "tcp", true),
        service("stream", 9000, "tcp", false),
        service("echo", 9001, "udp", false),
    ];
    before_conntrack(&base, &services.concat())
}

fn write_config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("shunt-l4lb-{}.toml", rand_u32()));
    std::fs::write(&path, text).unwrap();
    path
}

fn curl(url: &str, n: usize) -> Vec<String> {
    let script = format!("for i in $(seq {n}); do curl -s -g -m 3 --no-keepalive '{url}' || echo FAIL; done");
    let out = ns_exec("shunt-client", &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn curl_spreads_600_requests_evenly_over_three_nginx_backends() {
    let Some(_lab) = lab() else { return };
    // The shipped config, its health probes given time to answer on a
    // loaded host: a probe timing out would take a backend out of Maglev
    // for a while and skew the spread this test is about.
    let LabConfig { cfg, .. } = lab_config("spread", |text| {
        assert!(text.contains("interval = \"1s\"") && text.contains("timeout = \"500ms\""));
        text.replace("interval = \"1s\"", "interval = \"3s\"")
            .replace("timeout = \"500ms\"", "timeout = \"2s\"")
    });
    let shunt = Shunt::start(&cfg);
    // 600 flows on random source ports: each backend's count is binomial
    // (mean 200, sd 11.5), so ±25 % is over four deviations: a correct
    // spread fails about once in 10^4 runs (at 300 flows, once in 200).
    let replies = curl("http://10.0.100.1/", 600);
    let v6 = curl("http://[fd00:100::1]/", 30);
    let summary = shunt.stop();

    assert!(!summary.contains("backend down"), "a health probe failed during the test:\n{summary}");
    assert_eq!(replies.len(), 600, "{replies:?}");
    let mut counts = [0usize; 3];
    for r in &replies {
        let b = ["shunt-be1", "shunt-be2", "shunt-be3"].iter().position(|x| x == r);
        counts[b.unwrap_or_else(|| panic!("unexpected reply {r:?}"))] += 1;
    }
    for c in counts {
        assert!((150..=250).contains(&c), "spread {counts:?} is not within ±25% of 200 each");
    }
    assert_eq!(v6.len(), 30);
    assert!(v6.iter().all(|r| r.starts_with("shunt-be")), "IPv6 VIP: {v6:?}");
    assert_eq!(counter(&summary, "worker 0", "conntrack_full"), 0);
    assert_eq!(counter(&summary, "worker 0", "next_hop_unresolved"), 0);
}

#[test]
fn large_responses_arrive_intact_through_full_nat() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    let expect = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    for url in ["http://10.0.100.1/big.bin", "http://[fd00:100::1]/big.bin"] {
        for _ in 0..5 {
            let out = ns_exec("shunt-client", &["curl", "-s", "-g", "-m", "10", "--no-keepalive", url]);
            assert!(out.status.success(), "curl {url} failed");
            assert!(out.stdout == expect, "{url}: {} bytes, content differs", out.stdout.len());
        }
    }
    shunt.stop();
}

#[test]
fn iperf3_tcp_stream_through_the_vip_completes() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&write_config(&test_config([100, 100, 100])));
    let mut servers: Vec<_> = (1..=3)
        .map(|b| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &format!("shunt-be{b}"), "iperf3", "-s", "-1", "-p", "5201"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("iperf3")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = ns_exec("shunt-client", &["iperf3", "-c", "10.0.100.1", "-p", "5201", "-t", "3", "-J"]);
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let summary = shunt.stop();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 failed: {json}");
    let received = json
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bytes\":").nth(1))
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .expect("sum_received.bytes in iperf3 JSON");
    assert!(received > 10e6, "iperf3 moved only {received} bytes\n{summary}");
}

/// TCP echo servers on port 9000 of every backend; each accepted connection
/// is reported as (backend index, peer address).
struct EchoServers {
    stop: Arc<AtomicBool>,
    accepted: mpsc::Receiver<(usize, SocketAddr)>,
}

impl EchoServers {
    fn start() -> EchoServers {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        for (i, addr) in BACKENDS.iter().enumerate() {
            let (stop, tx, addr) = (stop.clone(), tx.clone(), addr.to_string());
            let (l, u) = bound_in_netns(&format!("shunt-be{}", i + 1), move || {
                (
                    TcpListener::bind(format!("{addr}:9000")).unwrap(),
                    UdpSocket::bind(format!("{addr}:9001")).unwrap(),
                )
            });
            std::thread::spawn(move || {
                u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                l.set_nonblocking(true).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let mut buf = [0u8; 2048];
                    if let Ok((n, peer)) = u.recv_from(&mut buf) {
                        let mut reply = format!("be{} ", i + 1).into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = u.send_to(&reply, peer);
                    }
                    match l.accept() {
                        Ok((mut c, peer)) => {
                            let _ = tx.send((i, peer));
                            c.set_nonblocking(false).unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = c.read(&mut buf) {
                                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        EchoServers { stop, accepted: rx }
    }

    fn next(&self) -> (usize, SocketAddr) {
        self.accepted.recv_timeout(Duration::from_secs(5)).expect("a backend accepted the connection")
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connect_vip() -> TcpStream {
    in_netns("shunt-client", || {
        let s =
            TcpStream::connect_timeout(&"10.0.100.1:9000".parse().unwrap(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    })
    .join()
    .unwrap()
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn reload(shunt: &Shunt, path: &PathBuf, text: &str) {
    let before = shunt.output().matches("config reloaded").count();
    std::fs::write(path, text).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(shunt.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while shunt.output().matches("config reloaded").count() == before {
        assert!(Instant::now() < deadline, "no reload:\n{}", shunt.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn long_lived_connection_survives_drain_and_new_flows_avoid_the_drained_backend() {
    let Some(_lab) = lab() else { return };
    let path = write_config(&test_config([100, 100, 100]));
    let shunt = Shunt::start(&path);
    let servers = EchoServers::start();

    let mut long = connect_vip();
    let (victim, peer) = servers.next();
    echo(&mut long, b"before drain");
    // Full-NAT: the backend sees the SNAT pool, not the client.
    let pool: shunt::config::Prefix = shunt::config::Prefix::parse("10.0.3.0/28").unwrap();
    assert!(pool.contains(peer.ip()), "backend saw {peer}, not an SNAT pool address");

    let mut weights = [100; 3];
    weights[victim] = 0;
    reload(&shunt, &path, &test_config(weights));

    // The established flow keeps its backend...
    for i in 0..20 {
        echo(&mut long, format!("after drain {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and new flows avoid the drained one.
    let mut others = Vec::new();
    for _ in 0..30 {
        let mut s = connect_vip();
        echo(&mut s, b"new");
        let (b, _) = servers.next();
        assert_ne!(b, victim, "a new connection went to drained backend {victim}");
        others.push(s);
    }
    echo(&mut long, b"still there");
    drop(others);
    drop(long);
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "no_backend"), 0, "{summary}");
}

#[test]
fn udp_service_replies_come_back_from_the_vip() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&write_config(&test_config([100, 100, 100])));
    let _servers = EchoServers::start();
    let seen = in_netns("shunt-client", || {
        let mut seen = [0usize; 3];
        for i in 0..60 {
            // A connected socket accepts only datagrams from the VIP:port.
            let s = UdpSocket::bind("10.0.1.2:0").unwrap();
            s.connect("10.0.100.1:9001").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let msg = format!("ping {i}");
            s.send(msg.as_bytes()).unwrap();
            let mut buf = [0u8; 256];
            let n = s.recv(&mut buf).expect("UDP reply from the VIP");
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(reply.ends_with(&msg), "{reply}");
            seen[reply.as_bytes()[2] as usize - b'1' as usize] += 1;
        }
        seen
    })
    .join()
    .unwrap();
    shunt.stop();
    assert!(seen.iter().all(|&n| n > 5), "60 UDP flows over 3 backends: {seen:?}");
}

#[test]
fn reload_with_an_invalid_file_keeps_the_running_config() {
    let Some(_lab) = lab() else { return };
    let path = write_config(&test_config([100, 100, 100]));
    let shunt = Shunt::start(&path);
    std::fs::write(&path, "this is = = not toml").unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(shunt.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shunt.output().contains("config reload failed") {
        assert!(Instant::now() < deadline, "{}", shunt.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(curl("http://10.0.100.1/", 5).iter().filter(|r| r.starts_with("shunt-be")).count(), 5);
    shunt.stop();
}

#[test]
fn two_workers_hand_replies_to_the_snat_port_owner() {
    // Two queues per veth, one worker per queue: RSS spreads flows, and a
    // reply lands on the worker that owns its SNAT port only by chance.
    let Some(_lab) = lab_with_queues(2) else { return };
    let cfg = default_config().replace(
        "[[worker]]\ncore = 1\nqueues = [{ interface = \"sh-cli\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]",
        "[[worker]]\ncore = 0\nqueues = [{ interface = \"sh-cli\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]\n\n\
         [[worker]]\ncore = 1\nqueues = [{ interface = \"sh-cli\", queue = 1 }, { interface = \"sh-be\", queue = 1 }]",
    );
    assert!(cfg.contains("queue = 1"), "test config has two workers");
    let shunt = Shunt::start(&write_config(&cfg));
    let replies = curl("http://10.0.100.1/", 100);
    let summary = shunt.stop();
    let ok = replies.iter().filter(|r| r.starts_with("shunt-be")).count();
    assert_eq!(ok, 100, "{replies:?}\n{summary}");
    let handed =
        counter(&summary, "worker 0", "handoffs_out") + counter(&summary, "worker 1", "handoffs_out");
    let served =
        counter(&summary, "worker 0", "handoffs_served") + counter(&summary, "worker 1", "handoffs_served");
    assert!(handed > 0, "no reply needed a handoff?\n{summary}");
    assert_eq!(handed, served, "{summary}");
    assert!(
        counter(&summary, "worker 0", "rx_packets") > 0 && counter(&summary, "worker 1", "rx_packets") > 0
    );
}

#[test]
fn unresolved_backend_next_hop_is_counted_not_silently_dropped() {
    let Some(_lab) = lab() else { return };
    // No host answers ARP for 10.0.2.99, and the config gives no MAC.
    let cfg = default_config()
        .replace("{ addr = \"10.0.2.11\", port = 80, weight = 100 },\n", "")
        .replace("{ addr = \"10.0.2.12\", port = 80, weight = 100 },\n", "")
        .replace("\"10.0.2.13\"", "\"10.0.2.99\"");
    let shunt = Shunt::start(&write_config(&cfg));
    assert!(shunt.output().contains("no MAC for backend"), "startup warns:\n{}", shunt.output());
    let replies = curl("http://10.0.100.1/", 2);
    let summary = shunt.stop();
    assert!(replies.iter().all(|r| r == "FAIL"), "{replies:?}");
    assert!(counter(&summary, "worker 0", "next_hop_unresolved") >= 2, "{summary}");
}

#[test]
fn dnat_only_service_keeps_the_client_address() {
    let Some(_lab) = lab() else { return };
    // No snat_pool: backends see the real client and reply towards it; a
    // route for the client's address brings those replies back into Shunt.
    let base = default_config();
    let backends: String =
        BACKENDS.iter().map(|a| format!("  {{ addr = \"{a}\", port = 9000 }},\n")).collect();
    let stream = format!(
        "[[service]]\nname = \"stream\"\nvip = \"10.0.100.1\"\nport = 9000\nprotocol = \"tcp\"\n\
         pipeline = \"l4lb\"\nbackends = [\n{backends}]\n\n[[route]]\ndst = \"10.0.1.2\"\npipeline = \"l4lb\"\n"
    );
    let cfg = before_conntrack(&base, &stream);
    let shunt = Shunt::start(&write_config(&cfg));
    let servers = EchoServers::start();
    for _ in 0..5 {
        let mut s = connect_vip();
        echo(&mut s, b"dnat only");
        let (_, peer) = servers.next();
        assert_eq!(peer.ip().to_string(), "10.0.1.2", "backend sees the client itself");
    }
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "no_flow"), 0, "{summary}");
}
