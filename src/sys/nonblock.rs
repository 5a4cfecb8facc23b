//! Non-blocking socket writes shared by the control socket and the
//! Prometheus endpoint (both mio loops with one reply per connection).

use std::io::{ErrorKind, Write};

/// Where a write of a reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// All of it is written.
    Done,
    /// The socket is full; try again on the next writable event.
    Blocked,
    /// The peer is gone (or the socket failed).
    Failed,
}

/// Writes `out[*sent..]` until it is all written, the socket would block,
/// or the write fails; `sent` tracks progress across calls.
pub fn flush(w: &mut impl Write, out: &[u8], sent: &mut usize) -> Flush {
    while *sent < out.len() {
        match w.write(&out[*sent..]) {
            Ok(0) => return Flush::Failed,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Flush::Blocked,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Flush::Failed,
        }
    }
    Flush::Done
}
