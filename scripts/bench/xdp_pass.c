// SPDX-License-Identifier: GPL-2.0
/*
 * XDP_PASS for everything, with an (unused) `xsks_map` so that DPDK's
 * af_xdp PMD accepts it as a custom program (`xdp_prog=` devarg).
 *
 * Two uses in scripts/bench-vs-dpdk.sh:
 *  - on the generator's veth (bench-gen/bg0): the testpmd txonly generator
 *    only transmits; its RX side must not swallow the ping probe's replies,
 *    which the PMD's default program would redirect into its socket;
 *  - a veth that receives bpf_redirect()ed frames (XDP forward DUT) needs an
 *    XDP program on the receiving peer; this one does nothing else.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

SEC("xdp")
int bench_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
