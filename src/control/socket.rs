//! The control socket: a Unix socket taking one JSON request per
//! connection, served by the housekeeping (main) thread between its other
//! duties, never by a worker. Access is the socket file's permissions:
//! root-only (0600) unless a group is configured (0660).
//!
//! Clients are served concurrently and never waited on: every connection
//! is non-blocking with its own buffer and phase (reading the request,
//! writing the reply, draining what the client still sends), at most
//! `MAX_CLIENTS` are open, and each has a deadline. A client that sends a
//! byte every second, or nothing at all, costs a slot until its deadline,
//! not the loop's attention, so `stats`, reloads and signals go on.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::protocol::{self, Request, RequestError, Response};
use crate::sys::nonblock::{self, Answer, Connection, DrainLimits, Next};

/// How long one client may take to send its request, and again to read
/// the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections open at once; one more is told so and closed.
pub const MAX_CLIENTS: usize = 256;
/// Bytes read from one client per wakeup, so a fast sender cannot keep
/// the loop to itself; the rest is read on the next pass.
const READ_BUDGET: usize = 256 * 1024;
/// After its reply, a client's leftover input (the rest of an oversize
/// request) is read at the same pace, and cut off past 64 MiB.
const DRAIN: DrainLimits = DrainLimits { per_pass: READ_BUDGET, total: 64 * 1024 * 1024 };
const LISTENER: Token = Token(usize::MAX);

/// Why the control socket could not be set up ([`Server::bind`]), or a
/// request through it failed ([`request`]).
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket's directory could not be created.
    #[error("creating {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket.
    #[error("{} is in use: is another shunt running? (pid {pid})", path.display())]
    InUse { path: PathBuf, pid: i32 },
    #[error("binding control socket {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `control_group` names no group of this host.
    #[error("control_group `{group}`: no such group")]
    NoGroup { group: String },
    /// The socket could not be given to `control_group` (owner, then mode 0660).
    #[error("giving control socket {} to group `{group}`", path.display())]
    Group {
        path: PathBuf,
        group: String,
        #[source]
        source: std::io::Error,
    },
    #[error("polling control socket {}", path.display())]
    Poll {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Client side: the socket's mode or group keeps the caller out.
    #[error(
        "permission denied on {}: the control socket is root-only unless `control_group` is set and you are in it",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    /// Client side: no socket, or nobody listening on it.
    #[error("no running shunt at {} ({source}); is `shunt run` up? (--socket PATH)", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Client side: sending the request or reading the reply failed.
    #[error("talking to shunt at {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reply from shunt is not JSON")]
    Reply(#[source] serde_json::Error),
}

enum Phase {
    /// Collecting the request up to a newline or EOF.
    Reading,
    /// Sending the reply, then draining what the client still sends.
    Answering(Answer),
}

struct Client {
    stream: UnixStream,
    peer: Peer,
    phase: Phase,
    input: Vec<u8>,
    deadline: Instant,
}

pub struct Server {
    poll: Poll,
    events: Events,
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Option<Client>>,
    /// Clients with input left unread after their read budget.
    again: Vec<usize>,
    refused: u64,
    last_refusal_log: Option<Instant>,
}

impl Server {
    /// Binds the socket (replacing a stale one) with mode 0600, or 0660 and
    /// group `group` when given.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<Server, SocketError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| SocketError::CreateDir { dir: dir.to_path_buf(), source })?;
        }
        if path.exists() {
            if let Ok(other) = StdUnixStream::connect(path) {
                let pid = Peer::of(&other).pid;
                return Err(SocketError::InUse { path: path.to_path_buf(), pid });
            }
            let _ = std::fs::remove_file(path);
        }
        // Create it private, then widen: never a window where it is open.
        // SAFETY: umask(2) only changes this process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let mut listener = bound.map_err(|source| SocketError::Bind { path: path.to_path_buf(), source })?;
        if let Some(g) = group {
            let gid = group_id(g).ok_or_else(|| SocketError::NoGroup { group: g.to_string() })?;
            let widen = || -> std::io::Result<()> {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
                // SAFETY: `c` is a valid path; uid -1 leaves the owner unchanged.
                if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            };
            widen().map_err(|source| SocketError::Group {
                path: path.to_path_buf(),
                group: g.to_string(),
                source,
            })?;
        }
        let poll = Poll::new()
            .and_then(|poll| {
                poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map(|()| poll)
            })
            .map_err(|source| SocketError::Poll { path: path.to_path_buf(), source })?;
        Ok(Server {
            poll,
            events: Events::with_capacity(256),
            listener,
            path: path.to_path_buf(),
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            again: Vec::new(),
            refused: 0,
            last_refusal_log: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for client activity, answers every complete
    /// request with `handle` (which also learns who asked, for the log),
    /// and closes clients past their deadline. Never blocks on a client.
    pub fn serve(&mut self, timeout: Duration, mut handle: impl FnMut(Request, Peer) -> Response) {
        let wait = if self.again.is_empty() { timeout } else { Duration::ZERO };
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::warn!(error = %e, "control socket poll failed");
            }
            return;
        }
        let mut ready: Vec<usize> = std::mem::take(&mut self.again);
        ready.extend(self.events.iter().map(|e| e.token().0).filter(|t| *t != LISTENER.0));
        // Accepting on every pass, not only on an event: a pending
        // connection left by EMFILE is picked up once a descriptor frees.
        self.accept();
        for i in ready {
            self.progress(i, &mut handle);
        }
        nonblock::expire(&mut self.clients, self.poll.registry(), Instant::now(), Client::time_out);
    }

    /// Clients connected now (for tests and the log).
    pub fn clients(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOMEM: the connection waits in the
                    // backlog; try again on the next pass.
                    self.log_refusal(&format!("accepting a control connection failed: {e}"));
                    return;
                }
            };
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                // Best effort, non-blocking: one line and close.
                let line = refusal_line(&format!(
                    "too many control connections (limit {MAX_CLIENTS}); try again later"
                ));
                let _ = stream.write(&line);
                // Read what the client already sent, so closing does not
                // reset the connection before it reads the line.
                let _ = stream.read(&mut [0u8; 4096]);
                self.log_refusal(&format!(
                    "control connection refused: {MAX_CLIENTS} clients already connected"
                ));
                continue;
            };
            let peer = Peer::of(&stream);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "control connection dropped: cannot poll it");
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                peer,
                phase: Phase::Reading,
                input: Vec::new(),
                deadline: Instant::now() + CLIENT_TIMEOUT,
            });
            // Its request may already be waiting: the readiness edge came
            // before it was registered.
            self.again.push(slot);
        }
    }

    /// One warning per second at most, with the count since the last.
    fn log_refusal(&mut self, what: &str) {
        self.refused += 1;
        if self.last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(refused = self.refused, "{what}");
            self.refused = 0;
            self.last_refusal_log = Some(Instant::now());
        }
    }

    fn progress(&mut self, i: usize, handle: &mut impl FnMut(Request, Peer) -> Response) {
        let Some(c) = self.clients.get_mut(i).and_then(Option::as_mut) else { return };
        if matches!(c.phase, Phase::Reading) {
            match c.read_request() {
                Step::Pending => {}
                Step::More => self.again.push(i),
                Step::Close => return self.close(i),
                Step::Done(result) => {
                    let reply = match result.and_then(|bytes| protocol::parse(&bytes)) {
                        Ok(req) => handle(req, c.peer),
                        Err(e) => {
                            tracing::warn!(uid = c.peer.uid, pid = c.peer.pid, error = %e, "control request refused");
                            Response::err(e)
                        }
                    };
                    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
                    out.push(b'\n');
                    c.input = Vec::new();
                    c.phase = Phase::Answering(Answer::new(out));
                    c.deadline = Instant::now() + CLIENT_TIMEOUT;
                }
            }
        }
        if let Phase::Answering(answer) = &mut c.phase {
            match answer.progress(&mut c.stream, DRAIN) {
                Next::Wait => {}
                Next::Again => self.again.push(i),
                Next::Close => self.close(i),
            }
        }
    }

    fn close(&mut self, i: usize) {
        nonblock::close(&mut self.clients, i, self.poll.registry());
    }
}

enum Step {
    /// Nothing more to read now.
    Pending,
    /// Read budget spent with input left.
    More,
    /// The client went away without a request.
    Close,
    Done(Result<Vec<u8>, RequestError>),
}

impl Connection for Client {
    type Stream = UnixStream;

    fn socket_and_deadline(&mut self) -> (&mut UnixStream, Instant) {
        (&mut self.stream, self.deadline)
    }
}

impl Client {
    /// Past its deadline: a client still sending its request is told why
    /// (if its socket takes the line) before it is closed.
    fn time_out(&mut self) {
        if matches!(self.phase, Phase::Reading) {
            let secs = CLIENT_TIMEOUT.as_secs_f64();
            let _ = self.stream.write(&refusal_line(&format!("request not received within {secs}s")));
            tracing::warn!(
                uid = self.peer.uid,
                pid = self.peer.pid,
                "control client timed out before sending a request"
            );
        }
    }

    /// Reads what is there: a request ends at a newline or EOF; past
    /// `MAX_REQUEST` bytes it is refused without reading the rest first.
    fn read_request(&mut self) -> Step {
        let mut chunk = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) if self.input.is_empty() => return Step::Close,
                Ok(0) => return Step::Done(Ok(std::mem::take(&mut self.input))),
                Ok(n) => {
                    let chunk = &chunk[..n];
                    if let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                        self.input.extend_from_slice(&chunk[..end]);
                        return Step::Done(self.checked());
                    }
                    self.input.extend_from_slice(chunk);
                    if self.input.len() > protocol::MAX_REQUEST {
                        return Step::Done(self.checked());
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Step::More;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Step::Done(Err(RequestError::Read(e))),
            }
        }
    }

    fn checked(&mut self) -> Result<Vec<u8>, RequestError> {
        if self.input.len() > protocol::MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        Ok(std::mem::take(&mut self.input))
    }
}

/// An error reply as one JSON line.
fn refusal_line(error: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(&Response::err(error)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The process on the other end of a control connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
}

impl Peer {
    pub fn of(stream: &impl AsRawFd) -> Peer {
        let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which we own.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Peer { uid: u32::MAX, pid: 0 };
        }
        Peer { uid: cred.uid, pid: cred.pid }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Client side: sends `req`, returns the reply.
pub fn request(path: &Path, req: &Request) -> Result<Response, SocketError> {
    let path_buf = || path.to_path_buf();
    let mut s = StdUnixStream::connect(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => SocketError::PermissionDenied { path: path_buf() },
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            SocketError::NotRunning { path: path_buf(), source }
        }
        _ => SocketError::Connect { path: path_buf(), source },
    })?;
    let io = |source| SocketError::Io { path: path_buf(), source };
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    // A request is plain data: it always serializes.
    let mut body = serde_json::to_vec(req).unwrap_or_default();
    body.push(b'\n');
    s.write_all(&body).map_err(io)?;
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    // A refusal (too many clients, timeout) may arrive before the socket
    // resets: a complete reply line counts even if the read then failed.
    if read.is_err() && !out.ends_with(b"\n") {
        read.map_err(io)?;
    }
    serde_json::from_slice(&out).map_err(SocketError::Reply)
}

/// The id of group `name`; `None` when the host has no such group.
fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns NULL or a pointer to static storage that we
    // read before any other getgr* call on this thread.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getgrnam, see above.
    Some(unsafe { (*g).gr_gid })
}
