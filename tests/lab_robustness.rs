//! Faults, privilege and traffic policy against a running instance in the
//! lab: capabilities after setup, restarts, interface flaps, UMEM
//! starvation, and the host's own traffic while Shunt runs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;

fn cfg_with(replace: &[(&str, &str)], extra: &str) -> std::path::PathBuf {
    let mut text = default_config();
    for (a, b) in replace {
        assert!(text.contains(a), "config has {a}");
        text = text.replace(a, b);
    }
    let path = std::env::temp_dir().join(format!("shunt-rob-{}.toml", rand_u32()));
    std::fs::write(&path, before_conntrack(&text, extra)).unwrap();
    path
}

#[test]
fn capabilities_are_dropped_after_setup() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    let pid = shunt.child.id();
    const ALLOWED: u64 = (1 << 39) | (1 << 13); // CAP_BPF, CAP_NET_RAW
    let mut workers = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let Some(eff) = status.lines().find_map(|l| l.strip_prefix("CapEff:")) else { continue };
        let eff = u64::from_str_radix(eff.trim(), 16).unwrap();
        assert_eq!(eff & !ALLOWED, 0, "thread {} keeps capabilities {eff:#x}", comm.trim());
        if comm.starts_with("shunt-w") {
            workers += 1;
            assert_eq!(eff, 0, "workers keep nothing");
        }
    }
    assert_eq!(workers, 1);
    // Still fully working without them: traffic, and a reload with map updates.
    assert_eq!(curl_ok(5), 5);
    let (ok, _) = (Shunt::reload_ok(&shunt), ());
    assert!(ok, "reload works with the reduced set:\n{}", shunt.output());
    assert_eq!(curl_ok(5), 5);
    shunt.stop();
}

impl Shunt {
    fn reload_ok(&self) -> bool {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        for _ in 0..100 {
            let out = self.output();
            if out.contains("config reloaded") {
                return true;
            }
            if out.contains("reload failed") {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

#[test]
fn restart_keeps_dnat_only_tcp_stream_on_its_backend() {
    let Some(_lab) = lab() else { return };
    // DNAT only: backends see the client, so a flow can be recreated after
    // a restart and deterministic Maglev picks the same backend again. The
    // one-shot listeners must accept the client, not a health probe.
    let backends: String = ["10.0.2.11", "10.0.2.12", "10.0.2.13"]
        .iter()
        .map(|a| format!("  {{ addr = \"{a}\", port = 9000 }},\n"))
        .collect();
    let extra = format!(
        "[[service]]\nname = \"stream\"\nvip = \"10.0.100.1\"\nport = 9000\nprotocol = \"tcp\"\npipeline = \"l4lb\"\n\
         backends = [\n{backends}]\nhealth = {{ kind = \"none\" }}\n\n[[route]]\ndst = \"10.0.1.2\"\npipeline = \"l4lb\"\n"
    );
    let cfg = cfg_with(&[], &extra);
    let mut accepted = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, a) in ["10.0.2.11", "10.0.2.12", "10.0.2.13"].iter().enumerate() {
        let (tx, a) = (tx.clone(), a.to_string());
        let l = bound_in_netns(&format!("shunt-be{}", i + 1), move || {
            TcpListener::bind(format!("{a}:9000")).unwrap()
        });
        accepted.push(std::thread::spawn(move || {
            l.set_nonblocking(true).unwrap();
            for _ in 0..400 {
                if let Ok((mut c, _)) = l.accept() {
                    tx.send(i).unwrap();
                    c.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    let shunt = Shunt::start(&cfg);
    let mut s = in_netns("shunt-client", || {
        let s =
            TcpStream::connect_timeout(&"10.0.100.1:9000".parse().unwrap(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    })
    .join()
    .unwrap();
    let echo = |s: &mut TcpStream, m: &[u8]| {
        s.write_all(m).unwrap();
        let mut b = vec![0u8; m.len()];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, m);
    };
    echo(&mut s, b"before restart");
    let backend = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    shunt.stop();
    let shunt = Shunt::start(&cfg);
    // Same connection, new process, empty conntrack: TCP retransmits until
    // Shunt is back, then the flow is rebuilt on the same backend.
    echo(&mut s, b"after restart");
    echo(&mut s, b"and still");
    assert!(rx.try_recv().is_err(), "no second backend accepted anything (was {backend})");
    drop(s);
    shunt.stop();
}

#[test]
fn interface_flap_is_survived() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    assert_eq!(curl_ok(3), 3);
    ns_exec("shunt", &["ip", "link", "set", "sh-be", "down"]);
    std::thread::sleep(Duration::from_millis(300));
    ns_exec("shunt", &["ip", "link", "set", "sh-be", "up"]);
    std::thread::sleep(Duration::from_millis(500));
    let ok = curl_ok(10);
    let summary = shunt.stop();
    assert_eq!(ok, 10, "forwarding resumes after sh-be went down and up\n{summary}");
}

#[test]
fn umem_starvation_recovers_without_restart() {
    let Some(_lab) = lab() else { return };
    // 256 frames for two sockets: an iperf3-sized burst empties the pool.
    let cfg = cfg_with(
        &[("frames_per_worker = 8192", "frames_per_worker = 256"), ("ring_size = 2048", "ring_size = 64")],
        &starve_service(),
    );
    let shunt = Shunt::start(&cfg);
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", "shunt-be1", "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = ns_exec("shunt-client", &["iperf3", "-c", "10.0.100.1", "-p", "5201", "-t", "2", "-P", "4"]);
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "iperf3 through a tiny UMEM: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(curl_ok(5), 5, "forwarding continues after starvation");
    let summary = shunt.stop();
    let starved =
        counter(&summary, "worker 0", "fill_starved") + counter(&summary, "worker 0", "fill_ring_empty");
    assert!(starved > 0, "the fill ring did run dry:\n{summary}");
}

fn starve_service() -> String {
    "[[service]]\nname = \"iperf\"\nvip = \"10.0.100.1\"\nport = 5201\nprotocol = \"tcp\"\npipeline = \"l4lb\"\n\
     snat_pool = \"10.0.3.0/28\"\nbackends = [{ addr = \"10.0.2.11\", port = 5201 }]\n"
        .to_string()
}

#[test]
fn host_management_traffic_keeps_working_while_shunt_runs() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    // SSH-like TCP to the host's own address.
    let l = bound_in_netns("shunt", || TcpListener::bind("10.0.1.1:2222").unwrap());
    let listener = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"SSH-2.0-shunt-lab\r\n").unwrap();
    });
    let banner = in_netns("shunt-client", || {
        let mut s = TcpStream::connect("10.0.1.1:2222").unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).unwrap();
        b
    })
    .join()
    .unwrap();
    listener.join().unwrap();
    assert_eq!(banner, "SSH-2.0-shunt-lab\r\n");
    // ARP and ND: forget the static entries, resolve again through Shunt's interface.
    ns_exec("shunt-client", &["ip", "neigh", "flush", "dev", "cli0"]);
    let v4 = ns_exec("shunt-client", &["ping", "-c", "2", "-W", "2", "10.0.1.1"]);
    assert!(v4.status.success(), "ARP + ping to the host");
    let v6 = ns_exec("shunt-client", &["ping", "-6", "-c", "2", "-W", "2", "fd00:1::1"]);
    assert!(v6.status.success(), "ND + ping -6 to the host");
    let neigh = ns_exec("shunt-client", &["ip", "neigh", "show", "dev", "cli0"]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains("10.0.1.1") && neigh.contains("fd00:1::1"), "learned via ARP/ND: {neigh}");
    // And owned traffic still flows.
    assert_eq!(curl_ok(5), 5);
    let summary = shunt.stop();
    assert!(counter(&summary, "xdp sh-cli", "passed") >= 4, "{summary}");
}

/// `realtime_priority` puts the workers, and only them, under SCHED_FIFO
/// (policy and priority as the kernel reports them), and traffic flows.
#[test]
fn realtime_priority_applies_to_workers_only() {
    let Some(_lab) = lab() else { return };
    let cfg = cfg_with(&[("[dataplane]\n", "[dataplane]\nrealtime_priority = 10\n")], "");
    let shunt = Shunt::start(&cfg);
    let pid = shunt.child.id();
    let mut workers = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        // Fields after the parenthesised comm start at field 3 (state):
        // rt_priority is field 40, policy field 41 (proc(5)).
        let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap();
        let (prio, policy) = (rest[37], rest[38]);
        if comm.starts_with("shunt-w") {
            workers += 1;
            assert_eq!((policy, prio), ("1", "10"), "worker {} is SCHED_FIFO 10", comm.trim());
        } else {
            assert_eq!(policy, "0", "thread {} stays SCHED_OTHER", comm.trim());
        }
    }
    assert_eq!(workers, 1);
    assert_eq!(curl_ok(5), 5);
    shunt.stop();
    let _ = std::fs::remove_file(cfg);
}

/// Preferred busy polling needs the socket to learn its queue's NAPI from
/// the first packets; veth registers none with its XDP queue, so after a
/// few batches the worker says so and stops calling recvfrom() (no wasted
/// syscalls: `busy_polls` stays 0), and traffic flows either way. With
/// `busy_poll_budget = 0` it is not tried at all.
#[test]
fn busy_polling_turns_itself_off_without_a_napi() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("config.toml"));
    assert_eq!(curl_ok(10), 10);
    let out = shunt.output();
    for iface in ["sh-cli", "sh-be"] {
        assert!(
            out.lines().any(|l| l.contains("busy polling off") && l.contains(&format!("interface={iface} "))),
            "no fallback line for {iface}:\n{out}"
        );
    }
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "busy_polls"), 0, "{summary}");
    assert!(counter(&summary, "worker 0", "rx_packets") > 0, "{summary}");

    let cfg = cfg_with(&[("busy_poll_budget = 64", "busy_poll_budget = 0")], "");
    let shunt = Shunt::start(&cfg);
    assert_eq!(curl_ok(5), 5);
    let out = shunt.output();
    assert!(!out.contains("busy polling"), "busy polling probed although off:\n{out}");
    shunt.stop();
    let _ = std::fs::remove_file(cfg);
}
