//! Flows that outlive the process (`shunt run --state-dir`): full-NAT TCP
//! downloads through the VIP keep going across a planned restart and a
//! `kill -9`, byte for byte; unusable state files start Shunt empty.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Downloads running at once, each of the lab's 1 MiB file.
const FLOWS: usize = 64;
/// 1 MiB at 80 KiB/s: about 13 s per download.
const RATE: &str = "80k";

fn state_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/run/shunt-test-state-{name}-{}", rand_u32()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Starts Shunt with the default config and `state`, waits until it runs.
fn start(state: &Path) -> Shunt {
    let log = std::env::temp_dir().join(format!("shunt-restart-{}.log", rand_u32()));
    let f = File::create(&log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", "shunt", SHUNT, "--log", "info", "run", "--config"])
        .arg(repo().join("config.toml"))
        .arg("--state-dir")
        .arg(state)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn shunt");
    let s = Shunt { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.output().contains("Ctrl-C to stop") {
        assert!(Instant::now() < deadline, "shunt did not start:\n{}", s.output());
        std::thread::sleep(Duration::from_millis(5));
    }
    s
}

fn kill9(mut s: Shunt) {
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs shunt).
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
}

/// `FLOWS` rate-limited downloads through the VIP, each to its own file.
fn downloads(dir: &Path) -> Vec<(Child, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    (0..FLOWS)
        .map(|i| {
            let out = dir.join(format!("dl{i}"));
            let child = Command::new("ip")
                .args(["netns", "exec", "shunt-client", "curl", "-s", "-m", "60", "--limit-rate", RATE, "-o"])
                .arg(&out)
                .arg("http://10.0.100.1/big.bin")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect()
}

/// How many downloads ended well with every byte right, and the exit codes.
fn intact(runs: Vec<(Child, PathBuf)>) -> (usize, Vec<i32>) {
    let want = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    let mut ok = 0;
    let mut codes = Vec::new();
    for (mut c, path) in runs {
        let status = c.wait().unwrap();
        codes.push(status.code().unwrap_or(-1));
        if status.success() && std::fs::read(&path).unwrap_or_default() == want {
            ok += 1;
        }
    }
    (ok, codes)
}

/// Every download has started and moved some bytes (so it is mid-transfer).
fn wait_all_flowing(runs: &[(Child, PathBuf)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs.iter().any(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()) < 100_000) {
        assert!(Instant::now() < deadline, "downloads did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn full_nat_downloads_survive_a_planned_restart() {
    let Some(_lab) = lab() else { return };
    let state = state_dir("planned");
    let shunt = start(&state);
    let dir = std::env::temp_dir().join(format!("shunt-restart-dl-{}", rand_u32()));
    let runs = downloads(&dir);
    wait_all_flowing(&runs);
    let t0 = Instant::now();
    let old = shunt.stop();
    let shunt = start(&state);
    let gap = t0.elapsed();
    let (ok, codes) = intact(runs);
    let out = shunt.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    eprintln!("planned restart: stop to running again {gap:?}; {ok}/{FLOWS} intact");
    assert!(out.contains("state: conntrack restored"), "{out}");
    assert_eq!(ok, FLOWS, "curl exit codes {codes:?}\nold:\n{old}\nnew:\n{out}");
}

#[test]
fn full_nat_downloads_survive_kill_9_and_a_start_within_a_second() {
    let Some(_lab) = lab() else { return };
    let state = state_dir("kill9");
    let shunt = start(&state);
    let dir = std::env::temp_dir().join(format!("shunt-restart-dl-{}", rand_u32()));
    let runs = downloads(&dir);
    wait_all_flowing(&runs);
    let t0 = Instant::now();
    kill9(shunt);
    let shunt = start(&state);
    let gap = t0.elapsed();
    let (ok, codes) = intact(runs);
    let out = shunt.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    eprintln!("kill -9: killed to running again {gap:?}; {ok}/{FLOWS} intact");
    assert!(gap < Duration::from_secs(1), "restart took {gap:?}");
    assert!(ok >= FLOWS - 1, "{ok}/{FLOWS} intact; curl exit codes {codes:?}\n{out}");
}

/// A state file of random bytes: one log line saying why, an empty table,
/// and a Shunt that serves as usual.
#[test]
fn a_corrupt_state_file_starts_empty_and_serves() {
    let Some(_lab) = lab() else { return };
    let state = state_dir("corrupt");
    std::fs::create_dir_all(&state).unwrap();
    let noise: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(state.join("conntrack-w0.state"), &noise).unwrap();
    std::fs::write(state.join("ids.json"), b"{ not json").unwrap();
    let shunt = start(&state);
    let out = ns_exec("shunt-client", &["curl", "-s", "-m", "3", "http://10.0.100.1/"]);
    let log = shunt.stop();
    let _ = std::fs::remove_dir_all(&state);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("shunt-be"), "{log}");
    let why: Vec<&str> = log.lines().filter(|l| l.contains("state: not a Shunt state file")).collect();
    assert_eq!(why.len(), 1, "one line naming the reason:\n{log}");
    assert!(log.contains("ids file invalid"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
