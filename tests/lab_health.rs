//! Health checks and backend state against real peers: the lab's nginx
//! backends (killed, restarted, answering 500), a backend address with no
//! host, UDP responders, curl through the VIP, and the `shunt` CLI.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SOCKET: &str = "/run/shunt/control.sock";

fn write_config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("shunt-health-{}.toml", rand_u32()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The shipped config, `web` service's health table replaced by `table`.
fn web_health(table: &str) -> String {
    let base = default_config();
    let start = base.find("[service.health]").unwrap();
    let end = start + base[start..].find("\n\n").unwrap();
    format!("{}[service.health]\n{table}{}", &base[..start], &base[end..])
}

fn cli(args: &[&str]) -> String {
    // `--socket` belongs to the verb: `shunt service --socket S list`.
    let out = Command::new(SHUNT).arg(args[0]).args(["--socket", SOCKET]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "shunt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn backends() -> serde_json::Value {
    serde_json::from_str(&cli(&["backend", "list", "--json"])).unwrap()
}

fn backend(addr: &str) -> serde_json::Value {
    backends()
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["service"] == "web" && b["backend"] == format!("{addr}:80"))
        .cloned()
        .unwrap_or_else(|| panic!("no web backend {addr}"))
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` new connections to the VIP; each line is the backend's name, or
/// FAIL and curl's exit code (7: refused, 28: timed out).
fn curl(n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do curl -s -m 2 --no-keepalive http://10.0.100.1/ || echo FAIL $?; done"
    );
    let out = ns_exec("shunt-client", &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn kill_nginx(b: u32) {
    let pid = std::fs::read_to_string(format!("/run/shunt-lab/be{b}/nginx.pid")).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    // SAFETY: kill(2) on the lab nginx master's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for("nginx to exit", Duration::from_secs(5), || !alive(pid));
}

/// Not gone, nor a zombie nobody has reaped yet.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

fn nginx_running(b: u32) -> bool {
    std::fs::read_to_string(format!("/run/shunt-lab/be{b}/nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .is_some_and(alive)
}

fn start_nginx(b: u32) {
    let out = ns_exec(&format!("shunt-be{b}"), &["nginx", "-c", &format!("/run/shunt-lab/be{b}/nginx.conf")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// New connections to the VIP on a thread until dropped; records the
/// failed ones and why they failed.
struct Looper {
    stop: Arc<AtomicBool>,
    failures: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Looper {
    fn start() -> Looper {
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
        let thread = {
            let (stop, failures) = (stop.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut total = 0;
                while !stop.load(Ordering::Relaxed) {
                    // A failure is stamped with its batch's start: a batch
                    // that began before a deadline may fail after it.
                    let began = Instant::now();
                    for r in curl(5) {
                        total += 1;
                        if r.starts_with("FAIL") {
                            failures.lock().unwrap().push((began, r));
                        }
                    }
                }
                total
            })
        };
        Looper { stop, failures, thread: Some(thread) }
    }

    /// Stops it; returns how many connections it made and the failures.
    fn finish(mut self) -> (usize, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let total = self.thread.take().map_or(0, |t| t.join().unwrap());
        (total, std::mem::take(&mut *self.failures.lock().unwrap()))
    }
}

impl Drop for Looper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a round proves nothing about the killed backend, if it does not:
/// a host stalled past the probe timeout fails the healthy backends'
/// probes too (then panic mode spreads new flows over all three, the
/// dead one included), or times out curl itself. Refused connections and
/// answers from be2 are never excused.
fn host_stalled(shunt: &Shunt, failed: &[&String]) -> Option<String> {
    let log = shunt.output();
    let flapped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backend down") && (l.contains("10.0.2.11:80") || l.contains("10.0.2.13:80")))
        .collect();
    if !flapped.is_empty() {
        return Some(format!("a healthy backend failed its probes: {flapped:?}"));
    }
    (!failed.is_empty() && failed.iter().all(|r| r.as_str() == "FAIL 28"))
        .then(|| format!("{} connections timed out, none was refused", failed.len()))
}

#[test]
fn a_killed_nginx_leaves_the_rotation_and_returns_when_started() {
    let Some(_lab) = lab() else { return };
    // A round a host stall voids (see `host_stalled`) runs once more; a
    // second such round fails.
    if let Err(why) = killed_nginx_round() {
        eprintln!("round voided, running it again: {why}");
        if !nginx_running(2) {
            start_nginx(2);
        }
        killed_nginx_round().unwrap_or_else(|why| panic!("voided twice: {why}"));
    }
}

fn killed_nginx_round() -> Result<(), String> {
    // Shipped check: http, 1s interval, 500ms timeout, rise 2, fall 2.
    let shunt = Shunt::start(&repo().join("config.toml"));
    wait_for("all up", Duration::from_secs(5), || BACKENDS4.iter().all(|b| backend(b)["health"] == "up"));

    // New connections all the while; count failures per phase.
    let looper = Looper::start();
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    kill_nginx(2);
    // fall × interval + timeout, plus a probe interval of phase.
    let settled = killed + Duration::from_millis(2 * 1000 + 500 + 1000);
    wait_for("be2 down", Duration::from_secs(6), || backend("10.0.2.12")["health"] == "down");
    assert!(Instant::now() <= settled, "down after {:?}", killed.elapsed());
    let b2 = backend("10.0.2.12");
    assert_eq!(b2["in_table"], false, "{b2}");
    assert!(b2["last_probe"]["detail"].as_str().unwrap().contains("refused"), "{b2}");
    let metrics = ns_exec("shunt", &["curl", "-s", "http://127.0.0.1:9464/metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "shunt_backend_up{service=\"web\",backend=\"10.0.2.12:80\"} 0",
        "shunt_backend_up{service=\"web\",backend=\"10.0.2.11:80\"} 1",
        "shunt_backend_state{service=\"web\",backend=\"10.0.2.12:80\",state=\"enabled\"} 1",
        "shunt_backend_transitions_total{service=\"web\",backend=\"10.0.2.12:80\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");
    }
    assert!(metrics.contains("shunt_backend_probe_latency_seconds_bucket{"), "{metrics}");
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let replies = curl(30);
    let others: Vec<&String> = replies.iter().filter(|r| *r != "shunt-be1" && *r != "shunt-be3").collect();
    if !others.is_empty() {
        if let Some(why) = host_stalled(&shunt, &others) {
            return Err(why);
        }
        panic!("after be2 left: {replies:?}\n{}\n{}", cli(&["stats", "--json"]), shunt.output());
    }

    start_nginx(2);
    let started = Instant::now();
    wait_for("be2 up", Duration::from_secs(5), || backend("10.0.2.12")["health"] == "up");
    assert!(started.elapsed() <= Duration::from_millis(2 * 1000 + 1000), "up after {:?}", started.elapsed());
    let replies = curl(30);
    assert!(replies.iter().any(|r| r == "shunt-be2"), "be2 takes new connections again: {replies:?}");
    assert!(replies.iter().all(|r| r.starts_with("shunt-be")), "{replies:?}");

    let (total, failures) = looper.finish();
    // Only connections hashed to be2 before it left can fail.
    let late: Vec<&String> = failures.iter().filter(|(t, _)| *t > settled).map(|(_, r)| r).collect();
    if !late.is_empty() {
        if let Some(why) = host_stalled(&shunt, &late) {
            return Err(why);
        }
        panic!("late failures: {late:?} of {failures:?} (killed at {killed:?})\n{}", shunt.output());
    }
    assert!(failures.len() * 2 < total, "{} of {total} failed", failures.len());
    let out = shunt.stop();
    assert!(out.contains("backend down") && out.contains("WARN"), "a WARN line per down transition:\n{out}");
    assert!(out.contains("backend up"), "{out}");
    Ok(())
}

#[test]
fn http_check_expecting_200_takes_a_backend_answering_500_out() {
    let Some(_lab) = lab() else { return };
    let cfg = web_health(
        "kind = \"http\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\npath = \"/health\"\nexpect = [200]\n",
    );
    let down = "/run/shunt-lab/be3/www/down";
    std::fs::write(down, "").unwrap();
    let shunt = Shunt::start(&write_config(&cfg));
    wait_for("be3 down", Duration::from_secs(5), || backend("10.0.2.13")["health"] == "down");
    assert_eq!(backend("10.0.2.13")["last_probe"]["detail"], "status 500, expected [200]");
    assert_eq!(backend("10.0.2.11")["health"], "up");
    let replies = curl(30);
    assert!(replies.iter().all(|r| r == "shunt-be1" || r == "shunt-be2"), "{replies:?}");
    std::fs::remove_file(down).unwrap();
    wait_for("be3 up", Duration::from_secs(5), || backend("10.0.2.13")["health"] == "up");
    assert!(curl(30).iter().any(|r| r == "shunt-be3"));
    let services = cli(&["service", "list"]);
    assert!(
        services.contains("web") && services.contains("10.0.100.1:80") && services.contains("3/3"),
        "{services}"
    );
    shunt.stop();
}

#[test]
fn a_backend_with_no_host_behind_it_is_down_and_gets_no_traffic() {
    let Some(_lab) = lab() else { return };
    let cfg = web_health("kind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n").replace(
        "  { addr = \"10.0.2.13\", port = 80, weight = 100 },\n",
        "  { addr = \"10.0.2.13\", port = 80, weight = 100 },\n  { addr = \"10.0.2.99\", port = 80, weight = 100 },\n",
    );
    let shunt = Shunt::start(&write_config(&cfg));
    // Within the fall window (2 × 300 ms + 200 ms) and a little.
    wait_for("10.0.2.99 down", Duration::from_secs(3), || backend("10.0.2.99")["health"] == "down");
    let replies = curl(40);
    let summary = shunt.stop();
    assert!(replies.iter().all(|r| r.starts_with("shunt-be")), "{replies:?}\n{summary}");
    assert_eq!(counter(&summary, "worker 0", "next_hop_unresolved"), 0, "{summary}");
}

#[test]
fn a_drain_survives_reload_and_sighup_and_its_download_completes() {
    let Some(_lab) = lab() else { return };
    let path = write_config(&default_config());
    let shunt = Shunt::start(&path);
    wait_for("all up", Duration::from_secs(5), || {
        backends().as_array().unwrap().iter().filter(|b| b["service"] == "web").all(|b| b["health"] == "up")
    });
    // A long download: 1 MiB at 200 KiB/s.
    let download = std::thread::spawn(|| {
        ns_exec(
            "shunt-client",
            &[
                "curl",
                "-s",
                "--limit-rate",
                "200k",
                "-m",
                "30",
                "--no-keepalive",
                "http://10.0.100.1/big.bin",
            ],
        )
    });
    let mut victim = String::new();
    wait_for("the download's backend", Duration::from_secs(3), || {
        let b = backends();
        let busy = b.as_array().unwrap().iter().find(|b| b["service"] == "web" && b["active"] == 1);
        if let Some(x) = busy {
            victim = x["backend"].as_str().unwrap().trim_end_matches(":80").to_string();
        }
        busy.is_some()
    });
    let out = cli(&["backend", "drain", "--service", "web", "--addr", &victim, "--port", "80"]);
    assert!(out.contains("draining"), "{out}");
    let out = cli(&["reload"]);
    assert!(out.contains(&format!("kept: web {victim}:80: draining")), "{out}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(shunt.child.id() as i32, libc::SIGHUP) };
    wait_for("SIGHUP reload", Duration::from_secs(5), || shunt.output().contains("config reloaded"));
    let b = backend(&victim);
    assert_eq!((b["admin"].as_str(), b["in_table"].as_bool()), (Some("draining"), Some(false)), "{b}");
    assert_eq!(b["weight"], 100, "the drain is an admin state, not a weight");
    let name = format!("shunt-be{}", victim.rsplit('.').next().unwrap().parse::<u32>().unwrap() - 10);
    let replies = curl(20);
    assert!(replies.iter().all(|r| r.starts_with("shunt-be") && *r != name), "{name} drained: {replies:?}");

    let got = download.join().unwrap();
    assert!(got.status.success(), "download failed");
    assert!(got.stdout == std::fs::read("/run/shunt-lab/big.bin").unwrap(), "download intact");
    wait_for("active connections at 0", Duration::from_secs(5), || backend(&victim)["active"] == 0);
    shunt.stop();
}

/// One HTTP/1.0 request from client port `port`: the backend's name, or
/// curl's exit code. A dead backend answers at once (its kernel's RST:
/// exit 7); 5 s leave room for two SYN retransmissions, so a flow
/// rescheduled to a live backend is not failed by one lost packet.
///
/// curl reads to the end of the stream (`--ignore-content-length`), so the
/// server's FIN reaches the client before the client closes: the client's
/// end never waits in TIME_WAIT, and the same port is free for the next
/// request at once. Stopping at Content-Length, curl closed first in about
/// one run in ten; the client then held the 4-tuple in TIME_WAIT and the
/// next curl failed to bind the port (exit 45) without sending a SYN.
fn curl_from(port: u16) -> Result<String, i32> {
    let out = ns_exec(
        "shunt-client",
        &[
            "curl",
            "-s",
            "-0",
            "--ignore-content-length",
            "-m",
            "5",
            "--local-port",
            &port.to_string(),
            "http://10.0.100.1/",
        ],
    );
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        code => Err(code.unwrap_or(-1)),
    }
}

/// The backends a client port's first and second requests reached (the
/// second after the first one's backend died), as `curl_from` reports them.
fn reschedules(on_down: &str) -> (String, Result<String, i32>) {
    let cfg = web_health(&format!(
        "kind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\non_down = \"{on_down}\"\n"
    ));
    let shunt = Shunt::start(&write_config(&cfg));
    wait_for("all up", Duration::from_secs(5), || backend("10.0.2.11")["health"] == "up");
    let port = 40_000 + (rand_u32() % 10_000) as u16;
    let first = curl_from(port).unwrap_or_else(|rc| panic!("first request: curl exit {rc}"));
    let b: u32 = first.trim_start_matches("shunt-be").parse().unwrap_or_else(|_| panic!("{first}"));
    kill_nginx(b);
    let addr = format!("10.0.2.{}", 10 + b);
    wait_for("its backend down", Duration::from_secs(3), || backend(&addr)["health"] == "down");
    // The control plane reports "down" as it decides it; the workers act on
    // it with the next snapshot they take.
    std::thread::sleep(Duration::from_millis(1000));
    // Same 5-tuple again: its conntrack entry (TIME_WAIT) still names the dead backend.
    let second = curl_from(port);
    let listed = backends();
    let summary = shunt.stop();
    start_nginx(b);
    if second.is_err() && on_down == "expire" {
        eprintln!("{summary}\n{listed}");
    }
    (first, second)
}

#[test]
fn on_down_expire_reschedules_a_flow_of_a_dead_backend_and_keep_does_not() {
    let Some(_lab) = lab() else { return };
    let (first, second) = reschedules("keep");
    // Refused by the dead backend's kernel (curl's 7), not failed on the client's side.
    assert_eq!(second, Err(7), "keep: the flow stays on dead {first}");
    let (first, second) = reschedules("expire");
    assert!(
        second.as_ref().is_ok_and(|s| s.starts_with("shunt-be") && *s != first),
        "expire: {first} → {second:?}"
    );
}

#[test]
fn udp_check_takes_a_backend_without_a_responder_out() {
    let Some(_lab) = lab() else { return };
    let base = default_config();
    let members: String =
        (1..=3).map(|b| format!("  {{ addr = \"10.0.2.1{b}\", port = 9001 }},\n")).collect();
    let echo = format!(
        "[[service]]\nname = \"echo\"\nvip = \"10.0.100.1\"\nport = 9001\nprotocol = \"udp\"\n\
         pipeline = \"l4lb\"\nsnat_pool = \"10.0.3.0/28\"\nbackends = [\n{members}]\n\
         health = {{ kind = \"udp\", payload = \"health\", interval = \"300ms\", timeout = \"200ms\" }}\n"
    );
    let cfg = before_conntrack(&base, &echo);
    // Responders on be1 and be3; be2's kernel answers port unreachable.
    // Without a rate limit: Linux answers one error a second per host
    // after a burst of six, and a probe every 300 ms would then see
    // timeouts between the answers (the reason the check reports is the
    // last probe's).
    let limited = ns_exec("shunt-be2", &["sysctl", "-n", "net.ipv4.icmp_ratelimit"]);
    let limited = String::from_utf8_lossy(&limited.stdout).trim().to_string();
    ns_exec("shunt-be2", &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    let stop = Arc::new(AtomicBool::new(false));
    for b in [1, 3] {
        let stop = stop.clone();
        let u = bound_in_netns(&format!("shunt-be{b}"), move || {
            UdpSocket::bind(format!("10.0.2.1{b}:9001")).unwrap()
        });
        std::thread::spawn(move || {
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let mut reply = format!("be{b} ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = u.send_to(&reply, peer);
                }
            }
        });
    }
    let shunt = Shunt::start(&write_config(&cfg));
    let echo_backend = |addr: &str| {
        backends()
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["service"] == "echo" && b["backend"] == format!("{addr}:9001"))
            .cloned()
            .unwrap()
    };
    wait_for("be2 down", Duration::from_secs(3), || echo_backend("10.0.2.12")["health"] == "down");
    assert_eq!(echo_backend("10.0.2.12")["last_probe"]["detail"], "port unreachable");
    assert_eq!(echo_backend("10.0.2.11")["health"], "up");
    let answered = in_netns("shunt-client", || {
        (0..30)
            .filter(|i| {
                let s = UdpSocket::bind("10.0.1.2:0").unwrap();
                s.connect("10.0.100.1:9001").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                s.send(format!("ping {i}").as_bytes()).unwrap();
                let mut buf = [0u8; 256];
                s.recv(&mut buf).is_ok()
            })
            .count()
    })
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    shunt.stop();
    ns_exec("shunt-be2", &["sysctl", "-qw", &format!("net.ipv4.icmp_ratelimit={limited}")]);
    assert_eq!(answered, 30, "every flow went to a backend with a responder");
}
