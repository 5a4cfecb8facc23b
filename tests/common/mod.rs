//! Helpers for tests that run Shunt in the network-namespace lab.
//! They need root; every test holds LAB so they never share a topology.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub static LAB: Mutex<()> = Mutex::new(());

pub const SHUNT: &str = env!("CARGO_BIN_EXE_shunt");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Exclusive use of the lab namespaces: the in-process lock for tests of
/// one binary, and an flock on `LAB_LOCK_FILE` for every other process
/// (other test binaries, checkouts, `scripts/soak.sh`) that uses the lab.
pub struct LabGuard {
    _thread: MutexGuard<'static, ()>,
    _file: File,
}

/// The file every lab user locks (`flock /run/shunt-lab.lock CMD` in shell).
pub const LAB_LOCK_FILE: &str = "/run/shunt-lab.lock";

/// Takes the lab lock without touching the lab.
pub fn lab_lock() -> LabGuard {
    let thread = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let file = File::options().create(true).append(true).open(LAB_LOCK_FILE).expect("open the lab lock file");
    // SAFETY: flock on an fd we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {LAB_LOCK_FILE}");
    LabGuard { _thread: thread, _file: file }
}

/// Takes the lab lock and (re)builds the lab.
pub fn lab() -> LabGuard {
    lab_with_queues(1)
}

/// The lab with `queues` RX/TX queues per Shunt-facing veth.
pub fn lab_with_queues(queues: u32) -> LabGuard {
    assert!(is_root(), "lab tests need root (they create network namespaces); run scripts/test.sh as root");
    let guard = lab_lock();
    let out = Command::new(SHUNT)
        .args(["lab", "up"])
        .env("SHUNT_LAB_QUEUES", queues.to_string())
        .output()
        .expect("run shunt lab up");
    assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
    guard
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command inside a namespace and returns its output.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
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

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid netns fd affects only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Whether any interface in `ns` has an XDP program attached.
pub fn xdp_attached(ns: &str) -> bool {
    let out = ns_exec(ns, &["ip", "-d", "link", "show"]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}
