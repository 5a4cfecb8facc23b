//! The kernel neighbour table (ARP and NDP) read over rtnetlink.
//!
//! The L2 next-hop stage rewrites destination MACs itself, so it needs the
//! link-layer address of every backend / gateway it forwards to. When the
//! config does not pin one, Shunt asks the kernel: [`dump`] reads the whole
//! neighbour table of the current network namespace with one
//! `RTM_GETNEIGH`/`NLM_F_DUMP` request, and [`lookup`] picks one entry out of
//! it.
//!
//! The kernel only knows a neighbour after something made it resolve one. For
//! a next hop it has not resolved yet, Shunt calls [`solicit`], which sends a
//! zero-length UDP datagram to the discard port through the interface; the
//! kernel queues it and emits an ARP request / neighbour solicitation, and the
//! caller polls [`lookup`] until the entry shows up (on a LAN that is well
//! under a millisecond; the kernel retries every `retrans_time`, 1 s by default).
//!
//! Replies are parsed from plain byte slices with checked slicing only: a
//! malformed or truncated reply yields an error (or a skipped entry), never a
//! panic or an out-of-bounds read. The only `unsafe` is the libc socket calls.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Neighbour states (`NUD_*` from `<linux/neighbour.h>`); [`Neighbour::state`] holds one of these.
pub const NUD_INCOMPLETE: u16 = 0x01;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_DELAY: u16 = 0x08;
pub const NUD_PROBE: u16 = 0x10;
pub const NUD_FAILED: u16 = 0x20;
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;
/// States whose link-layer address can be used to send: everything but
/// INCOMPLETE / FAILED / NONE.
pub const NUD_USABLE: u16 = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

/// One resolved neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: [u8; 6],
    /// One of the `NUD_*` constants.
    pub state: u16,
}

// Netlink / rtnetlink wire constants (<linux/netlink.h>, <linux/rtnetlink.h>,
// <linux/neighbour.h>). Kept local so the parser does not depend on which of
// them a given libc version exports.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
/// `struct ndmsg`: family u8, pad u8, pad u16, ifindex i32, state u16, flags u8, type u8.
const NDMSG_LEN: usize = 12;
const RTA_HDRLEN: usize = 4;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Strips NLA_F_NESTED / NLA_F_NET_BYTEORDER from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const FAMILY_INET: u8 = libc::AF_INET as u8;
const FAMILY_INET6: u8 = libc::AF_INET6 as u8;

/// Receive buffer. The kernel sizes dump datagrams to at most ~32 KiB
/// (`SKB_WITH_OVERHEAD(32768)`), so this never truncates; if it ever did,
/// `MSG_TRUNC` reports it and the dump fails instead of losing entries.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Per-`recv` timeout: the kernel answers a dump immediately.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for a whole dump, however the kernel paces its datagrams.
const DUMP_DEADLINE: Duration = Duration::from_secs(10);
/// A dump the kernel flags as interrupted (`NLM_F_DUMP_INTR`: the table changed
/// mid-dump) is retried this many times in total; the last result is returned.
const DUMP_ATTEMPTS: usize = 3;
/// UDP discard port: the solicitation datagram is dropped by whoever gets it.
const DISCARD_PORT: u16 = 9;

static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);

/// Dumps the neighbour table of the current network namespace (both ARP and
/// ND entries), returning the entries whose state is usable
/// ([`NUD_USABLE`]) and that carry a 6-byte link-layer address.
///
/// Namespaces are per thread: a thread that `setns()`ed elsewhere dumps that
/// namespace's table.
pub fn dump() -> io::Result<Vec<Neighbour>> {
    let mut attempt = 1;
    loop {
        let (entries, interrupted) = dump_once()?;
        if !interrupted || attempt >= DUMP_ATTEMPTS {
            return Ok(entries);
        }
        attempt += 1;
    }
}

/// MAC for `addr` on interface `ifindex` (on any interface if `None`), from a
/// fresh [`dump`]. With several candidates the most trustworthy state wins
/// (permanent / reachable over delay / probe over stale). `Ok(None)` when the
/// kernel has no usable entry: see [`solicit`].
pub fn lookup(addr: IpAddr, ifindex: Option<u32>) -> io::Result<Option<[u8; 6]>> {
    Ok(best_match(&dump()?, addr, ifindex))
}

/// Asks the kernel to resolve `addr` on interface `ifname`.
///
/// This is how Shunt learns a next hop the kernel has not resolved yet: it
/// sends a zero-length UDP datagram to `addr`, port 9 (discard), from a socket
/// bound to the interface with `SO_BINDTODEVICE`. The kernel holds the datagram
/// while it sends an ARP request (IPv4) or neighbour solicitation (IPv6); the
/// reply creates the neighbour entry, and the caller polls [`lookup`]
/// afterwards. Nothing else is sent, and the datagram itself is harmless (the
/// peer discards it or answers ICMP port-unreachable).
///
/// The kernel must have a route to `addr` through `ifname` (normally the
/// connected route of an address configured on it); otherwise this fails with
/// `ENETUNREACH`. Needs `CAP_NET_RAW` (for `SO_BINDTODEVICE`). IPv6 link-local
/// addresses are scoped to `ifname`.
pub fn solicit(addr: IpAddr, ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
    }
    let family = match addr {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    let sock = socket(family, libc::SOCK_DGRAM, 0)?;
    let name = ifname.as_bytes();
    // SAFETY: `name` is a live buffer of `name.len()` bytes (the kernel copies at
    // most IFNAMSIZ bytes and does not need a trailing NUL when given the length).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(with_context(io::Error::last_os_error(), &format!("SO_BINDTODEVICE {ifname}")));
    }

    const NO_WAIT: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    let sent = match addr {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_in is plain C data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = DISCARD_PORT.to_be();
            sa.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) };
            send_to(&sock, &[], NO_WAIT, &sa)
        }
        IpAddr::V6(v6) => {
            // Link-local (fe80::/10) needs a scope; SO_BINDTODEVICE would supply it
            // too, but saying it explicitly does not depend on that fallback.
            let scope_id = if v6.segments()[0] & 0xffc0 == 0xfe80 { ifname_to_index(ifname)? } else { 0 };
            // SAFETY: sockaddr_in6 is plain C data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = DISCARD_PORT.to_be();
            sa.sin6_addr = libc::in6_addr { s6_addr: v6.octets() };
            sa.sin6_scope_id = scope_id;
            send_to(&sock, &[], NO_WAIT, &sa)
        }
    };
    if sent < 0 {
        return Err(with_context(io::Error::last_os_error(), &format!("solicit {addr} via {ifname}")));
    }
    Ok(())
}

fn ifname_to_index(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(with_context(io::Error::last_os_error(), &format!("interface {ifname}")))
    } else {
        Ok(idx)
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed rtnetlink reply: {what}"))
}

/// `socket(2)` with `SOCK_CLOEXEC`, owned.
fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A bound NETLINK_ROUTE socket with a receive timeout.
/// sendto(2) of `data` to `sa` (a `sockaddr_in`, `sockaddr_in6` or
/// `sockaddr_nl`); its return value.
fn send_to<A: Copy>(sock: &OwnedFd, data: &[u8], flags: libc::c_int, sa: &A) -> isize {
    // SAFETY: `data` and `sa` are live for the call and their exact sizes
    // are passed (an empty `data` still has a valid, non-null pointer).
    unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            flags,
            (sa as *const A).cast(),
            std::mem::size_of::<A>() as libc::socklen_t,
        )
    }
}

fn netlink_socket() -> io::Result<OwnedFd> {
    let sock = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: RECV_TIMEOUT.subsec_micros() as libc::suseconds_t,
    };
    super::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    let local = kernel_addr(); // nl_pid 0 on bind: the kernel assigns our port id.
                               // SAFETY: `local` is a live sockaddr_nl and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&local as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// `sockaddr_nl` with port id 0 (the kernel) and no multicast groups.
fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain C data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa
}

/// `RTM_GETNEIGH` dump request: nlmsghdr + ndmsg with family AF_UNSPEC (all
/// neighbour tables: ARP and ND).
fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + NDMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + NDMSG_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDRLEN + NDMSG_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0 (the kernel fills in our port id); ndmsg all zero = AF_UNSPEC.
    req
}

/// One full dump; the flag says whether the kernel marked it interrupted.
fn dump_once() -> io::Result<(Vec<Neighbour>, bool)> {
    let sock = netlink_socket()?;
    let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
    let req = dump_request(seq);
    let kernel = kernel_addr();
    let sent = send_to(&sock, &req, libc::MSG_NOSIGNAL, &kernel);
    if sent < 0 {
        return Err(with_context(io::Error::last_os_error(), "RTM_GETNEIGH"));
    }
    if sent as usize != req.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "RTM_GETNEIGH: short send"));
    }

    let deadline = Instant::now() + DUMP_DEADLINE;
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut entries = Vec::new();
    let mut interrupted = false;
    loop {
        let n = recv_from_kernel(&sock, &mut buf)?;
        let datagram = buf.get(..n).ok_or_else(|| malformed("length past buffer"))?;
        let progress = parse_datagram(datagram, seq, &mut entries)?;
        interrupted |= progress.interrupted;
        if progress.done {
            return Ok((entries, interrupted));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "neighbour dump did not finish"));
        }
    }
}

/// Receives one datagram sent by the kernel (port id 0); returns its length.
fn recv_from_kernel(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut from = kernel_addr();
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buf` is writable for `buf.len()` bytes; `from`/`from_len` are live
        // and describe a sockaddr_nl-sized buffer. MSG_TRUNC only changes the return
        // value (the datagram's real length), never how much is written.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no rtnetlink reply within {RECV_TIMEOUT:?}"),
                    ))
                }
                _ => return Err(with_context(e, "recv rtnetlink")),
            }
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(malformed(&format!("{n}-byte datagram truncated to {}", buf.len())));
        }
        if from.nl_pid != 0 {
            continue; // not from the kernel
        }
        return Ok(n);
    }
}

/// What one datagram said about the dump as a whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// NLMSG_DONE (or an ACK) seen: the dump is complete.
    done: bool,
    /// A message carried NLM_F_DUMP_INTR: the table changed during the dump.
    interrupted: bool,
}

fn nl_align(len: usize) -> Option<usize> {
    Some(len.checked_add(3)? & !3)
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    read_u32(b, at).map(|v| v as i32)
}

/// Parses one received datagram (one or more netlink messages) of the dump
/// with sequence number `seq`, appending usable entries to `out`.
///
/// Framing errors (a header or `nlmsg_len` that does not fit) make the rest of
/// the datagram unreadable and return `InvalidData`; entries parsed before
/// that stay in `out`. A single malformed neighbour message inside a
/// well-framed one is skipped. Messages with another sequence number are
/// ignored. `NLMSG_ERROR` returns the kernel's errno.
fn parse_datagram(buf: &[u8], seq: u32, out: &mut Vec<Neighbour>) -> io::Result<Progress> {
    let mut progress = Progress::default();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = read_u32(rest, 0).ok_or_else(|| malformed("truncated nlmsghdr"))? as usize;
        let ty = read_u16(rest, 4).ok_or_else(|| malformed("truncated nlmsghdr"))?;
        let flags = read_u16(rest, 6).ok_or_else(|| malformed("truncated nlmsghdr"))?;
        let msg_seq = read_u32(rest, 8).ok_or_else(|| malformed("truncated nlmsghdr"))?;
        if rest.len() < NLMSG_HDRLEN || len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed(&format!("nlmsg_len {len} with {} bytes left", rest.len())));
        }
        let payload = rest.get(NLMSG_HDRLEN..len).ok_or_else(|| malformed("nlmsg_len"))?;

        if msg_seq == seq {
            if flags & NLM_F_DUMP_INTR != 0 {
                progress.interrupted = true;
            }
            match ty {
                NLMSG_DONE => {
                    // Dumps put the final status (an int, 0 on success) in DONE.
                    if let Some(err) = read_i32(payload, 0) {
                        if err < 0 {
                            return Err(errno_error(err));
                        }
                    }
                    progress.done = true;
                    return Ok(progress);
                }
                NLMSG_ERROR => {
                    let err = read_i32(payload, 0).ok_or_else(|| malformed("short NLMSG_ERROR"))?;
                    if err == 0 {
                        progress.done = true; // a plain ACK ends the exchange
                        return Ok(progress);
                    }
                    return Err(errno_error(err));
                }
                NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN")),
                RTM_NEWNEIGH => {
                    if let Some(n) = parse_neighbour(payload) {
                        if n.state & NUD_USABLE != 0 {
                            out.push(n);
                        }
                    }
                }
                NLMSG_NOOP => {}
                _ => {}
            }
        }

        // The next message starts at NLMSG_ALIGN(len); a final message may be unpadded.
        let next = nl_align(len).ok_or_else(|| malformed("nlmsg_len"))?;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Ok(progress)
}

/// The kernel's negative errno as a raw-os io::Error (so `raw_os_error()` works).
fn errno_error(err: i32) -> io::Error {
    match err.checked_neg() {
        Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
        _ => malformed(&format!("error code {err}")),
    }
}

/// Parses the payload of one RTM_NEWNEIGH message (ndmsg + rtattrs). `None`
/// for anything malformed, for families other than IPv4/IPv6, and for entries
/// without a destination or without a 6-byte link-layer address.
fn parse_neighbour(payload: &[u8]) -> Option<Neighbour> {
    let family = *payload.first()?;
    let ifindex = u32::try_from(read_i32(payload, 4)?).ok()?;
    let state = read_u16(payload, 8)?;
    let mut attrs = payload.get(nl_align(NDMSG_LEN)?..)?;

    let mut dst = None;
    let mut lladdr = None;
    while !attrs.is_empty() {
        let rta_len = read_u16(attrs, 0)? as usize;
        let rta_type = read_u16(attrs, 2)? & NLA_TYPE_MASK;
        if rta_len < RTA_HDRLEN || rta_len > attrs.len() {
            return None;
        }
        let data = attrs.get(RTA_HDRLEN..rta_len)?;
        match rta_type {
            NDA_DST => dst = Some(data),
            NDA_LLADDR => lladdr = Some(data),
            _ => {}
        }
        attrs = attrs.get(nl_align(rta_len)?..).unwrap_or(&[]);
    }

    let dst = dst?;
    let addr = match family {
        FAMILY_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(dst).ok()?)),
        FAMILY_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?)),
        _ => return None,
    };
    let mac = <[u8; 6]>::try_from(lladdr?).ok()?;
    Some(Neighbour { ifindex, addr, mac, state })
}

/// How much to trust a state's link-layer address, for picking among duplicates.
fn state_rank(state: u16) -> u8 {
    if state & (NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE) != 0 {
        3
    } else if state & (NUD_DELAY | NUD_PROBE) != 0 {
        2
    } else {
        1
    }
}

fn best_match(entries: &[Neighbour], addr: IpAddr, ifindex: Option<u32>) -> Option<[u8; 6]> {
    entries
        .iter()
        .filter(|n| n.addr == addr && ifindex.is_none_or(|i| n.ifindex == i))
        .max_by_key(|n| state_rank(n.state))
        .map(|n| n.mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::process::Command;

    const SEQ: u32 = 0x5eed;

    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn ndmsg(family: u8, ifindex: i32, state: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend_from_slice(&ifindex.to_ne_bytes());
        p.extend_from_slice(&state.to_ne_bytes());
        p.extend_from_slice(&[0, 1]); // ndm_flags, ndm_type
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    const MAC4: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const MAC6: [u8; 6] = [0x02, 0x66, 0x77, 0x88, 0x99, 0xaa];
    const V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// A hand-built dump datagram: one IPv4 and one IPv6 entry, entries that must
    /// be skipped, then a truncated message.
    fn sample_datagram() -> Vec<u8> {
        let mut d = Vec::new();
        // IPv4, REACHABLE, with an unrelated attribute (NDA_CACHEINFO-ish) first.
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ,
            &ndmsg(
                FAMILY_INET,
                3,
                NUD_REACHABLE,
                &[rta(3, &[0; 16]), rta(NDA_DST, &V4.octets()), rta(NDA_LLADDR, &MAC4)],
            ),
        ));
        // IPv6, PERMANENT; attribute type carries NLA_F_NET_BYTEORDER (masked off).
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ,
            &ndmsg(
                FAMILY_INET6,
                4,
                NUD_PERMANENT,
                &[rta(NDA_DST, &V6.octets()), rta(NDA_LLADDR | 0x4000, &MAC6)],
            ),
        ));
        // FAILED: not usable.
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ,
            &ndmsg(FAMILY_INET, 3, NUD_FAILED, &[rta(NDA_DST, &[10, 0, 0, 2]), rta(NDA_LLADDR, &MAC4)]),
        ));
        // 5-byte lladdr.
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ,
            &ndmsg(FAMILY_INET, 3, NUD_STALE, &[rta(NDA_DST, &[10, 0, 0, 3]), rta(NDA_LLADDR, &MAC4[..5])]),
        ));
        // IPv6 family with a 4-byte destination.
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ,
            &ndmsg(FAMILY_INET6, 3, NUD_STALE, &[rta(NDA_DST, &[10, 0, 0, 4]), rta(NDA_LLADDR, &MAC4)]),
        ));
        // rta_len running past the message.
        let mut bad_attr = ndmsg(FAMILY_INET, 3, NUD_STALE, &[rta(NDA_DST, &[10, 0, 0, 5])]);
        bad_attr.extend_from_slice(&200u16.to_ne_bytes());
        bad_attr.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        bad_attr.extend_from_slice(&MAC4);
        d.extend(nlmsg(RTM_NEWNEIGH, 2, SEQ, &bad_attr));
        // Short ndmsg.
        d.extend(nlmsg(RTM_NEWNEIGH, 2, SEQ, &[FAMILY_INET, 0, 0]));
        // Foreign sequence number.
        d.extend(nlmsg(
            RTM_NEWNEIGH,
            2,
            SEQ + 1,
            &ndmsg(FAMILY_INET, 3, NUD_REACHABLE, &[rta(NDA_DST, &[10, 0, 0, 6]), rta(NDA_LLADDR, &MAC4)]),
        ));
        d.extend(nlmsg(NLMSG_NOOP, 0, SEQ, &[]));
        // Truncated: the header claims 64 bytes, 20 follow.
        let mut trunc = nlmsg(RTM_NEWNEIGH, 2, SEQ, &[0; 4]);
        trunc[0..4].copy_from_slice(&64u32.to_ne_bytes());
        d.extend(trunc);
        d
    }

    fn expected() -> Vec<Neighbour> {
        vec![
            Neighbour { ifindex: 3, addr: IpAddr::V4(V4), mac: MAC4, state: NUD_REACHABLE },
            Neighbour { ifindex: 4, addr: IpAddr::V6(V6), mac: MAC6, state: NUD_PERMANENT },
        ]
    }

    #[test]
    fn parses_hand_built_dump() {
        let d = sample_datagram();
        let mut out = Vec::new();
        let err = parse_datagram(&d, SEQ, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(out, expected());

        // Without the truncated tail the datagram is fine but not the end of the dump.
        let well_formed = &d[..d.len() - 20];
        let mut out = Vec::new();
        let p = parse_datagram(well_formed, SEQ, &mut out).unwrap();
        assert_eq!(p, Progress { done: false, interrupted: false });
        assert_eq!(out, expected());

        // Multi-part: a second datagram ends the dump with NLMSG_DONE; anything
        // after DONE is not read.
        let mut d2 = nlmsg(
            RTM_NEWNEIGH,
            2 | NLM_F_DUMP_INTR,
            SEQ,
            &ndmsg(FAMILY_INET, 7, NUD_DELAY, &[rta(NDA_DST, &[192, 0, 2, 1]), rta(NDA_LLADDR, &MAC6)]),
        );
        d2.extend(nlmsg(NLMSG_DONE, 2, SEQ, &0i32.to_ne_bytes()));
        d2.extend_from_slice(&[0xff; 7]);
        let p = parse_datagram(&d2, SEQ, &mut out).unwrap();
        assert_eq!(p, Progress { done: true, interrupted: true });
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].addr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(out[2].ifindex, 7);
        assert_eq!(best_match(&out, IpAddr::V6(V6), None), Some(MAC6));
        assert_eq!(best_match(&out, IpAddr::V6(V6), Some(3)), None);
        assert_eq!(best_match(&out, IpAddr::V4(V4), Some(3)), Some(MAC4));
    }

    #[test]
    fn errors_and_done_status() {
        let mut out = Vec::new();
        // NLMSG_ERROR carries -errno and the offending request's header.
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&dump_request(SEQ)[..NLMSG_HDRLEN]);
        let e = parse_datagram(&nlmsg(NLMSG_ERROR, 0, SEQ, &payload), SEQ, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        // An ACK (error 0) ends the exchange.
        let p = parse_datagram(&nlmsg(NLMSG_ERROR, 0, SEQ, &[]), SEQ, &mut out);
        assert!(p.is_err(), "NLMSG_ERROR without its code is malformed");
        let p = parse_datagram(&nlmsg(NLMSG_ERROR, 0, SEQ, &0i32.to_ne_bytes()), SEQ, &mut out).unwrap();
        assert!(p.done);
        // DONE with a negative status fails the dump; bare DONE (old kernels) is fine.
        let e = parse_datagram(&nlmsg(NLMSG_DONE, 2, SEQ, &(-libc::ENOBUFS).to_ne_bytes()), SEQ, &mut out)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS));
        assert!(parse_datagram(&nlmsg(NLMSG_DONE, 2, SEQ, &[]), SEQ, &mut out).unwrap().done);
        // i32::MIN has no positive errno.
        let e =
            parse_datagram(&nlmsg(NLMSG_ERROR, 0, SEQ, &i32::MIN.to_ne_bytes()), SEQ, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Another sequence's error is not ours.
        assert!(!parse_datagram(&nlmsg(NLMSG_ERROR, 0, SEQ + 9, &payload), SEQ, &mut out).unwrap().done);
        assert!(parse_datagram(&nlmsg(NLMSG_OVERRUN, 0, SEQ, &[]), SEQ, &mut out).is_err());
        // nlmsg_len smaller than the header.
        let mut tiny = nlmsg(NLMSG_NOOP, 0, SEQ, &[]);
        tiny[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(parse_datagram(&tiny, SEQ, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn request_layout() {
        let r = dump_request(77);
        assert_eq!(read_u32(&r, 0), Some(28));
        assert_eq!(read_u16(&r, 4), Some(RTM_GETNEIGH));
        assert_eq!(read_u16(&r, 6), Some(0x301));
        assert_eq!(read_u32(&r, 8), Some(77));
        assert_eq!(r[16], libc::AF_UNSPEC as u8);
    }

    /// Every prefix, every single-byte corruption and a pile of pseudo-random
    /// buffers parse without panicking.
    #[test]
    fn malformed_input_never_panics() {
        let d = sample_datagram();
        for i in 0..=d.len() {
            let mut out = Vec::new();
            let _ = parse_datagram(&d[..i], SEQ, &mut out);
            assert!(out.len() <= 2);
            let _ = parse_neighbour(&d[..i]);
        }
        for i in 0..d.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
                let mut c = d.clone();
                c[i] = v;
                let _ = parse_datagram(&c, SEQ, &mut Vec::new());
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_datagram(&buf, SEQ, &mut Vec::new());
            let _ = parse_neighbour(&buf);
        }
    }

    #[test]
    fn solicit_rejects_bad_interfaces() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(solicit(a, "").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            solicit(a, "a-name-longer-than-ifnamsiz").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(solicit(a, "eth\0").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(solicit(a, "shunt-nosuch0").is_err());
    }

    // ---- real-kernel tests: need root (they create network namespaces) ----

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A throwaway network namespace, deleted on drop (also when a test fails).
    struct Netns(String);

    impl Netns {
        /// `None` when not root: the test prints why and returns, as the
        /// lab tests do, so `cargo test` passes for a contributor.
        fn new(tag: &str) -> Option<Netns> {
            if !shunt_testkit::lab::root_or_skip() {
                return None;
            }
            let name = format!("shunt-neigh-test-{}-{tag}", std::process::id());
            ip(&["netns", "add", &name]);
            Some(Netns(name))
        }

        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["-n", self.0.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }

        fn ifindex(&self, dev: &str) -> u32 {
            let out = self.ip(&["-o", "link", "show", "dev", dev]);
            out.split(':').next().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| panic!("{out}"))
        }

        /// Waits until `dev` is operationally up (linkwatch has run), so the
        /// first packet is not dropped by a not-yet-activated qdisc.
        fn wait_up(&self, dev: &str) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.ip(&["-o", "link", "show", "dev", dev]).contains("state UP") {
                assert!(Instant::now() < deadline, "{dev} in {} never came up", self.0);
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Runs `f` on a thread that has entered this namespace.
        fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let path = format!("/run/netns/{}", self.0);
            std::thread::spawn(move || {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on a valid netns fd; it affects only this thread.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn dump_and_lookup_in_a_namespace() {
        let Some(ns) = Netns::new("dump") else { return };
        ns.ip(&["link", "add", "sn0", "type", "veth", "peer", "name", "sn1"]);
        ns.ip(&["link", "set", "sn0", "up"]);
        ns.ip(&["link", "set", "sn1", "up"]);
        ns.ip(&["neigh", "add", "10.9.9.9", "lladdr", "02:11:22:33:44:55", "dev", "sn0", "nud", "permanent"]);
        ns.ip(&[
            "neigh",
            "add",
            "2001:db8::9",
            "lladdr",
            "02:66:77:88:99:aa",
            "dev",
            "sn0",
            "nud",
            "permanent",
        ]);
        ns.ip(&["neigh", "add", "10.9.9.10", "lladdr", "02:00:00:00:00:10", "dev", "sn1", "nud", "stale"]);
        let sn0 = ns.ifindex("sn0");
        let sn1 = ns.ifindex("sn1");

        let v4: IpAddr = "10.9.9.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        let stale: IpAddr = "10.9.9.10".parse().unwrap();
        let (entries, found) = ns.run(move || {
            let entries = dump().expect("dump");
            let found = [
                lookup(v4, Some(sn0)).unwrap(),
                lookup(v4, None).unwrap(),
                lookup(v6, Some(sn0)).unwrap(),
                lookup(v6, Some(sn1)).unwrap(),
                lookup(stale, None).unwrap(),
                lookup("10.9.9.99".parse().unwrap(), None).unwrap(),
            ];
            (entries, found)
        });
        assert!(
            entries.contains(&Neighbour { ifindex: sn0, addr: v4, mac: MAC4, state: NUD_PERMANENT }),
            "{entries:?}"
        );
        assert!(
            entries.contains(&Neighbour { ifindex: sn0, addr: v6, mac: MAC6, state: NUD_PERMANENT }),
            "{entries:?}"
        );
        assert!(
            entries.iter().any(|n| n.addr == stale && n.ifindex == sn1 && n.state == NUD_STALE),
            "{entries:?}"
        );
        assert!(entries.iter().all(|n| n.state & NUD_USABLE != 0));
        assert_eq!(found, [Some(MAC4), Some(MAC4), Some(MAC6), None, Some([2, 0, 0, 0, 0, 0x10]), None]);

        // The test thread is still in the original namespace: none of this is there.
        assert!(dump().expect("host dump").iter().all(|n| n.mac != MAC4 && n.mac != MAC6));
    }

    #[test]
    fn solicit_resolves_a_peer() {
        let Some(a) = Netns::new("sola") else { return };
        let Some(b) = Netns::new("solb") else { return };
        a.ip(&["link", "add", "sn0", "type", "veth", "peer", "name", "sn1", "netns", &b.0]);
        b.ip(&["link", "set", "sn1", "address", "02:aa:bb:cc:dd:02"]);
        for (ns, dev, last) in [(&a, "sn0", "1"), (&b, "sn1", "2")] {
            ns.ip(&["addr", "add", &format!("10.77.0.{last}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("fd00:77::{last}/64"), "dev", dev, "nodad"]);
            ns.ip(&["addr", "add", &format!("fe80::{last}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        a.wait_up("sn0");
        b.wait_up("sn1");
        let sn0 = a.ifindex("sn0");
        let peer_mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02];

        let results = a.run(move || {
            let mut results = Vec::new();
            for peer in ["10.77.0.2", "fd00:77::2", "fe80::2"] {
                let peer: IpAddr = peer.parse().unwrap();
                let before = lookup(peer, Some(sn0)).unwrap();
                solicit(peer, "sn0").unwrap_or_else(|e| panic!("solicit {peer}: {e}"));
                let start = Instant::now();
                let found = loop {
                    if let Some(mac) = lookup(peer, Some(sn0)).unwrap() {
                        break Some(mac);
                    }
                    // Generous: on a loaded machine the reply can take a while.
                    if start.elapsed() > Duration::from_secs(3) {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                results.push((peer, before, found));
            }
            results
        });
        for (peer, before, found) in results {
            assert_eq!(before, None, "{peer} resolved before solicit");
            assert_eq!(found, Some(peer_mac), "{peer} not resolved within 3 s of solicit");
        }
    }
}
