//! The shared network-namespace lab: one lock for every process that uses
//! it, and the root check that lets a plain `cargo test` by a non-root
//! contributor skip what needs namespaces instead of failing.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// The in-process half of the lock: tests of one binary run on threads.
pub static LAB: Mutex<()> = Mutex::new(());

/// The file every lab user locks (`flock /run/shunt-lab.lock CMD` in shell).
pub const LAB_LOCK_FILE: &str = "/run/shunt-lab.lock";

/// What a lab test prints when it cannot run.
pub const SKIP_NOT_ROOT: &str = "skipped: needs root for network namespaces; run scripts/test.sh as root";

/// Exclusive use of the lab namespaces: the in-process lock for tests of
/// one binary, and an flock on [`LAB_LOCK_FILE`] for every other process
/// (other test binaries, checkouts, `scripts/soak.sh`) that uses the lab.
pub struct LabGuard {
    _thread: MutexGuard<'static, ()>,
    _file: File,
}

/// Takes the lab lock without touching the lab. `None` (after printing
/// [`SKIP_NOT_ROOT`]) when not root: the caller returns, and the test
/// passes as skipped.
#[must_use = "hold the guard while using the lab"]
pub fn lab_lock() -> Option<LabGuard> {
    if !root_or_skip() {
        return None;
    }
    let thread = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let file = File::options().create(true).append(true).open(LAB_LOCK_FILE).expect("open the lab lock file");
    // SAFETY: flock on an fd we own; blocks until the lock is ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {LAB_LOCK_FILE}");
    Some(LabGuard { _thread: thread, _file: file })
}

/// Whether we are root; if not, prints [`SKIP_NOT_ROOT`] for the running
/// test, which then returns.
pub fn root_or_skip() -> bool {
    is_root() || {
        skip_not_root();
        false
    }
}

/// Prints the skip line past libtest's output capture, so a plain
/// `cargo test` shows which tests did not run and why.
fn skip_not_root() {
    let test = std::thread::current().name().unwrap_or("lab test").to_string();
    let _ = writeln!(std::io::stderr(), "{test}: {SKIP_NOT_ROOT}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `bin` as a user without privileges: as root, dropped to nobody with no
/// capabilities (setpriv); otherwise as the user is, who has none.
pub fn unprivileged(bin: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Runs a command inside a namespace and returns its output.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
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

/// Runs `f` in namespace `ns` and waits for it: a socket bound there stays
/// in that namespace, so it is ready before this returns and any thread can
/// serve it. Replaces sleeping and hoping the server thread has bound.
pub fn bound_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(ns, f).join().unwrap_or_else(|_| panic!("binding in {ns} failed"))
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
