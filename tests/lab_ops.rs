//! Running Shunt as an operator does, in the lab: systemd readiness
//! (sd_notify to a fake NOTIFY_SOCKET), `shunt reload` failing on a broken
//! file, logs under journald and as JSON, what each change logs, second
//! instances, report directories, Prometheus paths and families, and the
//! CLI against a live instance (JSON replies, config show, closed pipes).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The default config with its own control socket and report directory;
/// `prometheus` replaces the metrics address ("" for none, so instances
/// never compete for the port).
fn config(tag: &str, prometheus: &str) -> LabConfig {
    lab_config(tag, |text| {
        let listen = if prometheus.is_empty() {
            "# no prometheus".to_string()
        } else {
            format!("prometheus = \"{prometheus}\"")
        };
        text.replace("prometheus = \"127.0.0.1:9464\"", &listen)
    })
}

/// (exit code, stdout, stderr) of `shunt ARGS --socket SOCK`.
fn cli(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SHUNT).args(args).arg("--socket").arg(sock).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), err)
}

/// Datagrams received on the fake NOTIFY_SOCKET so far.
fn notes(rx: &UnixDatagram, seen: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
}

/// One HTTP/1.0 request to the metrics listener inside the namespace:
/// (status line, body).
fn http(method: &str, path: &str) -> (String, String) {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/19464; printf '{method} {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = ns_exec("shunt", &["bash", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text.lines().next().unwrap_or("").trim().to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

#[test]
fn systemd_readiness_reload_watchdog_logs_and_metrics() {
    let Some(_lab) = lab() else { return };
    let lab = config("ops", "127.0.0.1:19464");
    let dir = std::env::temp_dir().join(format!("shunt-notify-{}", rand_u32()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&notify_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let log = dir.join("shunt.log");
    // journald hands the service a stream whose device:inode is in
    // JOURNAL_STREAM; the log file is that stream here.
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let env = [
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap().to_string()),
        ("WATCHDOG_USEC", "400000".to_string()),
        ("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
    ];
    // The file is opened again by spawn; keep its inode.
    let f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "shunt", SHUNT, "run", "--config"]).arg(&lab.cfg);
    for (k, v) in &env {
        c.env(k, v);
    }
    let child = c.stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
    let shunt = Shunt { child, log };
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|n| n.contains("READY=1")) {
        assert!(Instant::now() < deadline, "no READY=1: {seen:?}\n{}", shunt.output());
        notes(&rx, &mut seen);
    }
    // READY only once the dataplane is up: the attach was logged before it.
    let text = shunt.output();
    assert!(text.contains("Ctrl-C to stop"), "{text}");
    // Under journald every log line carries its syslog priority.
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("control socket listening")).collect();
    assert!(lines.len() == 1 && lines[0].starts_with("<6>"), "{text}");

    // Watchdog: fed while the worker loops (400 ms / 2).
    std::thread::sleep(Duration::from_millis(700));
    notes(&rx, &mut seen);
    assert!(seen.iter().filter(|n| n.as_str() == "WATCHDOG=1").count() >= 2, "{seen:?}");

    // A change through the socket: JSON reply, logged once with uid and what.
    let (code, out, err) = cli(
        &lab.sock,
        &["backend", "drain", "--service", "web", "--addr", "10.0.2.13", "--port", "80", "--json"],
    );
    assert_eq!(code, Some(0), "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["generation"], 2);
    assert_eq!(reply["changes"][0], "service web: backend 10.0.2.13:80 draining");
    let text = shunt.wait_for("control change applied");
    let applied: Vec<&str> = text.lines().filter(|l| l.contains("control change applied")).collect();
    assert_eq!(applied.len(), 1, "{text}");
    assert!(
        applied[0].starts_with("<6>")
            && applied[0].contains("uid=0")
            && applied[0].contains("10.0.2.13:80 draining"),
        "{text}"
    );
    assert!(!applied[0].contains("BackendDrain"), "no Debug dumps: {text}");

    // IPv6 endpoints print as [addr]:port.
    let (code, out, err) = cli(
        &lab.sock,
        &["backend", "weight", "--service", "web6", "--addr", "fd00:2::12", "--port", "80", "--weight", "50"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("backend [fd00:2::12]:80 weight 50"), "{out}");

    // A rejected change: cites the request, not a line of a file; logged with the uid.
    let (code, _, err) = cli(
        &lab.sock,
        &["backend", "add", "--service", "web", "--addr", "10.0.2.14", "--port", "80", "--mac", "zz:zz"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "backend.add request: key `service.backends.mac`: service `web`: invalid MAC address `zz:zz`"
        ),
        "{err}"
    );
    assert!(!err.contains(".toml:"), "{err}");
    let text = shunt.wait_for("control change `service web: backend 10.0.2.14:80 added");
    assert!(
        text.lines().any(|l| l.starts_with("<4>") && l.contains("zz:zz") && l.contains("uid=0")),
        "{text}"
    );

    // config show: the running config as TOML, the runtime weight change
    // included. A drain is admin state, not config: `backend list` shows it.
    let (code, out, _) = cli(&lab.sock, &["config", "show"]);
    assert_eq!(code, Some(0));
    let shown: toml::Table = toml::from_str(&out).expect("config show prints TOML");
    let changed = shown["service"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["backends"].as_array().unwrap())
        .find(|b| b["addr"].as_str() == Some("fd00:2::12"))
        .unwrap();
    assert_eq!(changed["weight"].as_integer(), Some(50), "{out}");
    let (code, out, err) = cli(&lab.sock, &["backend", "list", "--service", "web", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let drained = rows.as_array().unwrap().iter().find(|r| r["backend"] == "10.0.2.13:80").unwrap();
    assert_eq!(drained["admin"], "draining", "{out}");

    // Reload of a good file: RELOADING=1 then READY=1, changes listed and logged.
    seen.clear();
    let (code, out, err) = cli(&lab.sock, &["reload"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ok: reloaded (generation 4)"), "{out}");
    notes(&rx, &mut seen);
    let r = seen.iter().position(|n| n.starts_with("RELOADING=1\nMONOTONIC_USEC=")).expect("RELOADING=1");
    assert!(seen[r..].iter().any(|n| n.starts_with("READY=1")), "{seen:?}");
    let text = shunt.wait_for("config reloaded");
    assert!(
        text.lines().any(|l| l.starts_with("<6>")
            && l.contains("config reloaded")
            && l.contains("via=\"control socket\"")),
        "{text}"
    );

    // Reload of a broken file: exit 1, the error, the old config kept, logged at error.
    let good = std::fs::read_to_string(&lab.cfg).unwrap();
    std::fs::write(&lab.cfg, good.replace("batch_size = 64", "batch_sise = 64")).unwrap();
    let (code, _, err) = cli(&lab.sock, &["reload"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown field `batch_sise`"), "{err}");
    let text = shunt.wait_for("config reload failed");
    assert!(text.lines().any(|l| l.starts_with("<3>") && l.contains("config reload failed")), "{text}");
    std::fs::write(&lab.cfg, good).unwrap();

    // Prometheus: only GET /metrics; build info, reload results, the
    // latency histogram, IPv6 labels, no idle TX ring among the drops.
    let (status, body) = http("GET", "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        body.contains(&format!("shunt_build_info{{version=\"{}\",commit=", env!("CARGO_PKG_VERSION"))),
        "{body}"
    );
    assert!(body.contains("shunt_config_reloads_total{result=\"success\"} 1"), "{body}");
    assert!(body.contains("shunt_config_reloads_total{result=\"failure\"} 1"), "{body}");
    assert!(body.contains("# TYPE shunt_latency_seconds histogram"), "{body}");
    assert!(body.contains("shunt_latency_seconds_bucket{le=\"+Inf\"}"), "{body}");
    assert!(body.contains("backend=\"[fd00:2::12]:80\""), "{body}");
    assert!(
        !body.lines().any(|l| l.starts_with("shunt_xsk_drops") && l.contains("tx_ring_empty_descs")),
        "{body}"
    );
    assert!(body.contains("shunt_xsk_tx_ring_empty_total{"), "{body}");
    assert!(body.contains("# TYPE shunt_worker_conntrack_entries gauge"), "{body}");
    assert!(body.contains("shunt_worker_snat_ports{worker=\"0\"}"), "{body}");
    let (status, _) = http("GET", "/");
    assert!(status.contains(" 404"), "{status}");
    let (status, _) = http("POST", "/metrics");
    assert!(status.contains(" 405"), "{status}");

    let text = shunt.stop();
    notes(&rx, &mut seen);
    assert!(seen.iter().any(|n| n == "STOPPING=1"), "{seen:?}\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_log_lines_parse() {
    let Some(_lab) = lab() else { return };
    let lab = config("jsonlog", "");
    let shunt = Shunt::start_with(Path::new(SHUNT), &lab.cfg, |c| {
        c.args(["--log-format", "json"]);
    });
    let (code, _, _) =
        cli(&lab.sock, &["backend", "drain", "--service", "web", "--addr", "10.0.2.11", "--port", "80"]);
    assert_eq!(code, Some(0));
    shunt.wait_for("control change applied");
    let text = shunt.stop();
    let mut parsed = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["time"].is_string(), "{line}");
        if v["message"].as_str().unwrap().contains("control change applied") {
            assert_eq!(v["uid"], 0, "{line}");
            assert_eq!(v["level"], "info");
        }
        parsed += 1;
    }
    assert!(parsed >= 3, "{text}");
}

/// `shunt run` with `cfg` exits 1 at once (another instance holds what it
/// needs); its stderr.
fn refused(cfg: &Path) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", "shunt", SHUNT, "run", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

#[test]
fn second_instance_names_the_first_and_reports_keep_every_run() {
    let Some(_lab) = lab() else { return };
    let lab = config("twice", "");
    let first = Shunt::start(&lab.cfg);
    // Same config: the control socket is taken.
    let err = refused(&lab.cfg);
    assert!(
        err.contains(&format!("is in use: is another shunt running? (pid {})", first.child.id())),
        "{err}"
    );
    // Another control socket, same queues: the queue is taken.
    let other = config("twice-b", "");
    let err = refused(&other.cfg);
    assert!(err.contains("already bound by another AF_XDP socket"), "{err}");
    assert!(err.contains(&format!("is another shunt running? (pid {})", first.child.id())), "{err}");
    first.stop();

    // Two runs, two report directories, `latest` at the second.
    let second = Shunt::start(&lab.cfg);
    let second_pid = second.child.id();
    second.stop();
    let mut runs: Vec<String> = std::fs::read_dir(&lab.reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "latest")
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert!(r.len() > 17 && r.as_bytes()[8] == b'T' && r[..16].ends_with('Z'), "{r}");
        assert!(lab.reports.join(r).join("latency.hgrm").exists());
    }
    let latest = std::fs::read_link(lab.reports.join("latest")).unwrap();
    assert!(latest.to_string_lossy().ends_with(&format!("-{second_pid}")), "{latest:?}");
}

#[test]
fn live_cli_output_pipes_and_watch() {
    let Some(_lab) = lab() else { return };
    let lab = config("pipes", "");
    let shunt = Shunt::start(&lab.cfg);
    let curl = ns_exec(
        "shunt-client",
        &["bash", "-c", "for i in 1 2 3 4 5; do curl -s -m 2 http://10.0.100.1/ >/dev/null; done"],
    );
    assert!(curl.status.success());
    // hgrm into `head`: EPIPE ends it quietly.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {SHUNT} histogram --format hgrm --socket {} | head -2; echo rc=$?",
            lab.sock.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked") && text.contains("rc=0") && text.contains("Value"), "{text}");

    // --watch into a pipe: no screen clearing; --json: rates, per interval.
    let mut watch = Command::new(SHUNT)
        .args(["stats", "--watch", "0.2", "--json", "--socket"])
        .arg(&lab.sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(first["interval_secs"].as_f64().unwrap() > 0.1, "{first}");
    assert!(first["workers"][0]["per_sec"]["rx_packets"].is_number(), "{first}");
    assert!(first["services"][0]["packets_per_sec"].is_number(), "{first}");
    let mut watch = Command::new(SHUNT)
        .args(["stats", "--watch", "0.2", "--socket"])
        .arg(&lab.sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = watch.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = watch.kill();
    let _ = watch.wait();
    let mut text = String::new();
    let _ = out.read_to_string(&mut text);
    assert!(text.contains("/s") && !text.contains('\x1b'), "{text:?}");

    // --json from change verbs, errors included.
    let (code, out, _) = cli(&lab.sock, &["service", "remove", "nope", "--json"]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("no service `nope`"), "{v}");
    let (code, out, _) = cli(&lab.sock, &["check", "--offline", "--json", "-c", lab.cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["services"], 2);

    // A service file written as in a config file, [[service]] header and all.
    let svc = std::env::temp_dir().join(format!("shunt-svc-{}.toml", rand_u32()));
    let mut f = std::fs::File::create(&svc).unwrap();
    writeln!(
        f,
        "[[service]]\nname = \"web9\"\nvip = \"10.0.100.9\"\nport = 8080\nprotocol = \"tcp\"\npipeline = \"l4lb\"\nbackends = [{{ addr = \"10.0.2.11\", port = 80 }}]"
    )
    .unwrap();
    let (code, out, err) = cli(&lab.sock, &["service", "add", "--file", svc.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("service web9 added"), "{out}");
    let (code, _, err) = cli(&lab.sock, &["service", "remove", "web9", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    shunt.stop();
}

#[test]
fn demo_runs_curl_and_an_iperf3_stream_across_shunt() {
    let Some(_lab) = lab() else { return };
    let out = Command::new("bash").arg(repo().join("scripts/demo.sh")).env("SHUNT", SHUNT).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("intact"), "{text}");
    assert!(text.contains("ok: applied (generation ") && text.contains("service iperf added"), "{text}");
    // The receiver line: `[  5]   0.00-3.00 sec  X MBytes  N Mbits/sec  receiver`.
    let receiver = text.lines().find(|l| l.ends_with("receiver")).unwrap_or_else(|| panic!("{text}"));
    let rate: f64 = receiver
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "Mbits/sec")
        .map(|w| w[0].parse().unwrap())
        .unwrap_or_else(|| panic!("{receiver}"));
    assert!(rate > 1.0, "{receiver}");
}

#[test]
fn conn_list_shows_live_connections_with_filters() {
    let Some(_lab) = lab() else { return };
    let lab = config("conns", "");
    let shunt = Shunt::start(&lab.cfg);
    // Two idle keep-alive connections held open by the client: IPv4 and IPv6.
    let mut holders = Vec::new();
    for vip in ["10.0.100.1", "fd00:100::1"] {
        let script = format!(
            "exec 3<>/dev/tcp/{vip}/80; printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; head -c 100 <&3 >/dev/null; echo open; sleep 8"
        );
        let mut h = Command::new("ip")
            .args(["netns", "exec", "shunt-client", "bash", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(h.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "open", "{vip}");
        holders.push(h);
    }
    let (code, out, err) = cli(&lab.sock, &["conn", "list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{out}");
    let v4 = conns.iter().find(|c| c["service"] == "web").expect("the IPv4 flow");
    assert!(v4["client"].as_str().unwrap().starts_with("10.0.1.2:"), "{v4}");
    assert_eq!(v4["vip"], "10.0.100.1:80");
    assert!(
        ["10.0.2.11:80", "10.0.2.12:80", "10.0.2.13:80"].contains(&v4["backend"].as_str().unwrap()),
        "{v4}"
    );
    assert!(v4["snat"].as_str().unwrap().starts_with("10.0.3."), "{v4}");
    assert_eq!(v4["state"], "established");
    let (age, idle) = (v4["age_secs"].as_u64(), v4["idle_secs"].as_u64());
    assert!(
        age.is_some() && idle.is_some() && age >= idle,
        "age since the first packet, idle since the last: {v4}"
    );
    assert_eq!(v4["proto"], "tcp");
    assert_eq!(v4["worker"], 0);
    let v6 = conns.iter().find(|c| c["service"] == "web6").expect("the IPv6 flow");
    assert!(v6["client"].as_str().unwrap().starts_with("[fd00:1::2]:"), "{v6}");
    assert_eq!(v6["vip"], "[fd00:100::1]:80");
    assert!(v6["snat"].as_str().unwrap().starts_with("[fd00:3::"), "{v6}");

    let count = |args: &[&str]| -> usize {
        let mut a = vec!["conn", "list", "--json"];
        a.extend_from_slice(args);
        let (code, out, err) = cli(&lab.sock, &a);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["connections"].as_array().unwrap().len()
    };
    assert_eq!(count(&["--service", "web6"]), 1);
    assert_eq!(count(&["--client", "10.0.1.2"]), 1);
    assert_eq!(count(&["--client", v4["client"].as_str().unwrap()]), 1);
    assert_eq!(count(&["--client", "10.0.1.99"]), 0);
    assert_eq!(count(&["--backend", v4["backend"].as_str().unwrap()]), 1);
    assert_eq!(count(&["--state", "ESTABLISHED"]), 2);
    assert_eq!(count(&["--state", "time_wait"]), 0);
    assert_eq!(count(&["--limit", "1"]), 1);
    let (code, _, err) = cli(&lab.sock, &["conn", "list", "--state", "open"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown state `open`"), "{err}");
    let (code, _, err) = cli(&lab.sock, &["conn", "list", "--service", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no service `nope`"), "{err}");

    // The fill gauges: two flows, an entry per direction each, two SNAT ports.
    let (_, stats, _) = cli(&lab.sock, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let gauge = |n: &str| -> u64 {
        stats["workers"][0]["gauges"].as_array().unwrap().iter().find(|g| g[0] == n).unwrap()[1]
            .as_u64()
            .unwrap()
    };
    assert_eq!(gauge("conntrack_entries"), 4, "{stats}");
    assert!(gauge("conntrack_capacity") >= 262144, "{stats}");
    assert_eq!(gauge("snat_ports_in_use"), 2, "{stats}");
    assert!(gauge("snat_ports") > 1000, "{stats}");
    let (code, table, _) = cli(&lab.sock, &["conn", "list"]);
    assert_eq!(code, Some(0));
    assert!(table.starts_with("proto client"), "{table}");
    assert!(table.contains("established") && table.contains("[fd00:100::1]:80"), "{table}");
    assert!(table.trim_end().ends_with("2 connection(s)"), "{table}");
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    shunt.stop();
}

/// Sends `body` on a fresh control connection and reads the reply to EOF.
fn raw_request(sock: &Path, body: &[u8]) -> String {
    let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

fn pid_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn control_socket_serves_clients_concurrently_and_signals_never_wait_on_one() {
    let Some(_lab) = lab() else { return };
    let lab = config("ctl", "");
    let mut shunt = Shunt::start(&lab.cfg);
    let child = &mut shunt.child;
    let connect = || std::os::unix::net::UnixStream::connect(&lab.sock).unwrap();

    // A slowloris client (one byte every 1.5 s) and 200 idle ones.
    let mut slow = connect();
    let slowloris = std::thread::spawn(move || {
        for b in br#"{"verb":"stats"}"# {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1500));
        }
        let mut out = Vec::new();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = slow.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    });
    let idle: Vec<_> = (0..200).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let reply = raw_request(&lab.sock, b"{\"verb\":\"stats\"}\n");
        times.push(t0.elapsed());
        assert!(reply.starts_with("{\"ok\":true"), "{reply}");
        std::thread::sleep(Duration::from_millis(250));
    }
    times.sort();
    assert!(
        times[2] < Duration::from_millis(100),
        "stats took {times:?} with a slowloris and 200 idle clients"
    );
    assert!(times[4] < Duration::from_secs(1), "{times:?}");
    // The slowloris client is cut at its deadline and told why.
    let told = slowloris.join().unwrap();
    assert!(told.contains("request not received within 2s"), "{told:?}");
    drop(idle);

    // A 10 MB request is read whole (no broken pipe) and refused in words.
    let mut big = connect();
    big.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = big.write_all(&vec![b' '; 10 << 20]);
    let _ = big.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply);
    assert!(sent.is_ok(), "writing a 10 MB request: {sent:?}; reply {reply:?}");
    assert!(reply.contains("request too large (limit 65536 bytes)"), "{reply:?}");

    // Reload and runtime changes refuse what `shunt check` refuses.
    let (code, _, err) =
        cli(&lab.sock, &["backend", "add", "--service", "web", "--addr", "10.0.3.5", "--port", "80"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("SNAT pool 10.0.3.0/28 covers 10.0.3.5, a backend address of service `web`"),
        "{err}"
    );
    let text = std::fs::read_to_string(&lab.cfg).unwrap();
    let bad = text.replacen("snat_pool = \"10.0.3.0/28\"", "snat_pool = \"10.0.1.0/28\"", 1);
    let line = bad.lines().position(|l| l.starts_with("snat_pool = \"10.0.1.0/28\"")).unwrap() + 1;
    std::fs::write(&lab.cfg, &bad).unwrap();
    let (code, _, err) = cli(&lab.sock, &["reload"]);
    std::fs::write(&lab.cfg, &text).unwrap();
    assert_ne!(code, Some(0));
    assert!(err.contains(&format!("{}:{line}:13: ", lab.cfg.display())), "{err}");
    assert!(
        err.contains("SNAT pool 10.0.1.0/28 covers 10.0.1.1, this host's own address on `sh-cli`"),
        "{err}"
    );
    let (_, out, _) = cli(&lab.sock, &["config", "show"]);
    assert!(out.contains("snat_pool = \"10.0.3.0/28\""), "running config kept");

    // Past the connection limit a client is told so.
    let held: Vec<_> = (0..256).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(&mut extra).read_line(&mut line);
    assert!(line.contains("too many control connections (limit 256)"), "{line:?}");

    // SIGTERM with every slot taken and a client mid-request: Shunt stops
    // at once.
    let mut partial = connect();
    let _ = partial.write_all(b"{\"verb\":");
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own child (ip netns exec execs shunt).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    let out = shunt.output();
    drop(held);
    eprintln!("stats answered in {times:?}; SIGTERM stopped Shunt in {took:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}:\n{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn metrics_port_survives_20000_connections_from_an_unprivileged_user() {
    let Some(_lab) = lab() else { return };
    let lab = config("prom20k", "127.0.0.1:19464");
    let shunt = Shunt::start(&lab.cfg);
    let pid = shunt.child.id();
    assert!(http("GET", "/metrics").0.contains("200"));
    let threads = pid_threads(pid);
    // `nobody`, non-blocking connects, all held open for 3 s: two
    // processes of 10,000, below the file limit a test may not raise.
    let script = "import socket,time\n\
        s=[]\n\
        for i in range(10000):\n    c=socket.socket(); c.setblocking(False)\n    \
        try: c.connect(('127.0.0.1',19464))\n    except BlockingIOError: pass\n    s.append(c)\n\
        print('open',len(s),flush=True)\n\
        time.sleep(3)\n\
        [c.close() for c in s]\n";
    let mut floods: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    "shunt",
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                ])
                .args(["/usr/bin/python3", "-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 as nobody")
        })
        .collect();
    for f in &mut floods {
        let mut opened = String::new();
        BufReader::new(f.stdout.take().unwrap()).read_line(&mut opened).unwrap();
        assert_eq!(opened.trim(), "open 10000");
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = pid_threads(pid);
    for mut f in floods {
        assert!(f.wait().unwrap().success());
    }
    eprintln!("metrics: {threads} threads before, {during} with 20,000 connections open");
    assert!(during <= threads + 1, "threads {threads} before, {during} with 20,000 connections open");
    // Afterwards /metrics answers, other paths and methods as before.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = String::new();
    while Instant::now() < deadline {
        status = http("GET", "/metrics").0;
        if status.contains("200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(status.contains("200"), "{status:?}");
    assert!(http("GET", "/").0.contains("404"));
    assert!(http("POST", "/metrics").0.contains("405"));
    let out = shunt.stop();
    assert!(!out.contains("panicked"), "{out}");
}
