//! The fast path allocates nothing: 1e5 packets through the full L4 load
//! balancer pipeline, and 1e5 through stateful NAT64 (new flows or
//! sessions, established ones, replies, strays), without a single heap
//! allocation.
//!
//! The allocator counts allocations made while the counting thread has
//! tracking switched on, so nothing the test runner does on other threads
//! (another test included) can disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use shunt::pipeline::{DropReason, Verdict};
use shunt_testkit::addrs::{wkp, PORT1_MAC as BACKEND_PORT_MAC, VIP};
use shunt_testkit::frames::{Frame, L4};
use shunt_testkit::{Fixture, Harness};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    /// Allocations this thread made while tracking: per thread, so tests
    /// running side by side do not count each other's.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if TRACKING.with(Cell::get) {
        ALLOCS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to `System` unchanged; the counter has no
// effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 64;
const PACKETS: usize = 100_000;
/// Flows set up before counting (their SYN-ACKs and ACKs are counted).
const OLD_FLOWS: u32 = 10_000;
/// Flows whose SYN first arrives while counting.
const NEW_FLOWS: u32 = 10_000;
const STRAYS: usize = 1_000;

/// A TCP segment of the handshake kind `l4` from `src` to `dst`.
fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, l4: L4, payload: &[u8]) -> Vec<u8> {
    let f = Frame { sport, dport, l4, payload, ..Frame::new(src, dst) };
    // Backends (10.0.2.0/24) sit behind the backend port and send from the
    // MACs the fixture pins; replies must come from there.
    match src {
        [10, 0, 2, host] => Frame { smac: [0x02, 0, 0, 0, 0x02, host], dmac: BACKEND_PORT_MAC, ..f }.build(),
        _ => f.build(),
    }
}

/// Client `i`: a distinct (address, port) per flow.
fn client(i: u32) -> ([u8; 4], u16) {
    (Ipv4Addr::from(0xc612_0000 + i / 16).octets(), 20000 + (i % 16) as u16)
}

/// (src, sport, dst, dport) of a translated frame.
fn tuple(frame: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
    let Some(TransportSlice::Tcp(t)) = p.transport else { panic!("not TCP") };
    let h = ip.header();
    (h.source_addr().octets(), t.source_port(), h.destination_addr().octets(), t.destination_port())
}

/// Runs `frames` through `h` in batches, counting the heap allocations
/// made meanwhile and the verdicts: forwarded, neither, then one per drop
/// reason.
fn count(h: &mut Harness, frames: &[Vec<u8>]) -> (usize, [usize; 2 + DropReason::COUNT]) {
    // The counter sees allocations at all (else this test could never fail).
    TRACKING.with(|t| t.set(true));
    let probe = std::hint::black_box(Box::new(7u64));
    TRACKING.with(|t| t.set(false));
    drop(probe);
    assert!(ALLOCS.with(Cell::get) > 0, "the counting allocator is not in use");

    let mut verdicts = [0usize; 2 + DropReason::COUNT];
    let before = ALLOCS.with(Cell::get);
    TRACKING.with(|t| t.set(true));
    for chunk in frames.chunks(BATCH) {
        h.run(chunk, |_, v, _| match v {
            Verdict::Forward(_) => verdicts[0] += 1,
            Verdict::Drop(r) => verdicts[2 + r as usize] += 1,
            // Continue, or a handoff to another worker (the harness has one).
            _ => verdicts[1] += 1,
        });
    }
    TRACKING.with(|t| t.set(false));
    (ALLOCS.with(Cell::get) - before, verdicts)
}

#[test]
fn one_hundred_thousand_packets_allocate_nothing() {
    // `pipelines/l4lb.toml`'s IPv4 service, three backends.
    let mut h = Fixture::load("l4lb")
        .remove("service.web6")
        .set("service.web.maglev_table_size", 251)
        .pin_backend_macs()
        .set("conntrack.entries_per_worker", 131_072)
        .harness();

    // Warm-up (not counted): open the old flows and learn their translations.
    let syns: Vec<Vec<u8>> = (0..OLD_FLOWS)
        .map(|i| {
            let (c, p) = client(i);
            tcp(c, VIP, p, 80, L4::SYN, b"")
        })
        .collect();
    let mut bindings = Vec::with_capacity(syns.len());
    for chunk in syns.chunks(BATCH) {
        h.run(chunk, |_, v, b| {
            assert_eq!(v, Verdict::Forward(1), "warm-up SYN");
            bindings.push(tuple(b));
        });
    }

    // Everything the counted loop sends, built up front.
    let reply = |i: usize| {
        let (snat, sport, backend, bport) = bindings[i];
        tcp(backend, snat, bport, sport, L4::SYN_ACK, b"")
    };
    let ack = |i: usize, payload: &[u8]| {
        let (c, p) = client(i as u32);
        tcp(c, VIP, p, 80, L4::ACK, payload)
    };
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(PACKETS);
    let mut strays = 0;
    for n in 0..PACKETS {
        // Interleave so every batch mixes new flows, replies, established
        // traffic and the odd stray.
        frames.push(match n % 10 {
            0 if n / 10 < NEW_FLOWS as usize => {
                let (c, p) = client(OLD_FLOWS + (n / 10) as u32);
                tcp(c, VIP, p, 80, L4::SYN, b"")
            }
            1 | 2 => reply((n * 7919) % OLD_FLOWS as usize),
            9 if strays < STRAYS => {
                strays += 1;
                // To an SNAT address, on a port no flow holds (below 1024).
                tcp([10, 0, 2, 11], [10, 0, 3, 15], 80, 1000 + (n % 24) as u16, L4::SYN_ACK, b"")
            }
            _ => ack((n * 104_729) % OLD_FLOWS as usize, b"GET / HTTP/1.1\r\n\r\n"),
        });
    }
    assert_eq!(strays, STRAYS);

    // Warm the counted harness's every path once, on flows the counted loop
    // does not open: a new flow, its reply, an established packet, a stray.
    let warm: Vec<Vec<u8>> = (0..BATCH as u32)
        .flat_map(|i| {
            let (c, p) = client(OLD_FLOWS + NEW_FLOWS + i);
            [tcp(c, VIP, p, 80, L4::SYN, b""), tcp(c, VIP, p, 80, L4::ACK, b"x")]
        })
        .chain([reply(0), tcp([10, 0, 2, 11], [10, 0, 3, 15], 80, 999, L4::SYN_ACK, b"")])
        .collect();
    for chunk in warm.chunks(BATCH) {
        h.run(chunk, |_, _, _| {});
    }

    let (allocs, verdicts) = count(&mut h, &frames);
    assert_eq!(allocs, 0, "Harness::run allocated {allocs} times over {PACKETS} packets");
    let no_flow = verdicts[2 + DropReason::NoFlow as usize];
    let dropped: usize = verdicts[2..].iter().sum();
    assert_eq!(verdicts[1], 0, "every packet forwarded or dropped");
    assert_eq!(no_flow, STRAYS, "only the strays drop, as no_flow: {verdicts:?}");
    assert_eq!(dropped, STRAYS, "only the strays drop: {verdicts:?}");
    assert_eq!(verdicts[0], PACKETS - STRAYS, "everything else forwarded");
    assert_eq!(verdicts[0] + dropped, PACKETS);
}

/// IPv6 client `i` of the NAT64 test: a distinct (address, port) per session.
fn client6(i: u32) -> ([u8; 16], u16) {
    let mut a = [0xfd, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[12..].copy_from_slice(&(i / 16 + 1).to_be_bytes());
    (a, 20000 + (i % 16) as u16)
}

/// (IPv4 source, port) of a frame NAT64 translated to IPv4.
fn pool_of(frame: &[u8]) -> ([u8; 4], u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!("not UDP") };
    (ip.header().source_addr().octets(), u.source_port())
}

#[test]
fn one_hundred_thousand_nat64_packets_allocate_nothing() {
    const SERVER: [u8; 4] = [198, 51, 100, 80];
    // The IPv4 side's next hop, where replies come from.
    const V4_HOP_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x50];
    let mut h = Fixture::load("nat64").set("conntrack.entries_per_worker", 131_072).harness();
    let query = |i: u32| {
        let (c, p) = client6(i);
        Frame { sport: p, dport: 53, payload: b"query", ..Frame::new(c, wkp(SERVER)) }.build()
    };
    let answer = |(pool, port): ([u8; 4], u16)| {
        Frame {
            smac: V4_HOP_MAC,
            dmac: BACKEND_PORT_MAC,
            sport: 53,
            dport: port,
            payload: b"answer",
            ..Frame::new(SERVER, pool)
        }
        .build()
    };

    // Warm-up (not counted): open the old sessions and learn their bindings.
    let mut bindings = Vec::new();
    let old: Vec<Vec<u8>> = (0..OLD_FLOWS).map(query).collect();
    for chunk in old.chunks(BATCH) {
        h.run(chunk, |_, v, b| {
            assert_eq!(v, Verdict::Forward(1), "warm-up query");
            bindings.push(pool_of(b));
        });
    }
    let stray_to = bindings[0].0;
    let mut frames = Vec::with_capacity(PACKETS);
    let mut strays = 0;
    for n in 0..PACKETS {
        frames.push(match n % 10 {
            0 if n / 10 < NEW_FLOWS as usize => query(OLD_FLOWS + (n / 10) as u32),
            1 | 2 => answer(bindings[(n * 7919) % OLD_FLOWS as usize]),
            9 if strays < STRAYS => {
                strays += 1;
                // To a pool address, on a port no session holds (below 1024).
                answer((stray_to, 1000 + (n % 24) as u16))
            }
            _ => query((n * 104_729) as u32 % OLD_FLOWS),
        });
    }
    assert_eq!(strays, STRAYS);
    // Every path once, on sessions the counted loop does not open.
    let warm: Vec<Vec<u8>> = (0..BATCH as u32)
        .map(|i| query(OLD_FLOWS + NEW_FLOWS + i))
        .chain([answer(bindings[0]), answer((stray_to, 999)), query(0)])
        .collect();
    for chunk in warm.chunks(BATCH) {
        h.run(chunk, |_, _, _| {});
    }

    let (allocs, verdicts) = count(&mut h, &frames);
    assert_eq!(allocs, 0, "Harness::run allocated {allocs} times over {PACKETS} NAT64 packets");
    let dropped: usize = verdicts[2..].iter().sum();
    assert_eq!(verdicts[1], 0, "every packet forwarded or dropped");
    assert_eq!(dropped, STRAYS, "only the strays drop: {verdicts:?}");
    assert_eq!(verdicts[0], PACKETS - STRAYS, "everything else forwarded");
}
