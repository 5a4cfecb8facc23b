//! Flows that outlive the process (`shunt run --state-dir`): full-NAT TCP
//! downloads through the VIP keep going across a planned restart
//! (`shunt restart`), an upgrade to another build and a `kill -9`, byte for
//! byte; a UDP stream through a planned restart loses only milliseconds; a
//! NAT64 transfer continues; unusable state files start Shunt empty.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
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
    start_with(Path::new(SHUNT), &repo().join("config.toml"), state)
}

/// The control socket every Shunt here serves (`--control-socket`).
fn socket(state: &Path) -> PathBuf {
    state.with_extension("sock")
}

/// Starts the binary `exe` with `config` and `state`, waits until it runs.
fn start_with(exe: &Path, config: &Path, state: &Path) -> Shunt {
    Shunt::start_with(exe, config, |c| {
        c.arg("--state-dir").arg(state).arg("--control-socket").arg(socket(state));
    })
}

/// `shunt restart` against the instance serving `state`; returns how long
/// the command took (request to the new image answering).
fn restart(shunt: &Shunt, state: &Path) -> Duration {
    let t0 = Instant::now();
    let out = Command::new(SHUNT).arg("restart").arg("--socket").arg(socket(state)).output().unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "shunt restart: {}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shunt.output()
    );
    took
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
            let child = download_in_background("shunt-client", "http://10.0.100.1/big.bin", RATE, 60, &out);
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

/// 64 downloads through a planned restart done by `restart`: every one
/// completes intact, the new image took the XDP links over (`how`: the
/// program `kept` or `replaced`) and restored the flows. Returns the log.
fn downloads_across(name: &str, exe: &Path, how: &str, restart: impl FnOnce(&Shunt, &Path)) -> String {
    let state = state_dir(name);
    let shunt = start_with(exe, &repo().join("config.toml"), &state);
    let dir = std::env::temp_dir().join(format!("shunt-restart-dl-{}", rand_u32()));
    let runs = downloads(&dir);
    wait_all_flowing(&runs);
    restart(&shunt, &state);
    let (ok, codes) = intact(runs);
    let out = shunt.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    eprintln!("{name}: {ok}/{FLOWS} intact");
    assert!(out.contains("state: conntrack restored"), "{out}");
    assert!(out.contains(&format!("XDP program {how} on the inherited bpf_link")), "{out}");
    assert_eq!(ok, FLOWS, "curl exit codes {codes:?}\n{out}");
    out
}

#[test]
fn full_nat_downloads_survive_a_planned_restart() {
    let Some(_lab) = lab() else { return };
    downloads_across("planned", Path::new(SHUNT), "kept", |shunt, state| {
        let took = restart(shunt, state);
        eprintln!("shunt restart took {took:?}");
    });
}

/// The running binary replaced on disk by another build (its build string
/// patched: same length, another version; and its XDP object, in a byte
/// the loader ignores, so the new build's program replaces the old one on
/// the link), then `shunt restart`: the new build serves, and the
/// downloads never notice.
#[test]
fn full_nat_downloads_survive_an_upgrade_to_another_build() {
    let Some(_lab) = lab() else { return };
    let bin = std::env::temp_dir().join(format!("shunt-upgrade-{}", rand_u32()));
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("shunt");
    std::fs::copy(SHUNT, &exe).unwrap();
    let old_build = shunt::BUILD.as_bytes();
    let mut new_build = old_build.to_vec();
    let last = new_build.len() - 1;
    new_build[last] = if new_build[last] == b'9' { b'8' } else { b'9' };
    let new_build_str = String::from_utf8(new_build.clone()).unwrap();
    let out = downloads_across("upgrade", &exe, "replaced", |shunt, state| {
        let mut image = std::fs::read(SHUNT).unwrap();
        let at: Vec<usize> =
            (0..image.len() - old_build.len()).filter(|&i| image[i..].starts_with(old_build)).collect();
        assert!(!at.is_empty(), "no build string in the binary");
        for i in at {
            image[i..i + new_build.len()].copy_from_slice(&new_build);
        }
        // The compiler's name in the object's .comment section.
        let object = shunt::xdp::XDP_OBJECT;
        let obj_at = (0..image.len() - object.len()).find(|&i| image[i..].starts_with(object));
        let obj_at = obj_at.expect("the XDP object in the binary");
        let comment = b"clang version";
        let c = (0..object.len() - comment.len()).find(|&i| object[i..].starts_with(comment));
        image[obj_at + c.expect("a .comment in the XDP object")] = b'C';
        // As a package manager does: a new file renamed over the old path.
        let next = bin.join("shunt.new");
        std::fs::write(&next, &image).unwrap();
        std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &exe).unwrap();
        restart(shunt, state);
        // The new image's start line is the proof (below): `node status`
        // can report a copy of the old string, because the compiler may
        // build it from immediates the patch does not reach.
    });
    let _ = std::fs::remove_dir_all(&bin);
    // Both builds logged their start.
    assert!(out.contains(shunt::BUILD), "{out}");
    assert!(out.contains(&new_build_str), "{out}");
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

/// `shunt restart` (with `args`) against the instance serving `state`.
fn restart_with(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(SHUNT).arg("restart").args(args).arg("--socket").arg(socket(state)).output().unwrap()
}

/// The running image's instance id (another after a restart, same pid).
fn instance(state: &Path) -> String {
    let out = Command::new(SHUNT)
        .args(["node", "status", "--json", "--socket"])
        .arg(socket(state))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["instance"].to_string()
}

/// How many of `n` plain requests to the VIP a backend answered.
fn served(n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let out = ns_exec("shunt-client", &["curl", "-s", "-m", "3", "http://10.0.100.1/"]);
            String::from_utf8_lossy(&out.stdout).starts_with("shunt-be")
        })
        .count()
}

/// SNAT ports and flows are owned per worker, so a config that changes the
/// worker count or the table size cannot take the flows over: `shunt
/// restart` refuses it with a message naming the change, the running image
/// keeps serving and its flows finish intact; `--force` restarts anyway,
/// on empty tables that say why, and serves new flows. (The forced change
/// is the table size: one worker on two queues of one interface takes
/// replies on one of them only, so the merged config would not serve.)
#[test]
fn a_changed_worker_count_is_refused_and_force_restarts_empty() {
    let Some(_lab) = lab_with_queues(2) else { return };
    let one = "[[worker]]\ncore = 1\nqueues = [{ interface = \"sh-cli\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]";
    let base = default_config();
    assert!(base.contains(one), "config.toml has one worker");
    let two = base.replace(
        one,
        "[[worker]]\ncore = 0\nqueues = [{ interface = \"sh-cli\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]\n\n\
         [[worker]]\ncore = 1\nqueues = [{ interface = \"sh-cli\", queue = 1 }, { interface = \"sh-be\", queue = 1 }]",
    );
    // One worker on both queues of both interfaces.
    let merged = base.replace(
        one,
        "[[worker]]\ncore = 1\nqueues = [{ interface = \"sh-cli\", queue = 0 }, { interface = \"sh-be\", queue = 0 }, \
         { interface = \"sh-cli\", queue = 1 }, { interface = \"sh-be\", queue = 1 }]",
    );
    let config = std::env::temp_dir().join(format!("shunt-restart-workers-{}.toml", rand_u32()));
    std::fs::write(&config, &two).unwrap();
    let state = state_dir("workers");
    let shunt = start_with(Path::new(SHUNT), &config, &state);
    let before = instance(&state);
    let dir = std::env::temp_dir().join(format!("shunt-restart-dl-{}", rand_u32()));
    let runs = downloads(&dir);
    wait_all_flowing(&runs);

    let smaller = two.replace("entries_per_worker = 262144", "entries_per_worker = 131072");
    let mut refusals = Vec::new();
    for (text, change) in [
        (merged, "the worker count from 2 to 1"),
        (smaller.clone(), "entries_per_worker from 262144 to 131072"),
    ] {
        assert_ne!(text, two, "the test config changes");
        std::fs::write(&config, &text).unwrap();
        let out = restart_with(&state, &[]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "restart with {change} was not refused\n{}", shunt.output());
        assert!(err.contains("restart refused, still running") && err.contains(change), "{err}");
        assert!(err.contains("--force"), "the refusal names the way out: {err}");
        refusals.push(err);
    }
    assert_eq!(instance(&state), before, "the refused restart left the same image serving");
    assert_eq!(served(10), 10, "still serving new flows\n{}", shunt.output());
    let (ok, codes) = intact(runs);
    assert_eq!(ok, FLOWS, "flows cut by a refused restart: curl exit codes {codes:?}\n{}", shunt.output());

    std::fs::write(&config, &smaller).unwrap();
    let out = restart_with(&state, &["--force"]);
    assert!(out.status.success(), "--force: {}\n{}", String::from_utf8_lossy(&out.stderr), shunt.output());
    assert_ne!(instance(&state), before, "a new image answers");
    let n = served(20);
    let log = shunt.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&config);
    eprintln!("refused: {refusals:?}");
    assert_eq!(n, 20, "the forced image serves new flows\n{log}");
    let empty: Vec<&str> = log.lines().filter(|l| l.contains("entries_per_worker changed")).collect();
    assert_eq!(empty.len(), 2, "one line per worker says why it starts empty:\n{log}");
    assert!(empty.iter().all(|l| l.contains("starting with an empty table")), "{log}");
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

/// UDP datagrams a second, sent at an even pace.
const UDP_PPS: u64 = 50_000;
const UDP_PORT: u16 = 9300;

/// config.toml plus a full-NAT UDP service on the VIP with one backend.
fn udp_config() -> PathBuf {
    let base = default_config();
    let stream = service("stream", "10.0.100.1", UDP_PORT, "udp", "10.0.3.0/28", &BACKENDS4[..1]);
    config_with_services(&base, &[stream], "restart-udp")
}

/// A constant-rate UDP stream (client to the VIP, full-NAT, one backend)
/// through a planned restart: prints the datagrams lost and the longest
/// silence the backend saw; the stream carries on after the restart.
#[test]
fn udp_stream_through_a_planned_restart_loses_only_milliseconds() {
    let Some(_lab) = lab() else { return };
    let state = state_dir("udp");
    let config = udp_config();
    let shunt = start_with(Path::new(SHUNT), &config, &state);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        in_netns("shunt-be1", move || {
            let sock = std::net::UdpSocket::bind(("10.0.2.11", UDP_PORT)).unwrap();
            let big: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with an int option value of the right size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &big as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut buf = [0u8; 64];
            let (mut got, mut last, mut gap) = (0u64, None::<Instant>, Duration::ZERO);
            let mut after_stop = None::<Instant>;
            loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = *after_stop.get_or_insert_with(Instant::now);
                    if t.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                }
                if sock.recv(&mut buf).is_ok() {
                    let now = Instant::now();
                    if let Some(l) = last {
                        gap = gap.max(now - l);
                    }
                    last = Some(now);
                    got += 1;
                }
            }
            (got, gap)
        })
    };
    let sender = {
        let stop = stop.clone();
        in_netns("shunt-client", move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.connect(("10.0.100.1", UDP_PORT)).unwrap();
            let t0 = Instant::now();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = t0.elapsed().as_micros() as u64 * UDP_PPS / 1_000_000;
                while sent < due {
                    if sock.send(&sent.to_be_bytes()).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (sent, t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let took = restart(&shunt, &state);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, elapsed) = sender.join().unwrap();
    let (got, gap) = receiver.join().unwrap();
    let log = shunt.stop();
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&config);
    let lost = sent.saturating_sub(got);
    let pps = sent as f64 / elapsed.as_secs_f64();
    let lost_ms = lost as f64 * 1000.0 / pps;
    for phase in log.lines().filter(|l| l.contains("planned restart: ")) {
        eprintln!("{phase}");
    }
    eprintln!(
        "udp through a planned restart: {sent} sent at {pps:.0}/s, {got} received, {lost} lost \
         ({lost_ms:.1} ms of traffic); longest silence at the backend {:.1} ms; shunt restart took {took:?}",
        gap.as_secs_f64() * 1000.0
    );
    assert!(pps >= UDP_PPS as f64 * 0.95, "the sender kept {pps:.0}/s only");
    assert!(log.contains("XDP program kept on the inherited bpf_link"), "{log}");
    assert!(log.contains("planned restart: owned packets were dropped for"), "{log}");
    // The old image allocated the new image's UMEM before its workers stopped.
    assert!(log.contains("handed UMEM mapped"), "{log}");
    // When the new workers started serving, counted from the old ones' stop.
    let serving: f64 = log
        .lines()
        .find_map(|l| l.split("planned restart: +").nth(1)?.split_once(" ms workers run")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no `workers run` phase\n{log}"));
    // The drop window: from the old workers' stop to every new socket
    // registered. From then on packets wait in the RX rings and are
    // forwarded once the workers run, so the traffic lost is about that
    // window, not the time to serving. (When the sockets were registered
    // only after the restore, the loss was the time to serving: 63.8 ms
    // lost, workers serving at +63.0 ms.) The two are the same time when
    // binding, not the restore, is the last step (a busy retry on the
    // old socket), so the loss is checked against the window, with 10 %
    // and 5 ms for the sender's pacing and the drain before the stop.
    let dropped: f64 = log
        .lines()
        .find_map(|l| l.split("owned packets were dropped for ").nth(1)?.split_once(" ms")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no drop window logged\n{log}"));
    assert!(dropped <= serving, "dropped for {dropped:.1} ms, workers ran at +{serving:.1} ms");
    assert!(
        lost_ms < dropped * 1.1 + 5.0,
        "{lost_ms:.1} ms of traffic lost, packets dropped for {dropped:.1} ms, workers ran at +{serving:.1} ms\n{log}"
    );
    // 2026-12-02 on the 2-core lab at load average 5.5-7.6: 32-103 ms lost
    // (median 64, 22 runs), backend silent 48-124 ms; the gap was 450-650 ms when
    // the program was loaded and verified again. 250 ms is far above the
    // loaded spread and far below that regression.
    assert!(gap < Duration::from_millis(250), "longest silence {gap:?}\n{log}");
    assert!(lost_ms < 250.0, "{lost} of {sent} lost ({lost_ms:.1} ms of traffic)\n{log}");
}

/// An IPv6-only client downloads from an IPv4-only server through the
/// stateful NAT64 (pipelines/nat64.toml) while Shunt restarts: the NAT64
/// session and its pool port carry over, and the transfer ends intact.
#[test]
fn nat64_tcp_transfer_continues_across_a_planned_restart() {
    let Some(_lab) = lab() else { return };
    let state = state_dir("nat64");
    let shunt = start_with(Path::new(SHUNT), &repo().join("pipelines/nat64.toml"), &state);
    let dir = std::env::temp_dir().join(format!("shunt-restart-nat64-{}", rand_u32()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("dl");
    let mut curl =
        download_in_background("shunt-client6", "http://[64:ff9b::198.51.100.80]/big.bin", "100k", 60, &out);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 200_000 {
        assert!(Instant::now() < deadline, "the NAT64 download did not start\n{}", shunt.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mid = std::fs::metadata(&out).unwrap().len();
    restart(&shunt, &state);
    let status = curl.wait().unwrap();
    let log = shunt.stop();
    let want = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    let got = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    assert!((mid as usize) < want.len(), "the download ended before the restart");
    assert!(log.contains("state: conntrack restored"), "{log}");
    assert!(status.success() && got == want, "curl {status}, {} of {} bytes\n{log}", got.len(), want.len());
}
