// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Shunt's kernel side: redirect the flows Shunt owns into AF_XDP sockets,
 * pass everything else to the kernel untouched.
 *
 * A packet is ours when its destination (address, protocol, port) is in
 * `shunt_match`, falls in a `shunt_route_prefix` entry (routes given as
 * prefixes), or its destination address falls in a `shunt_prefix` entry
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

/*
 * A BTF-defined map: its type, size, key and value types, and any other
 * attributes (map_flags) after the size.
 */
#define SHUNT_MAP(name, map_type, entries, key_type, value_type, ...) \
	struct {                                                     \
		__uint(type, map_type);                              \
		__uint(max_entries, entries);                        \
		__VA_ARGS__                                          \
		__type(key, key_type);                               \
		__type(value, value_type);                           \
	} name SEC(".maps")

SHUNT_MAP(shunt_xsks, BPF_MAP_TYPE_XSKMAP, SHUNT_MAX_QUEUES, __u32, __u32);
SHUNT_MAP(shunt_match, BPF_MAP_TYPE_HASH, SHUNT_MAX_MATCHES, struct shunt_match_key, struct shunt_match_value);
SHUNT_MAP(shunt_prefix, BPF_MAP_TYPE_LPM_TRIE, SHUNT_MAX_PREFIXES, struct shunt_lpm_key, struct shunt_lpm_value,
	  __uint(map_flags, BPF_F_NO_PREALLOC););
SHUNT_MAP(shunt_route_prefix, BPF_MAP_TYPE_LPM_TRIE, SHUNT_MAX_ROUTE_PREFIXES, struct shunt_route_key,
	  struct shunt_lpm_value, __uint(map_flags, BPF_F_NO_PREALLOC););
SHUNT_MAP(shunt_counters, BPF_MAP_TYPE_PERCPU_ARRAY, SHUNT_CNT_MAX, __u32, __u64);

/*
 * What happens to a packet of ours when its queue has no AF_XDP socket:
 * SHUNT_NO_SOCKET_PASS (the kernel takes it, fail-open) or
 * SHUNT_NO_SOCKET_DROP, set by the old image during a planned restart so
 * the kernel never answers (RSTs) flows the next image will carry on.
 */
SHUNT_MAP(shunt_no_socket, BPF_MAP_TYPE_ARRAY, 1, __u32, __u32);

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

/* A non-first fragment to an address and protocol a service listens on. */
static __always_inline int fragment_matched(struct shunt_match_key *key)
{
	int hit;

	key->pad = SHUNT_MATCH_FRAGMENT;
	key->port = 0;
	hit = bpf_map_lookup_elem(&shunt_match, key) != NULL;
	key->pad = 0;
	return hit;
}

/*
 * Looks `key` up in `map` as it is, then with *port (a field of the key)
 * cleared, then with *proto cleared too: (addr, proto, port), then (addr,
 * proto, any port), then (addr, any).
 */
static __always_inline int widening_lookup(void *map, void *key, __u8 *proto, __be16 *port)
{
	if (bpf_map_lookup_elem(map, key))
		return 1;
	*port = 0;
	if (bpf_map_lookup_elem(map, key))
		return 1;
	*proto = 0;
	return bpf_map_lookup_elem(map, key) != NULL;
}

/*
 * Exact (addr, proto, port), then (addr, proto, any port), then (addr, any);
 * then the same three against prefix routes (longest prefix within each);
 * then owned prefixes. src/pipeline/classify.rs follows the same order.
 */
static __always_inline int matched(struct shunt_match_key *key, __be16 port)
{
	__u8 proto = key->proto;

	key->port = port;
	if (widening_lookup(&shunt_match, key, &key->proto, &key->port))
		return 1;

	struct shunt_route_key route = { .prefixlen = 32 + 128, .proto = proto, .port = port };

	__builtin_memcpy(route.addr, key->addr, 16);
	if (widening_lookup(&shunt_route_prefix, &route, &route.proto, &route.port))
		return 1;

	struct shunt_lpm_key lpm = { .prefixlen = 128 };

	__builtin_memcpy(lpm.addr, key->addr, 16);
	return bpf_map_lookup_elem(&shunt_prefix, &lpm) != NULL;
}

/*
 * ICMP/ICMPv6 errors quote the packet that caused them. One addressed to a
 * VIP quotes a packet Shunt sent from that VIP: match it as that packet's
 * (source address = our destination, protocol, source port), so only errors
 * about a service's own traffic are redirected, never pings to the VIP.
 * Returns 1 with key->proto and *port set, 0 when not an error we can match.
 */
static __always_inline int icmp_error_key(void *l4, void *end, __u8 proto, int v6,
					  struct shunt_match_key *key, __be16 *port)
{
	__u8 *icmp = l4;

	if ((void *)(icmp + 8) > end)
		return 0;
	if (v6 ? !(icmp[0] >= 1 && icmp[0] <= 4) : !(icmp[0] == 3 || icmp[0] == 11 || icmp[0] == 12))
		return 0;
	void *q = icmp + 8;
	__u8 qproto;
	void *ql4;

	if (v6) {
		struct ipv6hdr *qip = q;

		if ((void *)(qip + 1) > end)
			return 0;
		qproto = qip->nexthdr;
		ql4 = qip + 1;
	} else {
		struct iphdr *qip = q;

		if ((void *)(qip + 1) > end || qip->ihl < 5)
			return 0;
		qproto = qip->protocol;
		ql4 = q + qip->ihl * 4;
	}
	if (qproto != IPPROTO_TCP && qproto != IPPROTO_UDP)
		return 0;
	if (ql4 + 2 > end)
		return 0;
	key->proto = qproto;
	*port = *(__be16 *)ql4;
	return 1;
}

/* Whether nexthdr names an IPv6 extension header ipv6_upper steps over. */
static __always_inline int ipv6_ext(__u8 nexthdr)
{
	switch (nexthdr) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_FRAGMENT:
	case IPPROTO_AH:
		return 1;
	}
	return 0;
}

/*
 * Steps over IPv6 extension headers (hop-by-hop, routing, fragment, AH,
 * destination options) to the upper-layer header, at most SHUNT_MAX_EXT of
 * them (src/wire/ipv6.rs MAX_EXT_HEADERS walks as many). *l4 ends at the
 * upper-layer header; returns its protocol, or 0xff when the chain is too
 * long or truncated. *later is set after a non-first Fragment header (no
 * L4 header follows: match on the address only).
 */
#define SHUNT_MAX_EXT 8
static __always_inline __u8 ipv6_upper(void **l4, void *end, __u8 nexthdr, int *later)
{
	void *p = *l4;

#pragma unroll
	for (int i = 0; i < SHUNT_MAX_EXT; i++) {
		__u8 *h = p;
		__u32 len;

		if (!ipv6_ext(nexthdr)) {
			*l4 = p;
			return nexthdr;
		}
		if ((void *)(h + 8) > end)
			return 0xff;
		if (nexthdr == IPPROTO_FRAGMENT) {
			len = 8;
			/* Offset (13 bits) nonzero: later fragment, data follows. */
			if ((h[2] << 8 | h[3]) & 0xfff8) {
				*later = 1;
				*l4 = p + 8;
				return h[0];
			}
		} else if (nexthdr == IPPROTO_AH) {
			len = ((__u32)h[1] + 2) * 4;
		} else {
			len = ((__u32)h[1] + 1) * 8;
		}
		nexthdr = h[0];
		p += len;
	}
	if (ipv6_ext(nexthdr))
		return 0xff;
	*l4 = p;
	return nexthdr;
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

/*
 * "xdp.frags" loads the program with BPF_F_XDP_HAS_FRAGS: a driver then
 * attaches it at an MTU above one page (veth refuses a plain program at
 * MTU 9000) and hands it multi-buffer packets. Only headers are read, and
 * they sit in the first buffer (data..data_end), so nothing else changes.
 */
SEC("xdp.frags")
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

		if (!(ip->frag_off & bpf_htons(0x1fff))) {
			void *l4 = l3 + ip->ihl * 4;

			if (ip->protocol == IPPROTO_ICMP) {
				/* An error about a service's flow (PMTUD); else the address. */
				struct shunt_match_key qkey = key;
				__be16 qport;

				if (icmp_error_key(l4, end, ip->protocol, 0, &qkey, &qport) &&
				    matched(&qkey, qport))
					goto redirect;
			}
			port = dst_port(l4, end, ip->protocol);
		} else if (fragment_matched(&key)) {
			goto redirect;
		}
		if (!matched(&key, port))
			return pass(SHUNT_CNT_PASSED);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > end)
			return pass(SHUNT_CNT_NOT_IP);
		/* ND and other ICMPv6 to the host never match a VIP entry. */
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		void *l4 = ip6 + 1;
		int later = 0;
		__u8 upper = ipv6_upper(&l4, end, ip6->nexthdr, &later);
		__be16 port = 0;

		/* A chain too long to walk: the address alone decides. */
		key.proto = upper == 0xff ? ip6->nexthdr : upper;
		if (upper == IPPROTO_ICMPV6 && !later) {
			struct shunt_match_key qkey = key;
			__be16 qport;

			if (icmp_error_key(l4, end, upper, 1, &qkey, &qport) && matched(&qkey, qport))
				goto redirect;
		}
		if (upper != 0xff && !later)
			port = dst_port(l4, end, upper);
		if (later && fragment_matched(&key))
			goto redirect;
		if (!matched(&key, port))
			return pass(SHUNT_CNT_PASSED);
	} else {
		return pass(SHUNT_CNT_NOT_IP);
	}

redirect:;
	__u32 zero = 0;
	__u32 *no_socket = bpf_map_lookup_elem(&shunt_no_socket, &zero);
	__u64 fallback = no_socket && *no_socket == SHUNT_NO_SOCKET_DROP ? XDP_DROP : XDP_PASS;
	int rc = bpf_redirect_map(&shunt_xsks, ctx->rx_queue_index, fallback);

	/* No socket bound on this queue: the kernel takes the packet, or during
	 * a planned restart nobody does. */
	count(rc == XDP_REDIRECT ? SHUNT_CNT_REDIRECTED : SHUNT_CNT_REDIRECT_FAILED);
	return rc;
}

char _license[] SEC("license") = "Dual BSD/GPL";
