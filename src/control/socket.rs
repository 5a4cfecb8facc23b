//! The control socket: a Unix socket taking one JSON request per
//! connection, served by the housekeeping (main) thread between its other
//! duties, never by a worker. Access is the socket file's permissions:
//! root-only (0600) unless a group is configured (0660).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};

use super::protocol::{self, Request, Response};

/// How long one client may take to send its request or read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Server {
    poll: Poll,
    events: Events,
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds the socket (replacing a stale one) with mode 0600, or 0660 and
    /// group `group` when given.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if let Ok(other) = UnixStream::connect(path) {
                let pid = Peer::of(&other).pid;
                bail!("{} is in use: is another shunt running? (pid {pid})", path.display());
            }
            let _ = std::fs::remove_file(path);
        }
        // Create it private, then widen: never a window where it is open.
        // SAFETY: umask(2) only changes this process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let mut listener = bound.with_context(|| format!("binding control socket {}", path.display()))?;
        if let Some(g) = group {
            let gid = group_id(g).with_context(|| format!("control_group `{g}`"))?;
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: `c` is a valid path; uid -1 leaves the owner unchanged.
            if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
                return Err(std::io::Error::last_os_error()).context("chown control socket");
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        }
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, Token(0), Interest::READABLE)?;
        Ok(Server { poll, events: Events::with_capacity(16), listener, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for clients and answers each with `handle`,
    /// which also learns who asked (for the log).
    pub fn serve(&mut self, timeout: Duration, mut handle: impl FnMut(Request, Peer) -> Response) {
        if self.poll.poll(&mut self.events, Some(timeout)).is_err() {
            return;
        }
        if self.events.is_empty() {
            return;
        }
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(_) => break,
            };
            // SAFETY: the fd comes from a just-accepted mio stream whose
            // ownership moves into the std stream here.
            let mut stream = unsafe { UnixStream::from_raw_fd(stream.into_raw_fd()) };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            let peer = Peer::of(&stream);
            let reply = match read_request(&mut stream) {
                Ok(bytes) => match protocol::parse(&bytes) {
                    Ok(req) => handle(req, peer),
                    Err(e) => {
                        tracing::warn!(uid = peer.uid, pid = peer.pid, error = %e, "control request refused");
                        Response::err(e)
                    }
                },
                Err(e) => Response::err(e),
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
            out.push(b'\n');
            let _ = stream.write_all(&out);
            // Closing with unread input would reset the connection and lose
            // the reply: say we are done, then discard what is left (bounded
            // by the client timeout).
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 4096];
            let mut left = 16 * protocol::MAX_REQUEST;
            while left > 0 {
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        }
    }
}

/// The process on the other end of a control connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> Peer {
        use std::os::fd::AsRawFd;
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

/// Reads one request: up to a newline or EOF, refusing oversized ones.
fn read_request(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > protocol::MAX_REQUEST {
                    return Err(format!("request too large (limit {} bytes)", protocol::MAX_REQUEST));
                }
                if buf.contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(format!("reading request: {e}")),
        }
    }
    Ok(buf)
}

/// Client side: sends `req`, returns the reply.
pub fn request(path: &Path, req: &Request) -> Result<Response> {
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "permission denied on {}: the control socket is root-only unless `control_group` is set and you are in it",
            path.display()
        ),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::anyhow!("no running shunt at {} ({e}); is `shunt run` up? (--socket PATH)", path.display())
        }
        _ => anyhow::anyhow!("connecting to {}: {e}", path.display()),
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut body = serde_json::to_vec(req)?;
    body.push(b'\n');
    s.write_all(&body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    serde_json::from_slice(&out).context("reply from shunt is not JSON")
}

fn group_id(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getgrnam returns NULL or a pointer to static storage that we
    // read before any other getgr* call on this thread.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        bail!("no such group");
    }
    // SAFETY: non-null pointer from getgrnam, see above.
    Ok(unsafe { (*g).gr_gid })
}
