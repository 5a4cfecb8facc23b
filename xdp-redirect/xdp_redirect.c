// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Shunt's kernel side: redirect the flows Shunt owns into AF_XDP sockets,
 * pass everything else to the kernel untouched.
 *
 * A packet is ours when its destination (address, protocol, port) is in
 * `shunt_match`, or its destination address falls in a `shunt_prefix` entry
 * (SNAT pools, NAT64/46 prefixes). Ours goes to XSKMAP[rx_queue_index];
 * ARP, ND, unmatched traffic and traffic to the host itself return XDP_PASS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shunt_maps.h"

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SHUNT_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} shunt_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHUNT_MAX_MATCHES);
	__type(key, struct shunt_match_key);
	__type(value, struct shunt_match_value);
} shunt_match SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SHUNT_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct shunt_lpm_key);
	__type(value, struct shunt_lpm_value);
} shunt_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHUNT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} shunt_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&shunt_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

/* Exact (addr, proto, port), then (addr, proto, any port), then (addr, any). */
static __always_inline int matched(struct shunt_match_key *key, __be16 port)
{
	key->port = port;
	if (bpf_map_lookup_elem(&shunt_match, key))
		return 1;
	key->port = 0;
	if (bpf_map_lookup_elem(&shunt_match, key))
		return 1;
	key->proto = 0;
	if (bpf_map_lookup_elem(&shunt_match, key))
		return 1;

	struct shunt_lpm_key lpm = { .prefixlen = 128 };

	__builtin_memcpy(lpm.addr, key->addr, 16);
	return bpf_map_lookup_elem(&shunt_prefix, &lpm) != NULL;
}

/* Destination port of a TCP/UDP header at l4; 0 when absent or truncated. */
static __always_inline __be16 dst_port(void *l4, void *end, __u8 proto)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	/* Both TCP and UDP keep the destination port at offset 2. */
	if (l4 + 4 > end)
		return 0;
	return ((__be16 *)l4)[1];
}

SEC("xdp")
int shunt_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct shunt_match_key key = {};
	__u16 proto;
	void *l3;

	if ((void *)(eth + 1) > end)
		return pass(SHUNT_CNT_NOT_IP);
	proto = eth->h_proto;
	l3 = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > end)
			return pass(SHUNT_CNT_NOT_IP);
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return pass(SHUNT_CNT_NOT_IP);
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->daddr, 4);
		key.proto = ip->protocol;
		/* Non-first fragments carry no L4 header: match on address only. */
		__be16 port = 0;

		if (!(ip->frag_off & bpf_htons(0x1fff)))
			port = dst_port(l3 + ip->ihl * 4, end, ip->protocol);
		if (!matched(&key, port))
			return pass(SHUNT_CNT_PASSED);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > end)
			return pass(SHUNT_CNT_NOT_IP);
		/* ND and other ICMPv6 to the host never match a VIP entry. */
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		key.proto = ip6->nexthdr;
		/* Extension headers are walked in userspace; match on address then. */
		if (!matched(&key, dst_port(ip6 + 1, end, ip6->nexthdr)))
			return pass(SHUNT_CNT_PASSED);
	} else {
		return pass(SHUNT_CNT_NOT_IP);
	}

	int rc = bpf_redirect_map(&shunt_xsks, ctx->rx_queue_index, XDP_PASS);

	/* No socket bound on this queue: the packet goes to the kernel instead. */
	count(rc == XDP_REDIRECT ? SHUNT_CNT_REDIRECTED : SHUNT_CNT_REDIRECT_FAILED);
	return rc;
}

char _license[] SEC("license") = "Dual BSD/GPL";
