//! Non-blocking socket writes and the connection table shared by the
//! control socket and the Prometheus endpoint (both mio loops with one
//! reply per connection).

use std::io::{ErrorKind, Read, Write};
use std::time::Instant;

use mio::event::Source;
use mio::Registry;

/// Where a write of a reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// All of it is written.
    Done,
    /// The socket is full; try again on the next writable event.
    Blocked,
    /// The peer is gone (or the socket failed).
    Failed,
}

/// Writes `out[*sent..]` until it is all written, the socket would block,
/// or the write fails; `sent` tracks progress across calls.
fn flush(w: &mut impl Write, out: &[u8], sent: &mut usize) -> Flush {
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

/// A stream whose write side can be shut on its own (mio's Unix and TCP
/// streams).
pub trait HalfClose: Read + Write {
    fn shutdown_write(&self) -> std::io::Result<()>;
}

impl HalfClose for mio::net::UnixStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl HalfClose for mio::net::TcpStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// How much an [`Answer`] reads and discards after its reply.
#[derive(Debug, Clone, Copy)]
pub struct DrainLimits {
    /// Bytes read per call, so one client cannot keep the loop to itself.
    pub per_pass: usize,
    /// Bytes read in all before the connection is cut off.
    pub total: usize,
}

/// What the loop does with a connection after [`Answer::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for its next readiness event.
    Wait,
    /// The per-pass budget is spent with input left: serve it again on the
    /// next pass without waiting for an event (edge-triggered polls raise
    /// none for input already there).
    Again,
    /// Done (the peer closed after its reply), failed, or over its limit.
    Close,
}

/// The second half of a one-request connection: write the reply, shut the
/// write side, then read and discard what the peer still sends until it
/// closes, so closing does not reset the connection and lose the reply.
pub struct Answer {
    out: Vec<u8>,
    sent: usize,
    drained: usize,
    draining: bool,
}

impl Answer {
    pub fn new(out: Vec<u8>) -> Answer {
        Answer { out, sent: 0, drained: 0, draining: false }
    }

    /// Writes what the socket takes, then drains; never blocks.
    pub fn progress(&mut self, s: &mut impl HalfClose, limits: DrainLimits) -> Next {
        if !self.draining {
            match flush(s, &self.out, &mut self.sent) {
                Flush::Done => {
                    let _ = s.shutdown_write();
                    self.out = Vec::new();
                    self.draining = true;
                }
                Flush::Blocked => return Next::Wait,
                Flush::Failed => return Next::Close,
            }
        }
        let mut sink = [0u8; 16 * 1024];
        let mut budget = limits.per_pass;
        loop {
            match s.read(&mut sink) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.drained += n;
                    if self.drained > limits.total {
                        return Next::Close;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Next::Again;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }
}

/// A connection of one of those servers, kept in a table of slots whose
/// index is its mio token.
pub trait Connection {
    type Stream: Source;
    /// Its socket, to deregister when it closes, and its deadline, when it
    /// is closed, done or not.
    fn socket_and_deadline(&mut self) -> (&mut Self::Stream, Instant);
}

/// Closes the connection in slot `i` of `slots`, if there is one: takes it
/// off `registry` and drops it.
pub fn close<C: Connection>(slots: &mut [Option<C>], i: usize, registry: &Registry) {
    if let Some(mut c) = slots.get_mut(i).and_then(Option::take) {
        let _ = registry.deregister(c.socket_and_deadline().0);
    }
}

/// Closes every connection of `slots` past its deadline at `now`, after
/// `last_words` (which may still try a non-blocking write to it).
pub fn expire<C: Connection>(
    slots: &mut [Option<C>],
    registry: &Registry,
    now: Instant,
    mut last_words: impl FnMut(&mut C),
) {
    for i in 0..slots.len() {
        let Some(c) = slots[i].as_mut() else { continue };
        if c.socket_and_deadline().1 <= now {
            last_words(c);
            close(slots, i, registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (mio::net::UnixStream, std::os::unix::net::UnixStream) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (mio::net::UnixStream::from_std(ours), peer)
    }

    /// A connection of the table in the tests: its socket and deadline.
    struct Conn(mio::net::UnixStream, Instant);

    impl Connection for Conn {
        type Stream = mio::net::UnixStream;

        fn socket_and_deadline(&mut self) -> (&mut mio::net::UnixStream, Instant) {
            (&mut self.0, self.1)
        }
    }

    #[test]
    fn expire_closes_only_connections_past_their_deadline_after_their_last_words() {
        use std::time::Duration;
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let (late, early) = (now - Duration::from_secs(1), now + Duration::from_secs(60));
        let mut slots = Vec::new();
        let mut peers = Vec::new();
        for (i, deadline) in [late, early, now].into_iter().enumerate() {
            let (mut ours, peer) = pair();
            poll.registry().register(&mut ours, mio::Token(i), mio::Interest::READABLE).unwrap();
            slots.push(Some(Conn(ours, deadline)));
            peers.push(peer);
        }
        slots.push(None);
        let mut told = Vec::new();
        expire(&mut slots, poll.registry(), now, |c| told.push(c.1));
        assert_eq!(told, [late, now]);
        assert_eq!(slots.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, false, false]);
        // The closed connections' peers read end of file.
        for i in [0, 2] {
            assert_eq!(peers[i].read(&mut [0u8; 1]).unwrap(), 0);
        }
        close(&mut slots, 1, poll.registry());
        assert!(slots.iter().all(Option::is_none));
    }

    const ROOMY: DrainLimits = DrainLimits { per_pass: 1 << 20, total: 1 << 20 };

    #[test]
    fn reply_is_written_then_write_side_shut_then_closed_on_peer_eof() {
        let (mut ours, mut peer) = pair();
        // Larger than a socket buffer: it takes more than one call.
        let reply: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut answer = Answer::new(reply.clone());
        assert_eq!(answer.progress(&mut ours, ROOMY), Next::Wait);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            (got, peer)
        });
        while !answer.draining {
            assert_ne!(answer.progress(&mut ours, ROOMY), Next::Close);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // read_to_end returns only once the write side is shut.
        let (got, peer) = reader.join().unwrap();
        assert_eq!(got, reply);
        assert_eq!(answer.progress(&mut ours, ROOMY), Next::Wait);
        drop(peer);
        assert_eq!(answer.progress(&mut ours, ROOMY), Next::Close);
    }

    #[test]
    fn drain_is_paced_per_pass_and_cut_off_past_its_total() {
        let (mut ours, mut peer) = pair();
        let mut answer = Answer::new(b"reply\n".to_vec());
        let limits = DrainLimits { per_pass: 1000, total: 2500 };
        peer.write_all(&[0u8; 1000]).unwrap();
        assert_eq!(answer.progress(&mut ours, limits), Next::Again);
        assert_eq!(answer.progress(&mut ours, limits), Next::Wait);
        peer.write_all(&[0u8; 1000]).unwrap();
        assert_eq!(answer.progress(&mut ours, limits), Next::Again);
        peer.write_all(&[0u8; 600]).unwrap();
        assert_eq!(answer.progress(&mut ours, limits), Next::Close);
    }
}
