//! Helpers for tests that run Shunt in the network-namespace lab. They need
//! root: without it `lab()` prints why and returns `None`, and the test
//! returns early. Every test holds the lab lock so none share a topology.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use shunt_testkit::lab::{
    bound_in_netns, in_netns, is_root, lab_lock, ns_exec, rand_u32, root_or_skip, unprivileged, xdp_attached,
    LabGuard,
};

pub const SHUNT: &str = env!("CARGO_BIN_EXE_shunt");

/// The lab's backends, shunt-be1 to shunt-be3.
pub const BACKENDS4: [&str; 3] = ["10.0.2.11", "10.0.2.12", "10.0.2.13"];
pub const BACKENDS6: [&str; 3] = ["fd00:2::11", "fd00:2::12", "fd00:2::13"];

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
    lab_up("SHUNT_LAB_QUEUES", queues)
}

/// The lab with every link at `mtu`.
#[must_use = "hold the guard while using the lab"]
pub fn lab_at_mtu(mtu: u32) -> Option<LabGuard> {
    lab_up("SHUNT_LAB_MTU", mtu)
}

/// Takes the lab lock and runs `shunt lab up` with `var=value` in its
/// environment.
fn lab_up(var: &str, value: u32) -> Option<LabGuard> {
    let guard = lab_lock()?;
    let out = Command::new(SHUNT)
        .args(["lab", "up"])
        .env(var, value.to_string())
        .output()
        .expect("run shunt lab up");
    assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(guard)
}

/// A copy of config.toml with its own control socket and report
/// directory, so that no two runs share them.
pub struct LabConfig {
    pub cfg: PathBuf,
    pub sock: PathBuf,
    pub reports: PathBuf,
}

/// The default config file's text (`config.toml`: the built-in lab's).
pub fn default_config() -> String {
    std::fs::read_to_string(repo().join("config.toml")).unwrap()
}

/// `text` (a config file's) with `extra` (services, routes) inserted
/// before its `[conntrack]` section: `[conntrack]` and `[telemetry]` stay
/// last.
pub fn before_conntrack(text: &str, extra: &str) -> String {
    let (head, tail) = text.split_at(text.find("[conntrack]").expect("a [conntrack] section"));
    format!("{head}{extra}\n{tail}")
}

/// config.toml with its own control socket and report directory, then
/// `edit`ed, written to a fresh file named after `tag`.
pub fn lab_config(tag: &str, edit: impl FnOnce(String) -> String) -> LabConfig {
    let id = rand_u32();
    let dir = std::env::temp_dir();
    let sock = dir.join(format!("shunt-{tag}-{id}.sock"));
    let reports = dir.join(format!("shunt-{tag}-{id}-reports"));
    let text = default_config()
        .replace("/run/shunt/control.sock", sock.to_str().unwrap())
        .replace("/var/lib/shunt/reports", reports.to_str().unwrap());
    let cfg = dir.join(format!("shunt-{tag}-{id}.toml"));
    std::fs::write(&cfg, edit(text)).unwrap();
    LabConfig { cfg, sock, reports }
}

/// `n` new connections from the client to the VIP, one curl each (3 s at
/// most); how many a backend answered.
pub fn curl_ok(n: usize) -> usize {
    curl_ok_within(n, 3)
}

/// [`curl_ok`] with `secs` for each request.
pub fn curl_ok_within(n: usize, secs: u32) -> usize {
    let script = format!("for i in $(seq {n}); do curl -s -m {secs} --no-keepalive http://10.0.100.1/; done");
    let out = ns_exec("shunt-client", &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("shunt-be")).count()
}

/// A running `shunt run` inside the `shunt` namespace.
pub struct Shunt {
    pub child: Child,
    pub log: PathBuf,
}

impl Shunt {
    /// Starts Shunt with `config` and waits until its workers run.
    pub fn start(config: &Path) -> Shunt {
        Shunt::start_with(Path::new(SHUNT), config, |_| {})
    }

    /// Starts the binary `exe` with `config`, `more` adding arguments or
    /// environment, and waits until its workers run.
    pub fn start_with(exe: &Path, config: &Path, more: impl FnOnce(&mut Command)) -> Shunt {
        let s = Shunt::spawn(exe, config, more);
        s.wait_for("Ctrl-C to stop");
        s
    }

    /// `exe --log info run --config CONFIG` in the `shunt` namespace, its
    /// stdout and stderr to a fresh log file, `more` adding arguments or
    /// environment; does not wait.
    pub fn spawn(exe: &Path, config: &Path, more: impl FnOnce(&mut Command)) -> Shunt {
        let log = std::env::temp_dir().join(format!("shunt-test-{}-{}.log", std::process::id(), rand_u32()));
        let f = File::create(&log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "shunt"]).arg(exe).args(["--log", "info", "run", "--config"]).arg(config);
        more(&mut cmd);
        let child = cmd.stdout(f.try_clone().unwrap()).stderr(f).spawn().expect("spawn shunt");
        Shunt { child, log }
    }

    /// Waits until the log contains `what` (20 s at most); returns the log.
    pub fn wait_for(&self, what: &str) -> String {
        self.wait_for_within(what, Duration::from_secs(20))
    }

    /// Waits until the log contains `what`, `within` at most; returns the log.
    pub fn wait_for_within(&self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.output();
            if out.contains(what) {
                return out;
            }
            assert!(Instant::now() < deadline, "no `{what}` within {within:?} in:\n{out}");
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// A full-NAT `[[service]]` table for config.toml: `proto` on `vip:port`
/// to the lab's backends at `addrs` (shunt-be1, shunt-be2, … in order, by
/// their MACs), SNAT `pool`, no health checks.
pub fn service(name: &str, vip: &str, port: u16, proto: &str, pool: &str, addrs: &[&str]) -> String {
    let backends: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!("  {{ addr = \"{a}\", port = {port}, mac = \"02:00:00:00:02:{:02x}\" }},\n", 11 + i)
        })
        .collect();
    format!(
        "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{proto}\"\n\
         pipeline = \"l4lb\"\nsnat_pool = \"{pool}\"\nbackends = [\n{backends}]\nhealth = {{ kind = \"none\" }}\n"
    )
}

/// `base` (a config file's text) with `services` added before its
/// `[conntrack]` section, written to a fresh file named after `tag`.
pub fn config_with_services(base: &str, services: &[String], tag: &str) -> PathBuf {
    let text = before_conntrack(base, &services.concat());
    let path = std::env::temp_dir().join(format!("shunt-{tag}-{}.toml", rand_u32()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A process in each backend namespace (shunt-be1 to shunt-be3), killed on
/// drop.
pub struct Peers(Vec<Child>);

impl Peers {
    /// Starts `cmd(i)` in shunt-be`i+1` for each backend, stdout discarded,
    /// and gives them half a second to listen.
    pub fn start(cmd: impl Fn(usize) -> Vec<String>) -> Peers {
        let children = (0..3)
            .map(|i| {
                Command::new("ip")
                    .args(["netns", "exec", &format!("shunt-be{}", i + 1)])
                    .args(cmd(i))
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        Peers(children)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A curl of `url` from namespace `ns` into `file`, running in the
/// background: at most `max_secs`, limited to `rate` (curl's
/// `--limit-rate`, e.g. "80k"), `-g` so that an IPv6 address in brackets
/// is not read as a glob.
pub fn download_in_background(ns: &str, url: &str, rate: &str, max_secs: u32, file: &Path) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-g",
            "-m",
            &max_secs.to_string(),
            "--limit-rate",
            rate,
            "-o",
        ])
        .arg(file)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
