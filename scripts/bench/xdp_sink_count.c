// SPDX-License-Identifier: GPL-2.0
/*
 * Sink counter for scripts/bench-vs-dpdk.sh: counts the benchmark's UDP
 * packets (IPv4, destination port BENCH_PORT, default 9) arriving on the
 * sink interface and drops them; everything else (ARP, ICMP for the ping
 * probe, TCP for iperf3) is passed to the kernel untouched.
 *
 * Per-CPU array `bench_cnt`: [0] = packets, [1] = bytes (frame length).
 * Read with `bpftool -j map dump id ID` and sum over CPUs.
 *
 * One-way latency: `shunt-gen` writes its submit time (CLOCK_MONOTONIC ns,
 * big-endian) into the first 8 payload bytes; bpf_ktime_get_ns() reads the
 * same clock, so now - stamp is the generator → DUT → sink latency of every
 * packet. Per-CPU array `bench_lat` is its histogram in units of 1024 ns:
 * buckets 0..63 one unit wide, then 16 buckets per power of two (about 6 %
 * wide); scripts/bench/bench.py `lat` turns two snapshots into percentiles.
 * A zero or implausible stamp (another generator) is not recorded.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef BENCH_PORT
#define BENCH_PORT 9
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} bench_cnt SEC(".maps");

#define LAT_BUCKETS 480
#define LAT_MAX_NS (10ULL * 1000 * 1000 * 1000)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} bench_lat SEC(".maps");

static __always_inline __u32 lat_bucket(__u64 ns)
{
	__u64 v = ns >> 10, x;
	__u32 k = 0, idx;

	if (v < 64)
		return v;
	x = v; /* k = floor(log2(v)), no loop for the verifier */
	if (x >> 32) { k += 32; x >>= 32; }
	if (x >> 16) { k += 16; x >>= 16; }
	if (x >> 8) { k += 8; x >>= 8; }
	if (x >> 4) { k += 4; x >>= 4; }
	if (x >> 2) { k += 2; x >>= 2; }
	if (x >> 1) { k += 1; }
	idx = 64 + (k - 6) * 16 + ((v >> (k - 4)) & 15);
	return idx < LAT_BUCKETS ? idx : LAT_BUCKETS - 1;
}

static __always_inline void record_latency(void *payload, void *end)
{
	__u64 stamp, now, *v;
	__u32 k;

	if (payload + 8 > end)
		return;
	__builtin_memcpy(&stamp, payload, 8);
	stamp = bpf_be64_to_cpu(stamp);
	now = bpf_ktime_get_ns();
	if (stamp == 0 || stamp > now || now - stamp > LAT_MAX_NS)
		return;
	k = lat_bucket(now - stamp);
	v = bpf_map_lookup_elem(&bench_lat, &k);
	if (v)
		*v += 1;
}

SEC("xdp")
int bench_sink_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 k;
	__u64 *v;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(BENCH_PORT))
		return XDP_PASS;
	k = 0;
	v = bpf_map_lookup_elem(&bench_cnt, &k);
	if (v)
		*v += 1;
	k = 1;
	v = bpf_map_lookup_elem(&bench_cnt, &k);
	if (v)
		*v += (__u64)(end - data);
	record_latency(udp + 1, end);
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
