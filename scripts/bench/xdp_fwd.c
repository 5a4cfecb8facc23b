// SPDX-License-Identifier: GPL-2.0
/*
 * In-kernel XDP forward for scripts/bench-vs-dpdk.sh (the lab's ceiling):
 * every frame is rewritten to (SRC_MAC -> DST_MAC) and bpf_redirect()ed to
 * OUT_IFINDEX. Compiled once per direction with -D values by the script:
 *   clang -O2 -g -target bpf -DOUT_IFINDEX=5 \
 *     -DDST_MAC=0x02,0x00,... -DSRC_MAC=0x02,0x00,... -c xdp_fwd.c
 * ARP never needs to cross: every namespace has static neighbours.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#ifndef OUT_IFINDEX
#error "OUT_IFINDEX, DST_MAC and SRC_MAC must be given with -D"
#endif

static const unsigned char dst_mac[ETH_ALEN] = { DST_MAC };
static const unsigned char src_mac[ETH_ALEN] = { SRC_MAC };

SEC("xdp")
int bench_xdp_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src_mac, ETH_ALEN);
	return bpf_redirect(OUT_IFINDEX, 0);
}

char _license[] SEC("license") = "GPL";
