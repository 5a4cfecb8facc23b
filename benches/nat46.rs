//! Per-packet cost of SIIT (RFC 7915) translation over 64-packet batches of
//! TCP frames (IPv4: 14 + 20 + 20 + 64 bytes), against a plain DNAT rewrite
//! (`shunt::pipeline::nat::rewrite`, addresses + ports + checksums), alone
//! and with the parse a DNAT stage needs first (`dnat_parse_rewrite_v4`).
//!
//! Translation is in place and not idempotent, so every bench (baseline
//! included) first copies the template frame into its buffer slot;
//! `copy_only` measures that copy alone. Per packet = batch time / 64
//! (criterion reports it with `Throughput::Elements(64)`).
//!
//! Run: `cargo bench --bench nat46`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;

use shunt::nat46::{
    translate_4to6, translate_6to4, Config, Eam, EamTable, Mapper, Rfc6791, UdpZeroChecksum,
    WELL_KNOWN_PREFIX,
};
use shunt::pipeline::conntrack::{FlowKey, NatBinding};
use shunt::pipeline::flow::Family;
use shunt::pipeline::nat;
use shunt::pipeline::FlowMeta;
use shunt::wire::parse::parse_simple;

const BATCH: usize = 64;
const HR: usize = 64;
const SLOT: usize = 256;

const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

fn v4_frame(i: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 51, 100, (i % 250) as u8], [192, 0, 2, 10 + (i % 8) as u8], 64)
        .tcp(30000 + i as u16, 443, 1000 + i as u32, 65535)
        .ack(1)
        .write(&mut v, &[0x5a; 64])
        .unwrap();
    v
}

fn v6_frame(i: usize) -> Vec<u8> {
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[0, 0x64, 0xff, 0x9b]);
    dst[12..].copy_from_slice(&[198, 51, 100, (i % 250) as u8]);
    let mut src = S6;
    src[15] = 10 + (i % 8) as u8;
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .tcp(443, 30000 + i as u16, 1000 + i as u32, 65535)
        .ack(1)
        .write(&mut v, &[0x5a; 64])
        .unwrap();
    v
}

/// One batch: copies each template frame into its `SLOT`-byte slot of
/// `buf`, `HR` bytes in, and hands `each` its index, the slot and the
/// frame's length; what `each` returns goes to `black_box`.
fn each_slot<R>(buf: &mut [u8], frames: &[Vec<u8>], mut each: impl FnMut(usize, &mut [u8], usize) -> R) {
    for (i, f) in frames.iter().enumerate() {
        let s = &mut buf[i * SLOT..(i + 1) * SLOT];
        s[HR..HR + f.len()].copy_from_slice(f);
        black_box(each(i, s, f.len()));
    }
}

fn bench(c: &mut Criterion) {
    let mut t = EamTable::with_capacity(8);
    for k in 0..4u8 {
        let mut v6 = S6;
        v6[5] = 6 + k;
        t.insert(Eam { v4: [192, 0, 2 + k, 0], v4_len: 24, v6, v6_len: 120 }).unwrap();
    }
    let c46 = Config {
        src: Mapper::prefix(WELL_KNOWN_PREFIX),
        dst: Mapper::eam(&t),
        mtu: 1500,
        udp_zero_checksum: UdpZeroChecksum::Compute,
        rfc6791: Rfc6791::default(),
    };
    let c64 = Config { src: Mapper::eam(&t), dst: Mapper::prefix(WELL_KNOWN_PREFIX), ..c46 };

    let f4: Vec<Vec<u8>> = (0..BATCH).map(v4_frame).collect();
    let f6: Vec<Vec<u8>> = (0..BATCH).map(v6_frame).collect();
    let metas: Vec<FlowMeta> = (0..BATCH)
        .map(|i| FlowMeta {
            family: Family::V4,
            l3: 14,
            l4: 34,
            key: FlowKey::new(mapped([198, 51, 100, i as u8]), mapped([192, 0, 2, 10]), 30000, 443, 6),
            nat: NatBinding {
                src: mapped([198, 51, 100, i as u8]),
                dst: mapped([10, 0, 2, 11]),
                sport: 30000,
                dport: 8443,
            },
            ..FlowMeta::default()
        })
        .collect();
    let mut buf = vec![0u8; BATCH * SLOT];

    let mut g = c.benchmark_group("nat46");
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("copy_only", |b| {
        b.iter(|| {
            each_slot(&mut buf, &f4, |_, s, _| {
                black_box(&s[HR]);
            })
        })
    });
    g.bench_function("dnat_rewrite_v4_baseline", |b| {
        b.iter(|| each_slot(&mut buf, &f4, |i, s, len| nat::rewrite(&mut s[HR..HR + len], &metas[i])))
    });
    // DNAT as a stage pays for it: the translator parses the headers it
    // rewrites, so this is the like-for-like baseline.
    g.bench_function("dnat_parse_rewrite_v4", |b| {
        b.iter(|| {
            each_slot(&mut buf, &f4, |i, s, len| {
                let fr = &mut s[HR..HR + len];
                let Some(p) = parse_simple(fr) else { return };
                let mut m = metas[i];
                (m.family, m.l3, m.l4, m.key.proto) = (
                    if p.v6 { Family::V6 } else { Family::V4 },
                    p.l3_offset as u16,
                    p.l4_offset as u16,
                    p.tuple.proto,
                );
                black_box(nat::rewrite(fr, &m));
            })
        })
    });
    g.bench_function("siit_4to6_tcp", |b| {
        b.iter(|| each_slot(&mut buf, &f4, |_, s, len| translate_4to6(s, HR, len, &c46).unwrap()))
    });
    g.bench_function("siit_6to4_tcp", |b| {
        b.iter(|| each_slot(&mut buf, &f6, |_, s, len| translate_6to4(s, HR, len, &c64).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
