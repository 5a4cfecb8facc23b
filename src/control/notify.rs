//! The sd_notify protocol (sd_notify(3)): datagrams like `READY=1` to the
//! Unix socket systemd names in `NOTIFY_SOCKET`, for `Type=notify` units.
//! Without that variable every call is a no-op, so `shunt run` outside
//! systemd behaves the same.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    /// `WATCHDOG_USEC` for us: feed at half of it.
    watchdog: Option<Duration>,
    last_fed: Instant,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty()).and_then(|path| {
            match UnixDatagram::unbound() {
                Ok(s) => Some((s, path)),
                Err(e) => {
                    tracing::warn!(error = %e, "NOTIFY_SOCKET is set but no datagram socket can be made");
                    None
                }
            }
        });
        // WATCHDOG_PID, when set, says which process the watchdog is for.
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(p) => p.parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && socket.is_some())
            .map(|u| Duration::from_micros(u / 2));
        Notifier { socket, watchdog, last_fed: Instant::now() }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, state: &str) {
        let Some((socket, path)) = &self.socket else { return };
        let sent = match path.strip_prefix('@') {
            // Abstract namespace socket.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
            }
            None => socket.send_to(state.as_bytes(), path),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, socket = %path, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=forwarding");
    }

    /// Reload begins: systemd waits for the next READY=1.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Feeds the watchdog when it is due and `healthy` says the workers
    /// made progress since the last feed; a stalled worker starves it and
    /// systemd restarts the service.
    pub fn watchdog(&mut self, healthy: impl FnOnce() -> bool) {
        let Some(every) = self.watchdog else { return };
        if self.last_fed.elapsed() < every {
            return;
        }
        if healthy() {
            self.send("WATCHDOG=1");
            self.last_fed = Instant::now();
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into `ts`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}
