// SPDX-License-Identifier: GPL-2.0
/*
 * Sink counter for scripts/bench-vs-dpdk.sh: counts the benchmark's UDP
 * packets (IPv4, destination port BENCH_PORT, default 9) arriving on the
 * sink interface and drops them; everything else (ARP, ICMP for the ping
 * probe, TCP for iperf3) is passed to the kernel untouched.
 *
 * Per-CPU array `bench_cnt`: [0] = packets, [1] = bytes (frame length).
 * Read with `bpftool -j map dump id ID` and sum over CPUs.
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
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
