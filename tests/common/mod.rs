//! Helpers for tests that run Shunt in the network-namespace lab. They need
//! root: without it `lab()` prints why and returns `None`, and the test
//! returns early. Every test holds the lab lock so none share a topology.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use shunt_testkit::lab::{in_netns, is_root, lab_lock, ns_exec, rand_u32, xdp_attached, LabGuard};

pub const SHUNT: &str = env!("CARGO_BIN_EXE_shunt");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Takes the lab lock and (re)builds the lab; `None` when not root (the
/// test returns: `let Some(_lab) = lab() else { return };`).
#[must_use = "hold the guard while using the lab"]
pub fn lab() -> Option<LabGuard> {
    lab_with_queues(1)
}

/// The lab with `queues` RX/TX queues per Shunt-facing veth.
#[must_use = "hold the guard while using the lab"]
pub fn lab_with_queues(queues: u32) -> Option<LabGuard> {
    let guard = lab_lock()?;
    let out = Command::new(SHUNT)
        .args(["lab", "up"])
        .env("SHUNT_LAB_QUEUES", queues.to_string())
        .output()
        .expect("run shunt lab up");
    assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(guard)
}

/// A running `shunt run` inside the `shunt` namespace.
pub struct Shunt {
    pub child: Child,
    pub log: PathBuf,
}

impl Shunt {
    /// Starts Shunt with `config` and waits until its workers run.
    pub fn start(config: &Path) -> Shunt {
        let log = std::env::temp_dir().join(format!("shunt-test-{}-{}.log", std::process::id(), rand_u32()));
        let f = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", "shunt", SHUNT, "--log", "info", "run", "--config"])
            .arg(config)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn shunt");
        let s = Shunt { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.output().contains("Ctrl-C to stop") {
            if Instant::now() > deadline {
                panic!("shunt did not start:\n{}", s.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT, wait for exit, return everything it printed.
    pub fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child's pid. `ip netns exec` execs shunt,
        // so the pid is shunt's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.output();
                assert!(status.success(), "shunt exited with {status}:\n{out}");
                return out;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("shunt did not stop on SIGINT:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Shunt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `key=value` from the final summary line starting with `prefix`.
pub fn counter(summary: &str, prefix: &str, key: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{summary}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map_or(0, |v| v.parse().unwrap())
}
