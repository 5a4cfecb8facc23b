//! Telemetry and live control against a running instance in the lab:
//! histograms, stats vs Prometheus, control-socket changes under traffic,
//! malformed requests and socket permissions.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Shunt running the default config with its own control socket and
/// report directory.
fn running(tag: &str) -> (Shunt, LabConfig) {
    let c = lab_config(tag, |text| text);
    (Shunt::start(&c.cfg), c)
}

/// Worker 0's counter `name` in a `shunt stats --json` snapshot.
fn worker_counter(snap: &serde_json::Value, name: &str) -> u64 {
    let counters = snap["workers"][0]["counters"].as_array().unwrap();
    counters.iter().find(|c| c[0] == name).unwrap_or_else(|| panic!("no counter {name}"))[1].as_u64().unwrap()
}

fn cli(sock: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(SHUNT).args(args).arg("--socket").arg(sock).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Independent .hgrm reader: the last data row's TotalCount.
fn hgrm_total(text: &str) -> u64 {
    let mut last = 0;
    for line in text.lines().skip(2) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let pct: f64 = cols[1].parse().expect("percentile column");
        assert!((0.0..=1.0).contains(&pct));
        let count: u64 = cols[2].parse().expect("count column");
        assert!(count >= last, "TotalCount never decreases");
        last = count;
    }
    let footer: u64 = text
        .lines()
        .find(|l| l.contains("Total count"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().trim_end_matches(']').trim().parse().ok())
        .expect("Total count footer");
    assert_eq!(footer, last);
    last
}

#[test]
fn histogram_counts_every_forwarded_packet_and_hgrm_parses_back() {
    let Some(_lab) = lab() else { return };
    let (shunt, LabConfig { sock, reports, .. }) = running("hist");
    assert_eq!(curl_ok(40), 40);
    std::thread::sleep(Duration::from_millis(300)); // one rotation
    let (ok, hgrm) = cli(&sock, &["histogram", "--format", "hgrm"]);
    assert!(ok, "{hgrm}");
    let (ok, stats) = cli(&sock, &["stats", "--json"]);
    assert!(ok, "{stats}");
    let snap: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let tx = worker_counter(&snap, "tx_packets");
    assert!(tx > 0);
    assert_eq!(hgrm_total(&hgrm), tx, "one latency sample per forwarded packet");
    let (ok, table) = cli(&sock, &["histogram"]);
    assert!(ok && table.contains("p99.99") && table.contains("merged"), "{table}");

    let summary = shunt.stop();
    // The final report on exit covers the whole run.
    let file = std::fs::read_to_string(reports.join("latest/latency.hgrm")).expect("final report written");
    assert_eq!(hgrm_total(&file), counter(&summary, "worker 0", "tx_packets"));
    assert!(reports.join("latest/latency.svg").exists() && reports.join("latest/latency.json").exists());
}

#[test]
fn prometheus_matches_stats() {
    let Some(_lab) = lab() else { return };
    let (shunt, LabConfig { sock, .. }) = running("prom");
    assert_eq!(curl_ok(20), 20);
    std::thread::sleep(Duration::from_millis(200));
    let (_, stats) = cli(&sock, &["stats", "--json"]);
    let snap: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let metrics = ns_exec("shunt", &["curl", "-s", "http://127.0.0.1:9464/metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    shunt.stop();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    for name in ["rx_packets", "tx_packets", "rx_bytes"] {
        let v = worker_counter(&snap, name);
        assert_eq!(metric(&format!("shunt_worker_{name}_total{{worker=\"0\"}}")), v, "{name}");
    }
    let web = snap["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(metric("shunt_service_packets_total{service=\"web\"}"), web["packets"].as_u64().unwrap());
    assert_eq!(metric("shunt_service_new_flows_total{service=\"web\"}"), 20);
}

#[test]
fn hundred_control_changes_lose_nothing_on_a_live_stream() {
    let Some(_lab) = lab() else { return };
    let LabConfig { cfg, sock, .. } = lab_config("ctl", |text| {
        let stream =
            "[[service]]\nname = \"stream\"\nvip = \"10.0.100.1\"\nport = 9000\nprotocol = \"tcp\"\n\
                      pipeline = \"l4lb\"\nsnat_pool = \"10.0.3.0/28\"\nbackends = [\n  \
                      { addr = \"10.0.2.11\", port = 9000, mac = \"02:00:00:00:02:0b\" },\n]\n";
        before_conntrack(&text, stream)
    });
    let shunt = Shunt::start(&cfg);

    let stop = Arc::new(AtomicBool::new(false));
    let l = bound_in_netns("shunt-be1", || TcpListener::bind("10.0.2.11:9000").unwrap());
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
            total += n;
        }
        total
    });
    let stop_client = stop.clone();
    let client = in_netns("shunt-client", move || {
        let stop = stop_client;
        let mut s = TcpStream::connect("10.0.100.1:9000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sent = 0usize;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let msg = [(i % 251) as u8; 1000];
            s.write_all(&msg).unwrap();
            let mut back = [0u8; 1000];
            s.read_exact(&mut back).expect("echo during control changes");
            assert_eq!(back, msg);
            sent += msg.len();
            i += 1;
        }
        sent
    });
    // 100 operations: add, weight, drain, remove a second backend.
    let backend = ["--service", "stream", "--addr", "10.0.2.12", "--port", "9000"];
    let ops: [(&str, &[&str]); 4] = [
        ("add", &["--mac", "02:00:00:00:02:0c"]),
        ("weight", &["--weight", "50"]),
        ("drain", &[]),
        ("remove", &[]),
    ];
    for i in 0..25 {
        for (verb, extra) in ops {
            let args = [&["backend", verb][..], &backend, extra].concat();
            let (ok, out) = cli(&sock, &args);
            assert!(ok, "op {i} {args:?}: {out}");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    // Stop the client; closing its socket ends the server's loop.
    stop.store(true, Ordering::Relaxed);
    let sent = client.join().unwrap();
    let total = server.join().unwrap();
    let summary = shunt.stop();
    assert!(sent > 100_000, "stream moved {sent} bytes");
    assert_eq!(total, sent, "every byte echoed");
    for reason in shunt::pipeline::DropReason::ALL {
        assert_eq!(counter(&summary, "worker 0", reason.name()), 0, "{} drops\n{summary}", reason.name());
    }
}

#[test]
fn malformed_requests_get_clear_errors_and_forwarding_continues() {
    let Some(_lab) = lab() else { return };
    let (shunt, LabConfig { sock, .. }) = running("bad");
    let raw = |body: &[u8]| -> String {
        let mut s = UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(body);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let bad_json = raw(b"{not json\n");
    assert!(bad_json.contains("\"ok\":false") && bad_json.contains("bad request"), "{bad_json}");
    let unknown = raw(b"{\"verb\":\"teleport\"}\n");
    assert!(unknown.contains("unknown variant `teleport`"), "{unknown}");
    let big = raw(&vec![b'x'; 200 * 1024]);
    assert!(big.contains("request too large"), "{big}");
    let (ok, msg) = cli(&sock, &["backend", "add", "--service", "web", "--addr", "10.0.2.x", "--port", "80"]);
    assert!(
        !ok && msg.contains("invalid backend address `10.0.2.x`") && msg.contains("running config kept"),
        "{msg}"
    );
    let (ok, msg) =
        cli(&sock, &["backend", "drain", "--service", "nope", "--addr", "10.0.2.11", "--port", "80"]);
    assert!(!ok && msg.contains("no service `nope`"), "{msg}");
    assert_eq!(curl_ok(10), 10, "the dataplane keeps forwarding");
    shunt.stop();
}

#[test]
fn non_root_client_is_refused_by_socket_permissions() {
    let Some(_lab) = lab() else { return };
    let (shunt, LabConfig { sock, .. }) = running("perm");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "root-only by default");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(SHUNT)
        .args(["stats", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("permission denied"), "{msg}");
    shunt.stop();
}
