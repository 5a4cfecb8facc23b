//! The scale-out tier (scripts/scaleout.sh): two Shunt nodes in DSR mode
//! behind a BIRD router doing ECMP, each announcing the VIP through ExaBGP
//! fed by `shunt bgp-feed`. Real speakers, real kernels, curl and nginx.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

const VIP: &str = "10.1.100.1";
const DIR: &str = "/run/shunt-scaleout";

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/scaleout.sh"))
        .args(args)
        .env("SHUNT", SHUNT)
        .output()
        .expect("run scripts/scaleout.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scaleout.sh {args:?} failed:\n{text}\n{}", logs());
    text
}

fn logs() -> String {
    ["shunt-n1.log", "shunt-n2.log", "exabgp-n1.log", "exabgp-n2.log"]
        .iter()
        .map(|f| {
            let t = std::fs::read_to_string(Path::new(DIR).join(f)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(15).collect();
            format!("--- {f}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Takes the lab down when the test ends, however it ends.
struct Tier;

impl Drop for Tier {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(repo().join("scripts/scaleout.sh")).arg("down").output();
    }
}

/// The router's nexthops for the VIP (the nodes' addresses).
fn nexthops() -> Vec<String> {
    let out = Command::new("ip").args(["-n", "shunt-router", "route", "show", VIP]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut hops: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

/// Waits until the router's nexthops are `want`; returns how long it took.
fn wait_hops(want: &[&str], limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let have = nexthops();
        if have == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "router nexthops {have:?}, want {want:?} within {limit:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node(n: u32, args: &[&str]) -> serde_json::Value {
    let out =
        Command::new(SHUNT).arg("--socket").arg(format!("{DIR}/n{n}.sock")).args(args).output().unwrap();
    assert!(out.status.success(), "shunt {args:?} on n{n}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// New flows node `n` has created for the service.
fn new_flows(n: u32) -> u64 {
    node(n, &["stats", "--json"])["services"][0]["new_flows"].as_u64().unwrap()
}

fn active_flows(n: u32) -> i64 {
    node(n, &["stats", "--json"])["services"][0]["active_flows"].as_i64().unwrap()
}

/// `count` new connections from the client, one curl each; the number
/// answered 200.
fn connections(count: usize) -> usize {
    let cmd = format!(
        "for i in $(seq {count}); do curl -s -m 3 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/; done"
    );
    let out = ns_exec("shunt-client", &["bash", "-c", &cmd]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "200").count()
}

/// `count` transfers of /big.bin at `rate` bytes/s, each into its own file.
fn transfers(count: usize, rate: u32, tag: &str) -> Vec<(Child, PathBuf)> {
    (0..count)
        .map(|i| {
            let file = std::env::temp_dir().join(format!("shunt-scaleout-{tag}-{i}.bin"));
            let _ = std::fs::remove_file(&file);
            let url = format!("http://{VIP}/big.bin");
            let child = download_in_background("shunt-client", &url, &rate.to_string(), 90, &file);
            (child, file)
        })
        .collect()
}

/// Waits for every transfer; the number whose bytes equal /big.bin.
fn intact(list: Vec<(Child, PathBuf)>) -> usize {
    let want = std::fs::read(Path::new(DIR).join("big.bin")).unwrap();
    list.into_iter()
        .filter_map(|(mut c, f)| {
            let ok = c.wait().unwrap().success();
            let same = std::fs::read(&f).is_ok_and(|b| b == want);
            let _ = std::fs::remove_file(&f);
            (ok && same).then_some(())
        })
        .count()
}

fn pid_of(n: u32) -> i32 {
    std::fs::read_to_string(format!("{DIR}/shunt-n{n}.pid")).unwrap().trim().parse().unwrap()
}

const BOTH: [&str; 2] = ["10.1.11.2", "10.1.12.2"];

#[test]
fn tier_announces_spreads_survives_a_node_kill_drains_and_withdraws_without_backends() {
    let Some(_lock) = lab_lock() else { return };
    let _tier = Tier;
    script(&["up"]);

    // The router learns the VIP from both nodes over BGP.
    wait_hops(&BOTH, Duration::from_secs(10));

    // 100 new connections spread over both nodes.
    let before = (new_flows(1), new_flows(2));
    assert_eq!(connections(100), 100, "{}", logs());
    let (a, b) = (new_flows(1) - before.0, new_flows(2) - before.1);
    assert_eq!(a + b, 100, "each connection is one new flow on one node: n1 {a}, n2 {b}");
    assert!(a >= 20 && b >= 20, "both nodes carry ≥ 20%: n1 {a}, n2 {b}");

    // kill -9 one node mid-transfer: flows move to the other node, which
    // picks them up mid-stream with the same backend.
    let list = transfers(64, 100_000, "kill");
    std::thread::sleep(Duration::from_secs(3));
    assert!(active_flows(1) > 0 && active_flows(2) > 0, "transfers on both nodes before the kill");
    // SAFETY: kill(2) on the pid of the Shunt the lab script started.
    assert_eq!(unsafe { libc::kill(pid_of(1), libc::SIGKILL) }, 0);
    let gone = wait_hops(&BOTH[1..], Duration::from_secs(5));
    eprintln!("kill -9: the router dropped the node's nexthop after {gone:?}");
    assert_eq!(connections(10), 10, "new connections succeed after the kill");
    let ok = intact(list);
    assert!(ok >= 63, "{ok} of 64 transfers intact after the kill\n{}", logs());

    // Shunt back on n1: its feed announces again.
    script(&["start-shunt", "1"]);
    wait_hops(&BOTH, Duration::from_secs(15));

    // Drain n1: withdrawn, transfers in flight finish, new flows go to n2.
    let list = transfers(16, 200_000, "drain");
    std::thread::sleep(Duration::from_secs(1));
    let r = node(1, &["node", "drain", "--json"]);
    assert_eq!(r["drained"], true, "{r}");
    assert_eq!(r["vips"][0]["announce"], false, "{r}");
    let t = wait_hops(&BOTH[1..], Duration::from_secs(5));
    eprintln!("drain: withdrawn after {t:?}");
    let before = new_flows(1);
    assert_eq!(connections(20), 20);
    assert_eq!(new_flows(1), before, "no new flow reaches a drained node");
    assert_eq!(intact(list), 16, "every transfer in flight during the drain completes intact");
    assert_eq!(node(1, &["node", "undrain", "--json"])["drained"], false);
    wait_hops(&BOTH, Duration::from_secs(5));

    // Every backend down: both nodes withdraw; one back: both announce.
    for b in [1, 2] {
        std::fs::write(format!("{DIR}/be{b}/www/down"), "").unwrap();
    }
    let t = wait_hops(&[], Duration::from_secs(8));
    eprintln!("all backends down: withdrawn after {t:?}");
    let st = node(2, &["node", "status", "--json"]);
    assert_eq!(st["vips"][0]["reason"], "no backend up", "{st}");
    std::fs::remove_file(format!("{DIR}/be2/www/down")).unwrap();
    wait_hops(&BOTH, Duration::from_secs(8));
    assert_eq!(connections(10), 10, "served again once a backend is back");

    // Graceful stop: withdrawn first, still serving through the stop drain.
    let pid = pid_of(1);
    // SAFETY: kill(2) on the pid of the Shunt the lab script started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t = wait_hops(&BOTH[1..], Duration::from_secs(3));
    eprintln!("SIGTERM: withdrawn after {t:?}");
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "Shunt keeps serving after withdrawing");
    assert_eq!(node(1, &["node", "status", "--json"])["vips"][0]["reason"], "node stopping");

    // A removed service is withdrawn.
    node(2, &["service", "remove", "web", "--json"]);
    wait_hops(&[], Duration::from_secs(3));
}

/// Same config, two processes: the same backend for 100,000 random flows.
#[test]
fn two_processes_with_one_config_pick_the_same_backends() {
    let config = repo().join("pipelines/dsr.toml");
    let picks = || {
        let out = Command::new(SHUNT)
            .args(["picks", "--service", "web", "--flows", "100000", "--seed", "7", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (a, b) = (picks(), picks());
    assert_eq!(a, b);
    // Both backends get a fair share, so the digest covers real choices.
    for (backend, n) in a["backends"].as_object().unwrap() {
        let n = n.as_u64().unwrap();
        assert!((40_000..=60_000).contains(&n), "{backend}: {n} of 100000");
    }
}
