//! The prober: one thread, non-blocking sockets on one mio poll, and a
//! binary heap of deadlines; no thread per backend. Probes leave from the
//! host's own stack in the namespace Shunt runs in, with a source address
//! the kernel picks (never a VIP or SNAT pool address, so the XDP program,
//! which redirects only those, passes the replies to the kernel).
//!
//! TCP and HTTP probes close with RST (SO_LINGER 0, as HAProxy does): a
//! FIN would leave a TIME_WAIT socket per probe, and 1,000 backends probed
//! every second would hold 60,000 of them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use crate::config::{CheckKind, HealthCheck};

/// Longest the prober sleeps before looking for new targets or a stop.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Bytes of an HTTP reply read for its status line.
const STATUS_LINE_MAX: usize = 256;

/// One backend to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub check: Arc<HealthCheck>,
}

/// One probe's result; `target` indexes the list of `epoch`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub epoch: u64,
    pub target: usize,
    pub pass: bool,
    pub latency: Duration,
    /// Why it failed, or what passed ("connected", "status 200", "reply").
    pub detail: String,
}

/// The prober's control-side handle.
pub struct Prober {
    targets: Sender<(u64, Vec<Target>)>,
    pub results: Receiver<Outcome>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Prober {
    pub fn spawn() -> std::io::Result<Prober> {
        let (ttx, trx) = crossbeam_channel::unbounded();
        let (rtx, rrx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("shunt-health".into()).spawn(move || {
            // Connecting needs no privilege.
            let _ = crate::sys::drop_capabilities(&[]);
            let mut engine = match Engine::new(rtx) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "health prober could not start: backends stay unknown");
                    return;
                }
            };
            engine.run(&trx, &s);
        })?;
        Ok(Prober { targets: ttx, results: rrx, thread: Some(thread), stop })
    }

    /// Replaces the target list; results of older epochs are stale.
    pub fn set_targets(&self, epoch: u64, targets: Vec<Target>) {
        let _ = self.targets.send((epoch, targets));
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

struct InFlight {
    conn: Conn,
    started: Instant,
    /// HTTP: request sent; bytes of the reply so far.
    sent: bool,
    reply: Vec<u8>,
}

struct Slot {
    target: Target,
    /// Next probe (idle) or the timeout (in flight).
    deadline: Instant,
    inflight: Option<InFlight>,
}

/// The probe loop; public so the probe-cost benchmark drives it directly.
pub struct Engine {
    poll: Poll,
    events: Events,
    slots: Vec<Slot>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    epoch: u64,
    results: Sender<Outcome>,
}

impl Engine {
    pub fn new(results: Sender<Outcome>) -> std::io::Result<Engine> {
        Ok(Engine {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: Vec::new(),
            timers: BinaryHeap::new(),
            epoch: 0,
            results,
        })
    }

    pub fn run(&mut self, targets: &Receiver<(u64, Vec<Target>)>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            while let Ok((epoch, t)) = targets.try_recv() {
                self.set_targets(epoch, t);
            }
            self.step(MAX_WAIT);
        }
    }

    /// Cancels probes in flight and probes the new list from now, spread
    /// over the first interval so 1,000 targets are not one burst.
    pub fn set_targets(&mut self, epoch: u64, targets: Vec<Target>) {
        let cancelled: Vec<Conn> =
            self.slots.iter_mut().filter_map(|s| s.inflight.take()).map(|f| f.conn).collect();
        for c in cancelled {
            self.deregister(c);
        }
        self.timers.clear();
        let now = Instant::now();
        let n = targets.len().max(1) as u32;
        // Slot indices equal target indices; `none` targets never fire.
        self.slots = targets
            .into_iter()
            .enumerate()
            .map(|(i, target)| {
                let offset = target.check.interval.min(Duration::from_millis(200)) * i as u32 / n;
                Slot { deadline: now + offset, target, inflight: None }
            })
            .collect();
        self.epoch = epoch;
        for (i, s) in self.slots.iter().enumerate() {
            if s.target.check.kind != CheckKind::None {
                self.timers.push(Reverse((s.deadline, i)));
            }
        }
    }

    /// Waits up to `max_wait` for socket events, handles them and every
    /// deadline that has passed.
    pub fn step(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let wait = self.timers.peek().map_or(max_wait, |Reverse((t, _))| t.saturating_duration_since(now));
        if self.poll.poll(&mut self.events, Some(wait.min(max_wait))).is_err() {
            return;
        }
        let ready: Vec<(usize, bool)> =
            self.events.iter().map(|e| (e.token().0, e.is_error() || e.is_write_closed())).collect();
        for (i, failed) in ready {
            self.progress(i, failed);
        }
        let now = Instant::now();
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.slots.get(i) else { continue };
            if s.deadline != t {
                continue; // superseded
            }
            if s.inflight.is_some() {
                let ms = s.target.check.timeout.as_millis();
                self.finish(i, false, format!("timeout after {ms}ms"));
            } else {
                self.start(i, now);
            }
        }
    }

    fn start(&mut self, i: usize, now: Instant) {
        let s = &self.slots[i];
        let check = s.target.check.clone();
        let addr = s.target.addr;
        let conn = match &check.kind {
            CheckKind::None => return,
            CheckKind::Tcp | CheckKind::Http { .. } => TcpStream::connect(addr).map(|c| {
                rst_on_close(&c);
                Conn::Tcp(c)
            }),
            CheckKind::Udp { payload } => {
                let local: SocketAddr =
                    if addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
                UdpSocket::bind(local).and_then(|u| {
                    u.connect(addr)?;
                    u.send(payload)?;
                    Ok(Conn::Udp(u))
                })
            }
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => return self.report(i, now, false, e.to_string()),
        };
        let registered = match &mut conn {
            Conn::Tcp(c) => {
                self.poll.registry().register(c, Token(i), Interest::READABLE | Interest::WRITABLE)
            }
            Conn::Udp(u) => self.poll.registry().register(u, Token(i), Interest::READABLE),
        };
        let s = &mut self.slots[i];
        s.inflight = Some(InFlight { conn, started: now, sent: false, reply: Vec::new() });
        if let Err(e) = registered {
            return self.finish(i, false, e.to_string());
        }
        s.deadline = now + check.timeout;
        self.timers.push(Reverse((s.deadline, i)));
    }

    /// Moves probe `i` on after a socket event; `failed` is the event's
    /// EPOLLERR/EPOLLHUP.
    fn progress(&mut self, i: usize, failed: bool) {
        let Some(s) = self.slots.get_mut(i) else { return };
        let Some(f) = s.inflight.as_mut() else { return };
        let verdict: Option<(bool, String)> = match (&mut f.conn, &s.target.check.kind) {
            (Conn::Tcp(c), kind) => {
                // On Linux the first event of a connecting socket is its
                // outcome: EPOLLERR with SO_ERROR set, or writable and
                // connected. Only a failure costs the getsockopt that
                // names its cause.
                let error = if failed { c.take_error().unwrap_or_else(Some) } else { None };
                if let Some(e) = error {
                    Some((false, e.to_string()))
                } else {
                    match kind {
                        CheckKind::Http { path, host, expect } => {
                            http(c, &mut f.sent, &mut f.reply, path, host.as_deref(), expect)
                        }
                        _ => Some((true, "connected".into())),
                    }
                }
            }
            (Conn::Udp(u), _) => {
                let mut buf = [0u8; 512];
                match u.recv(&mut buf) {
                    Ok(_) => Some((true, "reply".into())),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        Some((false, "port unreachable".into()))
                    }
                    Err(e) => Some((false, e.to_string())),
                }
            }
        };
        if let Some((pass, detail)) = verdict {
            self.finish(i, pass, detail);
        }
    }

    fn finish(&mut self, i: usize, pass: bool, detail: String) {
        // Closing the socket takes it out of the epoll set: no deregister
        // syscall per probe.
        let Some(f) = self.slots[i].inflight.take() else { return };
        drop(f.conn);
        self.report(i, f.started, pass, detail);
    }

    /// Sends probe `i`'s result and schedules its next probe an interval
    /// after this one began (keeping the cadence).
    fn report(&mut self, i: usize, started: Instant, pass: bool, detail: String) {
        let now = Instant::now();
        let s = &mut self.slots[i];
        s.deadline = (started + s.target.check.interval).max(now);
        self.timers.push(Reverse((s.deadline, i)));
        let latency = now - started;
        let _ = self.results.send(Outcome { epoch: self.epoch, target: i, pass, latency, detail });
    }

    fn deregister(&self, conn: Conn) {
        let _ = match conn {
            Conn::Tcp(mut c) => self.poll.registry().deregister(&mut c),
            Conn::Udp(mut u) => self.poll.registry().deregister(&mut u),
        };
    }
}

/// HTTP: send the request once connected, then read up to the status line.
fn http(
    c: &mut TcpStream,
    sent: &mut bool,
    reply: &mut Vec<u8>,
    path: &str,
    host: Option<&str>,
    expect: &[u16],
) -> Option<(bool, String)> {
    if !*sent {
        let host =
            host.map_or_else(|| c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default(), String::from);
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: shunt-health\r\nConnection: close\r\n\r\n"
        );
        // A fresh connection's send buffer takes a short request whole.
        if let Err(e) = c.write_all(req.as_bytes()) {
            return Some((false, format!("sending request: {e}")));
        }
        *sent = true;
    }
    let mut buf = [0u8; STATUS_LINE_MAX];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(status_verdict(reply, expect, true)),
            Ok(n) => {
                let take = n.min(STATUS_LINE_MAX.saturating_sub(reply.len()));
                reply.extend_from_slice(&buf[..take]);
                if reply.contains(&b'\n') || reply.len() >= STATUS_LINE_MAX {
                    return Some(status_verdict(reply, expect, false));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => return Some((false, e.to_string())),
        }
    }
}

/// Judges an HTTP reply by its status line ("HTTP/1.1 200 OK").
pub fn status_verdict(reply: &[u8], expect: &[u16], eof: bool) -> (bool, String) {
    let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    match status {
        Some(code) if expect.contains(&code) => (true, format!("status {code}")),
        Some(code) => (false, format!("status {code}, expected {expect:?}")),
        None if eof && reply.is_empty() => (false, "closed without a reply".into()),
        None => (false, "reply is not HTTP".into()),
    }
}

/// SO_LINGER 0: close sends RST and leaves no TIME_WAIT socket behind.
fn rst_on_close(c: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let _ = crate::sys::setsockopt(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket as StdUdp};

    fn check(kind: CheckKind) -> Arc<HealthCheck> {
        Arc::new(HealthCheck {
            kind,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(80),
            ..HealthCheck::default_for(6)
        })
    }

    /// Runs the engine until each target has one result.
    fn probe_once(targets: Vec<Target>) -> Vec<Outcome> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut e = Engine::new(tx).unwrap();
        let n = targets.len();
        e.set_targets(1, targets);
        let mut out: Vec<Option<Outcome>> = vec![None; n];
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.iter().any(Option::is_none) && Instant::now() < deadline {
            e.step(Duration::from_millis(10));
            while let Ok(o) = rx.try_recv() {
                let i = o.target;
                out[i].get_or_insert(o);
            }
        }
        out.into_iter().map(|o| o.expect("a result per target")).collect()
    }

    #[test]
    fn probes_of_real_local_sockets_pass_and_fail_for_the_right_reason() {
        // Real peers on loopback: a listener, a closed port, an HTTP server
        // answering 500, and UDP with and without a responder.
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let http500 = TcpListener::bind("127.0.0.1:0").unwrap();
        let http500_addr = http500.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in http500.incoming().flatten() {
                let mut c = c;
                let mut b = [0u8; 512];
                let _ = c.read(&mut b);
                let _ = c.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let udp = StdUdp::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while let Ok((n, peer)) = udp.recv_from(&mut b) {
                let _ = udp.send_to(&b[..n], peer);
            }
        });
        let udp_closed = StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let http = |expect: Vec<u16>| CheckKind::Http { path: "/".into(), host: None, expect };
        let udp_kind = CheckKind::Udp { payload: b"ping".to_vec() };
        let out = probe_once(vec![
            Target { addr: open.local_addr().unwrap(), check: check(CheckKind::Tcp) },
            Target { addr: closed, check: check(CheckKind::Tcp) },
            Target { addr: http500_addr, check: check(http(vec![200])) },
            Target { addr: http500_addr, check: check(http(vec![200, 500])) },
            Target { addr: udp_addr, check: check(udp_kind.clone()) },
            Target { addr: udp_closed, check: check(udp_kind) },
        ]);
        let got: Vec<(bool, &str)> = out.iter().map(|o| (o.pass, o.detail.as_str())).collect();
        assert_eq!(got[0], (true, "connected"));
        assert!(!got[1].0 && got[1].1.contains("refused"), "{got:?}");
        assert_eq!(got[2], (false, "status 500, expected [200]"));
        assert_eq!(got[3], (true, "status 500"));
        assert_eq!(got[4], (true, "reply"));
        assert_eq!(got[5], (false, "port unreachable"));
        assert!(out.iter().all(|o| o.epoch == 1));
    }

    #[test]
    fn a_silent_peer_times_out() {
        // A UDP socket that never answers: only the timeout can end the probe.
        let silent = StdUdp::bind("127.0.0.1:0").unwrap();
        let out = probe_once(vec![Target {
            addr: silent.local_addr().unwrap(),
            check: check(CheckKind::Udp { payload: b"x".to_vec() }),
        }]);
        assert!(!out[0].pass);
        assert_eq!(out[0].detail, "timeout after 80ms");
        assert!(out[0].latency >= Duration::from_millis(80));
    }

    #[test]
    fn status_lines_are_judged_by_code() {
        assert!(status_verdict(b"HTTP/1.1 204 No Content\r\n", &[200, 204], false).0);
        assert_eq!(status_verdict(b"SSH-2.0-OpenSSH\r\n", &[200], false).1, "reply is not HTTP");
        assert_eq!(status_verdict(b"", &[200], true).1, "closed without a reply");
    }
}
